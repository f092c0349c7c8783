"""Volumes and the nodes that hold them: pure functions over the config and the state.

A volume lives where its service first ran (the state records it, :mod:`octctl.state.volume_state`);
from then on the service is pinned to that node, and while the node is not ready the service waits
rather than start empty elsewhere. On a local cluster every node shares one Docker engine and one
folder for process volumes, but the pin holds all the same, so the behaviour tried locally is the
one a real machine's disk needs. How each runtime keeps the data: the runtimes' ``volumes``
modules.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from octctl.config import Config, Service
from octctl.state.shape import ClusterState, NodeRecord, VolumeRecord, volumes_of

__all__ = ["new_homes", "pins", "waiting_in", "waiting_reason"]


def _home(service: Service, records: Mapping[str, VolumeRecord]) -> tuple[str, str] | None:
    """(node, volume) of the first of the service's volumes that has a home."""
    for volume in service.volumes:
        record = records.get(volume.name)
        if record is not None:
            return record["node"], volume.name
    return None


def pins(config: Config, records: Mapping[str, VolumeRecord]) -> dict[str, str]:
    """instance -> the node it must run on: where its service's volumes are. (A service with
    volumes has one instance, named like the service.)"""
    found = {}
    for service in config.project.services:
        home = _home(service, records)
        if home is not None:
            found[service.name] = home[0]
    return found


def new_homes(
    config: Config, placements: Mapping[str, str], records: Mapping[str, VolumeRecord]
) -> dict[str, dict[str, str]]:
    """The volumes to record now: those of a placed service that have no home yet."""
    homes = {}
    for service in config.project.services:
        node = placements.get(service.name)
        if node is None:
            continue
        for volume in service.volumes:
            if volume.name not in records:
                homes[volume.name] = {"service": service.name, "node": node}
    return homes


def waiting_reason(
    service: Service,
    records: Mapping[str, VolumeRecord],
    nodes: Mapping[str, NodeRecord],
    placements: Mapping[str, str],
    launching: Collection[str] = (),
) -> str | None:
    """Why the service does not run, when it is its volumes' node: for ``oct status`` and the
    deployment's message. None when it is placed or has no home yet."""
    home = _home(service, records)
    if home is None or service.name in placements:
        return None
    node, volume = home
    record = nodes.get(node)
    if record is None and node in launching:
        why = f"{node} is launching"
    elif record is None:
        why = f"{node} has left the cluster: `oct destroy --volumes` drops the volumes it held"
    elif record["status"] == "ready":
        why = f"{node} has no room for it"
    else:
        why = f"{node} is {record['status']}"
    return f"waiting for {node}, which holds {volume} ({why})"


def waiting_in(state: ClusterState, service: Service) -> str | None:
    """:func:`waiting_reason` of ``service`` in ``state``."""
    return waiting_reason(
        service, volumes_of(state), state["nodes"], state["placements"], state["provisioning"]
    )
