"""The ledger of every AWS resource oct made for one cluster, kept in the CLI's state record.

Every step of genesis records the id it just created before the next step starts, so whatever
happens mid-way the state names everything that exists; tags (:func:`tags`) are the second way to
find the same resources when the ledger itself is lost. Pure data: no boto3 here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CLUSTER_TAG", "IAM_PATH", "PROJECT_TAG", "ROLE_TAG", "AwsResources", "NodeArtifact", "tags"]

PROJECT_TAG = "oct:project"
CLUSTER_TAG = "oct:cluster"
#: ``leader`` or ``follower`` on instances.
ROLE_TAG = "oct:role"
#: IAM path of oct's roles and instance profiles: lets ``destroy`` list them without scanning the account.
IAM_PATH = "/oct/"


def tags(project: str, cluster: str, name: str | None = None, **extra: str) -> list[dict[str, str]]:
    """AWS tag list marking a resource as oct's, for ``project`` and ``cluster``."""
    found = {PROJECT_TAG: project, CLUSTER_TAG: cluster, **({"Name": name} if name else {}), **extra}
    return [{"Key": key, "Value": value} for key, value in found.items()]


class AwsResources(BaseModel):
    """Ids of what exists in AWS for one cluster. ``None``/empty means "not created, or already gone".

    ``region``, ``project`` and ``cluster`` are enough to find everything again by tags, so a ledger
    with only those (a crash before the first id was saved) still lets ``destroy`` finish.
    """

    model_config = ConfigDict(extra="forbid")

    region: str
    project: str
    cluster: str
    vpc_id: str | None = None
    internet_gateway_id: str | None = None
    subnet_ids: list[str] = Field(default_factory=list, description="one per availability zone used")
    route_table_id: str | None = None
    route_table_association_ids: list[str] = Field(default_factory=list)
    security_group_id: str | None = None
    role_name: str | None = None
    role_arn: str | None = None
    role_policy_name: str | None = None
    instance_profile_name: str | None = None
    instance_profile_arn: str | None = None
    leader_instance_id: str | None = None
    follower_instance_ids: list[str] = Field(default_factory=list)
    hosted_zone_id: str | None = Field(
        default=None, description="Route53 zone of project.domain; the node role may change its records"
    )
    artifact_bucket: str | None = Field(
        default=None, description="private S3 bucket holding the oct wheel the nodes install"
    )
    instance_types: list[str] = Field(
        default_factory=list,
        description="instance types of the cluster (picked at genesis): the only ones the node role launches",
    )
    ami: str | None = Field(
        default=None,
        description="image the cluster's nodes boot (picked at genesis): the only one the node role launches",
    )
    volume_ids: list[str] = Field(
        default_factory=list,
        description="EBS volumes holding the project's volumes, as the cluster said after the last deploy "
        "(the leader makes them; `oct destroy --volumes` also finds them by tags)",
    )

    def instance_ids(self) -> list[str]:
        return [*([self.leader_instance_id] if self.leader_instance_id else []), *self.follower_instance_ids]

    def base_is_empty(self) -> bool:
        """True when no base-infrastructure id is left (instances and the zone are not base)."""
        return not (
            self.vpc_id
            or self.internet_gateway_id
            or self.subnet_ids
            or self.route_table_id
            or self.route_table_association_ids
            or self.security_group_id
            or self.role_name
            or self.instance_profile_name
            or self.artifact_bucket
        )

    def is_empty(self) -> bool:
        return self.base_is_empty() and not self.instance_ids() and not self.hosted_zone_id

    def tags(self, name: str | None = None, **extra: str) -> list[dict[str, str]]:
        return tags(self.project, self.cluster, name, **extra)

    def name(self, kind: str) -> str:
        """The ``Name`` tag of one kind of resource, readable in the console."""
        return f"oct-{self.project}-{self.cluster}-{kind}"

    def iam_name(self) -> str:
        """Role and instance profile name: unique per account (IAM names are global), ≤ 64 characters."""
        return f"oct-{self.project[:40]}-{self.cluster}"[:64]


class NodeArtifact(BaseModel):
    """Where the cluster's oct wheel is and what it must hash to; the CLI uploads it at genesis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    key: str = Field(pattern=r"^artifacts/[0-9a-f]{64}/[A-Za-z0-9_.-]+\.whl$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    version: str = Field(min_length=1)
