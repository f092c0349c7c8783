"""Genesis and teardown of the base infrastructure against a real moto_server."""

from __future__ import annotations

import fnmatch
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from octctl.providers.aws import infra, instances
from octctl.providers.aws.infra import Rule, destroy_base, ensure_base, node_policy
from octctl.providers.aws.resources import AwsResources
from octctl.providers.aws.secrets_store import parameter_name
from octctl.providers.aws.session import AwsClients, AwsError
from tests.aws.infra_support import REGION, count, new_ledger, tagged

pytestmark = pytest.mark.aws

DEPLOYER = "203.0.113.7"  # TEST-NET-3: never contacted, only written into a rule


@pytest.fixture
def clients(aws_env: str) -> AwsClients:
    return AwsClients.connect(REGION, max_attempts=2)


@pytest.fixture
def ledger(clients: AwsClients) -> Iterator[AwsResources]:
    """A fresh project; whatever a test leaves of it is removed afterwards."""
    fresh = new_ledger()
    yield fresh
    destroy_base(clients, fresh, whole_project=True, poll_interval=0.1)


def genesis(
    clients: AwsClients, ledger: AwsResources, saved: list[AwsResources] | None = None
) -> AwsResources:
    return ensure_base(
        clients,
        ledger,
        api_cidrs=[DEPLOYER],
        external_ports=[80, 443],
        record=(saved.append if saved is not None else lambda _: None),
    )


def launch(clients: AwsClients, base: AwsResources, role: instances.NodeRole, token: str) -> str:
    return instances.launch(
        clients,
        base,
        role=role,
        instance_type="t3.micro",
        user_data="#!/bin/sh\necho node\n",
        client_token=token,
        ami_parameters=instances.AMAZON_LINUX_2023,
    ).id


def _nothing_left(clients: AwsClients, project: str) -> None:
    left = {kind: ids for kind, ids in tagged(clients, project).items() if ids}
    assert left == {}, f"resources still tagged with project {project}: {left}"


def _one_of_each(clients: AwsClients, project: str) -> None:
    assert count(tagged(clients, project)) == {
        "vpcs": 1,
        "subnets": 2,
        "internet_gateways": 1,
        "route_tables": 1,
        "security_groups": 1,
        "instances": 0,
        "network_interfaces": 0,
        "volumes": 0,
        "roles": 1,
        "instance_profiles": 1,
        "buckets": 1,
    }


# -- genesis ------------------------------------------------------------------------------------


def test_genesis_creates_everything_tagged_and_records_each_id(
    clients: AwsClients, ledger: AwsResources
) -> None:
    saved: list[AwsResources] = []
    base = genesis(clients, ledger, saved)

    inventory = tagged(clients, ledger.project)
    _one_of_each(clients, ledger.project)
    assert inventory["vpcs"] == [base.vpc_id]
    assert sorted(inventory["subnets"]) == sorted(base.subnet_ids)
    assert inventory["internet_gateways"] == [base.internet_gateway_id]
    assert inventory["route_tables"] == [base.route_table_id]
    assert inventory["security_groups"] == [base.security_group_id]
    assert inventory["roles"] == [base.role_name]
    assert inventory["instance_profiles"] == [base.instance_profile_name]
    # The CLI's state got every id, the last record is the returned ledger.
    assert saved and saved[-1] == base
    assert base.model_validate_json(base.model_dump_json()) == base

    ec2, iam = clients.ec2, clients.iam
    igw = ec2.describe_internet_gateways(InternetGatewayIds=[base.internet_gateway_id])["InternetGateways"][0]
    assert [a["VpcId"] for a in igw["Attachments"]] == [base.vpc_id]
    table = ec2.describe_route_tables(RouteTableIds=[base.route_table_id])["RouteTables"][0]
    assert {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": base.internet_gateway_id}.items() <= next(
        r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"
    ).items()
    assert sorted(a["SubnetId"] for a in table["Associations"] if a.get("SubnetId")) == sorted(
        base.subnet_ids
    )
    assert sorted(a["RouteTableAssociationId"] for a in table["Associations"] if a.get("SubnetId")) == sorted(
        base.route_table_association_ids
    )
    subnets = ec2.describe_subnets(SubnetIds=base.subnet_ids)["Subnets"]
    assert all(s["MapPublicIpOnLaunch"] and s["VpcId"] == base.vpc_id for s in subnets)
    assert len({s["AvailabilityZone"] for s in subnets}) == 2, "one subnet per availability zone"

    profile = iam.get_instance_profile(InstanceProfileName=base.instance_profile_name)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [base.role_name]
    role = iam.get_role(RoleName=base.role_name)["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    policy = iam.get_role_policy(RoleName=base.role_name, PolicyName=infra.POLICY_NAME)["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    assert policy == node_policy(base, role["Arn"])
    assert iam.list_attached_role_policies(RoleName=base.role_name)["AttachedPolicies"] == []

    # The wheel bucket: private, encrypted, and the role may only read the wheels in it.
    assert inventory["buckets"] == [base.artifact_bucket]
    s3 = clients.session.client("s3")
    blocked = s3.get_public_access_block(Bucket=base.artifact_bucket)["PublicAccessBlockConfiguration"]
    assert all(blocked.values()) and len(blocked) == 4
    rules = s3.get_bucket_encryption(Bucket=base.artifact_bucket)["ServerSideEncryptionConfiguration"][
        "Rules"
    ]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    s3_statements = [s for s in policy["Statement"] if str(s["Action"]).startswith("s3:")]
    assert s3_statements == [
        {
            "Sid": "ClusterWheel",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{base.artifact_bucket}/artifacts/*",
        }
    ]


def test_security_group_is_least_privilege(clients: AwsClients, ledger: AwsResources) -> None:
    base = genesis(clients, ledger)
    group = clients.ec2.describe_security_groups(GroupIds=[base.security_group_id])["SecurityGroups"][0]
    sg = base.security_group_id
    assert sg is not None
    assert infra.current_rules(group) == {
        Rule("tcp", 31888, 31888, f"{DEPLOYER}/32"),
        Rule("tcp", 31888, 31888, sg),
        Rule("tcp", 31889, 31889, sg),
        Rule("tcp", 53, 53, sg),
        Rule("udp", 53, 53, sg),
        Rule("tcp", 31890, 31890, sg),  # the service mesh between nodes
        Rule("tcp", 80, 80, "0.0.0.0/0"),
        Rule("tcp", 443, 443, "0.0.0.0/0"),
    }

    # A later deploy: one service port gone, another added, the deployer moved: the group follows.
    ensure_base(clients, base, api_cidrs=["198.51.100.0/24"], external_ports=[8080, 80])
    group = clients.ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]
    world = {(r.from_port, r.source) for r in infra.current_rules(group) if not r.source.startswith("sg-")}
    assert world == {(31888, "198.51.100.0/24"), (80, "0.0.0.0/0"), (8080, "0.0.0.0/0")}


def test_second_genesis_creates_nothing(clients: AwsClients, ledger: AwsResources) -> None:
    base = genesis(clients, ledger)
    before = tagged(clients, ledger.project)

    saved: list[AwsResources] = []
    again = genesis(clients, base, saved)
    assert again == base
    assert saved == [], "nothing changed, so nothing was recorded"
    assert tagged(clients, ledger.project) == before

    # The state file was lost: the same cluster is found again by its tags, nothing is duplicated.
    found = genesis(clients, ledger)
    assert found.model_dump(exclude={"role_policy_name"}) == base.model_dump(exclude={"role_policy_name"})
    assert tagged(clients, ledger.project) == before


def test_bad_input_fails_before_anything_is_created(clients: AwsClients, ledger: AwsResources) -> None:
    with pytest.raises(ValueError, match="api_cidrs: 'my laptop' is not an IP address"):
        ensure_base(clients, ledger, api_cidrs=["my laptop"])
    with pytest.raises(ValueError, match="external_port 31888 is oct's own API port"):
        ensure_base(clients, ledger, api_cidrs=[DEPLOYER], external_ports=[31888])
    with pytest.raises(ValueError, match="external_port 53 is oct's own DNS port"):
        ensure_base(clients, ledger, api_cidrs=[DEPLOYER], external_ports=[53])
    with pytest.raises(ValueError, match="ledger is for region eu-west-1"):
        ensure_base(clients, ledger.model_copy(update={"region": "eu-west-1"}), api_cidrs=[DEPLOYER])
    with pytest.raises(ValueError, match="vpc_cidr"):
        ensure_base(clients, ledger, api_cidrs=[DEPLOYER], vpc_cidr="10.0.0.0/8")
    assert not any(tagged(clients, ledger.project).values())


# -- failures mid-genesis -----------------------------------------------------------------------


def _fail(operation: str) -> Any:
    def boom(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "InternalError", "Message": "injected failure"}}, operation)

    return boom


def test_failure_mid_genesis_then_genesis_again_finishes(clients: AwsClients, ledger: AwsResources) -> None:
    saved: list[AwsResources] = []
    hook = _fail("CreateSecurityGroup")
    clients.ec2.meta.events.register("before-call.ec2.CreateSecurityGroup", hook)
    with pytest.raises(AwsError, match=r"ec2:CreateSecurityGroup failed: InternalError: injected failure"):
        genesis(clients, ledger, saved)
    clients.ec2.meta.events.unregister("before-call.ec2.CreateSecurityGroup", hook)

    state = saved[-1]  # what the CLI would have in its state file
    assert state.vpc_id and state.internet_gateway_id and len(state.subnet_ids) == 2 and state.route_table_id
    assert state.security_group_id is None and state.role_name is None
    base = genesis(clients, state)
    assert (base.vpc_id, base.internet_gateway_id, base.subnet_ids, base.route_table_id) == (
        state.vpc_id,
        state.internet_gateway_id,
        state.subnet_ids,
        state.route_table_id,
    )
    assert base.security_group_id and base.instance_profile_name
    _one_of_each(clients, ledger.project)


def test_failure_mid_genesis_then_destroy_finishes(
    clients: AwsClients, ledger: AwsResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    # IAM unreachable: a real connection failure half-way, after the whole network exists.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_IAM", f"http://127.0.0.1:{port}")
    broken = AwsClients.connect(REGION, max_attempts=1)
    saved: list[AwsResources] = []
    with pytest.raises(AwsError) as failed:
        genesis(broken, ledger, saved)
    message = str(failed.value)
    assert message.startswith("AWS iam:GetRole failed: EndpointConnectionError")
    assert f"cannot reach the AWS endpoint http://127.0.0.1:{port}" in message and "\n" not in message
    monkeypatch.delenv("AWS_ENDPOINT_URL_IAM")

    state = saved[-1]
    assert state.security_group_id and state.role_name is None
    records: list[AwsResources] = []
    left = destroy_base(clients, state, record=records.append, poll_interval=0.1)
    assert left.is_empty() and records[-1] == left
    _nothing_left(clients, ledger.project)


# -- teardown -----------------------------------------------------------------------------------


def test_destroy_leaves_nothing_tagged_and_can_run_twice(clients: AwsClients, ledger: AwsResources) -> None:
    base = genesis(clients, ledger)
    base.leader_instance_id = launch(clients, base, "leader", f"{base.cluster}-leader")
    base.follower_instance_ids = [launch(clients, base, "follower", f"{base.cluster}-f1")]
    assert count(tagged(clients, ledger.project))["instances"] == 2

    records: list[AwsResources] = []
    left = destroy_base(clients, base, record=records.append, poll_interval=0.1)
    assert left.is_empty()
    assert left.model_dump(include={"region", "project", "cluster"}) == base.model_dump(
        include={"region", "project", "cluster"}
    )
    # Each deletion was recorded on its own, in order: instances first, the role, then the bucket.
    assert records[0].instance_ids() == [] and records[0].vpc_id == base.vpc_id
    assert records[-3].role_name == base.role_name and records[-2].role_name is None
    assert records[-2].artifact_bucket == base.artifact_bucket and records[-1] == left
    _nothing_left(clients, ledger.project)
    states = clients.ec2.describe_instances(InstanceIds=base.instance_ids())["Reservations"]
    assert {i["State"]["Name"] for r in states for i in r["Instances"]} == {"terminated"}

    # Idempotent: from the old ledger (ids all gone) and from the emptied one.
    assert destroy_base(clients, base, poll_interval=0.1).is_empty()
    assert destroy_base(clients, left, poll_interval=0.1).is_empty()
    _nothing_left(clients, ledger.project)


def test_destroy_from_tags_alone(clients: AwsClients, ledger: AwsResources) -> None:
    base = genesis(clients, ledger)
    launch(clients, base, "leader", f"{base.cluster}-leader")
    other = genesis(clients, new_ledger())  # another project's cluster must survive

    empty = AwsResources(region=ledger.region, project=ledger.project, cluster=ledger.cluster)
    assert destroy_base(clients, empty, poll_interval=0.1).is_empty()
    _nothing_left(clients, ledger.project)
    _one_of_each(clients, other.project)
    destroy_base(clients, other, poll_interval=0.1)


def test_destroy_whole_project_finds_every_cluster(clients: AwsClients, ledger: AwsResources) -> None:
    genesis(clients, ledger)
    genesis(clients, new_ledger(ledger.project))  # a second cluster of the same project
    assert count(tagged(clients, ledger.project))["vpcs"] == 2

    anything = AwsResources(region=ledger.region, project=ledger.project, cluster="c-unknown")
    destroy_base(clients, anything, whole_project=True, poll_interval=0.1)
    _nothing_left(clients, ledger.project)


def test_partial_destroy_keeps_what_remains_and_a_rerun_finishes(
    clients: AwsClients, ledger: AwsResources
) -> None:
    base = genesis(clients, ledger)
    hook = _fail("DeleteSubnet")
    clients.ec2.meta.events.register("before-call.ec2.DeleteSubnet", hook)
    records: list[AwsResources] = []
    with pytest.raises(AwsError, match="ec2:DeleteSubnet failed"):
        destroy_base(clients, base, record=records.append, poll_interval=0.1)
    clients.ec2.meta.events.unregister("before-call.ec2.DeleteSubnet", hook)

    state = records[-1]
    assert (
        state.internet_gateway_id is None and state.route_table_id is None and state.security_group_id is None
    )
    assert (
        state.subnet_ids == base.subnet_ids
        and state.vpc_id == base.vpc_id
        and state.role_name == base.role_name
    )
    assert destroy_base(clients, state, poll_interval=0.1).is_empty()
    _nothing_left(clients, ledger.project)


# -- the nodes' IAM policy ----------------------------------------------------------------------


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**s, "Action": [s["Action"]] if isinstance(s["Action"], str) else s["Action"]}
        for s in policy["Statement"]
    ]


def test_node_policy_is_least_privilege() -> None:
    ledger = new_ledger()
    arn = f"arn:aws:iam::123456789012:role/oct/{ledger.iam_name()}"
    statements = _statements(node_policy(ledger, arn))
    actions = [a for s in statements for a in s["Action"]]
    assert not [a for a in actions if "*" in a], "no wildcard actions"
    assert all(s["Effect"] == "Allow" for s in statements)

    # Everything that changes EC2 is tied to the cluster's tags (or is the image it boots from).
    for s in statements:
        if any(a.startswith("ec2:") and not a.startswith("ec2:Describe") for a in s["Action"]):
            resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
            images_only = all("::image/" in r or "::snapshot/" in r for r in resources)
            assert "Condition" in s or images_only, s
            assert "*" not in resources, s
    tagged = [s for s in statements if s["Sid"] in ("LaunchTagged", "TerminateClusterInstances")]
    assert all(ledger.cluster in json.dumps(s["Condition"]) for s in tagged)
    # Describe calls are the only ones on "*", besides ECR's login token (account-wide by design).
    assert {a for s in statements if s["Resource"] == "*" for a in s["Action"]} <= {
        "ecr:GetAuthorizationToken",
        "ec2:DescribeAvailabilityZones",
        "ec2:DescribeImages",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeInstances",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSnapshots",
        "ec2:DescribeSubnets",
        "ec2:DescribeVolumes",
    }
    (pass_role,) = [s for s in statements if "iam:PassRole" in s["Action"]]
    assert pass_role["Resource"] == arn
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert not [a for a in actions if a.startswith("route53:")], "no zone, no Route53"

    # The secrets parameter the node reads at boot is covered, another cluster's is not.
    (ssm,) = [s for s in statements if s["Sid"] == "ClusterParameters"]
    own = f"arn:aws:ssm:{REGION}:123456789012:parameter{parameter_name(ledger.cluster)}"
    foreign = f"arn:aws:ssm:{REGION}:123456789012:parameter{parameter_name('c-other')}"
    assert fnmatch.fnmatch(own, ssm["Resource"]) and not fnmatch.fnmatch(foreign, ssm["Resource"])

    (pull,) = [s for s in statements if s["Sid"] == "EcrPull"]
    assert pull["Resource"] == f"arn:aws:ecr:{REGION}:123456789012:repository/oct-{ledger.project}/*"

    with_zone = ledger.model_copy(update={"hosted_zone_id": "/hostedzone/Z123"})
    zone_statements = [s for s in _statements(node_policy(with_zone, arn)) if s["Sid"] == "ZoneRecords"]
    assert [s["Resource"] for s in zone_statements] == ["arn:aws:route53:::hostedzone/Z123"]


def test_the_role_may_launch_only_the_cluster_image_and_types(
    clients: AwsClients, ledger: AwsResources
) -> None:
    """What genesis writes to IAM (moto stores policies but does not evaluate them; the conditions'
    meaning is checked in tests/unit/test_node_policy.py)."""
    ami = instances.resolve_ami(clients, "t3.micro", parameters=instances.AMAZON_LINUX_2023)
    base = genesis(clients, ledger.model_copy(update={"instance_types": ["t3.micro"], "ami": ami}))
    assert (base.instance_types, base.ami) == (["t3.micro"], ami)
    document = clients.iam.get_role_policy(RoleName=base.role_name, PolicyName=infra.POLICY_NAME)[
        "PolicyDocument"
    ]
    document = json.loads(document) if isinstance(document, str) else document
    assert document == node_policy(base, str(base.role_arn))
    launch = {s["Sid"]: s for s in document["Statement"] if s["Action"] == "ec2:RunInstances"}
    assert launch["LaunchClusterInstances"]["Resource"] == "arn:aws:ec2:us-east-1:123456789012:instance/*"
    assert launch["LaunchClusterInstances"]["Condition"] == {
        "StringEquals": {
            "aws:RequestTag/oct:cluster": ledger.cluster,
            "aws:RequestTag/oct:project": ledger.project,
            "ec2:InstanceType": ["t3.micro"],
            "ec2:MetadataHttpTokens": "required",
        }
    }
    images = launch["LaunchFromClusterImage"]["Resource"]
    assert images == [f"arn:aws:ec2:us-east-1::image/{ami}", "arn:aws:ec2:us-east-1::snapshot/*"]
    assert "image/*" not in json.dumps(document)
    # The instance oct launches meets those conditions: that type, that image, IMDSv2 only.
    instance_id = instances.launch(
        clients,
        base,
        role="follower",
        instance_type="t3.micro",
        user_data="#!/bin/sh\n",
        client_token=f"{ledger.cluster}-policy",
        ami=base.ami,
    ).id
    raw = clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert (raw["InstanceType"], raw["ImageId"], raw["MetadataOptions"]["HttpTokens"]) == (
        "t3.micro",
        ami,
        "required",
    )
    instances.terminate(clients, [instance_id], poll_interval=0.1)

    # A ledger that names no image (nor types) leaves the role unable to launch anything.
    bare = ensure_base(
        clients, base.model_copy(update={"ami": None, "instance_types": []}), api_cidrs=[DEPLOYER]
    )
    document = clients.iam.get_role_policy(RoleName=bare.role_name, PolicyName=infra.POLICY_NAME)[
        "PolicyDocument"
    ]
    document = json.loads(document) if isinstance(document, str) else document
    launchable = [
        r
        for s in document["Statement"]
        if s["Action"] == "ec2:RunInstances"
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    ]
    assert not [r for r in launchable if ":instance/" in r or ":image/" in r], launchable


def test_policy_follows_a_zone_added_later(clients: AwsClients, ledger: AwsResources) -> None:
    base = genesis(clients, ledger)
    with_zone = ensure_base(
        clients,
        base.model_copy(update={"hosted_zone_id": "Z0ZONE"}),
        api_cidrs=[DEPLOYER],
        external_ports=[80, 443],
    )
    document = clients.iam.get_role_policy(RoleName=base.role_name, PolicyName=infra.POLICY_NAME)[
        "PolicyDocument"
    ]
    document = json.loads(document) if isinstance(document, str) else document
    assert document == node_policy(with_zone, str(base.role_arn))
    assert "arn:aws:route53:::hostedzone/Z0ZONE" in json.dumps(document)


# -- clients and errors -------------------------------------------------------------------------


def test_clients_honour_aws_endpoint_url(clients: AwsClients, aws_env: str) -> None:
    assert clients.ec2.meta.endpoint_url == aws_env
    assert clients.iam.meta.endpoint_url == aws_env
    assert clients.account() == "123456789012"


def test_missing_credentials_is_one_clear_line(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role lookup off-EC2
    with pytest.raises(AwsError) as failed:
        AwsClients.connect(REGION, max_attempts=1).account()
    assert failed.value.code == "NoCredentialsError"
    assert str(failed.value) == (
        "AWS sts:GetCallerIdentity failed: NoCredentialsError: Unable to locate credentials (configure AWS "
        "credentials (AWS_PROFILE, `aws sso login`, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY))"
    )


def test_unknown_profile_is_one_clear_line(aws_env: str) -> None:
    with pytest.raises(AwsError, match=r"ProfileNotFound: .*nope.* \(configure AWS credentials"):
        AwsClients.connect(REGION, profile="nope")
