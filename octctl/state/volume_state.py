"""The state command of volumes: where each one's data lives. Deterministic like every command
(see :mod:`octctl.state.model`)."""

from __future__ import annotations

from octctl.state.events import note
from octctl.state.shape import ClusterState, CommandError, VolumeRecord

__all__ = ["volume_disk", "volume_homes", "volume_moved"]


def volume_homes(state: ClusterState, homes: dict[str, dict[str, str]], at: float) -> None:
    """Record the node of each volume not recorded yet (``{name: {"service", "node"}}``).

    A recorded home is never moved by this command: the data is on that node, and a second
    leader that computed a home from an older snapshot must not send the service elsewhere.
    """
    unknown = sorted(h["node"] for h in homes.values() if h.get("node") not in state["nodes"])
    if unknown:
        raise CommandError(f"volume homes on unknown nodes: {unknown}")
    volumes = state.setdefault("volumes", {})
    for name, home in sorted(homes.items()):
        if name not in volumes:
            volumes[name] = {"service": home["service"], "node": home["node"], "created_at": at}


def volume_disk(
    state: ClusterState, volume: str, disk: str, zone: str, device: str, node: str, at: float | None = None
) -> None:
    """Record the disk that holds ``volume`` and the node it is now attached to (the leader
    attached it, :mod:`octctl.leader.disks`, before placing the service there)."""
    record = volumes_of_state(state).get(volume)
    if record is None:
        raise CommandError(f"volume {volume} has no home")
    if node not in state["nodes"]:
        raise CommandError(f"volume {volume} attached to unknown node {node}")
    record.update({"disk": disk, "zone": zone, "device": device, "attached": node})
    note(
        state,
        "volume.attached",
        volume,
        f"disk {disk} of {volume} attached to {node} ({zone}, {device})",
        None,
    )


def volume_moved(state: ClusterState, volumes: list[str], node: str, at: float) -> None:
    """The node holding ``volumes`` was replaced: their disks follow the service to ``node``, the
    replacement launched in the disks' zone (or any node there). Only volumes on a disk move: a
    folder on a dead machine cannot."""
    if node not in state["nodes"] and node not in state["provisioning"]:
        raise CommandError(f"volumes moved to unknown node {node}")
    records = volumes_of_state(state)
    for name in sorted(volumes):
        record = records.get(name)
        if record is None or "disk" not in record:
            raise CommandError(f"volume {name} has no disk to move")
        record["node"] = node
        note(state, "volume.moving", name, f"{name}'s disk goes to {node}, which replaces its dead node", at)


def volumes_of_state(state: ClusterState) -> dict[str, VolumeRecord]:
    return state.setdefault("volumes", {})
