"""Shared by the base-infrastructure and instance tests: fresh ledgers and an inventory by tags."""

from __future__ import annotations

import secrets
from typing import Any

from octctl.providers.aws.resources import PROJECT_TAG, AwsResources
from octctl.providers.aws.session import AwsClients

REGION = "us-east-1"  # what the aws_env fixture sets as the default region


def new_ledger(project: str | None = None) -> AwsResources:
    """A ledger for a project and cluster no other test uses (all tests share one moto_server)."""
    return AwsResources(
        region=REGION,
        project=project or f"t{secrets.token_hex(4)}",
        cluster=f"c-{secrets.token_hex(4)}",
    )


def _has_project(tags: list[dict[str, str]] | None, project: str) -> bool:
    return any(t["Key"] == PROJECT_TAG and t["Value"] == project for t in tags or [])


def tagged(clients: AwsClients, project: str) -> dict[str, list[str]]:
    """Every resource kind oct makes, listed by the project tag; instances only while not terminated."""
    ec2, iam = clients.ec2, clients.iam
    by_tag = [{"Name": f"tag:{PROJECT_TAG}", "Values": [project]}]
    found: dict[str, list[str]] = {
        "vpcs": [v["VpcId"] for v in ec2.describe_vpcs(Filters=by_tag)["Vpcs"]],
        "subnets": [s["SubnetId"] for s in ec2.describe_subnets(Filters=by_tag)["Subnets"]],
        "internet_gateways": [
            g["InternetGatewayId"] for g in ec2.describe_internet_gateways(Filters=by_tag)["InternetGateways"]
        ],
        "route_tables": [r["RouteTableId"] for r in ec2.describe_route_tables(Filters=by_tag)["RouteTables"]],
        "security_groups": [
            g["GroupId"] for g in ec2.describe_security_groups(Filters=by_tag)["SecurityGroups"]
        ],
        "instances": [
            i["InstanceId"]
            for r in ec2.describe_instances(
                Filters=[
                    *by_tag,
                    {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
                ]
            )["Reservations"]
            for i in r["Instances"]
        ],
        "network_interfaces": [
            n["NetworkInterfaceId"]
            for n in ec2.describe_network_interfaces(Filters=by_tag)["NetworkInterfaces"]
        ],
        "volumes": [v["VolumeId"] for v in ec2.describe_volumes(Filters=by_tag)["Volumes"]],
    }
    # Searched account-wide, not only under oct's path: a role made elsewhere would be a bug too.
    roles: list[Any] = iam.list_roles()["Roles"]
    found["roles"] = [
        r["RoleName"]
        for r in roles
        if _has_project(iam.get_role(RoleName=r["RoleName"])["Role"].get("Tags"), project)
    ]
    profiles: list[Any] = iam.list_instance_profiles()["InstanceProfiles"]
    found["instance_profiles"] = [
        p["InstanceProfileName"] for p in profiles if _has_project(p.get("Tags"), project)
    ]
    s3 = clients.session.client("s3")
    found["buckets"] = [b["Name"] for b in s3.list_buckets()["Buckets"] if _bucket_of(s3, b["Name"], project)]
    return found


def _bucket_of(s3: Any, bucket: str, project: str) -> bool:
    try:
        tags = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    except s3.exceptions.ClientError:
        return False  # untagged: not oct's
    return _has_project(tags, project)


def count(inventory: dict[str, list[str]]) -> dict[str, int]:
    return {kind: len(ids) for kind, ids in inventory.items()}
