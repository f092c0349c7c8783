"""Start-first updates: extra instances of the new version serve while the old ones are replaced.

A service with ``update.order = "start-first"`` and an instance serving an older spec gets
``max_parallel`` *surge* instances (``web.4`` beside ``web`` ... ``web.3``), placed and started
with the new spec like any instance. The rollout (:mod:`octctl.leader.converge`) replaces an old
instance only once the instances it does not touch, surge included, are healthy for
``min_healthy_time``, so as many instances as ``replicas`` serve throughout: Kubernetes'
``maxSurge = max_parallel, maxUnavailable = 0``, and what Swarm's start-first keeps. When every
regular instance serves the new spec, the surge is drained and removed.

Why extra instances rather than a second copy of each one: an instance is one name everywhere
(placements, instance ports, container and file names, the agents' API), so a surge instance
needs nothing new from the runtimes, the ingress or DNS. A replicas = 1 service therefore restarts
its instance once more than a stop-first update would, but never stops serving.

The surge is decided afresh on every pass from the replicated state (placements) and what the
agents report, so a new leader resumes a half-done rollout with the same surge. A surge instance
that cannot be placed (no node has room, or its internal-only port is taken on every node) is
not waited for, and never grows the fleet: the update then proceeds stop-first.

A containerised public service needs no surge: each of its instances starts its new version next
to the running one, on the other port of its pair (:func:`octctl.specs.replaced_beside`), which is
faster (no drain, no restart in place on the way) and keeps every instance serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from octctl.config import Config, Service
from octctl.instances import instance_names, serving
from octctl.leader.ports import Observed
from octctl.runtime.base import InstanceSpec
from octctl.specs import replaced_beside

__all__ = ["surge", "surge_instances", "surge_names", "with_surge"]


def surge_names(service: Service, count: int) -> list[str]:
    """The names of ``count`` surge instances: the next ones after the service's own."""
    return [f"{service.name}.{n}" for n in range(service.replicas + 1, service.replicas + count + 1)]


def _old_serving(seen: Mapping[str, object] | None, spec: InstanceSpec | None) -> bool:
    return spec is not None and serving(seen) and seen is not None and seen.get("spec_hash") != spec.spec_hash


def _new_serving(seen: Mapping[str, object] | None, spec: InstanceSpec | None) -> bool:
    return spec is not None and serving(seen) and seen is not None and seen.get("spec_hash") == spec.spec_hash


def surge(
    config: Config | None,
    specs: Mapping[str, InstanceSpec],
    observed: Observed,
    placements: Mapping[str, str],
    draining: Set[str] = frozenset(),
) -> dict[str, int]:
    """Service name -> how many surge instances it runs now.

    ``specs`` are the regular instances' specs rendered on the current placements. A service
    surges while one of its instances serves an older spec, and keeps its surge (already placed)
    until every instance serves the new one and none is ``draining`` (instance names), so the
    surge outlives the last replaced instance's health check and its return to rotation rather
    than leaving while it starts.
    """
    if config is None:
        return {}
    found: dict[str, int] = {}
    for service in config.project.services:
        if service.update.order != "start-first" or replaced_beside(config, service):
            continue  # (replaced beside: each instance's new version starts next to it)
        own = instance_names(service)
        seen = {i: observed.get(placements.get(i, ""), {}).get(i) for i in own}
        extra = surge_names(service, service.update.max_parallel)
        rolling = any(_old_serving(seen[i], specs.get(i)) for i in own)
        finishing = any(i in placements for i in extra) and not all(
            _new_serving(seen[i], specs.get(i)) and i not in draining for i in own if i in placements
        )
        if rolling or finishing:
            found[service.name] = len(extra)
    return found


def with_surge(config: Config, counts: Mapping[str, int]) -> Config:
    """The project as the leader runs it this pass: each surging service with its surge instances."""
    if not counts:
        return config
    services = [
        s.model_copy(update={"replicas": s.replicas + counts[s.name]}) if s.name in counts else s
        for s in config.project.services
    ]
    return config.model_copy(update={"project": config.project.model_copy(update={"services": services})})


def surge_instances(config: Config, counts: Mapping[str, int]) -> Set[str]:
    """Every surge instance's name (what a fleet must not grow for)."""
    return {
        name for s in config.project.services if s.name in counts for name in surge_names(s, counts[s.name])
    }
