"""The node role's ``ec2:RunInstances`` grant: only the cluster's image and instance types, with
IMDSv2 required, and nothing while the ledger does not name them.

moto stores IAM policies without evaluating them (tests/aws/test_infra.py checks what genesis
writes), so these tests evaluate the policy themselves, the way IAM does for ``RunInstances``:
the call is authorized per resource it touches (instance, volumes, network interface, subnet,
security group, image, snapshot), each by some Allow statement whose ``Resource`` matches and whose
every ``StringEquals`` key is present in that resource's request context with an allowed value.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import pytest

from octctl.providers.aws.infra import node_policy
from octctl.providers.aws.resources import AwsResources

REGION = "eu-west-1"
ACCOUNT = "123456789012"
AMI = "ami-0123456789abcdef0"
TYPES = ["t3.small", "t3.medium"]
LEDGER = AwsResources(
    region=REGION, project="shop", cluster="c-1a2b3c4d", instance_types=TYPES, ami=AMI, subnet_ids=["s"]
)
ROLE = f"arn:aws:iam::{ACCOUNT}:role/oct/{LEDGER.iam_name()}"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allowed(policy: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"  # no Deny to evaluate in this policy
        if action not in _list(statement["Action"]):
            continue
        if not any(fnmatch.fnmatchcase(resource, pattern) for pattern in _list(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        assert set(conditions) <= {"StringEquals", "Bool"}, conditions
        wanted = {**conditions.get("StringEquals", {}), **conditions.get("Bool", {})}
        if all(key in context and context[key] in _list(values) for key, values in wanted.items()):
            return True
    return False


def may_run_instances(
    policy: dict[str, Any],
    *,
    ami: str = AMI,
    instance_type: str = "t3.small",
    http_tokens: str = "required",
    cluster: str = LEDGER.cluster,
    region: str = REGION,
) -> bool:
    tags = {"aws:RequestTag/oct:cluster": cluster, "aws:RequestTag/oct:project": LEDGER.project}
    ec2 = f"arn:aws:ec2:{region}:{ACCOUNT}"
    touched = [
        (
            f"{ec2}:instance/*",
            {**tags, "ec2:InstanceType": instance_type, "ec2:MetadataHttpTokens": http_tokens},
        ),
        (f"{ec2}:volume/*", tags),
        (f"{ec2}:network-interface/*", tags),
        (f"{ec2}:subnet/subnet-1", {"aws:ResourceTag/oct:cluster": LEDGER.cluster}),
        (f"{ec2}:security-group/sg-1", {"aws:ResourceTag/oct:cluster": LEDGER.cluster}),
        (f"arn:aws:ec2:{region}::image/{ami}", {}),
        (f"arn:aws:ec2:{region}::snapshot/snap-0123", {}),
    ]
    return all(allowed(policy, "ec2:RunInstances", arn, context) for arn, context in touched)


def test_the_cluster_launches_its_own_nodes() -> None:
    policy = node_policy(LEDGER, ROLE)
    for kind in TYPES:
        assert may_run_instances(policy, instance_type=kind)


@pytest.mark.parametrize(
    "attempt",
    [
        {"ami": "ami-0fffffffffffffff0"},  # an image of the attacker's choosing
        {"instance_type": "p5.48xlarge"},  # ~$98/h
        {"instance_type": "t3.large"},  # a type the cluster does not use
        {"http_tokens": "optional"},  # IMDSv1: containers could read the role's credentials
        {"cluster": "c-other"},  # not tagged as this cluster's
        {"region": "us-east-1"},  # another region
    ],
)
def test_anything_else_is_refused(attempt: dict[str, str]) -> None:
    assert not may_run_instances(node_policy(LEDGER, ROLE), **attempt)


def test_the_conditions_name_exactly_the_cluster_image_and_types() -> None:
    statements = {s["Sid"]: s for s in node_policy(LEDGER, ROLE)["Statement"]}
    instances = statements["LaunchClusterInstances"]
    assert instances["Action"] == "ec2:RunInstances"
    assert instances["Resource"] == f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"
    assert instances["Condition"] == {
        "StringEquals": {
            "aws:RequestTag/oct:cluster": LEDGER.cluster,
            "aws:RequestTag/oct:project": LEDGER.project,
            "ec2:InstanceType": sorted(TYPES),
            "ec2:MetadataHttpTokens": "required",
        }
    }
    assert statements["LaunchFromClusterImage"]["Resource"] == [
        f"arn:aws:ec2:{REGION}::image/{AMI}",
        f"arn:aws:ec2:{REGION}::snapshot/*",
    ]
    # The statement that still covers volumes and interfaces no longer covers instances.
    assert not [r for r in statements["LaunchTagged"]["Resource"] if ":instance/" in r]
    document = json.dumps(node_policy(LEDGER, ROLE))
    assert "image/*" not in document and "instance/*" in document


def test_other_partitions_get_their_own_arns() -> None:
    role = f"arn:aws-cn:iam::{ACCOUNT}:role/oct/{LEDGER.iam_name()}"
    statements = {s["Sid"]: s for s in node_policy(LEDGER, role)["Statement"]}
    assert statements["LaunchFromClusterImage"]["Resource"][0] == f"arn:aws-cn:ec2:{REGION}::image/{AMI}"


@pytest.mark.parametrize(
    "update",
    [
        {"ami": None},
        {"instance_types": []},
        {"ami": "*"},  # never a wildcard, whatever the ledger says
        {"ami": "ami-*"},
        {"instance_types": ["*"]},
        {"instance_types": ["t3.*"]},
    ],
)
def test_without_a_well_formed_image_and_types_the_role_launches_nothing(update: dict[str, Any]) -> None:
    ledger = LEDGER.model_copy(update=update)
    policy = node_policy(ledger, ROLE)
    assert not may_run_instances(policy)
    assert not may_run_instances(policy, ami="*", instance_type="*")
    run = [s for s in policy["Statement"] if s["Action"] == "ec2:RunInstances"]
    resources = [r for s in run for r in _list(s["Resource"])]
    assert not [r for r in resources if ":instance/" in r or ":image/" in r], resources


# -- EBS volumes (octctl/providers/aws/ebs.py) ------------------------------------------------------

EC2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
OURS = {"aws:ResourceTag/oct:project": LEDGER.project, "aws:ResourceTag/oct:cluster": LEDGER.cluster}
KEPT = {"aws:ResourceTag/oct:project": LEDGER.project, "aws:ResourceTag/oct:cluster": "c-earlier"}
THEIRS = {"aws:ResourceTag/oct:project": "other", "aws:ResourceTag/oct:cluster": "c-other"}


def test_the_leader_creates_encrypted_tagged_volumes_only() -> None:
    policy = node_policy(LEDGER, ROLE)
    tags = {"aws:RequestTag/oct:cluster": LEDGER.cluster, "aws:RequestTag/oct:project": LEDGER.project}
    assert allowed(policy, "ec2:CreateVolume", f"{EC2}:volume/*", {**tags, "ec2:Encrypted": "true"})
    assert not allowed(policy, "ec2:CreateVolume", f"{EC2}:volume/*", {**tags, "ec2:Encrypted": "false"})
    untagged = {"aws:RequestTag/oct:cluster": "c-other", "aws:RequestTag/oct:project": LEDGER.project}
    assert not allowed(policy, "ec2:CreateVolume", f"{EC2}:volume/*", {**untagged, "ec2:Encrypted": "true"})
    assert allowed(policy, "ec2:CreateTags", f"{EC2}:volume/*", {"ec2:CreateAction": "CreateVolume"})
    assert not allowed(policy, "ec2:CreateTags", f"{EC2}:volume/*", {"ec2:CreateAction": "CreateTags"})


@pytest.mark.parametrize("action", ["ec2:AttachVolume", "ec2:DetachVolume"])
def test_the_cluster_s_volumes_move_between_the_cluster_s_instances_only(action: str) -> None:
    policy = node_policy(LEDGER, ROLE)
    instance = (f"{EC2}:instance/i-1", {"aws:ResourceTag/oct:cluster": LEDGER.cluster})
    stranger = (f"{EC2}:instance/i-2", {"aws:ResourceTag/oct:cluster": "c-other"})
    assert allowed(policy, action, f"{EC2}:volume/vol-1", OURS) and allowed(policy, action, *instance)
    assert not allowed(policy, action, f"{EC2}:volume/vol-2", THEIRS)  # another project's data
    # Kept by an earlier cluster of the project: only once the CLI has tagged it with this one.
    assert not allowed(policy, action, f"{EC2}:volume/vol-3", KEPT)
    assert not allowed(policy, action, *stranger)  # onto a machine outside the cluster


def test_only_the_cluster_s_volumes_and_snapshots_are_deleted() -> None:
    policy = node_policy(LEDGER, ROLE)
    snapshot = f"arn:aws:ec2:{REGION}::snapshot/snap-1"
    assert allowed(policy, "ec2:DeleteVolume", f"{EC2}:volume/vol-1", OURS)
    assert allowed(policy, "ec2:DeleteSnapshot", snapshot, OURS)
    for other in (KEPT, THEIRS, {}):
        assert not allowed(policy, "ec2:DeleteVolume", f"{EC2}:volume/vol-2", other)
        assert not allowed(policy, "ec2:DeleteSnapshot", snapshot, other)


def test_snapshots_are_made_and_read_only_as_the_cluster_s() -> None:
    """A disk changing zone, and a restore's scratch disk made from a backup (``oct restore``)."""
    policy = node_policy(LEDGER, ROLE)
    snapshot = f"arn:aws:ec2:{REGION}::snapshot/snap-1"
    tags = {"aws:RequestTag/oct:cluster": LEDGER.cluster, "aws:RequestTag/oct:project": LEDGER.project}
    assert allowed(policy, "ec2:CreateSnapshot", f"{EC2}:volume/vol-1", OURS)
    assert allowed(policy, "ec2:CreateSnapshot", f"arn:aws:ec2:{REGION}::snapshot/*", tags)
    untagged = {"aws:RequestTag/oct:cluster": "c-other", "aws:RequestTag/oct:project": LEDGER.project}
    assert not allowed(policy, "ec2:CreateSnapshot", f"arn:aws:ec2:{REGION}::snapshot/*", untagged)
    assert allowed(policy, "ec2:CreateTags", snapshot, {"ec2:CreateAction": "CreateSnapshot"})
    assert allowed(policy, "ec2:CreateVolume", snapshot, OURS)
    for other in (KEPT, THEIRS):  # a backup of an earlier cluster: the CLI hands it over first
        assert not allowed(policy, "ec2:CreateVolume", snapshot, other)
        assert not allowed(policy, "ec2:CreateSnapshot", f"{EC2}:volume/vol-2", other)
