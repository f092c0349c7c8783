"""What the leader's collaborators need from the rest of the node, as protocols.

The concrete parts are :class:`octctl.state.machine.RaftNode` (the cluster log) and
:class:`octctl.peers.PeerClient` (the agents); the unit tests pass in-memory fakes. Keeping the
leader on these narrow surfaces is what lets it be tested tick by tick without a network.
"""

from __future__ import annotations

from typing import Any, Protocol

from octctl.peers import AgentReport
from octctl.runtime.base import InstanceSpec, InstanceStatus
from octctl.state.model import ClusterState

__all__ = ["Agents", "ClusterLog", "Observed"]

#: node -> service -> InstanceStatus as JSON: what each reachable agent runs, this pass.
Observed = dict[str, dict[str, dict[str, Any]]]


class ClusterLog(Protocol):
    """The replicated state and the only way to change it (Raft)."""

    def view(self) -> ClusterState:
        """A consistent, read-only copy of the state."""
        ...

    def is_leader(self) -> bool: ...

    def term(self) -> int:
        """The current Raft term: it goes with every command to an agent (fencing)."""
        ...

    def members(self) -> list[str]:
        """Raft addresses of the voting members."""
        ...

    async def execute(self, cmd: dict[str, Any], timeout: float = 5.0) -> Any:
        """Commit one command; raises when this node cannot (not leader, no quorum)."""
        ...

    async def barrier(self, timeout: float = 2.0) -> None:
        """Returns once every write acknowledged so far is applied here and a majority still
        follows this leader; raises otherwise."""
        ...

    async def remove_member(self, address: str, timeout: float = 15.0) -> None: ...


class Agents(Protocol):
    """The agents of the nodes, by API address (``host:port``); raises ``PeerError`` when one
    does not answer or refuses."""

    async def instances(self, address: str, project: str | None = None) -> list[InstanceStatus]: ...

    async def report(self, address: str, project: str | None = None) -> AgentReport:
        """What :meth:`instances` says, and what the node's ingress routes to."""
        ...

    async def apply(
        self, address: str, spec: InstanceSpec, term: int, timeout: float = 300.0
    ) -> InstanceStatus: ...

    async def remove(self, address: str, project: str, service: str, term: int) -> None: ...
