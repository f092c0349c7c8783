"""The EBS volumes behind oct volumes, against a real moto_server: found by their tags before
anything is made, made in the node's zone (encrypted gp3, tagged), copied through a snapshot
when a kept one is in another zone, moved between instances, and a scratch disk discarded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from octctl.providers.aws import ebs
from octctl.providers.aws.infra import destroy_base, ensure_base
from octctl.providers.aws.instances import AMAZON_LINUX_2023, Instance, get_instance, launch
from octctl.providers.aws.resources import AwsResources
from octctl.providers.aws.session import AwsClients, AwsError
from octctl.providers.base import DiskRequest
from tests.aws.infra_support import REGION, new_ledger

pytestmark = pytest.mark.aws


@pytest.fixture
def clients(aws_env: str) -> AwsClients:
    return AwsClients.connect(REGION, max_attempts=2)


@pytest.fixture
def base(clients: AwsClients) -> Iterator[AwsResources]:
    ledger = ensure_base(clients, new_ledger(), api_cidrs=["203.0.113.7"])
    yield ledger
    for disk in ebs.project_disks(clients, ledger.project):
        for attachment in disk.get("Attachments", []):
            clients.ec2.detach_volume(
                VolumeId=disk["VolumeId"], InstanceId=attachment["InstanceId"], Force=True
            )
        clients.ec2.delete_volume(VolumeId=disk["VolumeId"])
    destroy_base(clients, ledger, whole_project=True, poll_interval=0.1)


def node(clients: AwsClients, base: AwsResources, token: str, subnet: int) -> Instance:
    made = launch(
        clients,
        base,
        role="follower",
        instance_type="t3.micro",
        user_data="#cloud-config\n",
        client_token=token,
        ami_parameters=AMAZON_LINUX_2023,
        subnet_id=base.subnet_ids[subnet],
    )
    found = get_instance(clients, made.id)
    assert found is not None and found.zone is not None
    return found


def test_a_disk_is_made_once_in_its_node_s_zone_and_moves_between_instances(
    clients: AwsClients, base: AwsResources
) -> None:
    first = node(clients, base, "n-first", 0)
    request = DiskRequest(base.project, "pgdata", "db", 3)
    made = ebs.ensure_disk(clients, base, request, first)
    assert (made["AvailabilityZone"], made["Size"], made["VolumeType"], made["Encrypted"]) == (
        first.zone,
        3,
        "gp3",
        True,
    )
    tags = {t["Key"]: t["Value"] for t in made["Tags"]}
    assert (tags["oct:volume"], tags["oct:service"], tags["oct:cluster"]) == ("pgdata", "db", base.cluster)
    # Found by its tags, not made twice (a new leader, a new cluster of the project).
    assert ebs.ensure_disk(clients, base, request, first)["VolumeId"] == made["VolumeId"]

    attached = ebs.attach(clients, made, first)
    assert (attached.id, attached.zone, attached.device) == (made["VolumeId"], first.zone, "/dev/sdf")
    assert (
        ebs.attach(clients, ebs.ensure_disk(clients, base, request, first), first) == attached
    )  # again: as it is

    # To another instance of the same zone: taken off the first (running: not forced) and attached.
    second = node(clients, base, "n-second", 0)
    disk = ebs.ensure_disk(
        clients, base, DiskRequest(base.project, "pgdata", "db", 3, made["VolumeId"]), second
    )
    moved = ebs.attach(clients, disk, second)
    (now,) = clients.ec2.describe_volumes(VolumeIds=[made["VolumeId"]])["Volumes"]
    assert [a["InstanceId"] for a in now["Attachments"]] == [second.id] and moved.id == made["VolumeId"]

    # Another zone cannot take it: said, not attempted.
    elsewhere = node(clients, base, "n-elsewhere", 1)
    with pytest.raises(AwsError, match=r"is in us-east-1\w, the node.s instance"):
        ebs.attach(clients, now, elsewhere)


def test_a_kept_disk_in_another_zone_is_copied_there_through_a_snapshot(
    clients: AwsClients, base: AwsResources
) -> None:
    old_node = node(clients, base, "n-old", 0)
    kept = ebs.ensure_disk(clients, base, DiskRequest(base.project, "pgdata", "db", 4), old_node)
    new_node = node(clients, base, "n-new", 1)
    assert new_node.zone != old_node.zone

    copy = ebs.ensure_disk(clients, base, DiskRequest(base.project, "pgdata", "db", 4), new_node)
    assert copy["AvailabilityZone"] == new_node.zone and copy["VolumeId"] != kept["VolumeId"]
    assert copy.get("SnapshotId"), "made from a snapshot of the kept disk"
    assert [d["VolumeId"] for d in ebs.project_disks(clients, base.project)] == [copy["VolumeId"]]
    left = clients.ec2.describe_snapshots(OwnerIds=["self"], SnapshotIds=[])["Snapshots"]
    assert copy["SnapshotId"] not in {s["SnapshotId"] for s in left}, "the snapshot went with the old disk"


def test_a_scratch_disk_from_a_backup_is_discarded_attached_or_not(
    clients: AwsClients, base: AwsResources
) -> None:
    host = node(clients, base, "n-host", 0)
    disk = ebs.ensure_disk(clients, base, DiskRequest(base.project, "pgdata", "db", 2), host)
    taken = ebs.snapshot(
        clients, disk, project=base.project, cluster=base.cluster, backup="db-20261205T000000Z"
    )
    (snapshot,) = clients.ec2.describe_snapshots(SnapshotIds=[taken])["Snapshots"]
    assert {t["Key"]: t["Value"] for t in snapshot["Tags"]}["oct:backup"] == "db-20261205T000000Z"

    assert host.zone is not None
    for attach_first in (True, False):
        scratch = ebs.scratch_from_snapshot(clients, base, taken, host.zone)
        assert scratch["SnapshotId"] == taken and scratch["AvailabilityZone"] == host.zone
        if attach_first:
            ebs.attach(clients, scratch, get_instance(clients, host.id) or host)
        ebs.discard(clients, scratch["VolumeId"], host.id)
        assert (
            clients.ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [scratch["VolumeId"]]}])[
                "Volumes"
            ]
            == []
        )
    clients.ec2.delete_snapshot(SnapshotId=taken)


def test_a_kept_disk_and_backup_are_handed_to_the_new_cluster(
    clients: AwsClients, base: AwsResources
) -> None:
    """The nodes' role touches only disks and snapshots tagged with their own cluster: what an
    earlier cluster of the project kept is tagged with the new one (by the CLI), and only that."""
    host = node(clients, base, "n-host", 0)
    kept = ebs.ensure_disk(clients, base, DiskRequest(base.project, "pgdata", "db", 2), host)
    busy = ebs.ensure_disk(clients, base, DiskRequest(base.project, "cache", "redis", 2), host)
    ebs.attach(clients, busy, host)
    backup = ebs.snapshot(clients, kept, project=base.project, cluster=base.cluster, backup="db-1")
    disks = ebs.project_disks(clients, base.project)

    handed = ebs.adopt(clients, "c-next", disks, [backup])
    assert handed == [kept["VolumeId"], backup], "the attached disk is some running node's: left alone"

    def cluster_of(tags: list[dict[str, str]]) -> str:
        return {t["Key"]: t["Value"] for t in tags}["oct:cluster"]

    after = {d["VolumeId"]: cluster_of(d["Tags"]) for d in ebs.project_disks(clients, base.project)}
    assert after == {kept["VolumeId"]: "c-next", busy["VolumeId"]: base.cluster}
    (snapshot,) = clients.ec2.describe_snapshots(SnapshotIds=[backup])["Snapshots"]
    assert cluster_of(snapshot["Tags"]) == "c-next"
    assert ebs.adopt(clients, "c-next", ebs.project_disks(clients, base.project)) == [], "once"
    clients.ec2.delete_snapshot(SnapshotId=backup)
