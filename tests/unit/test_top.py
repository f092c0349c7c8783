"""``oct top``'s figures from two readings: CPU as cores used between them, none on the first."""

from __future__ import annotations

from octcli.top import frame
from octctl.api.models import NodeUsage, NodeView, StatusResponse, UsageResponse
from octctl.runtime.base import Usage


def status() -> StatusResponse:
    node = NodeView(
        id="n1", address="a", api_port=1, role="leader", status="ready", cpus=2000, memory=2048,
        cpus_used=0, memory_used=0,
    )  # fmt: skip
    instances = [
        {"name": name, "node": "n1", "address": "a", "state": "running"} for name in ("web", "web.2")
    ]
    services = [
        {"name": "web", "node": "n1", "address": "a", "runtime": "process", "state": "running",
         "instances": instances}
    ]  # fmt: skip
    return StatusResponse.model_validate(
        {"cluster": "c", "project": "p", "node": "n1", "leader": "n1", "stale": False, "deployment": None,
         "nodes": [node.model_dump()], "services": services}
    )  # fmt: skip


def reading(at: float, cpu: dict[str, float], error: str | None = None) -> UsageResponse:
    used = [
        Usage(project="p", service=name, runtime="process", cpu_seconds=s, memory_bytes=2**20)
        for name, s in cpu.items()
    ]
    return UsageResponse(at=at, nodes=[NodeUsage(node="n1", instances=used, error=error)])


def test_cpu_is_cores_used_between_two_readings() -> None:
    first = frame(status(), reading(100.0, {"web": 10.0, "web.2": 1.0}))
    assert [i.cores for i in first.instances] == [None, None] and first.nodes[0].cores is None
    later = frame(
        status(), reading(102.0, {"web": 12.0, "web.2": 1.5}), reading(100.0, {"web": 10.0, "web.2": 1.0})
    )
    assert [(i.instance, i.cores) for i in later.instances] == [("web", 1.0), ("web.2", 0.25)]
    assert later.nodes[0].cores == 1.25 and later.nodes[0].memory_bytes == 2 * 2**20


def test_a_restarted_instance_never_shows_negative_cpu_and_a_silent_node_says_why() -> None:
    later = frame(status(), reading(102.0, {"web": 0.5}, error="timed out"), reading(100.0, {"web": 10.0}))
    assert later.instances[0].cores == 0.0 and later.instances[1].memory_bytes is None
    assert later.nodes[0].error == "timed out"
