"""The AWS provider's section of ``node.json``: where followers go and what they boot."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from octctl.providers.aws.resources import AwsResources, NodeArtifact
from octctl.providers.base import ProviderSettings


class AwsNodeSettings(ProviderSettings):
    """What any node of an AWS cluster needs to launch and retire followers, should it lead.

    Every node carries it (``node.json``, from its user data), so a new leader after a failover
    can run instances into the same subnets, security group and instance profile.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["aws"] = "aws"
    resources: AwsResources
    instance_type: str
    ami: str | None = Field(default=None, description="None: the public SSM parameter of the default image")
    artifact: NodeArtifact | None = Field(
        default=None, description="the oct wheel every node installs (followers too), pinned by hash"
    )
