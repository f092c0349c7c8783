"""Which nodes answer, and what they run: the leader's heartbeat.

Every pass the leader asks each agent for its instances (one call per node, concurrently). The
answers are recorded in Raft when they differ from what is recorded, so a new leader, ``oct
status`` and the DNS zone see them; a node that misses :data:`UNREACHABLE_AFTER` polls in a row is
marked unreachable (its services move, and past ``replace_dead_after`` the node is replaced).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from octctl.leader.ports import Agents, ClusterLog, Observed
from octctl.runtime.base import InstanceStatus
from octctl.state.model import ClusterState, api_address, command

__all__ = ["UNREACHABLE_AFTER", "Liveness"]

log = logging.getLogger(__name__)

#: Consecutive failed polls before a node counts as unreachable (a busy agent may miss one).
UNREACHABLE_AFTER = 3
#: A ready node's ``last_seen`` is refreshed in Raft at most this often (seconds).
SEEN_REFRESH = 10.0


@dataclass
class Liveness:
    cluster: ClusterLog
    agents: Agents
    #: node -> consecutive failed polls
    misses: dict[str, int] = field(default_factory=dict)
    #: node -> what its ingress routes to, as its agent said this pass (nodes that answered).
    routed: dict[str, frozenset[str] | None] = field(default_factory=dict)

    async def observe(
        self, view: ClusterState, failures: Mapping[tuple[str, str], InstanceStatus]
    ) -> tuple[Observed, bool]:
        """What every reachable agent runs (with the pushes that failed on it, which the agent
        does not list), and whether a node changed status (the cluster's shape changed)."""
        nodes = list(view["nodes"].values())
        results = await asyncio.gather(
            *(self.agents.report(api_address(n)) for n in nodes), return_exceptions=True
        )
        observed: Observed = {}
        self.routed = {}
        reshaped = False
        now = time.time()
        # Written together at the end: group commit carries them in one Raft entry, where one
        # write per node after another cost a commit each (60 nodes; bench/scale.py).
        writes: list[dict[str, Any]] = []
        # Every answering node's last_seen is refreshed together, once one is older than
        # SEEN_REFRESH: one state change every ten seconds however many nodes, instead of one
        # pass in every few changing the state (and every derived cache) for a node or two.
        refresh = any(
            n["status"] == "ready" and now - (n["last_seen"] or 0) > SEEN_REFRESH
            for n, result in zip(nodes, results, strict=True)
            if not isinstance(result, BaseException)
        )
        for node, result in zip(nodes, results, strict=True):
            if isinstance(result, BaseException):
                misses = self.misses[node["id"]] = self.misses.get(node["id"], 0) + 1
                if node["status"] == "ready" and misses >= UNREACHABLE_AFTER:
                    log.warning("node %s is unreachable: %s", node["id"], result)
                    writes.append(command("node_status", node=node["id"], status="unreachable", at=now))
                    reshaped = True
                continue
            self.misses.pop(node["id"], None)
            self.routed[node["id"]] = result.ingress
            seen = {i.service: i.model_dump(mode="json") for i in result.instances}
            for (node_id, service), failure in failures.items():
                if node_id == node["id"] and service not in seen:
                    seen[service] = failure.model_dump(mode="json")
            observed[node["id"]] = seen
            if node["status"] in ("joining", "unreachable"):
                reshaped = True
            if node["status"] in ("joining", "unreachable") or (node["status"] == "ready" and refresh):
                writes.append(command("node_status", node=node["id"], status="ready", at=now))
            if view["instances"].get(node["id"]) != seen:
                writes.append(command("observe", node=node["id"], instances=seen, at=now))
        await asyncio.gather(*(self.cluster.execute(w) for w in writes))
        return observed, reshaped
