"""The coordinator: one pass over one snapshot, run by the node while it leads.

A pass starts with a commit barrier, reads the state once, and hands that snapshot to each duty
in turn: observe the agents, fix membership, place services, learn public addresses, render
specs, converge, track the deployment, publish names. A duty that changes the cluster's shape
(a node's status, membership, a public address the specs depend on) ends the pass, and the next
one starts at once from a fresh snapshot, so no duty acts on a shape that is no longer true.

The duties' memory (failed pushes, missed polls, launches, what was published) belongs to one
leader term: a node that stops leading drops it, and a new term starts from nothing but the
replicated state, as a new leader on another node would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import Any

from octctl.config import Config
from octctl.instances import instance_names
from octctl.leader.certificates import Certifier
from octctl.leader.converge import DRAIN_POLL, Converger
from octctl.leader.deployments import Deployments
from octctl.leader.fleet import Fleet
from octctl.leader.liveness import Liveness
from octctl.leader.ports import Agents, ClusterLog, Observed
from octctl.leader.publish import Publisher
from octctl.leader.surge import surge, surge_instances, with_surge
from octctl.node_settings import NodeSettings, Secrets
from octctl.providers.base import Provider
from octctl.runtime.base import InstanceSpec
from octctl.specs import Rollout, Running, instance_specs, replaced_beside
from octctl.state.desired import desired_project
from octctl.state.machine import NotLeader, RaftUnavailable
from octctl.state.model import ClusterState, command, draining_of, volumes_of

__all__ = ["Duties", "Leader"]

log = logging.getLogger(__name__)


@dataclass
class Duties:
    """Everything one leader term does, each part with its own memory."""

    term: int
    liveness: Liveness
    fleet: Fleet
    converger: Converger
    deployments: Deployments
    publisher: Publisher
    certifier: Certifier

    @classmethod
    def for_term(
        cls,
        term: int,
        cluster: ClusterLog,
        agents: Agents,
        settings: NodeSettings,
        secrets: Secrets,
        provider: Provider | None,
    ) -> Duties:
        fleet = Fleet(cluster, settings, secrets, provider)
        return cls(
            term=term,
            liveness=Liveness(cluster, agents),
            fleet=fleet,
            converger=Converger(cluster, agents),
            deployments=Deployments(cluster, settings.node, fleet.retire),
            publisher=Publisher(cluster, provider),
            certifier=Certifier(cluster),
        )

    #: Whether this term's ``leader_elected`` event is in the log.
    announced: bool = False

    def close(self) -> None:
        """The term ended: work still under way for it stops."""
        self.certifier.close()


@dataclass
class Leader:
    cluster: ClusterLog
    agents: Agents
    settings: NodeSettings
    secrets: Secrets
    provider: Provider | None
    interval: float = 1.0
    #: Told the seconds of each pass this node makes as leader (metrics).
    on_pass: Callable[[float], None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _duties: Duties | None = None
    #: The last pass's specs and what they were made from (an idle pass makes the same).
    _specs_cache: tuple[Any, dict[str, InstanceSpec]] | None = None

    def wake(self) -> None:
        self._wake.set()

    @property
    def duties(self) -> Duties:
        """This term's duties, made fresh when the term changed."""
        term = self.cluster.term()
        if self._duties is None or self._duties.term != term:
            self._drop_duties()
            self._duties = Duties.for_term(
                term, self.cluster, self.agents, self.settings, self.secrets, self.provider
            )
        return self._duties

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._pause())
            self._wake.clear()
            if not self.cluster.is_leader():
                self._drop_duties()
                continue
            started = time.monotonic()
            try:
                busy = await self.tick()
            except (NotLeader, RaftUnavailable) as e:
                # Leadership or the quorum went mid-pass (a write timed out): the barrier of the
                # next pass says whether this node still leads. Expected, so no traceback.
                log.info("leader pass stopped: %s", e)
                busy = False
            except Exception:
                log.exception("leader pass failed")
                busy = False
            if self.on_pass is not None:
                self.on_pass(time.monotonic() - started)
            if busy:
                self._wake.set()

    def _pause(self) -> float:
        """Until the next pass: the interval, or less while a drain may end on the nodes' word."""
        waiting = self._duties is not None and self._duties.converger.waiting_on_drain
        return min(self.interval, DRAIN_POLL) if waiting else self.interval

    def _drop_duties(self) -> None:
        if self._duties is not None:
            self._duties.close()
            self._duties = None

    async def tick(self) -> bool:
        """One pass; True when it changed something and another pass should follow at once.

        It starts with a commit barrier: decisions are taken on a state that includes every write
        acknowledged so far, by a node that a majority still follows. A leader cut off from the
        majority fails the barrier and stops acting (commands to nodes, provider calls) right there.
        """
        try:
            await self.cluster.barrier()
        except (NotLeader, RaftUnavailable) as e:
            log.info("not reconciling: %s", e)
            return False
        duties = self.duties
        if not duties.announced:
            elected = command("leader_elected", node=self.settings.node, term=duties.term, at=time.time())
            await self.cluster.execute(elected)
            duties.announced = True
        view = self.cluster.view()
        config = desired_project(view)
        observed, reshaped = await duties.liveness.observe(view, duties.converger.failed)
        if reshaped or await duties.fleet.replace_dead(view, config) or await duties.fleet.promote(view):
            return True
        running, optional = self._with_surge(view, config, observed)
        placements = await duties.fleet.schedule(view, running, optional)
        if duties.fleet.reshaped or await duties.publisher.learn_public_addresses(view):
            return True
        specs = self._specs(view, running, placements, duties.fleet.ports, observed)
        changed = await duties.converger.converge(view, running, specs, observed, duties.liveness.routed)
        await duties.deployments.update(view, running, specs, observed, optional)
        await duties.publisher.publish(view, config, placements)
        await duties.certifier.keep(view, config)
        return changed

    def _with_surge(
        self, view: ClusterState, config: Config | None, observed: Observed
    ) -> tuple[Config | None, Set[str]]:
        """The project as this pass runs it, start-first services with their surge instances
        (:mod:`octctl.leader.surge`), and the names of those (placed if there is room, never
        grown for)."""
        if config is None or all(s.update.order != "start-first" for s in config.project.services):
            return config, frozenset()
        current = self._specs(view, config, view["placements"], view.get("instance_ports", {}), observed)
        draining = {key.rpartition("@")[0] for key in draining_of(view)}
        counts = surge(config, current, observed, view["placements"], draining)
        return with_surge(config, counts), surge_instances(config, counts)

    def _specs(
        self,
        view: ClusterState,
        config: Config | None,
        placements: dict[str, str],
        ports: dict[str, int],
        observed: Observed,
    ) -> dict[str, InstanceSpec]:
        deployment = view["deployment"]
        if config is None or deployment is None:
            return {}
        rollout = Rollout(
            deployment["id"],
            view["cluster"],
            view["source_dir"],
            self.settings.dns_domain,
            volumes=volumes_of(view),
            network_disks=self.provider is not None and self.provider.network_disks,
        )
        now = running_now(view, config, placements, observed)
        key = (view, config, dict(placements), dict(ports), now)
        cached = self._specs_cache
        if (
            cached is not None
            and cached[0][0] is view
            and cached[0][1] is config
            and cached[0][2:] == key[2:]
        ):
            return cached[1]  # an idle pass: the same replica view, project and placements
        specs = instance_specs(config, placements, view["nodes"], rollout, ports, now)
        self._specs_cache = (key, specs)
        return specs


def running_now(
    view: ClusterState, config: Config, placements: dict[str, str], observed: Observed
) -> dict[str, Running]:
    """What each instance of a service replaced beside runs on its node now (what its spec is
    rendered against: :func:`octctl.specs.instance_specs`)."""
    found = {}
    for service in config.project.services:
        if not replaced_beside(config, service):
            continue
        for instance in instance_names(service):
            node = placements.get(instance, "")
            # (a node that missed this pass's poll: what it last said, so its spec does not change)
            seen = observed.get(node, {}).get(instance) or view["instances"].get(node, {}).get(instance)
            if seen is not None:
                found[instance] = Running(str(seen.get("spec_hash", "")), seen.get("port"))
    return found
