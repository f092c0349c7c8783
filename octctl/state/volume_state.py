"""The state command of volumes: where each one's data lives. Deterministic like every command
(see :mod:`octctl.state.model`)."""

from __future__ import annotations

from octctl.state.shape import ClusterState, CommandError

__all__ = ["volume_homes"]


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
