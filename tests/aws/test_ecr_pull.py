"""AWS nodes log in to ECR with their instance role when an image lives there, and only then: the
provider gives the docker runtime its login."""

from __future__ import annotations

import pytest

from octctl.node_settings import NodeSettings
from octctl.providers.aws.resources import AwsResources
from octctl.providers.aws.settings import AwsNodeSettings
from octctl.providers.registry import build_provider
from octctl.runtime.docker import RegistryLoginFailed
from octctl.runtime.docker.engine import Engine
from octctl.runtime.docker.images import Images

pytestmark = pytest.mark.aws

ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/oct-shop/web:0123456789ab"


def aws_node_images() -> Images:
    """The docker runtime's images as an AWS node's agent makes it: with its provider's registry login."""
    aws = AwsNodeSettings(
        resources=AwsResources(region="us-east-1", project="shop", cluster="c-1"), instance_type="t4g.small"
    )
    settings = NodeSettings(node="n", cluster="c-1", address="10.0.1.5", cpus=1000, memory=1024, provider=aws)
    provider = build_provider(settings)
    assert provider is not None
    return Images(Engine(), registry_login=provider.registry_auth)


def test_public_images_are_pulled_without_a_login() -> None:
    images = aws_node_images()
    assert images.registry_auth("busybox:1.36") is None
    assert images.registry_auth("ghcr.io/opencloudtool/example:latest") is None
    assert Images(Engine()).registry_auth(ECR_IMAGE) is None  # no provider login: the engine's own


def test_an_ecr_image_gets_the_login_the_role_allows(aws_env: str) -> None:
    auth = aws_node_images().registry_auth(ECR_IMAGE)
    assert auth is not None and auth["username"] == "AWS" and auth["password"]


def test_no_credentials_for_an_ecr_image_is_a_one_line_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # closed: nothing leaves this machine
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(RegistryLoginFailed, match=r"127\.0\.0\.1:9"):
        aws_node_images().registry_auth(ECR_IMAGE)
