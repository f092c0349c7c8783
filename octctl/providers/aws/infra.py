"""The base infrastructure of a cluster: network, firewall, the nodes' IAM role and wheel bucket.

Genesis (:func:`ensure_base`) and teardown (:func:`destroy_base`) are both written to be run again
after any failure. Each genesis step first looks for its resource (by the id in the ledger, then by
tags, which are applied in the same call that creates the resource) and creates it only when
neither finds it; the caller's ``record`` callback saves the ledger right after each creation, so a
crash leaves every created id in the state. Teardown works from the ledger *and* from tags, treats
"already gone" as done, and records what remains after every deletion, so a partial failure is
finished by the next run. The reference wrote its state once at the end of genesis and stopped at
the first failure of destroy, orphaning resources both ways.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from octctl.addresses import DEFAULT_API_PORT, DEFAULT_RAFT_PORT
from octctl.providers.aws import artifacts, instances
from octctl.providers.aws.ecr import repository_name
from octctl.providers.aws.resources import CLUSTER_TAG, IAM_PATH, PROJECT_TAG, AwsResources
from octctl.providers.aws.session import AwsClients, AwsError, call, wait_for

__all__ = [
    "DEFAULT_VPC_CIDR",
    "DNS_PORT",
    "POLICY_NAME",
    "Rule",
    "desired_rules",
    "destroy_base",
    "ensure_base",
    "node_policy",
]

DEFAULT_VPC_CIDR = "10.0.0.0/16"
DNS_PORT = 53
POLICY_NAME = "oct-node"
RESERVED_PORTS = {DEFAULT_API_PORT: "API", DEFAULT_RAFT_PORT: "Raft", DNS_PORT: "DNS"}

Record = Callable[[AwsResources], None]


def _ignore(_: AwsResources) -> None:
    pass


@dataclass(frozen=True, order=True)
class Rule:
    """One ingress rule of the nodes' security group; ``source`` is a CIDR or a security group id."""

    protocol: str
    from_port: int
    to_port: int
    source: str
    description: str = field(default="", compare=False)

    def permission(self) -> dict[str, Any]:
        """The rule in the shape ``AuthorizeSecurityGroupIngress`` takes."""
        perm: dict[str, Any] = {
            "IpProtocol": self.protocol,
            "FromPort": self.from_port,
            "ToPort": self.to_port,
        }
        entry = {"Description": self.description} if self.description else {}
        if self.source.startswith("sg-"):
            perm["UserIdGroupPairs"] = [{"GroupId": self.source, **entry}]
        elif ":" in self.source:
            perm["Ipv6Ranges"] = [{"CidrIpv6": self.source, **entry}]
        else:
            perm["IpRanges"] = [{"CidrIp": self.source, **entry}]
        return perm


def desired_rules(group_id: str, api_cidrs: Sequence[str], external_ports: Iterable[int]) -> set[Rule]:
    """Least privilege: the API only from the deployer, cluster traffic only between nodes.

    - API (31888/tcp) from each of ``api_cidrs`` (the deployer's address by default);
    - API, Raft (31889/tcp) and DNS (53/tcp+udp) from the group itself: agents, Raft replication
      and node-to-node DNS, never from outside;
    - each service ``external_port`` (tcp) from anywhere: it is the project's public address.
    """
    rules: set[Rule] = set()
    for raw in api_cidrs:
        try:
            network = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise ValueError(f"api_cidrs: {raw!r} is not an IP address or CIDR block") from None
        rules.add(Rule("tcp", DEFAULT_API_PORT, DEFAULT_API_PORT, str(network), "oct API from the deployer"))
    rules.add(Rule("tcp", DEFAULT_API_PORT, DEFAULT_API_PORT, group_id, "oct API between nodes"))
    rules.add(Rule("tcp", DEFAULT_RAFT_PORT, DEFAULT_RAFT_PORT, group_id, "oct Raft between nodes"))
    rules.add(Rule("tcp", DNS_PORT, DNS_PORT, group_id, "oct DNS between nodes"))
    rules.add(Rule("udp", DNS_PORT, DNS_PORT, group_id, "oct DNS between nodes"))
    for port in sorted(set(external_ports)):
        if not 1 <= port <= 65535:
            raise ValueError(f"external_port {port} is not a port number (1-65535)")
        if port in RESERVED_PORTS:
            raise ValueError(f"external_port {port} is oct's own {RESERVED_PORTS[port]} port on every node")
        rules.add(Rule("tcp", port, port, "0.0.0.0/0", f"service port {port}"))
    return rules


def current_rules(group: Mapping[str, Any]) -> set[Rule]:
    """The group's ingress rules as :class:`Rule` s, one per source."""
    rules: set[Rule] = set()
    for perm in group.get("IpPermissions", []):
        proto = str(perm.get("IpProtocol", "-1"))
        low, high = int(perm.get("FromPort", -1)), int(perm.get("ToPort", -1))
        for r in perm.get("IpRanges", []):
            rules.add(Rule(proto, low, high, r["CidrIp"], r.get("Description", "")))
        for r in perm.get("Ipv6Ranges", []):
            rules.add(Rule(proto, low, high, r["CidrIpv6"], r.get("Description", "")))
        for r in perm.get("UserIdGroupPairs", []):
            rules.add(Rule(proto, low, high, r["GroupId"], r.get("Description", "")))
    return rules


def _arn_parts(role_arn: str) -> tuple[str, str]:
    """(partition, account) of an IAM ARN, so the policy is right in aws-cn and aws-us-gov too."""
    parts = role_arn.split(":")
    if len(parts) < 6 or parts[0] != "arn":
        raise ValueError(f"not an IAM role ARN: {role_arn!r}")
    return parts[1], parts[4]


_AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")
_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9-]+")


def node_policy(resources: AwsResources, role_arn: str) -> dict[str, Any]:
    """The inline policy of the nodes' role: what the leader needs, on the cluster's resources only.

    EC2 "Describe" calls cannot be limited to resources, so they are allowed on ``*``; everything
    that changes something is limited by tag conditions: instances may be launched only with the
    cluster's tags, only into the cluster's subnets and security group, and only the cluster's
    instances may be terminated. A launched instance must be of one of the cluster's instance types
    (``resources.instance_types``), boot the cluster's image (``resources.ami``) and require IMDSv2;
    while the ledger names no well-formed type or image, the role may launch nothing (fail closed).
    The role may be passed only to EC2 and only itself. Images are pulled only from the project's
    ECR repositories (``oct-<project>/*``, where oct pushes them), and the only S3 the role reads
    is the cluster's oct wheel (the leader signs followers' links).
    """
    partition, account = _arn_parts(role_arn)
    region, cluster, project = resources.region, resources.cluster, resources.project
    ec2 = f"arn:{partition}:ec2:{region}:{account}"
    on_launch = ["instance/*", "volume/*", "network-interface/*"]
    launch_tags = {f"aws:RequestTag/{CLUSTER_TAG}": cluster, f"aws:RequestTag/{PROJECT_TAG}": project}
    # Only well-formed values: a "*" here would widen the grant to any type or any image.
    types = sorted({t for t in resources.instance_types if _INSTANCE_TYPE.fullmatch(t)})
    ami = resources.ami if resources.ami and _AMI_ID.fullmatch(resources.ami) else None
    launch: list[dict[str, Any]] = []
    if types and ami:
        launch = [
            {
                "Sid": "LaunchClusterInstances",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": f"{ec2}:instance/*",
                "Condition": {
                    "StringEquals": {
                        **launch_tags,
                        "ec2:InstanceType": types,
                        "ec2:MetadataHttpTokens": "required",
                    }
                },
            },
            {
                "Sid": "LaunchFromClusterImage",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": [
                    f"arn:{partition}:ec2:{region}::image/{ami}",
                    f"arn:{partition}:ec2:{region}::snapshot/*",
                ],
            },
        ]
    statements: list[dict[str, Any]] = [
        {
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeAvailabilityZones",
                "ec2:DescribeImages",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeInstances",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSubnets",
            ],
            "Resource": "*",
        },
        *launch,
        {
            "Sid": "LaunchTagged",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [f"{ec2}:volume/*", f"{ec2}:network-interface/*"],
            "Condition": {"StringEquals": launch_tags},
        },
        {
            "Sid": "LaunchIntoClusterNetwork",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [f"{ec2}:subnet/*", f"{ec2}:security-group/*"],
            "Condition": {"StringEquals": {f"aws:ResourceTag/{CLUSTER_TAG}": cluster}},
        },
        {
            "Sid": "TagOnLaunch",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": [f"{ec2}:{kind}" for kind in on_launch],
            "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        },
        {
            "Sid": "TerminateClusterInstances",
            "Effect": "Allow",
            "Action": "ec2:TerminateInstances",
            "Resource": f"{ec2}:instance/*",
            "Condition": {"StringEquals": {f"aws:ResourceTag/{CLUSTER_TAG}": cluster}},
        },
        {
            "Sid": "PassOwnRole",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": role_arn,
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        },
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {
            "Sid": "EcrPull",
            "Effect": "Allow",
            "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Resource": f"arn:{partition}:ecr:{region}:{account}:repository/{repository_name(project, '*')}",
        },
        {
            "Sid": "ClusterParameters",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": f"arn:{partition}:ssm:{region}:{account}:parameter/oct/{cluster}/*",
        },
        {
            "Sid": "PublicAmiParameters",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": f"arn:{partition}:ssm:{region}::parameter/aws/service/*",
        },
    ]
    if resources.artifact_bucket:
        statements.append(
            {
                "Sid": "ClusterWheel",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:{partition}:s3:::{resources.artifact_bucket}/{artifacts.PREFIX}/*",
            }
        )
    if resources.hosted_zone_id:
        zone = resources.hosted_zone_id.removeprefix("/hostedzone/")
        statements += [
            {
                "Sid": "ZoneRecords",
                "Effect": "Allow",
                "Action": [
                    "route53:ChangeResourceRecordSets",
                    "route53:GetHostedZone",
                    "route53:ListResourceRecordSets",
                ],
                "Resource": f"arn:{partition}:route53:::hostedzone/{zone}",
            },
            {
                "Sid": "ZoneChanges",
                "Effect": "Allow",
                "Action": "route53:GetChange",
                "Resource": f"arn:{partition}:route53:::change/*",
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}


TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


def _gone(exc: AwsError) -> bool:
    """AWS's ways of saying the thing is already not there (or not attached)."""
    return exc.code.endswith(".NotFound") or exc.code in {"NoSuchEntity", "Gateway.NotAttached"}


def _unless_gone(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or None when AWS says the thing is already gone: teardown's success."""
    try:
        return fn(*args, **kwargs)
    except AwsError as e:
        if not _gone(e):
            raise
        return None


def _tag_filters(resources: AwsResources, whole_project: bool = False) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{PROJECT_TAG}", "Values": [resources.project]}]
    if not whole_project:
        filters.append({"Name": f"tag:{CLUSTER_TAG}", "Values": [resources.cluster]})
    return filters


def _has_tags(tags: Iterable[Mapping[str, str]], resources: AwsResources, whole_project: bool) -> bool:
    found = {t["Key"]: t["Value"] for t in tags}
    if found.get(PROJECT_TAG) != resources.project:
        return False
    return whole_project or found.get(CLUSTER_TAG) == resources.cluster


def _tag_spec(kind: str, resources: AwsResources, name: str) -> list[dict[str, Any]]:
    return [{"ResourceType": kind, "Tags": resources.tags(name)}]


class _Genesis:
    def __init__(self, clients: AwsClients, ledger: AwsResources, record: Record) -> None:
        self.clients = clients
        self.ec2 = clients.ec2
        self.ledger = ledger
        self._record = record

    def record(self) -> None:
        self._record(self.ledger.model_copy(deep=True))

    def _find(
        self, operation: str, key: str, id_param: str, ledger_id: str | None, filters: list[Any]
    ) -> Any:
        """The resource named in the ledger if it still exists, else the one found by tags.

        Two found by tags (two genesis runs racing) resolve to the lowest id every time, and
        destroy removes both.
        """
        if ledger_id:
            try:
                found = call(self.ec2, operation, **{id_param: [ledger_id]}).get(key, [])
            except AwsError as e:
                if not _gone(e):
                    raise
                found = []
            if found:
                return found[0]
        found = call(self.ec2, operation, Filters=filters).get(key, [])
        id_key = id_param.removesuffix("s")  # VpcIds -> VpcId
        return min(found, key=lambda r: str(r.get(id_key, ""))) if found else None

    def vpc(self, cidr: str) -> str:
        led = self.ledger
        name = led.name("vpc")
        found = self._find("describe_vpcs", "Vpcs", "VpcIds", led.vpc_id, self._named(name))
        if found is None:
            found = call(
                self.ec2, "create_vpc", CidrBlock=cidr, TagSpecifications=_tag_spec("vpc", led, name)
            )["Vpc"]
        vpc_id = str(found["VpcId"])
        if led.vpc_id != vpc_id:
            led.vpc_id = vpc_id
            self.record()
        wait_for(self.ec2, "vpc_available", delay=2, attempts=30, VpcIds=[vpc_id])
        return vpc_id

    def _named(self, name: str, *extra: dict[str, Any]) -> list[dict[str, Any]]:
        return [*_tag_filters(self.ledger), {"Name": "tag:Name", "Values": [name]}, *extra]

    def internet_gateway(self, vpc_id: str) -> str:
        led = self.ledger
        name = led.name("igw")
        found = self._find(
            "describe_internet_gateways",
            "InternetGateways",
            "InternetGatewayIds",
            led.internet_gateway_id,
            self._named(name),
        )
        if found is None:
            found = call(
                self.ec2,
                "create_internet_gateway",
                TagSpecifications=_tag_spec("internet-gateway", led, name),
            )["InternetGateway"]
        if led.internet_gateway_id != found["InternetGatewayId"]:
            led.internet_gateway_id = found["InternetGatewayId"]
            self.record()
        igw = str(found["InternetGatewayId"])
        if vpc_id not in {a.get("VpcId") for a in found.get("Attachments", [])}:
            call(self.ec2, "attach_internet_gateway", InternetGatewayId=igw, VpcId=vpc_id)
        return igw

    def subnets(self, vpc_id: str, cidr: str, count: int) -> list[str]:
        led = self.ledger
        network = ipaddress.ip_network(cidr)
        blocks = network.subnets(new_prefix=min(network.prefixlen + 8, 28))
        next(blocks)  # the first block is left free, as the reference did (10.0.1.0/24 first)
        wanted = [(led.name(f"subnet-{i}"), str(next(blocks))) for i in range(count)]
        zones = sorted(
            z["ZoneName"]
            for z in call(
                self.ec2,
                "describe_availability_zones",
                Filters=[
                    {"Name": "state", "Values": ["available"]},
                    {"Name": "zone-type", "Values": ["availability-zone"]},
                ],
            ).get("AvailabilityZones", [])
        )
        existing = call(
            self.ec2, "describe_subnets", Filters=[*_tag_filters(led), {"Name": "vpc-id", "Values": [vpc_id]}]
        ).get("Subnets", [])
        by_name = {
            tag["Value"]: subnet
            for subnet in existing
            for tag in subnet.get("Tags", [])
            if tag["Key"] == "Name"
        }
        ids: list[str] = []
        for i, (name, block) in enumerate(wanted):
            subnet = by_name.get(name)
            if subnet is None:
                zone = {"AvailabilityZone": zones[i % len(zones)]} if zones else {}
                subnet = call(
                    self.ec2,
                    "create_subnet",
                    VpcId=vpc_id,
                    CidrBlock=block,
                    TagSpecifications=_tag_spec("subnet", led, name),
                    **zone,
                )["Subnet"]
                led.subnet_ids = [*ids, subnet["SubnetId"], *[s for s in led.subnet_ids if s not in ids]]
                self.record()
            if not subnet.get("MapPublicIpOnLaunch"):
                call(
                    self.ec2,
                    "modify_subnet_attribute",
                    SubnetId=subnet["SubnetId"],
                    MapPublicIpOnLaunch={"Value": True},
                )
            ids.append(subnet["SubnetId"])
        if led.subnet_ids != ids:
            led.subnet_ids = ids
            self.record()
        return ids

    def route_table(self, vpc_id: str, igw: str, subnet_ids: list[str]) -> str:
        led = self.ledger
        name = led.name("rtb")
        found = self._find(
            "describe_route_tables",
            "RouteTables",
            "RouteTableIds",
            led.route_table_id,
            self._named(name, {"Name": "vpc-id", "Values": [vpc_id]}),
        )
        if found is None:
            found = call(
                self.ec2,
                "create_route_table",
                VpcId=vpc_id,
                TagSpecifications=_tag_spec("route-table", led, name),
            )["RouteTable"]
        table = str(found["RouteTableId"])
        if led.route_table_id != table:
            led.route_table_id = table
            self.record()
        default = [r for r in found.get("Routes", []) if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
        if not default:
            call(
                self.ec2, "create_route", RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw
            )
        elif default[0].get("GatewayId") != igw:
            call(
                self.ec2, "replace_route", RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw
            )
        associations = {
            a["SubnetId"]: a["RouteTableAssociationId"]
            for a in found.get("Associations", [])
            if a.get("SubnetId")
        }
        for subnet in subnet_ids:
            if subnet not in associations:
                answer = call(self.ec2, "associate_route_table", RouteTableId=table, SubnetId=subnet)
                associations[subnet] = answer["AssociationId"]
                led.route_table_association_ids = sorted(associations.values())
                self.record()
        if led.route_table_association_ids != sorted(associations.values()):
            led.route_table_association_ids = sorted(associations.values())
            self.record()
        return table

    def security_group(self, vpc_id: str, api_cidrs: Sequence[str], external_ports: Iterable[int]) -> str:
        led = self.ledger
        name = led.name("nodes")
        found = self._find(
            "describe_security_groups",
            "SecurityGroups",
            "GroupIds",
            led.security_group_id,
            [
                *_tag_filters(led),
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": [name]},
            ],
        )
        if found is None:
            group_id = call(
                self.ec2,
                "create_security_group",
                GroupName=name,
                Description=f"oct nodes of {led.project} ({led.cluster})",
                VpcId=vpc_id,
                TagSpecifications=_tag_spec("security-group", led, name),
            )["GroupId"]
            led.security_group_id = group_id
            self.record()
            found = call(self.ec2, "describe_security_groups", GroupIds=[group_id])["SecurityGroups"][0]
        group_id = str(found["GroupId"])
        if led.security_group_id != group_id:
            led.security_group_id = group_id
            self.record()
        want = desired_rules(group_id, api_cidrs, external_ports)
        have = current_rules(found)
        # The group is oct's alone: a rule nobody asked for (a removed service's port, an old
        # deployer address) is closed again. Each change is harmless to repeat.
        changes = (
            ("revoke_security_group_ingress", have - want, "InvalidPermission.NotFound"),
            ("authorize_security_group_ingress", want - have, "InvalidPermission.Duplicate"),
        )
        for operation, rules, already_done in changes:
            for rule in sorted(rules):
                try:
                    call(self.ec2, operation, GroupId=group_id, IpPermissions=[rule.permission()])
                except AwsError as e:
                    if e.code != already_done:
                        raise
        return group_id

    def artifact_bucket(self) -> str:
        led = self.ledger
        name = artifacts.ensure_bucket(self.clients, led)
        if led.artifact_bucket != name:
            led.artifact_bucket = name
            self.record()
        return name

    def role(self) -> str:
        led = self.ledger
        iam = self.clients.iam
        name = led.role_name or led.iam_name()
        try:
            role = call(iam, "get_role", RoleName=name)["Role"]
        except AwsError as e:
            if not _gone(e):
                raise
            role = call(
                iam,
                "create_role",
                RoleName=name,
                Path=IAM_PATH,
                AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
                Description=f"oct nodes of {led.project} ({led.cluster})",
                Tags=led.tags(name),
            )["Role"]
        if (led.role_name, led.role_arn) != (name, role["Arn"]):
            led.role_name, led.role_arn = name, role["Arn"]
            self.record()
        # Always written: the policy follows the ledger (e.g. a hosted zone added later).
        call(
            iam,
            "put_role_policy",
            RoleName=name,
            PolicyName=POLICY_NAME,
            PolicyDocument=json.dumps(node_policy(led, role["Arn"])),
        )
        if led.role_policy_name != POLICY_NAME:
            led.role_policy_name = POLICY_NAME
            self.record()
        return name

    def instance_profile(self, role_name: str) -> str:
        led = self.ledger
        iam = self.clients.iam
        name = led.instance_profile_name or led.iam_name()
        try:
            profile = call(iam, "get_instance_profile", InstanceProfileName=name)["InstanceProfile"]
        except AwsError as e:
            if not _gone(e):
                raise
            profile = call(
                iam, "create_instance_profile", InstanceProfileName=name, Path=IAM_PATH, Tags=led.tags(name)
            )["InstanceProfile"]
        if (led.instance_profile_name, led.instance_profile_arn) != (name, profile["Arn"]):
            led.instance_profile_name, led.instance_profile_arn = name, profile["Arn"]
            self.record()
        if role_name not in {r["RoleName"] for r in profile.get("Roles", [])}:
            call(iam, "add_role_to_instance_profile", InstanceProfileName=name, RoleName=role_name)
        return name


def ensure_base(
    clients: AwsClients,
    resources: AwsResources,
    *,
    api_cidrs: Sequence[str],
    external_ports: Iterable[int] = (),
    record: Record = _ignore,
    subnet_count: int = 2,
    vpc_cidr: str = DEFAULT_VPC_CIDR,
) -> AwsResources:
    """Make the cluster's base infrastructure exist, creating only what is missing; return the ledger.

    Order: VPC, internet gateway, one public subnet per availability zone (up to
    ``subnet_count``), route table with the default route, security group and its rules, the
    bucket for the oct wheel, IAM role with its inline policy, instance profile. ``record`` gets a
    copy of the ledger after every change, before the next AWS call. Running it again converges:
    the security group's rules follow ``api_cidrs`` and ``external_ports``, the role's policy
    follows the ledger.
    """
    if clients.region != resources.region:
        raise ValueError(f"the ledger is for region {resources.region}, the AWS clients for {clients.region}")
    if not 1 <= subnet_count <= 16:
        raise ValueError(f"subnet_count must be between 1 and 16, got {subnet_count}")
    try:
        network = ipaddress.ip_network(vpc_cidr)
    except ValueError:
        raise ValueError(f"vpc_cidr: {vpc_cidr!r} is not a CIDR block") from None
    if network.version != 4 or not 16 <= network.prefixlen <= 24:
        raise ValueError(f"vpc_cidr: {vpc_cidr} must be an IPv4 block between /16 and /24 (AWS's VPC sizes)")
    ports = list(external_ports)
    desired_rules("sg-00000000", api_cidrs, ports)  # bad input fails before anything is created

    step = _Genesis(clients, resources.model_copy(deep=True), record)
    vpc_id = step.vpc(vpc_cidr)
    igw = step.internet_gateway(vpc_id)
    subnets = step.subnets(vpc_id, vpc_cidr, subnet_count)
    step.route_table(vpc_id, igw, subnets)
    step.security_group(vpc_id, api_cidrs, ports)
    step.artifact_bucket()  # before the role: its policy names the bucket
    role = step.role()
    step.instance_profile(role)
    return step.ledger


class _Teardown:
    def __init__(
        self, clients: AwsClients, ledger: AwsResources, record: Record, whole_project: bool, patience: float
    ) -> None:
        self.clients = clients
        self.ec2 = clients.ec2
        self.ledger = ledger
        self._record = record
        self.whole_project = whole_project
        self.patience = patience

    def record(self) -> None:
        self._record(self.ledger.model_copy(deep=True))

    def tagged(self, operation: str, key: str, id_key: str) -> list[str]:
        found = call(self.ec2, operation, Filters=_tag_filters(self.ledger, self.whole_project)).get(key, [])
        return [str(r[id_key]) for r in found]

    def _delete(self, operation: str, **params: Any) -> None:
        """Delete one thing; "already gone" is success, "still in use" is retried for a while.

        After instances terminate, their network interfaces are released a little later, and until
        then AWS refuses to delete the security group, subnet or VPC (``DependencyViolation``).
        """
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, AwsError) and e.code == "DependencyViolation"),
            stop=stop_after_delay(self.patience),
            wait=wait_fixed(5),
            reraise=True,
        )
        _unless_gone(retrying, call, self.ec2, operation, **params)

    def artifact_buckets(self) -> None:
        artifacts.delete_buckets(self.clients, self.ledger, whole_project=self.whole_project)
        if self.ledger.artifact_bucket:
            self.ledger.artifact_bucket = None
            self.record()

    def instances(self, timeout: float, poll_interval: float) -> None:
        led = self.ledger
        found = instances.find_instances(
            self.clients, None if self.whole_project else led.cluster, project=led.project
        )
        ids = sorted({*led.instance_ids(), *(i.id for i in found)})
        instances.terminate(self.clients, ids, timeout=timeout, poll_interval=poll_interval)
        if led.instance_ids():
            led.leader_instance_id, led.follower_instance_ids = None, []
            self.record()

    def internet_gateways(self) -> None:
        led = self.ledger
        ids = {*([led.internet_gateway_id] if led.internet_gateway_id else [])}
        ids |= set(self.tagged("describe_internet_gateways", "InternetGateways", "InternetGatewayId"))
        for igw in sorted(ids):
            try:
                found = call(self.ec2, "describe_internet_gateways", InternetGatewayIds=[igw])[
                    "InternetGateways"
                ]
            except AwsError as e:
                if not _gone(e):
                    raise
                found = []
            for attachment in found[0].get("Attachments", []) if found else []:
                self._delete("detach_internet_gateway", InternetGatewayId=igw, VpcId=attachment["VpcId"])
            self._delete("delete_internet_gateway", InternetGatewayId=igw)
            if led.internet_gateway_id == igw:
                led.internet_gateway_id = None
                self.record()

    def route_tables(self) -> None:
        led = self.ledger
        ids = sorted(
            {
                *([led.route_table_id] if led.route_table_id else []),
                *self.tagged("describe_route_tables", "RouteTables", "RouteTableId"),
            }
        )
        for table in ids:
            try:
                found = call(self.ec2, "describe_route_tables", RouteTableIds=[table])["RouteTables"]
            except AwsError as e:
                if not _gone(e):
                    raise
                found = []
            for association in found[0].get("Associations", []) if found else []:
                if not association.get("Main"):
                    self._delete(
                        "disassociate_route_table", AssociationId=association["RouteTableAssociationId"]
                    )
            self._delete("delete_route_table", RouteTableId=table)
            if led.route_table_id == table:
                led.route_table_id, led.route_table_association_ids = None, []
                self.record()
        if led.route_table_association_ids:  # the table went away before its associations were forgotten
            led.route_table_association_ids = []
            self.record()

    def security_groups(self) -> None:
        led = self.ledger
        ids = {*([led.security_group_id] if led.security_group_id else [])}
        ids |= set(self.tagged("describe_security_groups", "SecurityGroups", "GroupId"))
        for group in sorted(ids):
            self._delete("delete_security_group", GroupId=group)
            if led.security_group_id == group:
                led.security_group_id = None
                self.record()

    def subnets(self) -> None:
        led = self.ledger
        ids = {*led.subnet_ids, *self.tagged("describe_subnets", "Subnets", "SubnetId")}
        for subnet in sorted(ids):
            self._delete("delete_subnet", SubnetId=subnet)
            if subnet in led.subnet_ids:
                led.subnet_ids = [s for s in led.subnet_ids if s != subnet]
                self.record()

    def vpcs(self) -> None:
        led = self.ledger
        ids = {*([led.vpc_id] if led.vpc_id else []), *self.tagged("describe_vpcs", "Vpcs", "VpcId")}
        for vpc in sorted(ids):
            self._delete("delete_vpc", VpcId=vpc)
            if led.vpc_id == vpc:
                led.vpc_id = None
                self.record()

    def _iam_tagged(
        self, list_operation: str, key: str, name_key: str, get: Callable[[str], Any]
    ) -> set[str]:
        """Names under oct's IAM path that carry the cluster's (or project's) tags."""
        iam = self.clients.iam
        names: set[str] = set()
        marker: str | None = None
        for _ in range(100):  # pages of 100: bounded
            page = call(iam, list_operation, PathPrefix=IAM_PATH, **({"Marker": marker} if marker else {}))
            for entry in page.get(key, []):
                tags = entry.get("Tags")
                if tags is None:  # real AWS leaves tags out of list answers
                    try:
                        tags = get(entry[name_key]).get("Tags", [])
                    except AwsError as e:
                        if not _gone(e):
                            raise
                        continue
                if _has_tags(tags, self.ledger, self.whole_project):
                    names.add(str(entry[name_key]))
            marker = page.get("Marker") if page.get("IsTruncated") else None
            if not marker:
                break
        return names

    def instance_profiles(self) -> None:
        led = self.ledger
        iam = self.clients.iam

        def get(name: str) -> Any:
            return call(iam, "get_instance_profile", InstanceProfileName=name)["InstanceProfile"]

        names = {*([led.instance_profile_name] if led.instance_profile_name else [])}
        names |= self._iam_tagged("list_instance_profiles", "InstanceProfiles", "InstanceProfileName", get)
        for name in sorted(names):
            profile = _unless_gone(get, name)
            for role in (profile or {}).get("Roles", []):
                _unless_gone(
                    call,
                    iam,
                    "remove_role_from_instance_profile",
                    InstanceProfileName=name,
                    RoleName=role["RoleName"],
                )
            if profile is not None:
                _unless_gone(call, iam, "delete_instance_profile", InstanceProfileName=name)
            if led.instance_profile_name == name:
                led.instance_profile_name = led.instance_profile_arn = None
                self.record()

    def roles(self) -> None:
        led = self.ledger
        iam = self.clients.iam

        def get(name: str) -> Any:
            return call(iam, "get_role", RoleName=name)["Role"]

        names = {*([led.role_name] if led.role_name else [])}
        names |= self._iam_tagged("list_roles", "Roles", "RoleName", get)
        for name in sorted(names):
            try:
                # A profile outside the ledger and the tags (made by hand) still blocks DeleteRole.
                for profile in call(iam, "list_instance_profiles_for_role", RoleName=name).get(
                    "InstanceProfiles", []
                ):
                    call(
                        iam,
                        "remove_role_from_instance_profile",
                        InstanceProfileName=profile["InstanceProfileName"],
                        RoleName=name,
                    )
                for policy in call(iam, "list_role_policies", RoleName=name).get("PolicyNames", []):
                    call(iam, "delete_role_policy", RoleName=name, PolicyName=policy)
                if led.role_name == name and led.role_policy_name:
                    led.role_policy_name = None
                    self.record()
                for attached in call(iam, "list_attached_role_policies", RoleName=name).get(
                    "AttachedPolicies", []
                ):
                    call(iam, "detach_role_policy", RoleName=name, PolicyArn=attached["PolicyArn"])
                call(iam, "delete_role", RoleName=name)
            except AwsError as e:
                if not _gone(e):
                    raise
            if led.role_name == name:
                led.role_name = led.role_arn = led.role_policy_name = None
                self.record()


def destroy_base(
    clients: AwsClients,
    resources: AwsResources,
    *,
    record: Record = _ignore,
    whole_project: bool = False,
    terminate_timeout: float = 600.0,
    poll_interval: float = 5.0,
    dependency_timeout: float = 120.0,
) -> AwsResources:
    """Remove the cluster's instances and base infrastructure; return the (emptied) ledger.

    Instances go first (nothing else can be deleted while they use it), then the base in reverse
    order of genesis. Resources are found from the ledger *and* by tags, so a lost or partial
    ledger still leads to everything; with ``whole_project`` the tags of every cluster of the
    project match (for a state file that is gone altogether). Anything already gone counts as
    done; ``record`` gets the ledger after every deletion, so a failure part-way leaves exactly
    what remains and a re-run finishes. The hosted zone is not touched (it is not base).
    """
    if clients.region != resources.region:
        raise ValueError(f"the ledger is for region {resources.region}, the AWS clients for {clients.region}")
    step = _Teardown(clients, resources.model_copy(deep=True), record, whole_project, dependency_timeout)
    step.instances(terminate_timeout, poll_interval)
    step.internet_gateways()
    step.route_tables()
    step.security_groups()
    step.subnets()
    step.vpcs()
    step.instance_profiles()
    step.roles()
    step.artifact_buckets()
    return step.ledger
