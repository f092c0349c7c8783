"""Volumes on network disks (EBS on aws), as the leader handles them: a service's disk is attached
to its node before the service is pushed there, and follows it to the replacement of a dead node,
launched in the disk's zone."""

from __future__ import annotations

from octctl.leader.liveness import UNREACHABLE_AFTER
from octctl.providers.base import Disk, DiskRequest, NodeRequest
from octctl.state.desired import desired_project
from octctl.state.model import command
from octctl.volumes import waiting_reason
from tests.unit.leader_fakes import FakeProvider, deploy, node, project, service, ticks


class DiskProvider(FakeProvider):
    """Disks in zone ``z-b``; the first attach of each disk fails (AWS said no, once)."""

    network_disks = True

    def __init__(self) -> None:
        super().__init__()
        self.attached: list[tuple[str, str | None, str]] = []
        self.refusals = 1

    def attach_disk(self, request: DiskRequest, node: str) -> Disk | None:
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("IncorrectState: the volume is busy")
        self.attached.append((request.volume, request.disk, node))
        return Disk(request.disk or f"vol-{request.volume}", "z-b", "/dev/sdf")


def joined(raft, node_id: str) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    record = {**node(9), "id": node_id}
    asyncio.run(raft.execute(command("node_joined", node=record)))


def test_the_disk_is_attached_before_its_service_runs_and_follows_it_to_a_replacement(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    provider = DiskProvider()
    reconciler.provider = provider
    # (web, the larger, goes first onto node-2, this leader's own node: db's lands on a follower)
    spec = project(service("web", memory=512), service("db", volumes=["data:/data"]))
    spec["project"]["cluster"] = {"replace_dead_after": 30}
    deploy(raft, spec)

    ticks(reconciler, 1)  # placed; the attach is refused: db is held back
    home = raft.state["volumes"]["data"]["node"]
    assert home != "node-2"
    assert "disk" not in raft.state["volumes"]["data"]
    assert not [s for s in agents.specs if s.service == "db"]

    ticks(reconciler, 2)
    record = raft.state["volumes"]["data"]
    assert provider.attached == [("data", None, home)]
    assert (record["disk"], record["zone"], record["device"], record["attached"]) == (
        "vol-data",
        "z-b",
        "/dev/sdf",
        home,
    )
    pushed = [s for s in agents.specs if s.service == "db"]
    assert pushed and all((m.disk, m.device) == ("vol-data", "/dev/sdf") for s in pushed for m in s.volumes)

    # db's node dies for good: it is replaced in the disk's zone, and db waits for that node.
    agents.down.add(f"{raft.state['nodes'][home]['address']}:31888")
    ticks(reconciler, UNREACHABLE_AFTER + 1)
    raft.state["nodes"][home]["last_seen"] = 1.0
    ticks(reconciler, 2)
    assert home not in raft.state["nodes"]
    replacement = raft.state["volumes"]["data"]["node"]
    assert replacement in raft.state["provisioning"]
    zoned: list[NodeRequest] = [r for r in provider.provisioned if r.zone is not None]
    assert [r.zone for r in zoned] == ["z-b"]
    assert "db" not in raft.state["placements"]
    db = desired_project(raft.state).service("db")  # type: ignore[union-attr]
    assert (
        waiting_reason(
            db,
            raft.state["volumes"],
            raft.state["nodes"],
            raft.state["placements"],
            raft.state["provisioning"],
        )
        == f"waiting for {replacement}, which holds data ({replacement} is launching)"
    )

    joined(raft, replacement)
    agents.specs.clear()
    ticks(reconciler, 3)
    assert provider.attached[-1] == ("data", "vol-data", replacement)
    assert raft.state["placements"]["db"] == replacement
    assert raft.state["volumes"]["data"]["attached"] == replacement
    assert [s.node for s in agents.specs if s.service == "db"] == [replacement]
    trail = [(e["kind"], e["subject"]) for e in raft.state["events"] if e["kind"].startswith("volume.")]
    assert trail == [("volume.attached", "data"), ("volume.moving", "data"), ("volume.attached", "data")]
