"""In-memory fakes of Raft, the agents and the provider, and the steps the leader's tests take.

The end-to-end suite runs the leader's loop with real processes; against these fakes each tick
can be stepped and inspected, so ordering and failure rules are pinned down exactly. The
``test_leader_*`` modules share them, and ``conftest.py`` wires them to a leader (``parts``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from octctl.leader import Leader
from octctl.peers import AgentReport, PeerError
from octctl.providers.base import NodeRequest, Provider
from octctl.runtime.base import InstanceSpec, InstanceStatus
from octctl.state.machine import RaftUnavailable
from octctl.state.model import ClusterState, NodeRecord, apply_command, command, empty_state, snapshot


class FakeRaft:
    """Commits instantly, in order: the state machine semantics without the network."""

    def __init__(self) -> None:
        self.state = empty_state()
        self.removed_members: list[str] = []
        self.barriers = 0
        self.cut_off = False  # a leader that lost its majority: barriers fail
        self.current_term = 7

    def view(self) -> ClusterState:
        return snapshot(self.state)

    def is_leader(self) -> bool:
        return True

    def term(self) -> int:
        return self.current_term

    def members(self) -> list[str]:
        voters = [n for n in self.state["nodes"].values() if n.get("voter", True)]
        return [f"{n['address']}:{n['raft_port']}" for n in voters]

    async def execute(self, cmd: dict[str, Any], timeout: float = 5.0) -> Any:
        result = apply_command(self.state, cmd)
        if isinstance(result, dict) and set(result) == {"error"}:
            raise ValueError(result["error"])
        return result

    async def remove_member(self, address: str, timeout: float = 15.0) -> None:
        self.removed_members.append(address)

    async def barrier(self, timeout: float = 2.0) -> None:
        self.barriers += 1
        if self.cut_off:
            raise RaftUnavailable("raft did not commit within 2s (no quorum?)")


class FakeAgents:
    """Agents by API address: what each runs, and every call made, in order."""

    def __init__(self) -> None:
        self.running: dict[str, dict[str, InstanceStatus]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.specs: list[InstanceSpec] = []
        self.down: set[str] = set()
        self.fail_image: str | None = None
        self.term = 7  # what every command must carry: the leader's term
        #: address -> what that node's ingress routes to (unknown unless a test says)
        self.routed: dict[str, frozenset[str]] = {}

    def _check(self, address: str) -> None:
        if address in self.down:
            raise PeerError(f"{address}: connection refused")

    async def instances(self, address: str, project: str | None = None) -> list[InstanceStatus]:
        self._check(address)
        return list(self.running.get(address, {}).values())

    async def report(self, address: str, project: str | None = None) -> AgentReport:
        return AgentReport(await self.instances(address, project), self.routed.get(address))

    async def apply(
        self, address: str, spec: InstanceSpec, term: int, timeout: float = 300.0
    ) -> InstanceStatus:
        self._check(address)
        assert term == self.term, "every command carries the leader's term"
        self.calls.append(("apply", address, spec.service))
        self.specs.append(spec)
        state = "failed" if spec.image == self.fail_image else "running"
        status = InstanceStatus(
            project=spec.project,
            service=spec.service,
            runtime=spec.runtime,
            deployment=spec.deployment,
            spec_hash=spec.spec_hash,
            state=state,
            error=f"cannot pull image '{spec.image}'" if state == "failed" else None,
            port=spec.instance_port,
        )
        before = self.running.get(address, {}).get(spec.service)
        if spec.beside and before is not None and before.port != spec.instance_port:
            status.previous_port = before.port  # a runtime keeps it serving until it retires it
        if state == "running":
            self.running.setdefault(address, {})[spec.service] = status
        return status

    async def remove(self, address: str, project: str, service: str, term: int) -> None:
        self._check(address)
        assert term == self.term, "every command carries the leader's term"
        self.calls.append(("remove", address, service))
        self.running.get(address, {}).pop(service, None)


class FakeProvider(Provider):
    def __init__(self) -> None:
        self.provisioned: list[NodeRequest] = []
        self.started: list[str] = []
        self.provision_calls: list[str] = []
        self.reserved = 0
        self.retired: list[str] = []

    def reserve(self, request: NodeRequest) -> str:
        self.reserved += 1
        return f"new-{self.reserved}"

    def provision(self, node: str, request: NodeRequest) -> None:
        self.provision_calls.append(node)
        if node in self.started:
            return  # the same id again: no second machine
        self.started.append(node)
        self.provisioned.append(request)

    def retire(self, node: str) -> None:
        self.retired.append(node)


def node(n: int) -> NodeRecord:
    return {
        "id": f"node-{n}",
        "address": f"127.0.0.{n}",
        "api_port": 31888,
        "raft_port": 31889,
        "cpus": 4000,
        "memory": 4096,
        "status": "ready",
        "joined_at": 0.0,
        "last_seen": 1e12,
    }


def service(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox:1.36", "internal_port": 8000, "cpus": 100, "memory": 32, **extra}


def project(*services: dict[str, Any], nodes: int = 3) -> dict[str, Any]:
    return {
        "project": {
            "name": "shop",
            "state_backend": {"local": {"path": "state.json"}},
            "provider": {"local": {"nodes": nodes}},
            "services": list(services),
        }
    }


def deploy(raft: FakeRaft, spec: dict[str, Any], deployment: str = "d1", zone: str | None = None) -> None:
    asyncio.run(
        raft.execute(
            command("deploy", project=spec, source_dir=None, deployment=deployment, at=0.0, public_zone=zone)
        )
    )


def ticks(reconciler: Leader, count: int) -> list[bool]:
    async def run() -> list[bool]:
        return [await reconciler.tick() for _ in range(count)]

    return asyncio.run(run())


def raft_address_of(node_id: str) -> str:
    n = int(node_id.rsplit("-", 1)[1])
    return f"{node(n)['address']}:{node(n)['raft_port']}"
