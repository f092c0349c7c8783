"""The project's EBS volumes as the CLI sees them: listed with their size and monthly cost, kept
by ``oct destroy``, removed by ``oct destroy --volumes``.

They are found by the project's tags (:mod:`octctl.providers.aws.ebs`), not the ledger: the
leader creates them, and a cluster destroyed earlier may have kept some.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from octcli.errors import OctError
from octcli.providers.aws.ledger import aws_settings, connect, ledger_of
from octctl.api.models import VolumeView

if TYPE_CHECKING:
    from octcli.state import ClusterRecord
    from octctl.config import Config

__all__ = ["adopt_disks", "backup_snapshots", "disks_region", "kept_disks", "remove_disks", "snapshot_backup"]

Phase = Callable[[str], None]


def disks_region(config: Config, record: ClusterRecord | None) -> str:
    ledger = ledger_of(record)
    return ledger.region if ledger is not None else aws_settings(config).region


def kept_disks(config: Config, record: ClusterRecord | None) -> list[VolumeView]:
    """Every EBS volume tagged with the project, whichever cluster made it."""
    from octctl.providers.aws import ebs
    from octctl.providers.aws.pricing import GP3_GB_MONTHLY

    clients = connect(disks_region(config, record))
    found = []
    for disk in ebs.project_disks(clients, config.project.name):
        tags = {t["Key"]: t["Value"] for t in disk.get("Tags", [])}
        size = int(disk.get("Size", 0))
        cost = size * GP3_GB_MONTHLY
        found.append(
            VolumeView(
                name=tags.get(ebs.VOLUME_TAG, disk["VolumeId"]),
                service=tags.get(ebs.SERVICE_TAG, ""),
                node=None,
                state="kept",
                where=f"EBS {disk['VolumeId']} in {disk['AvailabilityZone']}, ${cost:.2f}/month",
                size_gb=size,
            )
        )
    return sorted(found, key=lambda v: v.name)


def remove_disks(config: Config, record: ClusterRecord | None, *, on_phase: Phase) -> None:
    """Delete every EBS volume of the project, once the instances that had them are gone."""
    from octctl.providers.aws import ebs
    from octctl.providers.aws.session import call, wait_for

    clients = connect(disks_region(config, record))
    for disk in ebs.project_disks(clients, config.project.name):
        volume = disk["VolumeId"]
        if disk.get("Attachments"):  # its instance is still shutting down
            wait_for(clients.ec2, "volume_available", delay=3, attempts=100, VolumeIds=[volume])
        call(clients.ec2, "delete_volume", VolumeId=volume)
        on_phase(f"deleted volume {volume}")


def snapshot_backup(config: Config, record: ClusterRecord | None, service: str, name: str) -> dict[str, str]:
    """Snapshot every volume of ``service`` as the backup ``name``: ``{volume: snapshot id}``."""
    from octctl.providers.aws import ebs

    volumes = [v.name for v in config.service(service).volumes]
    if not volumes:
        raise OctError(f"service {service!r} has no volumes")
    clients = connect(disks_region(config, record))
    cluster = record.cluster if record is not None else ""
    taken = {}
    for volume in volumes:
        found = ebs.project_disks(clients, config.project.name, volume)
        if not found:
            raise OctError(f"volume {volume} of {service} has no EBS disk yet (is {service} deployed?)")
        taken[volume] = ebs.snapshot(
            clients, found[0], project=config.project.name, cluster=cluster, backup=name
        )
    return taken


def backup_snapshots(config: Config, record: ClusterRecord | None, name: str) -> dict[str, str]:
    """The snapshots of the backup ``name`` (``{volume: snapshot id}``); OctError if there is none."""
    from octctl.providers.aws import ebs
    from octctl.providers.aws.resources import CLUSTER_TAG, PROJECT_TAG
    from octctl.providers.aws.session import call

    clients = connect(disks_region(config, record))
    found = call(
        clients.ec2,
        "describe_snapshots",
        OwnerIds=["self"],
        Filters=[
            {"Name": f"tag:{PROJECT_TAG}", "Values": [config.project.name]},
            {"Name": f"tag:{ebs.BACKUP_TAG}", "Values": [name]},
        ],
    ).get("Snapshots", [])
    snapshots = {}
    earlier = []
    for snapshot in found:
        tags = {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}
        snapshots[tags.get(ebs.VOLUME_TAG, "")] = snapshot["SnapshotId"]
        if record is not None and tags.get(CLUSTER_TAG) != record.cluster:
            earlier.append(snapshot["SnapshotId"])
    if not snapshots:
        raise OctError(f"no backup {name!r} of {config.project.name} (neither a file nor EBS snapshots)")
    if earlier and record is not None:  # an earlier cluster's backup: handed to this one
        ebs.adopt(clients, record.cluster, [], earlier)
    return snapshots


def adopt_disks(config: Config, record: ClusterRecord) -> list[str]:
    """Hand the disks an earlier cluster of the project kept to this one (its nodes may touch
    only their own cluster's), before the cluster is asked to deploy."""
    if not any(s.volumes for s in config.project.services):
        return []
    from octctl.providers.aws import ebs

    clients = connect(disks_region(config, record))
    return ebs.adopt(clients, record.cluster, ebs.project_disks(clients, config.project.name))
