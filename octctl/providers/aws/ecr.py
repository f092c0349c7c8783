"""The project's ECR repositories: where images built from ``dockerfile_path`` live on AWS.

One repository per built service, ``oct-<project>/<service>``, so ``oct destroy`` can find and
remove exactly what oct created (repositories tagged ``oct:project``) and nothing else in the
account. Credentials come from boto3's usual chain: the CLI user's on the deploying machine, the
instance role on a node.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RegistryAuth",
    "Repository",
    "client",
    "delete_repositories",
    "ensure_repository",
    "image_exists",
    "login",
    "registry_auth",
    "repository_name",
]

TAG_PROJECT = "oct:project"
TAG_CLUSTER = "oct:cluster"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
#: ``<account>.dkr.ecr.<region>.amazonaws.com`` (and the ``.com.cn`` partition).
_ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)


@dataclass(frozen=True)
class Repository:
    name: str
    uri: str
    arn: str
    registry_id: str


@dataclass(frozen=True)
class RegistryAuth:
    """What ``docker login`` would take; kept out of reprs and logs because the password is live."""

    username: str
    password: str = field(repr=False)
    registry: str

    def docker_auth(self) -> dict[str, str]:
        """The ``auth_config`` of the docker SDK's push and pull calls."""
        return {"username": self.username, "password": self.password, "serveraddress": self.registry}


def client(region: str) -> Any:
    """An ECR client; ``AWS_ENDPOINT_URL`` (boto3's own setting) points it elsewhere, e.g. at moto."""
    import boto3

    return boto3.client("ecr", region_name=region)


def repository_name(project: str, service: str) -> str:
    """``oct-<project>/<service>``, valid as both an ECR repository and a local docker repository.

    oct's names allow ``_`` and ``-`` next to each other (``a-_b``), which neither accepts; such a
    name gets its underscores turned into dashes, which both accept in any number.
    """
    parts = [f"oct-{project}", service]
    return "/".join(p if _COMPONENT.fullmatch(p) else p.replace("_", "-") for p in parts)


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _repository(data: dict[str, Any]) -> Repository:
    return Repository(
        name=data["repositoryName"],
        uri=data["repositoryUri"],
        arn=data["repositoryArn"],
        registry_id=data["registryId"],
    )


def ensure_repository(name: str, tags: dict[str, str], *, client: Any) -> Repository:
    """The repository called ``name``, created with ``tags`` when missing.

    An existing repository is used as it is: its tags are the business of whoever created it, and
    :func:`delete_repositories` only removes repositories carrying oct's project tag.
    """
    from botocore.exceptions import ClientError

    try:
        found = client.describe_repositories(repositoryNames=[name])["repositories"]
        if found:
            return _repository(found[0])
    except ClientError as exc:
        if _error_code(exc) != "RepositoryNotFoundException":
            raise
    try:
        created = client.create_repository(
            repositoryName=name,
            tags=[{"Key": k, "Value": v} for k, v in sorted(tags.items())],
            imageTagMutability="MUTABLE",
        )
    except ClientError as exc:
        if _error_code(exc) != "RepositoryAlreadyExistsException":  # another deploy was faster
            raise
        return _repository(client.describe_repositories(repositoryNames=[name])["repositories"][0])
    return _repository(created["repository"])


def image_exists(name: str, tag: str, *, client: Any) -> bool:
    """Whether ``name:tag`` is in ECR already, so an unchanged image is not uploaded again."""
    from botocore.exceptions import ClientError

    try:
        details = client.describe_images(repositoryName=name, imageIds=[{"imageTag": tag}])["imageDetails"]
    except ClientError as exc:
        if _error_code(exc) in {"ImageNotFoundException", "RepositoryNotFoundException"}:
            return False
        raise
    return bool(details)


def login(*, client: Any) -> RegistryAuth:
    """Registry credentials (valid 12 hours) from ``GetAuthorizationToken``."""
    data = client.get_authorization_token()["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return RegistryAuth(username=username, password=password, registry=data["proxyEndpoint"])


def is_ecr_image(image: str) -> bool:
    host = image.split("/", 1)[0] if "/" in image else ""
    return _ECR_HOST.match(host) is not None


def registry_auth(image: str, *, ecr_client: Any = None) -> dict[str, str] | None:
    """``auth_config`` for pulling ``image`` when it lives in ECR, else ``None`` (a public image).

    For nodes: their instance role may read the project's repositories, and this turns that role
    into the registry login a pull needs, so no credential is ever written to the node's disk.
    """
    host = image.split("/", 1)[0] if "/" in image else ""
    match = _ECR_HOST.match(host)
    if match is None:
        return None
    api = ecr_client if ecr_client is not None else client(match["region"])
    return login(client=api).docker_auth()


def delete_repositories(project: str, *, client: Any, cluster: str | None = None) -> list[str]:
    """Delete the project's repositories with all their images; returns the deleted names.

    Only repositories tagged ``oct:project = <project>`` (and ``oct:cluster`` when given) go, so a
    repository someone else created under a similar name survives.
    """
    from botocore.exceptions import ClientError

    prefix = repository_name(project, "x").split("/", 1)[0] + "/"
    deleted: list[str] = []
    for page in client.get_paginator("describe_repositories").paginate():
        for data in page["repositories"]:
            if not data["repositoryName"].startswith(prefix):
                continue
            tags = {
                t["Key"]: t["Value"]
                for t in client.list_tags_for_resource(resourceArn=data["repositoryArn"])["tags"]
            }
            if tags.get(TAG_PROJECT) != project or (cluster is not None and tags.get(TAG_CLUSTER) != cluster):
                continue
            try:
                client.delete_repository(repositoryName=data["repositoryName"], force=True)
            except ClientError as exc:
                if _error_code(exc) != "RepositoryNotFoundException":
                    raise
            deleted.append(data["repositoryName"])
    return deleted
