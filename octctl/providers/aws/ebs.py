"""The EBS volumes that hold a cluster's volumes: one per oct volume, found by its tags.

Each is an encrypted gp3 volume in the zone of the node its service first ran on, tagged with the
project, the cluster, the oct volume and its service: the leader finds it again by those tags
(after a failover, or in a new cluster of the project after ``oct destroy`` kept it), and
``oct destroy --volumes`` finds every one of the project's. A volume can only be attached in its
own zone, so a node that holds one is replaced in that zone (``Provider.node_zone``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from octctl.providers.aws.instances import Instance, get_instance
from octctl.providers.aws.resources import CLUSTER_TAG, PROJECT_TAG, AwsResources, tags
from octctl.providers.aws.session import AwsClients, AwsError, call, wait_for
from octctl.providers.base import Disk, DiskRequest

__all__ = [
    "BACKUP_TAG",
    "SERVICE_TAG",
    "VOLUME_TAG",
    "adopt",
    "attach",
    "discard",
    "ensure_disk",
    "project_disks",
    "scratch_from_snapshot",
    "snapshot",
]

VOLUME_TAG = "oct:volume"
SERVICE_TAG = "oct:service"
#: On a backup's snapshots: the backup's name (``<service>-<UTC time>``), what ``oct restore`` takes.
BACKUP_TAG = "oct:backup"
#: Device names oct attaches volumes as (the root volume is /dev/xvda or /dev/sda1).
DEVICES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnop")
#: Volume states that still hold data.
_LIVE = ("creating", "available", "in-use")


def project_disks(clients: AwsClients, project: str, volume: str | None = None) -> list[dict[str, Any]]:
    """The project's EBS volumes (every cluster's, kept ones too), oldest id first."""
    filters = [
        {"Name": f"tag:{PROJECT_TAG}", "Values": [project]},
        {"Name": "tag-key", "Values": [VOLUME_TAG]},
        {"Name": "status", "Values": list(_LIVE)},
    ]
    if volume is not None:
        filters.append({"Name": f"tag:{VOLUME_TAG}", "Values": [volume]})
    found = call(clients.ec2, "describe_volumes", Filters=filters).get("Volumes", [])
    return sorted(found, key=lambda v: v["VolumeId"])


def ensure_disk(
    clients: AwsClients, resources: AwsResources, request: DiskRequest, instance: Instance
) -> dict[str, Any]:
    """The volume's disk: the recorded one, else the project's disk tagged with the volume, else
    a new one in ``instance``'s zone."""
    if request.disk is not None:
        found = call(clients.ec2, "describe_volumes", VolumeIds=[request.disk]).get("Volumes", [])
        if found:
            return dict(found[0])
        raise AwsError(
            "ec2:DescribeVolumes",
            "InvalidVolume.NotFound",
            f"the disk {request.disk} of volume {request.volume} is gone",
        )
    existing = project_disks(clients, resources.project, request.volume)
    if not existing:
        return _create(clients, resources, request, _zone(instance))
    if existing[0]["AvailabilityZone"] == instance.zone or existing[0].get("Attachments"):
        return dict(existing[0])
    return _move(clients, resources, request, existing[0], _zone(instance))


def _zone(instance: Instance) -> str:
    if instance.zone is None:
        raise AwsError(
            "ec2:DescribeInstances", "IncorrectState", f"{instance.id} has no availability zone yet"
        )
    return instance.zone


def _create(
    clients: AwsClients,
    resources: AwsResources,
    request: DiskRequest,
    zone: str,
    snapshot: str | None = None,
) -> dict[str, Any]:
    created = call(
        clients.ec2,
        "create_volume",
        AvailabilityZone=zone,
        Size=request.size_gb,
        VolumeType="gp3",
        Encrypted=True,
        **({"SnapshotId": snapshot} if snapshot else {}),
        TagSpecifications=[
            {
                "ResourceType": "volume",
                "Tags": tags(
                    resources.project,
                    resources.cluster,
                    f"oct-{resources.project}-{request.volume}",
                    **{VOLUME_TAG: request.volume, SERVICE_TAG: request.service},
                ),
            }
        ],
    )
    wait_for(clients.ec2, "volume_available", delay=2, attempts=60, VolumeIds=[created["VolumeId"]])
    return created


def _move(
    clients: AwsClients, resources: AwsResources, request: DiskRequest, disk: dict[str, Any], zone: str
) -> dict[str, Any]:
    """A kept disk in another zone than the node (a new cluster's): copied through a snapshot,
    the only way EBS data changes zone; the old disk and the snapshot go once the copy exists."""
    snapshot = call(
        clients.ec2,
        "create_snapshot",
        VolumeId=disk["VolumeId"],
        Description=f"oct: {request.volume} to {zone}",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags(resources.project, resources.cluster)}],
    )["SnapshotId"]
    wait_for(clients.ec2, "snapshot_completed", delay=5, attempts=360, SnapshotIds=[snapshot])
    size = max(request.size_gb, int(disk.get("Size", 0)))
    copy = _create(clients, resources, replace(request, size_gb=size), zone, snapshot)
    call(clients.ec2, "delete_volume", VolumeId=disk["VolumeId"])
    call(clients.ec2, "delete_snapshot", SnapshotId=snapshot)
    return copy


def attach(clients: AwsClients, disk: dict[str, Any], instance: Instance) -> Disk:
    """Attach ``disk`` to ``instance`` (idempotent), detaching it from any other instance first:
    forcibly when that one is no longer running (its OS cannot release it)."""
    volume = disk["VolumeId"]
    zone = _zone(instance)
    if disk["AvailabilityZone"] != zone:
        raise AwsError(
            "ec2:AttachVolume",
            "InvalidVolume.ZoneMismatch",
            f"disk {volume} is in {disk['AvailabilityZone']}, the node's instance {instance.id} in {zone}",
        )
    for attachment in disk.get("Attachments", []):
        if attachment["InstanceId"] == instance.id and attachment["State"] in ("attaching", "attached"):
            return Disk(volume, zone, attachment["Device"])
    for attachment in disk.get("Attachments", []):
        if attachment["State"] in ("attaching", "attached", "detaching"):
            other = get_instance(clients, attachment["InstanceId"])
            gone = other is None or other.state != "running"
            call(
                clients.ec2, "detach_volume", VolumeId=volume, InstanceId=attachment["InstanceId"], Force=gone
            )
    wait_for(clients.ec2, "volume_available", delay=2, attempts=90, VolumeIds=[volume])
    device = next((d for d in DEVICES if d not in instance.devices), None)
    if device is None:
        raise AwsError(
            "ec2:AttachVolume", "AttachmentLimitExceeded", f"{instance.id} has no free device name left"
        )
    call(clients.ec2, "attach_volume", VolumeId=volume, InstanceId=instance.id, Device=device)
    wait_for(clients.ec2, "volume_in_use", delay=2, attempts=60, VolumeIds=[volume])
    return Disk(volume, zone, device)


def snapshot(clients: AwsClients, disk: dict[str, Any], *, project: str, cluster: str, backup: str) -> str:
    """A snapshot of ``disk`` for the backup ``backup``: its data as it is at this call (EBS
    finishes copying it in the background), tagged so ``oct restore`` finds it by name."""
    disk_tags = {t["Key"]: t["Value"] for t in disk.get("Tags", [])}
    extra = {
        BACKUP_TAG: backup,
        VOLUME_TAG: disk_tags.get(VOLUME_TAG, ""),
        SERVICE_TAG: disk_tags.get(SERVICE_TAG, ""),
    }
    answer = call(
        clients.ec2,
        "create_snapshot",
        VolumeId=disk["VolumeId"],
        Description=f"oct backup {backup}",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags(project, cluster, backup, **extra)}],
    )
    return str(answer["SnapshotId"])


def scratch_from_snapshot(
    clients: AwsClients, resources: AwsResources, snapshot_id: str, zone: str
) -> dict[str, Any]:
    """A temporary disk holding ``snapshot_id``'s data, in ``zone`` (tagged with the cluster, so
    the node role may attach and delete it), once the snapshot is complete."""
    wait_for(clients.ec2, "snapshot_completed", delay=5, attempts=360, SnapshotIds=[snapshot_id])
    created = call(
        clients.ec2,
        "create_volume",
        AvailabilityZone=zone,
        SnapshotId=snapshot_id,
        VolumeType="gp3",
        Encrypted=True,
        TagSpecifications=[
            {
                "ResourceType": "volume",
                "Tags": tags(resources.project, resources.cluster, f"oct restore {snapshot_id}"),
            }
        ],
    )
    wait_for(clients.ec2, "volume_available", delay=2, attempts=60, VolumeIds=[created["VolumeId"]])
    return created


def discard(clients: AwsClients, volume: str, instance: str) -> None:
    """Detach a scratch disk (unmounted already) if it was attached, and delete it."""
    found = call(clients.ec2, "describe_volumes", VolumeIds=[volume]).get("Volumes", [])
    if found and found[0].get("Attachments"):
        call(clients.ec2, "detach_volume", VolumeId=volume, InstanceId=instance)
        wait_for(clients.ec2, "volume_available", delay=2, attempts=90, VolumeIds=[volume])
    call(clients.ec2, "delete_volume", VolumeId=volume)


def adopt(
    clients: AwsClients, cluster: str, disks: list[dict[str, Any]], snapshots: Sequence[str] = ()
) -> list[str]:
    """Tag the project's kept disks (no longer attached anywhere) and the given backup snapshots
    with ``cluster``: its nodes' role touches only what carries its own cluster's tag, so a cluster
    made again after ``oct destroy`` is handed its data this way, with the user's credentials.
    Returns the ids it tagged."""
    handed = [
        d["VolumeId"]
        for d in disks
        if not d.get("Attachments")
        and {t["Key"]: t["Value"] for t in d.get("Tags", [])}.get(CLUSTER_TAG) != cluster
    ]
    handed += list(snapshots)
    if handed:
        call(clients.ec2, "create_tags", Resources=handed, Tags=[{"Key": CLUSTER_TAG, "Value": cluster}])
    return handed
