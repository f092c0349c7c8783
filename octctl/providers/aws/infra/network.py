"""The cluster's network: one VPC, its internet gateway, a public subnet per zone, one route table.

Each kind has its genesis step (``ensure_*``: find by ledger id or tags, create what is missing,
converge what drifted) beside its teardown step (``delete_*``: everything found by the ledger and by
tags, "already gone" counting as done), so what makes a thing and what removes it read together.
The nodes are public (no NAT gateway, ≈ $32/month): each subnet gives its instances an address and
the route table sends everything else to the gateway.
"""

from __future__ import annotations

import ipaddress

from octctl.providers.aws.infra.steps import Genesis, Teardown, gone, tag_filters, tag_spec
from octctl.providers.aws.session import AwsError, call, wait_for

__all__ = [
    "DEFAULT_VPC_CIDR",
    "check_layout",
    "delete_internet_gateways",
    "delete_route_tables",
    "delete_subnets",
    "delete_vpcs",
    "ensure_internet_gateway",
    "ensure_route_table",
    "ensure_subnets",
    "ensure_vpc",
]

DEFAULT_VPC_CIDR = "10.0.0.0/16"


def check_layout(vpc_cidr: str, subnet_count: int) -> None:
    """Refuse a layout AWS would refuse half-way through genesis, before anything is created."""
    if not 1 <= subnet_count <= 16:
        raise ValueError(f"subnet_count must be between 1 and 16, got {subnet_count}")
    try:
        network = ipaddress.ip_network(vpc_cidr)
    except ValueError:
        raise ValueError(f"vpc_cidr: {vpc_cidr!r} is not a CIDR block") from None
    if network.version != 4 or not 16 <= network.prefixlen <= 24:
        raise ValueError(f"vpc_cidr: {vpc_cidr} must be an IPv4 block between /16 and /24 (AWS's VPC sizes)")


def ensure_vpc(step: Genesis, cidr: str) -> str:
    led = step.ledger
    name = led.name("vpc")
    found = step.find("describe_vpcs", "Vpcs", "VpcIds", led.vpc_id, step.named(name))
    if found is None:
        found = call(step.ec2, "create_vpc", CidrBlock=cidr, TagSpecifications=tag_spec("vpc", led, name))[
            "Vpc"
        ]
    vpc_id = str(found["VpcId"])
    if led.vpc_id != vpc_id:
        led.vpc_id = vpc_id
        step.record()
    wait_for(step.ec2, "vpc_available", delay=2, attempts=30, VpcIds=[vpc_id])
    return vpc_id


def ensure_internet_gateway(step: Genesis, vpc_id: str) -> str:
    led = step.ledger
    name = led.name("igw")
    found = step.find(
        "describe_internet_gateways",
        "InternetGateways",
        "InternetGatewayIds",
        led.internet_gateway_id,
        step.named(name),
    )
    if found is None:
        found = call(
            step.ec2,
            "create_internet_gateway",
            TagSpecifications=tag_spec("internet-gateway", led, name),
        )["InternetGateway"]
    if led.internet_gateway_id != found["InternetGatewayId"]:
        led.internet_gateway_id = found["InternetGatewayId"]
        step.record()
    igw = str(found["InternetGatewayId"])
    if vpc_id not in {a.get("VpcId") for a in found.get("Attachments", [])}:
        call(step.ec2, "attach_internet_gateway", InternetGatewayId=igw, VpcId=vpc_id)
    return igw


def ensure_subnets(step: Genesis, vpc_id: str, cidr: str, count: int) -> list[str]:
    led = step.ledger
    network = ipaddress.ip_network(cidr)
    blocks = network.subnets(new_prefix=min(network.prefixlen + 8, 28))
    next(blocks)  # the first block is left free, as the reference did (10.0.1.0/24 first)
    wanted = [(led.name(f"subnet-{i}"), str(next(blocks))) for i in range(count)]
    zones = sorted(
        z["ZoneName"]
        for z in call(
            step.ec2,
            "describe_availability_zones",
            Filters=[
                {"Name": "state", "Values": ["available"]},
                {"Name": "zone-type", "Values": ["availability-zone"]},
            ],
        ).get("AvailabilityZones", [])
    )
    existing = call(
        step.ec2, "describe_subnets", Filters=[*tag_filters(led), {"Name": "vpc-id", "Values": [vpc_id]}]
    ).get("Subnets", [])
    by_name = {
        tag["Value"]: subnet for subnet in existing for tag in subnet.get("Tags", []) if tag["Key"] == "Name"
    }
    ids: list[str] = []
    for i, (name, block) in enumerate(wanted):
        subnet = by_name.get(name)
        if subnet is None:
            zone = {"AvailabilityZone": zones[i % len(zones)]} if zones else {}
            subnet = call(
                step.ec2,
                "create_subnet",
                VpcId=vpc_id,
                CidrBlock=block,
                TagSpecifications=tag_spec("subnet", led, name),
                **zone,
            )["Subnet"]
            led.subnet_ids = [*ids, subnet["SubnetId"], *[s for s in led.subnet_ids if s not in ids]]
            step.record()
        if not subnet.get("MapPublicIpOnLaunch"):
            call(
                step.ec2,
                "modify_subnet_attribute",
                SubnetId=subnet["SubnetId"],
                MapPublicIpOnLaunch={"Value": True},
            )
        ids.append(subnet["SubnetId"])
    if led.subnet_ids != ids:
        led.subnet_ids = ids
        step.record()
    return ids


def ensure_route_table(step: Genesis, vpc_id: str, igw: str, subnet_ids: list[str]) -> str:
    led = step.ledger
    name = led.name("rtb")
    found = step.find(
        "describe_route_tables",
        "RouteTables",
        "RouteTableIds",
        led.route_table_id,
        step.named(name, {"Name": "vpc-id", "Values": [vpc_id]}),
    )
    if found is None:
        found = call(
            step.ec2,
            "create_route_table",
            VpcId=vpc_id,
            TagSpecifications=tag_spec("route-table", led, name),
        )["RouteTable"]
    table = str(found["RouteTableId"])
    if led.route_table_id != table:
        led.route_table_id = table
        step.record()
    default = [r for r in found.get("Routes", []) if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    if not default:
        call(step.ec2, "create_route", RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    elif default[0].get("GatewayId") != igw:
        call(step.ec2, "replace_route", RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    associations = {
        a["SubnetId"]: a["RouteTableAssociationId"]
        for a in found.get("Associations", [])
        if a.get("SubnetId")
    }
    for subnet in subnet_ids:
        if subnet not in associations:
            answer = call(step.ec2, "associate_route_table", RouteTableId=table, SubnetId=subnet)
            associations[subnet] = answer["AssociationId"]
            led.route_table_association_ids = sorted(associations.values())
            step.record()
    if led.route_table_association_ids != sorted(associations.values()):
        led.route_table_association_ids = sorted(associations.values())
        step.record()
    return table


def delete_internet_gateways(step: Teardown) -> None:
    led = step.ledger
    ids = {*([led.internet_gateway_id] if led.internet_gateway_id else [])}
    ids |= set(step.tagged("describe_internet_gateways", "InternetGateways", "InternetGatewayId"))
    for igw in sorted(ids):
        try:
            found = call(step.ec2, "describe_internet_gateways", InternetGatewayIds=[igw])["InternetGateways"]
        except AwsError as e:
            if not gone(e):
                raise
            found = []
        for attachment in found[0].get("Attachments", []) if found else []:
            step.delete("detach_internet_gateway", InternetGatewayId=igw, VpcId=attachment["VpcId"])
        step.delete("delete_internet_gateway", InternetGatewayId=igw)
        if led.internet_gateway_id == igw:
            led.internet_gateway_id = None
            step.record()


def delete_route_tables(step: Teardown) -> None:
    led = step.ledger
    ids = sorted(
        {
            *([led.route_table_id] if led.route_table_id else []),
            *step.tagged("describe_route_tables", "RouteTables", "RouteTableId"),
        }
    )
    for table in ids:
        try:
            found = call(step.ec2, "describe_route_tables", RouteTableIds=[table])["RouteTables"]
        except AwsError as e:
            if not gone(e):
                raise
            found = []
        for association in found[0].get("Associations", []) if found else []:
            if not association.get("Main"):
                step.delete("disassociate_route_table", AssociationId=association["RouteTableAssociationId"])
        step.delete("delete_route_table", RouteTableId=table)
        if led.route_table_id == table:
            led.route_table_id, led.route_table_association_ids = None, []
            step.record()
    if led.route_table_association_ids:  # the table went away before its associations were forgotten
        led.route_table_association_ids = []
        step.record()


def delete_subnets(step: Teardown) -> None:
    led = step.ledger
    ids = {*led.subnet_ids, *step.tagged("describe_subnets", "Subnets", "SubnetId")}
    for subnet in sorted(ids):
        step.delete("delete_subnet", SubnetId=subnet)
        if subnet in led.subnet_ids:
            led.subnet_ids = [s for s in led.subnet_ids if s != subnet]
            step.record()


def delete_vpcs(step: Teardown) -> None:
    led = step.ledger
    ids = {*([led.vpc_id] if led.vpc_id else []), *step.tagged("describe_vpcs", "Vpcs", "VpcId")}
    for vpc in sorted(ids):
        step.delete("delete_vpc", VpcId=vpc)
        if led.vpc_id == vpc:
            led.vpc_id = None
            step.record()
