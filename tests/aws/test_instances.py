"""Launching, finding and terminating a cluster's instances against a real moto_server."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from octctl.providers.aws import instances
from octctl.providers.aws.infra import destroy_base, ensure_base
from octctl.providers.aws.instances import (
    AMAZON_LINUX_2023,
    find_instances,
    get_instance,
    launch,
    resolve_ami,
    terminate,
)
from octctl.providers.aws.resources import AwsResources
from octctl.providers.aws.session import AwsClients, AwsError, wait_for
from tests.aws.infra_support import REGION, new_ledger

pytestmark = pytest.mark.aws

USER_DATA = "#cloud-config\nruncmd:\n  - echo joined\n"


@pytest.fixture
def clients(aws_env: str) -> AwsClients:
    return AwsClients.connect(REGION, max_attempts=2)


@pytest.fixture
def base(clients: AwsClients) -> Iterator[AwsResources]:
    ledger = ensure_base(clients, new_ledger(), api_cidrs=["203.0.113.7"])
    yield ledger
    destroy_base(clients, ledger, whole_project=True, poll_interval=0.1)


def _launch(
    clients: AwsClients, base: AwsResources, token: str, role: instances.NodeRole = "follower"
) -> str:
    return launch(
        clients,
        base,
        role=role,
        instance_type="t3.micro",
        user_data=USER_DATA,
        client_token=token,
        ami_parameters=AMAZON_LINUX_2023,
    ).id


def test_same_client_token_gives_one_instance(clients: AwsClients, base: AwsResources) -> None:
    first = _launch(clients, base, "intent-7")
    again = _launch(clients, base, "intent-7")  # a new leader finishing the same intent
    assert again == first
    assert [i.id for i in find_instances(clients, base.cluster)] == [first]

    other = _launch(clients, base, "intent-8")
    assert other != first
    assert sorted(i.id for i in find_instances(clients, base.cluster)) == sorted([first, other])


def test_launch_wires_the_instance_into_the_cluster(clients: AwsClients, base: AwsResources) -> None:
    leader = launch(
        clients,
        base,
        role="leader",
        instance_type="t3.micro",
        user_data=USER_DATA,
        client_token=f"{base.cluster}-genesis",
        ami_parameters=AMAZON_LINUX_2023,
    )
    assert leader.role == "leader" and leader.public_ip and leader.private_ip
    assert leader.subnet_id in base.subnet_ids

    raw = clients.ec2.describe_instances(InstanceIds=[leader.id])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in raw["Tags"]}
    assert tags["oct:project"] == base.project and tags["oct:cluster"] == base.cluster
    assert tags["oct:role"] == "leader" and tags["Name"] == base.name("leader")
    assert raw["IamInstanceProfile"]["Arn"] == base.instance_profile_arn
    (interface,) = raw["NetworkInterfaces"]
    assert [g["GroupId"] for g in interface["Groups"]] == [base.security_group_id]
    assert interface["Association"]["PublicIp"] == leader.public_ip
    # IMDSv2 only, one hop: containers on the node cannot reach the role's credentials.
    assert raw["MetadataOptions"]["HttpTokens"] == "required"
    assert raw["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    (disk,) = raw["BlockDeviceMappings"]
    volume = clients.ec2.describe_volumes(VolumeIds=[disk["Ebs"]["VolumeId"]])["Volumes"][0]
    assert volume["Size"] == 20 and disk["Ebs"]["DeleteOnTermination"]
    assert raw["InstanceType"] == "t3.micro"
    assert raw["ImageId"] == resolve_ami(clients, "t3.micro", parameters=AMAZON_LINUX_2023)
    attribute = clients.ec2.describe_instance_attribute(InstanceId=leader.id, Attribute="userData")
    assert base64.b64decode(attribute["UserData"]["Value"]).decode() == USER_DATA

    assert [i.id for i in find_instances(clients, base.cluster, role="leader")] == [leader.id]
    assert find_instances(clients, base.cluster, role="follower") == []
    assert [i.id for i in find_instances(clients, None, project=base.project)] == [leader.id]


def test_ami_follows_the_architecture_and_missing_images_are_explained(clients: AwsClients) -> None:
    x86 = resolve_ami(clients, "t3.small", parameters=AMAZON_LINUX_2023)
    arm = resolve_ami(clients, "t4g.small", parameters=AMAZON_LINUX_2023)
    expected = clients.ssm.get_parameter(Name=AMAZON_LINUX_2023["arm64"])["Parameter"]["Value"]
    assert arm == expected and x86 != arm
    assert resolve_ami(clients, "t3.small", ami="ami-12345678") == "ami-12345678"

    # moto serves no Debian parameter and no Debian image: the default fails with what to do.
    with pytest.raises(AwsError) as missing:
        resolve_ami(clients, "t3.small")
    assert str(missing.value) == (
        "AWS ssm:GetParameter failed: ParameterNotFound: no image for x86_64 under "
        f"/aws/service/debian/release/12/latest/amd64 in {REGION} (give the AMI id explicitly)"
    )
    with pytest.raises(
        AwsError, match=r"^AWS ec2:DescribeInstanceTypes failed: InvalidInstanceType: .*t9\.enormous"
    ):
        resolve_ami(clients, "t9.enormous")


def test_terminate_skips_unknown_ids_and_can_repeat(clients: AwsClients, base: AwsResources) -> None:
    one, two = _launch(clients, base, "t-1"), _launch(clients, base, "t-2")
    assert terminate(clients, [one, "i-0123456789abcdef0"], poll_interval=0.1) == [one]
    assert [i.id for i in find_instances(clients, base.cluster)] == [two]
    gone = get_instance(clients, one)
    assert gone is not None and gone.state == "terminated"
    assert get_instance(clients, "i-0123456789abcdef0") is None
    # Waiting is bounded and a wait that runs out is one clear line.
    with pytest.raises(AwsError) as waited:
        wait_for(clients.ec2, "instance_stopped", delay=0.1, attempts=2, InstanceIds=[two])
    assert str(waited.value) == (
        "AWS ec2:wait instance_stopped failed: WaiterError: "
        "Waiter InstanceStopped failed: Max attempts exceeded"
    )
    assert terminate(clients, [one], poll_interval=0.1) == []
    assert terminate(clients, [], poll_interval=0.1) == []


def test_launch_refuses_bad_input_clearly(clients: AwsClients, base: AwsResources) -> None:
    bare = AwsResources(region=base.region, project=base.project, cluster=base.cluster)
    with pytest.raises(ValueError, match=r"not ready \(no security group, subnet, instance profile\)"):
        launch(clients, bare, role="leader", instance_type="t3.micro", user_data="", client_token="x")
    with pytest.raises(ValueError, match="client_token must be 1-64 ASCII characters"):
        launch(clients, base, role="leader", instance_type="t3.micro", user_data="", client_token="x" * 65)
    with pytest.raises(ValueError, match="EC2 accepts at most 16384"):
        launch(
            clients, base, role="leader", instance_type="t3.micro", user_data="x" * 20000, client_token="y"
        )
    assert find_instances(clients, base.cluster) == []
