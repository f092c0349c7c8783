"""Push the difference between the specs and what agents run: removals first, then starts.

Removals go first because they free ports and capacity. A service is started (or replaced) only
once everything it ``depends_on`` runs with its current spec; the pushes of one pass run
concurrently, so independent services start in parallel across nodes. A push that failed (say,
an image that cannot be pulled) is not retried for the same spec and deployment: a new deploy
retries it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from octctl.config import Config
from octctl.leader.ports import Agents, ClusterLog, Observed
from octctl.peers import PeerError
from octctl.runtime.base import InstanceSpec, InstanceStatus
from octctl.state.model import ClusterState, NodeRecord, api_address, command

__all__ = ["Converger", "is_up"]

log = logging.getLogger(__name__)


def is_up(instance: Mapping[str, Any] | None, spec: InstanceSpec) -> bool:
    return (
        instance is not None
        and instance.get("spec_hash") == spec.spec_hash
        and instance["state"] == "running"
    )


def _settled(current: Mapping[str, Any] | None, spec: InstanceSpec) -> bool:
    """Running with this spec, or being restarted by its runtime ("exited" is re-applied)."""
    return (
        current is not None
        and current.get("spec_hash") == spec.spec_hash
        and current["state"] not in ("failed", "exited")
    )


@dataclass
class Converger:
    cluster: ClusterLog
    agents: Agents
    #: (node, service) -> the failed status of a push, with its spec hash and deployment.
    failed: dict[tuple[str, str], InstanceStatus] = field(default_factory=dict)

    def _already_failed(self, spec: InstanceSpec) -> bool:
        failure = self.failed.get((spec.node, spec.service))
        return failure is not None and (failure.spec_hash, failure.deployment) == (
            spec.spec_hash,
            spec.deployment,
        )

    def _pushes(
        self, config: Config, specs: Mapping[str, InstanceSpec], observed: Observed
    ) -> list[InstanceSpec]:
        pushes: list[InstanceSpec] = []
        for name in config.topological_order():
            spec = specs.get(name)
            if spec is None or _settled(observed.get(spec.node, {}).get(name), spec):
                continue
            if self._already_failed(spec):
                continue
            deps = config.service(name).depends_on
            if all(d in specs and is_up(observed.get(specs[d].node, {}).get(d), specs[d]) for d in deps):
                pushes.append(spec)
        return pushes

    async def converge(
        self,
        view: ClusterState,
        config: Config | None,
        specs: Mapping[str, InstanceSpec],
        observed: Observed,
    ) -> bool:
        """One round of removals and pushes; True when one of them made progress."""
        project = config.project.name if config else None
        nodes = view["nodes"]
        removals = [
            (node, service, instance["project"])
            for node, instances in observed.items()
            for service, instance in instances.items()
            if node in nodes
            and (service not in specs or specs[service].node != node or instance.get("project") != project)
        ]
        pushes = [s for s in self._pushes(config, specs, observed) if s.node in nodes] if config else []
        if not removals and not pushes:
            return False
        removed = await asyncio.gather(*(self._remove(nodes[n], p, s) for n, s, p in removals))
        results = await asyncio.gather(*(self._push(nodes[spec.node], spec) for spec in pushes))
        progressed = any(removed)
        for spec, status in zip(pushes, results, strict=True):
            if status is None:
                continue
            progressed = True
            instance = status.model_dump(mode="json")
            observed.setdefault(spec.node, {})[spec.service] = instance
            await self.cluster.execute(
                command("observe_one", node=spec.node, service=spec.service, instance=instance)
            )
        # Only progress earns an immediate next pass: a node refusing every call must not spin us.
        return progressed

    async def _remove(self, node: NodeRecord, project: str, service: str) -> bool:
        try:
            await self.agents.remove(api_address(node), project, service, self.cluster.term())
        except PeerError as e:
            log.warning("could not remove %s from %s: %s", service, node["id"], e)
            return False
        self.failed.pop((node["id"], service), None)
        await self.cluster.execute(command("observe_one", node=node["id"], service=service, instance=None))
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
