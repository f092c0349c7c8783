"""Push the difference between the specs and what agents run: removals first, then starts.

Removals go first because they free ports and capacity. A service is started (or replaced) only
once every instance of everything it ``depends_on`` runs with its current spec; the pushes of one
pass run concurrently, so independent services start in parallel across nodes. A push that failed
(say, an image that cannot be pulled) is not retried for the same spec and deployment: a new
deploy retries it.

A service with several instances is never stopped whole: a changed one is replaced one instance
at a time, each only while all the others serve, and a running instance that is replaced or
removed while its service stays is first *drained*: taken out of DNS and of every node's ingress
(``drain`` in the state), then stopped once no proxy sends it new requests and the ones it had
are answered: as soon as every ready node's agent says its ingress no longer routes to it (plus
:data:`DRAIN_SETTLE`), and :data:`DRAIN_GRACE` after the drain at the latest, for a node that does
not say (its proxy failing, or a drain a former leader started). DNS is not awaited: a client
that cached an answer naming the instance (5 s TTL) can still reach it after it stopped, and is
expected to retry; clients that must never see that go through the ingress. A start-first
service's surge instances (see :mod:`octctl.leader.surge`) are simply more instances here, so the
same rule keeps ``replicas`` of them serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from octctl.config import Config
from octctl.instances import instance_names, service_of, serving
from octctl.leader.ports import Agents, ClusterLog, Observed
from octctl.peers import PeerError
from octctl.runtime.base import InstanceSpec, InstanceStatus
from octctl.state.model import ClusterState, NodeRecord, api_address, command, drain_key, draining_of

__all__ = ["DRAIN_GRACE", "Converger", "is_up"]

log = logging.getLogger(__name__)

#: Seconds between taking an instance out of rotation and stopping it, at most: every node's
#: proxy has reloaded without it by then (a Raft commit and a reload take milliseconds), and the
#: requests it was answering are done.
DRAIN_GRACE = 2.0
#: Seconds a drain lasts at least, once every ready node's agent says its ingress no longer routes
#: to the instance: what the old proxy workers still carry to it is answered in that time.
DRAIN_SETTLE = 0.25
#: Seconds between passes while a drain waits for the nodes' word (instead of the usual second).
DRAIN_POLL = 0.1


def is_up(instance: Mapping[str, Any] | None, spec: InstanceSpec) -> bool:
    """Running this spec and passing its health check (see :func:`octctl.instances.serving`)."""
    return instance is not None and instance.get("spec_hash") == spec.spec_hash and serving(instance)


def _settled(current: Mapping[str, Any] | None, spec: InstanceSpec) -> bool:
    """Running with this spec, or being restarted by its runtime ("exited" is re-applied)."""
    return (
        current is not None
        and current.get("spec_hash") == spec.spec_hash
        and current["state"] not in ("failed", "exited")
    )


def _running(instance: Mapping[str, Any] | None) -> bool:
    return instance is not None and instance.get("state") == "running"


def _settled_healthy(seen: Mapping[str, Any] | None, spec: InstanceSpec | None, min_healthy: float) -> bool:
    """Serving, and (when it already runs the new spec) for ``min_healthy_time`` since its check
    last changed, so a version that fails a minute in is caught before it is everywhere."""
    if not serving(seen):
        return False
    assert seen is not None
    if spec is None or seen.get("spec_hash") != spec.spec_hash or not min_healthy:
        return True
    since = seen.get("health_changed_at")
    return since is None or time.time() - float(since) >= min_healthy


def _seen(observed: Observed, specs: Mapping[str, InstanceSpec], instance: str) -> Mapping[str, Any] | None:
    spec = specs.get(instance)
    return observed.get(spec.node, {}).get(instance) if spec is not None else None


def _rolling(specs: Mapping[str, InstanceSpec], instance: str) -> bool:
    """Whether the instance's service has another instance to serve while it drains (one alone is
    replaced at once: draining it would only add the grace to the outage)."""
    service = service_of(instance)
    return any(service_of(other) == service and other != instance for other in specs)


Routed = Mapping[str, frozenset[str] | None]


def _out_everywhere(endpoint: str | None, routed: Routed, ready: list[str]) -> bool:
    """Whether every ready node answered this pass and its ingress routes nothing to
    ``endpoint`` (``address:port``); False when any of that is unknown."""
    if endpoint is None or not ready:
        return False
    return all((r := routed.get(node)) is not None and endpoint not in r for node in ready)


@dataclass
class Converger:
    cluster: ClusterLog
    agents: Agents
    #: (node, service) -> the failed status of a push, with its spec hash and deployment.
    failed: dict[tuple[str, str], InstanceStatus] = field(default_factory=dict)
    #: drain key -> ``address:port`` the ingress reached the instance at, for the drains this term
    #: started (a drain a former leader started waits the whole grace).
    drain_endpoints: dict[str, str] = field(default_factory=dict)
    #: Whether a drain may end on the nodes' word before its grace: poll them often meanwhile.
    waiting_on_drain: bool = False

    def _drained(self, draining: Mapping[str, float], key: str, routed: Routed, ready: list[str]) -> bool:
        """Out of rotation for :data:`DRAIN_GRACE` already, or for :data:`DRAIN_SETTLE` and out
        of every ready node's ingress, as their agents said this pass."""
        since = draining.get(key)
        if since is None:
            return False
        elapsed = time.time() - since
        if elapsed >= DRAIN_GRACE:
            return True
        return elapsed >= DRAIN_SETTLE and _out_everywhere(self.drain_endpoints.get(key), routed, ready)

    def _already_failed(self, spec: InstanceSpec) -> bool:
        failure = self.failed.get((spec.node, spec.service))
        return failure is not None and (failure.spec_hash, failure.deployment) == (
            spec.spec_hash,
            spec.deployment,
        )

    def _pushes(
        self,
        config: Config,
        specs: Mapping[str, InstanceSpec],
        observed: Observed,
        draining: Mapping[str, float],
    ) -> list[InstanceSpec]:
        def up(instance: str) -> bool:
            spec = specs.get(instance)
            return spec is not None and is_up(observed.get(spec.node, {}).get(instance), spec)

        out_of_rotation = {key.rpartition("@")[0] for key in draining}
        pushes: list[InstanceSpec] = []
        for name in config.topological_order():
            service = config.service(name)
            deps = [i for d in service.depends_on for i in instance_names(config.service(d))]
            if not all(up(i) for i in deps):
                continue
            instances = instance_names(service)
            for instance in instances:
                spec = specs.get(instance)
                if spec is None or _settled(observed.get(spec.node, {}).get(instance), spec):
                    continue
                if self._already_failed(spec):
                    continue
                if len(instances) > 1 and _running(observed.get(spec.node, {}).get(instance)):
                    # Rolling: it is drained first (see converge), and replaced only in a batch of
                    # at most max_parallel, once the others serve (none draining) and those already
                    # replaced stayed healthy for min_healthy_time. An instance with no spec (a
                    # surge with no room) is not waited for.
                    others = [i for i in instances if i != instance and i in specs]
                    batch = sum(1 for p in pushes if p.service in instances)
                    unsettled = sum(
                        1
                        for i in others
                        if i in out_of_rotation
                        or not _settled_healthy(
                            _seen(observed, specs, i), specs.get(i), service.update.min_healthy_time
                        )
                    )
                    if batch + unsettled >= service.update.max_parallel:
                        continue
                pushes.append(spec)
        return pushes

    async def converge(
        self,
        view: ClusterState,
        config: Config | None,
        specs: Mapping[str, InstanceSpec],
        observed: Observed,
        routed: Routed | None = None,
    ) -> bool:
        """One round of removals and pushes; True when one of them made progress. ``routed``:
        what each node's ingress routes to, by node, from this pass's polls."""
        project = config.project.name if config else None
        nodes = view["nodes"]
        services = {s.name for s in config.project.services} if config else set()
        removals = [
            (node, name, instance)
            for node, instances in observed.items()
            for name, instance in instances.items()
            if node in nodes
            and (name not in specs or specs[name].node != node or instance.get("project") != project)
        ]
        draining = draining_of(view)
        pushes = (
            [s for s in self._pushes(config, specs, observed, draining) if s.node in nodes] if config else []
        )
        await self._end_drains(draining, specs, observed)
        # An instance whose service stays (scaled down, moved, rolled) leaves rotation before it stops.
        staying = [(n, name) for n, name, seen in removals if service_of(name) in services and _running(seen)]
        # (One replaced beside goes on serving until its node retires it, once the new one serves.)
        staying += [
            (s.node, s.service)
            for s in pushes
            if not s.beside and _running(observed.get(s.node, {}).get(s.service))
        ]
        staying = [(n, name) for n, name in staying if _rolling(specs, name)]
        held = await self._drain(view, staying, routed or {})
        # An instance whose previous generation still runs is being replaced beside it: poll often
        # until the new one serves, so the next one starts and every ingress moves on at once.
        self.waiting_on_drain |= any(
            seen.get("previous_port") for instances in observed.values() for seen in instances.values()
        )
        removals = [r for r in removals if drain_key(r[1], r[0]) not in held]
        pushes = [s for s in pushes if drain_key(s.service, s.node) not in held]
        if not removals and not pushes:
            return bool(held - set(draining))
        removed = await asyncio.gather(*(self._remove(nodes[n], s["project"], i) for n, i, s in removals))
        results = await asyncio.gather(*(self._push(nodes[spec.node], spec) for spec in pushes))
        progressed = any(removed)
        back = [(name, n) for (n, name, _), done in zip(removals, removed, strict=True) if done]
        observations = []
        for spec, status in zip(pushes, results, strict=True):
            if status is None:
                continue
            progressed = True
            instance = status.model_dump(mode="json")
            observed.setdefault(spec.node, {})[spec.service] = instance
            observations.append(
                command(
                    "observe_one", node=spec.node, service=spec.service, instance=instance, at=time.time()
                )
            )
            if serving(instance):
                back.append((spec.service, spec.node))
        # All at once: group commit carries them in one Raft entry, where one write after another
        # cost a commit each (1,000 services: tens of seconds; bench/scale.py).
        await asyncio.gather(*(self.cluster.execute(c) for c in observations))
        await asyncio.gather(*(self._undrain(name, n) for name, n in back if drain_key(name, n) in draining))
        # Only progress earns an immediate next pass: a node refusing every call must not spin us.
        return progressed

    async def _drain(self, view: ClusterState, staying: list[tuple[str, str]], routed: Routed) -> set[str]:
        """Start the drain of each (node, instance) in ``staying`` that is not draining yet; the
        drain keys of those that must stay running a while longer (held)."""
        nodes, draining = view["nodes"], draining_of(view)
        ready = [n for n, record in nodes.items() if record["status"] == "ready"]
        keys = {drain_key(name, n) for n, name in staying}
        held = {key for key in keys if not self._drained(draining, key, routed, ready)}
        self.waiting_on_drain = any(key in self.drain_endpoints for key in held)
        drains = []
        for n, name in staying:
            key = drain_key(name, n)
            if key not in draining:
                port = view.get("instance_ports", {}).get(name)
                if port is not None:
                    self.drain_endpoints[key] = f"{nodes[n]['address']}:{port}"
                drains.append(command("drain", instance=name, node=n, at=time.time()))
        await asyncio.gather(*(self.cluster.execute(c) for c in drains))  # one Raft entry
        return held

    async def _end_drains(
        self, draining: Mapping[str, float], specs: Mapping[str, InstanceSpec], observed: Observed
    ) -> None:
        """Put back in rotation an instance replaced and healthy again, and forget drains of
        instances that are gone from their node (removed, or their node died)."""
        ended = []
        for key in list(draining):
            name, _, node = key.rpartition("@")
            spec, seen = specs.get(name), observed.get(node, {}).get(name)
            back = spec is not None and spec.node == node and is_up(seen, spec)
            gone = seen is None and (spec is None or spec.node != node)
            if back or gone:
                ended.append((name, node))
        await asyncio.gather(*(self._undrain(name, node) for name, node in ended))

    async def _undrain(self, instance: str, node: str) -> None:
        self.drain_endpoints.pop(drain_key(instance, node), None)
        await self.cluster.execute(command("drain", instance=instance, node=node, at=None))

    async def _remove(self, node: NodeRecord, project: str, service: str) -> bool:
        try:
            await self.agents.remove(api_address(node), project, service, self.cluster.term())
        except PeerError as e:
            log.warning("could not remove %s from %s: %s", service, node["id"], e)
            return False
        self.failed.pop((node["id"], service), None)
        await self.cluster.execute(
            command("observe_one", node=node["id"], service=service, instance=None, at=time.time())
        )
        return True

    async def _push(self, node: NodeRecord, spec: InstanceSpec) -> InstanceStatus | None:
        """Start or replace one instance; None when the node did not answer (retried next pass,
        or the service moves once the node counts as unreachable)."""
        log.info("starting %s on %s (spec %s)", spec.service, node["id"], spec.spec_hash)
        try:
            status = await self.agents.apply(api_address(node), spec, self.cluster.term())
        except PeerError as e:
            log.warning("node %s did not start %s: %s", node["id"], spec.service, e)
            return None
        if status.state == "failed":
            status.spec_hash = spec.spec_hash
            status.deployment = spec.deployment
            self.failed[(node["id"], spec.service)] = status
        else:
            self.failed.pop((node["id"], spec.service), None)
        return status
