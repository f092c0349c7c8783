"""Network disks follow their volume's service: attached to the node it is placed on.

On a provider whose volumes are network disks (EBS), a volume's data is not on its node but on a
disk the leader attaches there before the service may start (:func:`octctl.specs.instance_specs`
holds the instance back until the state says the disk is attached to its node). The first time,
the provider finds the volume's disk by its tags (one a destroyed cluster of the project kept) or
creates it in the node's zone; when the node holding it is replaced, the disk is detached from the
dead machine and attached to the replacement (:meth:`octctl.leader.fleet.Fleet.replace_dead`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from octctl.config import Config
from octctl.leader.ports import ClusterLog
from octctl.providers.base import DiskRequest, Provider
from octctl.state.model import ClusterState, command, volumes_of

__all__ = ["attach_disks", "disk_zone"]

log = logging.getLogger(__name__)


async def attach_disks(
    cluster: ClusterLog, provider: Provider, view: ClusterState, config: Config, placements: Mapping[str, str]
) -> None:
    """Attach every placed service's disks to its node, one provider call per disk not there yet.

    A failure is logged and tried again next pass; the service stays held back meanwhile.
    """
    records = volumes_of(view)
    for service in config.project.services:
        node = placements.get(service.name)
        if node is None:
            continue
        for volume in service.volumes:
            record = records.get(volume.name)
            if record is None or record["node"] != node or record.get("attached") == node:
                continue
            request = DiskRequest(
                config.project.name, volume.name, service.name, volume.size, record.get("disk")
            )
            try:
                disk = await asyncio.to_thread(provider.attach_disk, request, node)
            except Exception as e:
                log.error("cannot attach the disk of volume %s to %s: %s", volume.name, node, e)
                continue
            if disk is None:
                continue
            log.info("volume %s: disk %s attached to %s as %s", volume.name, disk.id, node, disk.device)
            await cluster.execute(
                command(
                    "volume_disk",
                    volume=volume.name,
                    disk=disk.id,
                    zone=disk.zone,
                    device=disk.device,
                    node=node,
                    at=time.time(),
                )
            )


def disk_zone(view: ClusterState, node: str) -> str | None:
    """The zone of the disks homed at ``node``: where it must be launched, when it replaces a
    dead node that held them (None: anywhere)."""
    zones = {r["zone"] for r in volumes_of(view).values() if r["node"] == node and "zone" in r}
    return min(zones) if zones else None
