"""The images built on this machine, copied to the cluster's ECR repositories for its nodes.

An AWS node cannot see the deploying machine's Docker engine, so after :mod:`octcli.images` has
built a service's image, it is pushed to the repository ``oct-<project>/<service>`` (created when
missing, tagged so that ``oct destroy`` finds it) and the service runs the ECR URI instead. The tag
is the content hash of the build, so an image already in ECR is not pushed again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from octcli.errors import OctError
from octcli.images import docker_engine, image_repository, with_images
from octctl.providers.aws import ecr

if TYPE_CHECKING:
    from docker import DockerClient

    from octctl.config import Config

__all__ = ["PushFailed", "push_images", "push_to_ecr"]

Phase = Callable[[str], None]


class PushFailed(OctError):
    """A built image could not be copied to the project's registry; nothing was deployed."""

    exit_code = 1


def push_to_ecr(
    local_image: str,
    *,
    project: str,
    service: str,
    cluster: str,
    region: str,
    client: DockerClient,
    ecr_client: Any = None,
) -> str:
    """Copy ``local_image`` to the ECR repository ``oct-<project>/<service>``; returns its ECR URI.

    The repository is created when missing (tagged with the project and cluster so ``oct destroy``
    finds it). An image whose tag is already in ECR is not pushed again: the tag is a content hash.
    Credentials go straight to the push call, never to ``~/.docker/config.json``.
    """
    ecr_api = ecr_client if ecr_client is not None else ecr.client(region)
    name = image_repository(project, service)
    tags = {ecr.TAG_PROJECT: project, ecr.TAG_CLUSTER: cluster}
    repository = ecr.ensure_repository(name, tags, client=ecr_api)
    tag = local_image.rsplit(":", 1)[1] if ":" in local_image.rsplit("/", 1)[-1] else "latest"
    remote = f"{repository.uri}:{tag}"
    if ecr.image_exists(name, tag, client=ecr_api):
        return remote
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    auth = ecr.login(client=ecr_api)
    failed = f"pushing the image of service '{service}' to {remote} failed"
    try:
        client.images.get(local_image).tag(repository.uri, tag=tag)
        stream: Iterable[dict[str, Any]] = client.api.push(
            repository.uri, tag=tag, auth_config=auth.docker_auth(), stream=True, decode=True
        )
        for chunk in stream:
            if "error" in chunk:
                raise PushFailed(f"{failed}: {chunk['error']}")
    except (DockerException, RequestException) as exc:
        raise PushFailed(f"{failed}: {exc}") from None
    return remote


def push_images(
    config: Config,
    built: Iterable[str],
    *,
    cluster: str,
    region: str,
    client: DockerClient | None = None,
    ecr_client: Any = None,
    on_phase: Phase | None = None,
) -> Config:
    """``config`` with the images of the ``built`` services (from :func:`~octcli.images.build_images`)
    moved to ECR.

    Pass the names from :func:`~octcli.images.dockerfile_services` of the config *before* building:
    only those images are oct's own; a service that named an ``image`` is pulled from wherever it says.
    """
    names = set(built)
    services = [s for s in config.project.services if s.name in names]
    if not services:
        return config
    say = on_phase or (lambda _message: None)
    own = client is None
    engine = client if client is not None else docker_engine("push images to ECR")
    images: dict[str, str] = {}
    try:
        for service in services:
            say(f"pushing image {service.image} of service {service.name} to ECR")
            images[service.name] = push_to_ecr(
                service.image,
                project=config.project.name,
                service=service.name,
                cluster=cluster,
                region=region,
                client=engine,
                ecr_client=ecr_client,
            )
    finally:
        if own:
            engine.close()
    return with_images(config, images)
