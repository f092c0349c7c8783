"""Genesis, life and afterlife on AWS, end to end against a real moto_server.

The CLI (the library, in-process) creates the network, roles and the leader instance through
boto3; the hypervisor harness boots every instance moto reports as a real ``oct-ctl`` on its own
127.0.0.N from the instance's user data; the leader launches and terminates follower instances
through boto3 as the services need; containers run on the real Docker engine. After ``destroy``,
moto lists nothing tagged with the project.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import boto3
import pytest

import octcli
from octcli import api
from octcli.artifact import build_artifact
from octcli.errors import OctError
from octctl.addresses import DEFAULT_API_PORT
from octctl.providers.aws.instances import AMAZON_LINUX_2023
from octctl.providers.aws.session import AwsClients
from tests.aws.hypervisor import Hypervisor, Vm
from tests.aws.infra_support import count, tagged
from tests.conftest import IMAGE
from tests.e2e.harness import http_get, https_client, state_record
from tests.wait import wait_until

pytestmark = [pytest.mark.aws, pytest.mark.e2e, pytest.mark.docker]

SERVICE = """
[[project.services]]
name = "{name}"
image = "{image}"
command = "sh -c 'echo {name} > /www/index.html && exec httpd -f -p 8080 -h /www'"
internal_port = 8080
external_port = {port}
cpus = 1500
memory = 256
"""


def oct_toml(
    project: str, ami: str, services: list[tuple[str, int]], domain: str = "", min_nodes: int = 1
) -> str:
    head = f"""
[project]
name = "{project}"
{f'domain = "{domain}"' if domain else ""}

[project.state_backend.local]
path = "state.json"

[project.provider.aws]
region = "us-east-1"
instance_type = "t3.small"
ami = "{ami}"
api_allowed_cidrs = ["127.0.0.1/32"]
min_nodes = {min_nodes}
max_nodes = 5

[project.cluster]
replace_dead_after = 5
"""
    return head + "".join(SERVICE.format(name=n, image=IMAGE, port=p) for n, p in services)


#: A small service that only carries a reference to web1's public address in its environment.
PROBE = f"""
[[project.services]]
name = "probe"
image = "{IMAGE}"
command = "sleep 3600"
cpus = 100
memory = 32

[project.services.envs]
WEB1_PUBLIC = "{{{{ services.web1.public_ip }}}}"
"""


def a_records(clients: AwsClients, domain: str) -> dict[str, list[str]]:
    """Each A record set's name and its addresses, sorted."""
    api = clients.client("route53")
    zones = api.list_hosted_zones_by_name(DNSName=f"{domain}.")["HostedZones"]
    zone = next(z["Id"] for z in zones if z["Name"] == f"{domain}.")
    sets = api.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return {r["Name"]: sorted(v["Value"] for v in r["ResourceRecords"]) for r in sets if r["Type"] == "A"}


def public_ips(clients: AwsClients, project: str) -> dict[str, str]:
    """Node id (the instance's client token) to the public address AWS gave the instance."""
    found = clients.ec2.describe_instances(
        Filters=[
            {"Name": "tag:oct:project", "Values": [project]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    return {
        next(t["Value"] for t in i["Tags"] if t["Key"] == "oct:client-token"): i["PublicIpAddress"]
        for r in found
        for i in r["Instances"]
    }


def aws_project(tmp_path: Path) -> tuple[AwsClients, str, Path]:
    """AWS clients (to inspect moto), an image id moto knows, and where oct.toml goes."""
    clients = AwsClients.connect("us-east-1")
    ami = boto3.client("ssm").get_parameter(Name=AMAZON_LINUX_2023["x86_64"])["Parameter"]["Value"]
    folder = tmp_path / "project"
    folder.mkdir()
    return clients, ami, folder / "oct.toml"


def leftovers(clients: AwsClients, project: str) -> dict[str, int]:
    """Resource kinds still tagged with the project, with their counts; {} once destroy is done."""
    return {kind: n for kind, n in count(tagged(clients, project)).items() if n}


def node_health(vm: Vm, folder: Path) -> tuple[str, str | None]:
    """The version a node reports and the sha256 of the wheel its running process was installed from
    (over HTTPS, trusting the cluster CA the CLI recorded in ``folder``'s state file)."""
    with https_client(state_record(folder)["ca_cert"], timeout=20) as http:
        health = http.get(f"https://{vm.address}:{DEFAULT_API_PORT}/v1/health").raise_for_status().json()
    return health["version"], health["artifact"]


def test_genesis_life_and_afterlife(cloud: Hypervisor, tmp_path: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    clients, ami, config = aws_project(tmp_path)
    folder = config.parent
    project = cloud.project

    domain = f"{project}.example.com"
    notes: list[str] = []

    # Genesis: network, roles, secrets and the leader instance; its user data boots a real node.
    config.write_text(oct_toml(project, ami, [("web1", 9311)], domain))
    status = octcli.deploy(config, approve=True, timeout=180, on_phase=notes.append)
    assert [s.state for s in status.services] == ["running"]
    assert len(status.nodes) == 1 and status.nodes[0].role == "leader"
    assert http_get(status.services[0].endpoint or "").strip() == "web1"
    inventory = count(tagged(clients, project))
    assert inventory["vpcs"] == 1 and inventory["instances"] == 1 and inventory["roles"] == 1
    leader_vm = next(iter(cloud.running().values()))
    assert status.nodes[0].address == leader_vm.address
    # The leader runs exactly the CLI's own code: the wheel built from it, installed by hash.
    shipped = build_artifact(tmp_path / "wheel")
    assert inventory["buckets"] == 1
    assert node_health(leader_vm, folder) == (shipped.version, shipped.sha256)
    # The node role may launch only the cluster's image and instance type, with IMDSv2 required:
    # genesis recorded both before it wrote the role's policy.
    ledger = json.loads((folder / "state.json").read_text())["aws"]
    assert (ledger["ami"], ledger["instance_types"]) == (ami, ["t3.small"])
    role_policy = clients.iam.get_role_policy(RoleName=ledger["role_name"], PolicyName="oct-node")
    document = role_policy["PolicyDocument"]
    policy = json.loads(document) if isinstance(document, str) else document
    launch = {s["Sid"]: s for s in policy["Statement"] if s["Action"] == "ec2:RunInstances"}
    assert launch["LaunchFromClusterImage"]["Resource"][0] == f"arn:aws:ec2:us-east-1::image/{ami}"
    only = launch["LaunchClusterInstances"]["Condition"]["StringEquals"]
    assert only["ec2:InstanceType"] == ["t3.small"] and only["ec2:MetadataHttpTokens"] == "required"

    # Life: a second service does not fit on a t3.small next to the first: the leader runs a
    # follower instance through boto3, the follower joins, and the service runs there.
    assert sum("delegate" in n and domain in n for n in notes) == 1, notes
    config.write_text(oct_toml(project, ami, [("web1", 9311), ("web2", 9312)], domain))
    status = octcli.deploy(config, timeout=180, on_phase=notes.append)
    assert sorted(s.state for s in status.services) == ["running", "running"]
    assert len({s.node for s in status.services}) == 2
    followers = clients.ec2.describe_instances(
        Filters=[
            {"Name": "tag:oct:project", "Values": [project]},
            {"Name": "tag:oct:role", "Values": ["follower"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    assert len(followers) == 1, "exactly one follower, launched by the leader"
    (follower,) = followers[0]["Instances"]
    assert (follower["ImageId"], follower["InstanceType"]) == (ami, "t3.small")
    assert follower["MetadataOptions"]["HttpTokens"] == "required"
    for service in status.services:
        assert service.endpoint is not None
        assert http_get(service.endpoint).strip() == service.name
    vm_addresses = {vm.address for vm in cloud.running().values()}
    assert {s.address for s in status.services} == vm_addresses, "one service on each instance"
    # The follower the leader launched installed the same wheel, through a link the leader signed.
    assert {node_health(vm, folder) for vm in cloud.running().values()} == {(shipped.version, shipped.sha256)}
    assert sum("delegate" in n for n in notes) == 1, "the name servers are printed once"
    # Every node's ingress serves every public service: each name holds every node's address.
    everyone = sorted(public_ips(clients, project).values())
    assert len(everyone) == 2
    assert a_records(clients, domain) == {f"{s.name}.{domain}.": everyone for s in status.services}

    # The follower is emptied: the leader terminates it and the fleet is back to its minimum.
    config.write_text(oct_toml(project, ami, [("web1", 9311)], domain))
    octcli.deploy(config, timeout=180)
    assert set(a_records(clients, domain)) == {f"web1.{domain}."}, "web2's name went with it"
    wait_until(
        lambda: count(tagged(clients, project))["instances"] == 1 and len(cloud.running()) == 1,
        timeout=90,
        interval=0.5,
        message=lambda: f"the idle follower to be terminated\n{cloud.logs()}",
    )
    assert len(octcli.status(config).nodes) == 1

    # Afterlife: nothing tagged with the project is left, and destroy can be repeated.
    octcli.destroy(config, approve=True)
    assert leftovers(clients, project) == {}
    assert not (folder / "state.json").exists()
    zones = clients.client("route53").list_hosted_zones_by_name(DNSName=f"{domain}.")["HostedZones"]
    assert [z for z in zones if z["Name"] == f"{domain}."] == [], "the zone oct created is gone"
    octcli.destroy(config, approve=True)


def test_a_dead_node_leaves_every_public_name_and_its_service_moves(
    cloud: Hypervisor, tmp_path: Path, docker_client
) -> None:  # type: ignore[no-untyped-def]
    """A follower's VM dies: the survivors (2 of 3, a majority) move its service, and the leader
    takes the dead node's address out of every public name (each named all three nodes, whose
    ingresses all serve it). No `oct deploy` runs in between."""
    clients, ami, config = aws_project(tmp_path)
    project = cloud.project
    domain = f"{project}.example.com"
    config.write_text(oct_toml(project, ami, [("web1", 9341), ("web2", 9342)], domain, min_nodes=3) + PROBE)
    status = octcli.deploy(config, approve=True, timeout=240)
    assert len(status.nodes) == 3
    # {{ services.web1.public_ip }} is the public address EC2 gave web1's instance.
    web1 = next(s for s in status.services if s.name == "web1")
    probe = docker_client.containers.list(filters={"label": [f"oct.project={project}", "oct.service=probe"]})
    assert len(probe) == 1
    assert f"WEB1_PUBLIC={public_ips(clients, project)[web1.node]}" in probe[0].attrs["Config"]["Env"]
    leader = next(n.id for n in status.nodes if n.role == "leader")
    victim = next(s for s in status.services if s.node != leader and s.name.startswith("web"))
    dead = next(vm for vm in cloud.running().values() if vm.node == victim.node)
    name = f"{victim.name}.{domain}."
    addresses = public_ips(clients, project)
    assert a_records(clients, domain)[name] == sorted(addresses.values())
    os.killpg(dead.process.pid, 9)

    def moved() -> bool:
        status = octcli.status(config)
        now = next(s for s in status.services if s.name == victim.name)
        # The names follow the ready nodes: the dead one leaves them (and the node that replaces
        # it, replace_dead_after being short here, joins them once ready).
        running = public_ips(clients, project)
        ready = sorted(running[n.id] for n in status.nodes if n.status == "ready" and n.id in running)
        records = a_records(clients, domain)
        return (
            now.state == "running"
            and now.node not in (None, dead.node)
            and addresses[dead.node] not in ready
            and all(records.get(f"{s}.{domain}.") == ready for s in ("web1", "web2"))
        )

    wait_until(
        moved,
        timeout=120,
        interval=0.5,
        message=lambda: f"{victim.name} to move and the names to leave the dead node\n{cloud.logs()}",
    )
    now = next(s for s in octcli.status(config).services if s.name == victim.name)
    assert http_get(now.endpoint or "").strip() == victim.name
    octcli.destroy(config, approve=True)
    assert leftovers(clients, project) == {}


def test_a_failure_mid_genesis_leaves_a_state_deploy_and_destroy_recover_from(  # type: ignore[no-untyped-def]
    cloud: Hypervisor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_client
) -> None:
    clients, ami, config = aws_project(tmp_path)
    folder = config.parent
    config.write_text(oct_toml(cloud.project, ami, [("web1", 9321)]))

    # IAM unreachable: the network exists, the roles do not; the state says what was made.
    assert clients.iam is not None  # the test's own IAM client is made before IAM is cut off
    monkeypatch.setenv("AWS_ENDPOINT_URL_IAM", "http://127.0.0.1:9")
    with pytest.raises(OctError, match="run `oct deploy` again"):
        octcli.deploy(config, approve=True, timeout=60)
    assert (folder / "state.json").exists()
    made = count(tagged(clients, cloud.project))
    assert made["vpcs"] == 1 and made["roles"] == 0 and made["instances"] == 0

    # The same command again finishes genesis, without a second network.
    monkeypatch.delenv("AWS_ENDPOINT_URL_IAM")
    status = octcli.deploy(config, timeout=180)
    assert [s.state for s in status.services] == ["running"]
    assert count(tagged(clients, cloud.project))["vpcs"] == 1

    octcli.destroy(config, approve=True)
    assert leftovers(clients, cloud.project) == {}


def test_destroy_works_when_the_leader_is_gone(cloud: Hypervisor, tmp_path: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    clients, ami, config = aws_project(tmp_path)
    config.write_text(oct_toml(cloud.project, ami, [("web1", 9331)]))
    octcli.deploy(config, approve=True, timeout=180)
    for vm in cloud.running().values():
        os.killpg(vm.process.pid, 9)  # the VM hangs: nobody answers the API any more
    octcli.destroy(config, timeout=20, approve=True)
    assert leftovers(clients, cloud.project) == {}


def test_a_leader_killed_mid_launch_leaves_no_orphan_and_no_duplicate(  # type: ignore[no-untyped-def]
    cloud: Hypervisor, tmp_path: Path, docker_client
) -> None:
    """The leader dies right after RunInstances for a follower: its successor finds the launch in
    Raft, asks again with the same client token (no second instance), the follower joins through
    another member, and every instance left running is a member of the cluster."""
    clients, ami, config = aws_project(tmp_path)
    project = cloud.project
    config.write_text(oct_toml(project, ami, [("web1", 9351)], min_nodes=3))
    octcli.deploy(config, approve=True, timeout=180)
    assert len(cloud.running()) == 3
    leader = next(n for n in octcli.status(config).nodes if n.role == "leader")
    leader_vm = next(vm for vm in cloud.running().values() if vm.node == leader.id)
    known = set(public_ips(clients, project))

    # Four services of 1.5 cores: a fourth t3.small is needed; kill the leader once it asked for it.
    services = [(f"web{i}", 9350 + i) for i in range(1, 5)]
    config.write_text(oct_toml(project, ami, services, min_nodes=3))
    result: dict[str, object] = {}
    rollout = threading.Thread(target=lambda: result.update(status=octcli.deploy(config, timeout=240)))
    rollout.start()
    wait_until(
        lambda: set(public_ips(clients, project)) - known,
        timeout=90,
        interval=0.5,
        message=lambda: f"the leader to launch a fourth instance\n{cloud.logs()}",
    )
    launched = (set(public_ips(clients, project)) - known).pop()
    os.killpg(leader_vm.process.pid, 9)
    rollout.join(timeout=260)
    status = result.get("status")
    assert status is not None, f"the rollout did not finish\n{cloud.logs()}"

    every = clients.ec2.describe_instances(Filters=[{"Name": "tag:oct:project", "Values": [project]}])
    tokens = [
        next(t["Value"] for t in i["Tags"] if t["Key"] == "oct:client-token")
        for r in every["Reservations"]
        for i in r["Instances"]
    ]
    assert tokens.count(launched) == 1, "the new leader did not launch the same node twice"
    members = {n.id for n in octcli.status(config).nodes}
    assert launched in members, "the node launched before the failover joined the cluster"
    wait_until(
        lambda: set(public_ips(clients, project)) == {n.id for n in octcli.status(config).nodes},
        timeout=90,
        interval=0.5,
        message=lambda: f"every running instance to be a member (no orphan)\n{cloud.logs()}",
    )
    octcli.destroy(config, approve=True)
    assert leftovers(clients, project) == {}


#: db's shell traps TERM: busybox httpd as the container's pid 1 would ignore it, and each
#: restore's stop would wait out the engine's 10 s before killing it.
DB = f"""
[[project.services]]
name = "db"
image = "{IMAGE}"
command = "sh -c 'echo one >> /data/lines; trap exit TERM; httpd -f -p 8080 -h /data & wait'"
internal_port = 8080
external_port = 9351
cpus = 100
memory = 32

[[project.services.volumes]]
name = "data"
path = "/data"
size = 2
"""


def test_a_volume_is_an_ebs_disk_that_follows_its_service_to_the_replacement_node(
    cloud: Hypervisor, tmp_path: Path, docker_client
) -> None:  # type: ignore[no-untyped-def]
    """db's volume is an encrypted gp3 disk in its node's zone, attached to that node (the
    harness keeps each disk's data in a folder of its own). The node's VM dies: the leader launches
    the replacement in the disk's zone, moves the disk there and db runs again with its data.
    ``oct destroy`` keeps the disk and says so; ``--volumes`` removes it."""
    clients, ami, config = aws_project(tmp_path)
    project = cloud.project
    config.write_text(oct_toml(project, ami, [], min_nodes=3) + DB)
    status = octcli.deploy(config, approve=True, timeout=240)
    home = next(s.node for s in status.services if s.name == "db")
    (disk,) = clients.ec2.describe_volumes(
        Filters=[
            {"Name": "tag:oct:project", "Values": [project]},
            {"Name": "tag:oct:volume", "Values": ["data"]},
        ]
    )["Volumes"]
    instances = {
        i["InstanceId"]: i
        for r in clients.ec2.describe_instances(Filters=[{"Name": "tag:oct:project", "Values": [project]}])[
            "Reservations"
        ]
        for i in r["Instances"]
    }
    vm = next(vm for vm in cloud.running().values() if vm.node == home)
    assert (disk["Encrypted"], disk["VolumeType"], disk["Size"]) == (True, "gp3", 2)
    assert disk["AvailabilityZone"] == instances[vm.instance]["Placement"]["AvailabilityZone"]
    assert [a["InstanceId"] for a in disk["Attachments"]] == [vm.instance]
    assert state_record(config.parent)["aws"]["volume_ids"] == [disk["VolumeId"]]  # the ledger
    (listed,) = api.volumes(config)
    assert (listed.name, listed.service, listed.node, listed.state, listed.size_gb) == (
        "data",
        "db",
        home,
        "in use",
        2,
    )
    assert listed.where == f"EBS {disk['VolumeId']} in {disk['AvailabilityZone']}"
    lines = cloud.disk_folder(disk["VolumeId"]) / "lines"
    wait_until(
        lambda: lines.read_text().split(), until=lambda found: found == ["one"], timeout=30, ignore=(OSError,)
    )

    os.killpg(vm.process.pid, 9)  # the machine stops answering; replace_dead_after is 5 s here

    def moved() -> bool:
        now = next((s for s in octcli.status(config).services if s.name == "db"), None)
        return now is not None and now.state == "running" and now.node not in (None, home)

    wait_until(
        moved,
        timeout=180,
        interval=1,
        ignore=(OctError,),  # (while the cluster elects a leader, when db's node led)
        message=lambda: f"db to run on a replacement\n{cloud.logs()}",
    )
    now = next(s for s in octcli.status(config).services if s.name == "db")
    (after,) = clients.ec2.describe_volumes(VolumeIds=[disk["VolumeId"]])["Volumes"]
    replacement = next(vm for vm in cloud.running().values() if vm.node == now.node)
    assert [a["InstanceId"] for a in after["Attachments"]] == [replacement.instance]
    assert wait_until(
        lambda: http_get(f"{now.endpoint}/lines").split(), until=lambda found: len(found) == 2, timeout=30
    ) == ["one", "one"], "the data written on the dead node is there, and one line more"

    # A backup and a restore through the nodes: the restore lands on the disk (not in the
    # engine's own folder for the volume, which is the disk's only while the container runs).
    archive = api.backup(config, "db", tmp_path / "db.tar.gz")
    disk_lines = cloud.disk_folder(disk["VolumeId"]) / "lines"
    disk_lines.write_text(disk_lines.read_text() + "written after the backup\n")
    assert api.restore(config, "db", archive, approve=True) == ["data"]
    assert wait_until(
        lambda: disk_lines.read_text().splitlines(), until=lambda found: len(found) == 3, timeout=30
    ) == ["one", "one", "one"]

    # An EBS snapshot backup, and a restore from it by name (the volume keeps its own disk).
    taken = api.snapshot_backup(config, "db")
    assert taken is not None and taken.name.startswith("db-") and list(taken.snapshots) == ["data"]
    (snapshot,) = clients.ec2.describe_snapshots(SnapshotIds=[taken.snapshots["data"]])["Snapshots"]
    assert snapshot["VolumeId"] == disk["VolumeId"]
    wait_until(lambda: cloud.snapshot_folder(snapshot["SnapshotId"]).exists(), timeout=10)
    disk_lines.write_text(disk_lines.read_text() + "written after the snapshot\n")
    assert api.restore(config, "db", taken.name, approve=True) == ["data"]
    assert (
        wait_until(
            lambda: disk_lines.read_text().splitlines(), until=lambda found: len(found) == 4, timeout=30
        )
        == ["one"] * 4
    )
    (after,) = clients.ec2.describe_volumes(VolumeIds=[disk["VolumeId"]])["Volumes"]
    assert [a["InstanceId"] for a in after["Attachments"]] == [replacement.instance]
    names = [
        t["Value"]
        for v in clients.ec2.describe_volumes(Filters=[{"Name": "tag:oct:project", "Values": [project]}])[
            "Volumes"
        ]
        for t in v.get("Tags", [])
        if t["Key"] == "Name"
    ]
    assert f"oct-{project}-data" in names
    assert not [n for n in names if n.startswith("oct restore")], "the restore's scratch disk is gone"
    with pytest.raises(OctError, match="no backup 'db-1999' of"):
        api.restore(config, "db", "db-1999", approve=True)

    kept = octcli.destroy(config, approve=True)
    assert [(v.name, v.size_gb, v.state) for v in kept] == [("data", 2, "kept")]
    assert "$0.16/month" in (kept[0].where or "")
    assert leftovers(clients, project) == {"volumes": 1}
    assert [v.name for v in api.volumes(config)] == ["data"]  # with no cluster left
    octcli.destroy(config, approve=True, volumes=True)
    assert leftovers(clients, project) == {}
