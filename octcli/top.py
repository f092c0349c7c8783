"""``oct top``: CPU and memory of the cluster's instances and nodes, from two readings.

The nodes report CPU time used so far; a rate needs two readings, so a frame holds the newest
and the cores used since the one before (none on the first frame). Pure: the readings in, the
figures out; :mod:`octcli.terminal` draws them and :mod:`octcli.api` polls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from octctl.api.models import StatusResponse, UsageResponse

__all__ = ["Frame", "InstanceFigures", "NodeFigures", "frame"]


@dataclass(frozen=True)
class InstanceFigures:
    instance: str
    node: str
    state: str
    health: str
    restarts: int
    cores: float | None  # CPU cores used since the last reading (None: first reading, or unknown)
    memory_bytes: int | None


@dataclass(frozen=True)
class NodeFigures:
    node: str
    role: str
    status: str
    cpus: int  # millicores offered
    memory: int  # MB offered
    cores: float | None
    memory_bytes: int
    error: str | None = None


@dataclass(frozen=True)
class Frame:
    status: StatusResponse
    usage: UsageResponse
    nodes: list[NodeFigures] = field(default_factory=list)
    instances: list[InstanceFigures] = field(default_factory=list)


def _times(usage: UsageResponse | None) -> dict[tuple[str, str], float]:
    if usage is None:
        return {}
    return {(n.node, u.service): u.cpu_seconds for n in usage.nodes for u in n.instances}


def frame(status: StatusResponse, usage: UsageResponse, before: UsageResponse | None = None) -> Frame:
    """The figures of ``usage``, CPU rates since ``before`` (the previous reading)."""
    then, now = _times(before), _times(usage)
    elapsed = usage.at - before.at if before is not None else 0.0
    cores = {
        key: max(0.0, (seconds - then[key]) / elapsed)
        for key, seconds in now.items()
        if key in then and elapsed > 0
    }
    memory = {(n.node, u.service): u.memory_bytes for n in usage.nodes for u in n.instances}
    instances = [
        InstanceFigures(
            instance=i.name,
            node=i.node or "-",
            state=i.state,
            health=i.health,
            restarts=i.restarts,
            cores=cores.get((i.node or "", i.name)),
            memory_bytes=memory.get((i.node or "", i.name)),
        )
        for s in sorted(status.services, key=lambda s: s.name)
        for i in s.instances
    ]
    errors = {n.node: n.error for n in usage.nodes}
    nodes = []
    for n in status.nodes:
        mine = [key for key in now if key[0] == n.id]
        rates = [cores[key] for key in mine if key in cores]
        nodes.append(
            NodeFigures(
                node=n.id,
                role=n.role,
                status=n.status,
                cpus=n.cpus,
                memory=n.memory,
                cores=sum(rates) if rates or (before is not None and not mine) else None,
                memory_bytes=sum(memory[key] for key in mine),
                error=errors.get(n.id),
            )
        )
    return Frame(status=status, usage=usage, nodes=nodes, instances=instances)
