"""Admitting nodes to the cluster: who may join, and as a voter or a non-voting replica.

The leader admits (the join route only runs there). A joiner must prove it holds the cluster's
Raft secret: a member that cannot speak the encrypted Raft would never answer, and in a small
cluster could leave no majority. Voter seats are capped at :data:`MAX_VOTERS`, and a node the
leader promoted but that is not a Raft member yet already holds one. Counting the seats and
taking one is a read then a write, so admissions run one at a time: two joiners must not both
take the last seat.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from octctl.api.models import JoinRequest, MembersResponse
from octctl.node_settings import Secrets
from octctl.state.model import MAX_VOTERS, ClusterState, NodeRecord, command, pending_voters

log = logging.getLogger(__name__)


class ClusterLog(Protocol):
    """What admission needs of the replicated log (``RaftNode`` on a node, a fake in tests)."""

    def view(self) -> ClusterState: ...

    def members(self) -> list[str]: ...

    async def add_member(self, address: str) -> None: ...

    async def execute(self, cmd: dict[str, Any]) -> Any: ...


class Refused(Exception):
    """A join this cluster does not take; the message says why and what the joiner can do."""


class WrongSecret(Refused):
    """The joiner's proof is not made with this cluster's Raft secret."""


class NoVoterSeat(Refused):
    """Every voter seat is taken: the joiner may come back as a non-voting replica."""


class Membership:
    def __init__(
        self, cluster_log: ClusterLog, secrets: Secrets, cluster: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._log = cluster_log
        self._secrets = secrets
        self._cluster = cluster
        self._clock = clock
        self._admitting = asyncio.Lock()

    def members(self) -> MembersResponse:
        """The voters, and how many more may join as voters (joiners pick their role from it)."""
        current = self._log.members()
        taken = len(current) + len(pending_voters(self._log.view(), current))
        return MembersResponse(members=current, voter_slots=max(0, MAX_VOTERS - taken))

    async def admit(self, request: JoinRequest) -> bool:
        """Make ``request``'s node a member in the role it asks for; False when it already was
        (a restarted member asking again), so nothing changed.

        Raises :class:`WrongSecret` or :class:`NoVoterSeat` when the join is refused.
        """
        expected = self._secrets.raft_proof(self._cluster, request.node, request.address, request.raft_port)
        if not hmac.compare_digest(request.proof, expected):
            log.warning(
                "refused node %s at %s: it does not hold this cluster's Raft secret",
                request.node,
                request.address,
            )
            raise WrongSecret(
                f"node {request.node} does not hold the Raft secret of cluster {self._cluster} "
                "(or belongs to another cluster); check its secrets.json"
            )
        address = f"{request.address}:{request.raft_port}"
        async with self._admitting:
            view = self._log.view()
            voters = self._log.members()
            known = view["nodes"].get(request.node)
            if request.voter and address not in voters:
                promoted = request.node in pending_voters(view, voters)
                if not promoted and len(voters) + len(pending_voters(view, voters)) >= MAX_VOTERS:
                    raise NoVoterSeat(
                        f"cluster {self._cluster} has {MAX_VOTERS} voters; join as a non-voting replica"
                    )
                await self._log.add_member(address)
            elif known is not None and known.get("voter", True) == request.voter:
                return False
            await self._log.execute(command("node_joined", node=node_record(request, self._clock())))
        log.info(
            "node %s joined at %s as a %s", request.node, address, "voter" if request.voter else "non-voter"
        )
        return True


def node_record(request: JoinRequest, now: float) -> NodeRecord:
    """The state's record of a node that just joined: ``joining`` until the leader sees its agent."""
    record: NodeRecord = {
        "id": request.node,
        "address": request.address,
        "api_port": request.api_port,
        "raft_port": request.raft_port,
        "dns_port": request.dns_port,
        "cpus": request.cpus,
        "memory": request.memory,
        "status": "joining",
        "voter": request.voter,
        "joined_at": now,
        "last_seen": None,
    }
    if request.instance_type:
        record["instance_type"] = request.instance_type
    return record
