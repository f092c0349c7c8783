"""Nodes log in to ECR with their instance role when an image lives there, and only then."""

from __future__ import annotations

import pytest

from octctl.runtime.docker import DockerRuntime, RegistryLoginFailed

pytestmark = pytest.mark.aws

ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/oct-shop/web:0123456789ab"


def test_public_images_are_pulled_without_a_login() -> None:
    assert DockerRuntime._registry_auth("busybox:1.36") is None
    assert DockerRuntime._registry_auth("ghcr.io/opencloudtool/example:latest") is None


def test_an_ecr_image_gets_the_login_the_role_allows(aws_env: str) -> None:
    auth = DockerRuntime._registry_auth(ECR_IMAGE)
    assert auth is not None and auth["username"] == "AWS" and auth["password"]


def test_no_credentials_for_an_ecr_image_is_a_one_line_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # closed: nothing leaves this machine
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(RegistryLoginFailed, match=r"127\.0\.0\.1:9"):
        DockerRuntime._registry_auth(ECR_IMAGE)
