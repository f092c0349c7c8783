"""The nodes' IAM identity: the role, its inline policy and the instance profile EC2 boots with.

The policy (:func:`node_policy`) is the security boundary of a node, so it lives with the steps
that create and remove the role and profile: what the role may do and how it comes to exist are
reviewed together. IAM names are global to the account, so both live under oct's IAM path
(``/oct/``) where teardown can list them by tags without scanning the account.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from octctl.providers.aws import artifacts
from octctl.providers.aws.ecr import repository_name
from octctl.providers.aws.infra.steps import Genesis, Teardown, gone, has_tags, unless_gone
from octctl.providers.aws.resources import CLUSTER_TAG, IAM_PATH, PROJECT_TAG, AwsResources
from octctl.providers.aws.session import AwsError, call

__all__ = [
    "POLICY_NAME",
    "delete_instance_profiles",
    "delete_roles",
    "ensure_instance_profile",
    "ensure_role",
    "node_policy",
]

POLICY_NAME = "oct-node"


def _arn_parts(role_arn: str) -> tuple[str, str]:
    """(partition, account) of an IAM ARN, so the policy is right in aws-cn and aws-us-gov too."""
    parts = role_arn.split(":")
    if len(parts) < 6 or parts[0] != "arn":
        raise ValueError(f"not an IAM role ARN: {role_arn!r}")
    return parts[1], parts[4]


_AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")
_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9-]+")


def _volume_statements(ec2: str, cluster: str, project: str) -> list[dict[str, Any]]:
    """EBS volumes of the project's volumes (``octctl/providers/aws/ebs.py``) and their snapshots:
    created encrypted with the cluster's tags; attached (to the cluster's instances only),
    detached, snapshotted and deleted only when tagged with this cluster. A volume or backup an
    earlier cluster of the project kept is handed over by the CLI, with the user's credentials,
    which tags it with the new cluster (``octcli/providers/aws/disks.py``, ``adopt``)."""
    partition_region = ec2.rsplit(":", 1)[0]  # arn:<partition>:ec2:<region> (ec2 ends in :<account>)
    tagged = {f"aws:RequestTag/{CLUSTER_TAG}": cluster, f"aws:RequestTag/{PROJECT_TAG}": project}
    of_cluster = {"StringEquals": {f"aws:ResourceTag/{CLUSTER_TAG}": cluster}}
    snapshots = f"{partition_region}::snapshot/*"  # snapshots' ARNs name no account
    return [
        {
            "Sid": "CreateClusterVolumes",
            "Effect": "Allow",
            "Action": "ec2:CreateVolume",
            "Resource": f"{ec2}:volume/*",
            "Condition": {"StringEquals": tagged, "Bool": {"ec2:Encrypted": "true"}},
        },
        {
            "Sid": "ClusterVolumes",
            "Effect": "Allow",
            "Action": ["ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume", "ec2:CreateSnapshot"],
            "Resource": f"{ec2}:volume/*",
            "Condition": of_cluster,
        },
        {
            "Sid": "AttachToClusterInstances",
            "Effect": "Allow",
            "Action": ["ec2:AttachVolume", "ec2:DetachVolume"],
            "Resource": f"{ec2}:instance/*",
            "Condition": of_cluster,
        },
        {
            "Sid": "CreateClusterSnapshots",
            "Effect": "Allow",
            "Action": "ec2:CreateSnapshot",
            "Resource": snapshots,
            "Condition": {"StringEquals": tagged},
        },
        {
            "Sid": "ClusterSnapshots",
            "Effect": "Allow",
            "Action": ["ec2:CreateVolume", "ec2:DeleteSnapshot"],
            "Resource": snapshots,
            "Condition": of_cluster,
        },
        {
            "Sid": "TagClusterSnapshots",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": snapshots,
            "Condition": {"StringEquals": {"ec2:CreateAction": "CreateSnapshot"}},
        },
    ]


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
    # Over 60 lines on purpose: the body is the policy document, one literal statement per grant.
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
                "ec2:DescribeSnapshots",
                "ec2:DescribeSubnets",
                "ec2:DescribeVolumes",
            ],
            "Resource": "*",
        },
        *launch,
        *_volume_statements(ec2, cluster, project),
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
            "Condition": {"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateVolume"]}},
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


def ensure_role(step: Genesis) -> str:
    led = step.ledger
    iam = step.clients.iam
    name = led.role_name or led.iam_name()
    try:
        role = call(iam, "get_role", RoleName=name)["Role"]
    except AwsError as e:
        if not gone(e):
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
        step.record()
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
        step.record()
    return name


def ensure_instance_profile(step: Genesis, role_name: str) -> str:
    led = step.ledger
    iam = step.clients.iam
    name = led.instance_profile_name or led.iam_name()
    try:
        profile = call(iam, "get_instance_profile", InstanceProfileName=name)["InstanceProfile"]
    except AwsError as e:
        if not gone(e):
            raise
        profile = call(
            iam, "create_instance_profile", InstanceProfileName=name, Path=IAM_PATH, Tags=led.tags(name)
        )["InstanceProfile"]
    if (led.instance_profile_name, led.instance_profile_arn) != (name, profile["Arn"]):
        led.instance_profile_name, led.instance_profile_arn = name, profile["Arn"]
        step.record()
    if role_name not in {r["RoleName"] for r in profile.get("Roles", [])}:
        call(iam, "add_role_to_instance_profile", InstanceProfileName=name, RoleName=role_name)
    return name


def _tagged_names(
    step: Teardown, list_operation: str, key: str, name_key: str, get: Callable[[str], Any]
) -> set[str]:
    """Names under oct's IAM path that carry the cluster's (or project's) tags."""
    iam = step.clients.iam
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
                    if not gone(e):
                        raise
                    continue
            if has_tags(tags, step.ledger, step.whole_project):
                names.add(str(entry[name_key]))
        marker = page.get("Marker") if page.get("IsTruncated") else None
        if not marker:
            break
    return names


def delete_instance_profiles(step: Teardown) -> None:
    led = step.ledger
    iam = step.clients.iam

    def get(name: str) -> Any:
        return call(iam, "get_instance_profile", InstanceProfileName=name)["InstanceProfile"]

    names = {*([led.instance_profile_name] if led.instance_profile_name else [])}
    names |= _tagged_names(step, "list_instance_profiles", "InstanceProfiles", "InstanceProfileName", get)
    for name in sorted(names):
        profile = unless_gone(get, name)
        for role in (profile or {}).get("Roles", []):
            unless_gone(
                call,
                iam,
                "remove_role_from_instance_profile",
                InstanceProfileName=name,
                RoleName=role["RoleName"],
            )
        if profile is not None:
            unless_gone(call, iam, "delete_instance_profile", InstanceProfileName=name)
        if led.instance_profile_name == name:
            led.instance_profile_name = led.instance_profile_arn = None
            step.record()


def delete_roles(step: Teardown) -> None:
    led = step.ledger
    iam = step.clients.iam

    def get(name: str) -> Any:
        return call(iam, "get_role", RoleName=name)["Role"]

    names = {*([led.role_name] if led.role_name else [])}
    names |= _tagged_names(step, "list_roles", "Roles", "RoleName", get)
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
                step.record()
            for attached in call(iam, "list_attached_role_policies", RoleName=name).get(
                "AttachedPolicies", []
            ):
                call(iam, "detach_role_policy", RoleName=name, PolicyArn=attached["PolicyArn"])
            call(iam, "delete_role", RoleName=name)
        except AwsError as e:
            if not gone(e):
                raise
        if led.role_name == name:
            led.role_name = led.role_arn = led.role_policy_name = None
            step.record()
