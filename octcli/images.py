"""Images for services that give a ``dockerfile_path`` instead of an ``image``.

The CLI builds them on the deploying machine, before any node is started or asked to do anything,
so a broken Dockerfile stops ``oct deploy`` with nothing changed. Each image is tagged with a hash
of exactly what goes into the build (the context files after exclusions, and the Dockerfile), so
an unchanged folder gives the same tag, the same spec hash on the nodes, and an unchanged redeploy
does nothing; editing any file in the context gives a new tag and replaces the service.

On a local cluster every node shares this machine's Docker engine, so the built tag is used as is.
On AWS the nodes cannot see this engine: ``octcli.providers.aws.images`` copies the images to an
ECR repository of the project and the services run the ECR URI instead.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from octcli.errors import InvalidConfig, OctError
from octctl.providers.aws import ecr
from octctl.runtime.base import LABEL_MANAGED, LABEL_PROJECT, LABEL_SERVICE

if TYPE_CHECKING:
    from docker import DockerClient

    from octctl.config import Config, Service

__all__ = [
    "BuildFailed",
    "build_images",
    "context_files",
    "docker_engine",
    "dockerfile_services",
    "image_repository",
    "image_tag",
    "planned_images",
    "with_images",
]

Phase = Callable[[str], None]

#: Lines of build output shown when a build fails: enough to see the failing step and its error.
LOG_TAIL_LINES = 15
#: Hex digits of the content hash in the tag; 48 bits make a collision between two builds of one
#: service practically impossible, and the tag stays short enough to read in ``oct status``.
TAG_DIGITS = 12
#: A build step can be silent for minutes (compiling, downloading); the SDK's default 60 s socket
#: timeout would abort it.
BUILD_TIMEOUT = 3600
#: Never part of an image: oct's node folders (secrets.json holds the cluster's keys) and the
#: repository's history. Appended after the user's .dockerignore so a ``!`` rule cannot undo them.
ALWAYS_EXCLUDED = (".oct", ".git")
#: Bumped when the hashing below changes, so old tags are not reused for differently built images.
_HASH_VERSION = b"oct-image-context/1\0"


class BuildFailed(OctError):
    """An image could not be built (or the engine could not be reached); nothing was deployed."""

    exit_code = 1


@dataclass(frozen=True)
class BuildContext:
    """What docker receives for one service: the folder, the files kept from it, the Dockerfile."""

    root: Path
    files: list[str]
    dockerfile: str
    #: (name in the archive, text) when the Dockerfile lives outside the folder, as the SDK does it.
    outside_dockerfile: tuple[str, str] | None

    def digest(self) -> str:
        """Hash of everything that decides the build's result except base images, as hex."""
        h = hashlib.sha256(_HASH_VERSION)
        h.update(self.dockerfile.encode() + b"\0")
        if self.outside_dockerfile is not None:
            text = self.outside_dockerfile[1].encode()
            h.update(f"outside {len(text)}\0".encode() + text)
        for name in self.files:
            full = self.root / name
            info = full.lstat()
            # Modes, not owners or times: COPY keeps a file's mode but makes it root's and the
            # mtime changes on every checkout.
            kind = f"\0{stat.S_IFMT(info.st_mode):o} {stat.S_IMODE(info.st_mode):o}\0"
            h.update(name.encode("utf-8", "surrogateescape") + kind.encode())
            if stat.S_ISLNK(info.st_mode):
                h.update(os.readlink(full).encode("utf-8", "surrogateescape") + b"\0")
            elif stat.S_ISREG(info.st_mode):
                h.update(f"{info.st_size}\0".encode())
                with full.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
        return h.hexdigest()

    def archive(self) -> Any:
        """The context as an uncompressed tar in a temporary file, built from exactly ``files``."""
        from docker.utils import create_archive

        extra = [self.outside_dockerfile] if self.outside_dockerfile is not None else []
        return create_archive(root=str(self.root), files=self.files, extra_files=extra)


def dockerfile_services(config: Config) -> list[Service]:
    """Services oct builds: docker runtime, a ``dockerfile_path``, and no ``image`` (which wins)."""
    return [
        s
        for s in config.project.services
        if s.runtime == "docker" and not s.image and s.dockerfile_path is not None
    ]


def image_repository(project: str, service: str) -> str:
    """``oct-<project>/<service>``: the local repository of a built image, named like its ECR one."""
    return ecr.repository_name(project, service)


def _dockerignore(root: Path) -> list[str]:
    """The patterns of ``.dockerignore``, read the way the docker SDK reads them."""
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(errors="replace").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _state_patterns(config: Config, root: Path) -> Iterator[str]:
    """The CLI's state files (they hold the API token) and their lock and temporary siblings."""
    for backend in (config.project.state_backend, config.project.user_state_backend):
        local = backend.local if backend is not None else None
        if local is None or not local.path:
            continue
        path = Path(local.path).expanduser()
        path = path if path.is_absolute() else root / path
        try:
            relative = path.resolve().relative_to(root).as_posix()
        except ValueError:
            continue  # outside the folder: not in the context anyway
        yield relative
        yield relative + ".*"


def _unreadable(service: Service, root: Path, exc: OSError) -> BuildFailed:
    return BuildFailed(
        f"cannot read the build context of service '{service.name}' ({root}): "
        f"{exc.strerror or exc} ({exc.filename}); fix it or list the path in .dockerignore"
    )


def context_files(config: Config, service: Service, root: Path) -> BuildContext:
    """The build context of ``service``: the folder of oct.toml minus what must not be sent.

    Raises :class:`InvalidConfig` when the Dockerfile is missing, naming the service and the path.
    """
    from docker.utils import exclude_paths

    root = root.resolve()
    raw = service.dockerfile_path or ""
    if not raw.strip():
        raise InvalidConfig(
            f"service '{service.name}': dockerfile_path is empty (expected a path such as 'Dockerfile')"
        )
    dockerfile = (root / Path(raw).expanduser()).resolve()
    if not dockerfile.is_file():
        raise InvalidConfig(
            f"service '{service.name}': dockerfile_path '{raw}' does not exist "
            f"(looked for {dockerfile}; it is relative to the folder of oct.toml)"
        )
    outside: tuple[str, str] | None = None
    try:
        name = dockerfile.relative_to(root).as_posix()
    except ValueError:
        text = dockerfile.read_text(errors="replace")
        name = ".oct-dockerfile-" + hashlib.sha256(text.encode()).hexdigest()[:16]
        outside = (name, text)
    patterns = [*_dockerignore(root), *ALWAYS_EXCLUDED, *_state_patterns(config, root)]
    try:
        files = sorted(exclude_paths(str(root), patterns, dockerfile=name))
    except OSError as exc:
        raise _unreadable(service, root, exc) from None
    return BuildContext(root=root, files=files, dockerfile=name, outside_dockerfile=outside)


def _tag(config: Config, service: Service, context: BuildContext) -> str:
    try:
        digest = context.digest()
    except OSError as exc:
        raise _unreadable(service, context.root, exc) from None
    return f"{image_repository(config.project.name, service.name)}:{digest[:TAG_DIGITS]}"


def image_tag(config: Config, service: Service, root: Path) -> str:
    """``oct-<project>/<service>:<content hash>``: what :func:`build_images` will build, without building."""
    return _tag(config, service, context_files(config, service, root))


def planned_images(config: Config, root: Path) -> dict[str, str]:
    """Service name to the tag it would run, for showing a plan without a Docker engine."""
    return {s.name: image_tag(config, s, root) for s in dockerfile_services(config)}


def docker_engine(purpose: str) -> DockerClient:
    """This machine's Docker engine, or :class:`BuildFailed` saying it is needed to ``purpose``."""
    import docker

    try:
        client = docker.from_env(timeout=BUILD_TIMEOUT)
        client.ping()
    except Exception as exc:
        raise BuildFailed(
            f"the Docker engine is not reachable ({exc}); it is needed to {purpose}. "
            "Start it, or set image instead of dockerfile_path"
        ) from None
    return client


def _tail(lines: list[str]) -> list[str]:
    """The last meaningful lines; the builder's container housekeeping says nothing about the failure."""
    kept = [
        line
        for line in "".join(lines).splitlines()
        if line.strip() and not line.startswith("Removing intermediate container")
    ]
    return kept[-LOG_TAIL_LINES:]


def _build_failed(service: Service, context: BuildContext, reason: str, log: list[str]) -> BuildFailed:
    where = context.outside_dockerfile[0] if context.outside_dockerfile else context.dockerfile
    lines = [
        f"building the image of service '{service.name}' from {service.dockerfile_path} failed: {reason}",
    ]
    tail = _tail(log)
    if tail:
        lines.append(f"last lines of the build log ({where}, context {context.root}):")
        lines.extend(f"  {line}" for line in tail)
    return BuildFailed("\n".join(lines))


def _build(client: DockerClient, service: Service, project: str, context: BuildContext, tag: str) -> None:
    from docker.errors import APIError, DockerException
    from requests.exceptions import RequestException

    log: list[str] = []
    try:
        archive = context.archive()
    except OSError as exc:
        raise _build_failed(service, context, str(exc), log) from None
    try:
        stream = client.api.build(
            fileobj=archive,
            custom_context=True,
            dockerfile=context.dockerfile,
            tag=tag,
            rm=True,
            forcerm=True,
            decode=True,
            labels={LABEL_MANAGED: "true", LABEL_PROJECT: project, LABEL_SERVICE: service.name},
        )
        for chunk in stream:
            if "stream" in chunk:
                log.append(str(chunk["stream"]))
            if "error" in chunk:
                raise _build_failed(service, context, str(chunk["error"]).strip(), log)
    except APIError as exc:
        raise _build_failed(service, context, str(exc.explanation or exc), log) from None
    except (DockerException, RequestException) as exc:
        raise _build_failed(service, context, str(exc), log) from None
    finally:
        archive.close()


def build_images(
    config: Config,
    root: Path,
    *,
    client: DockerClient | None = None,
    on_phase: Phase | None = None,
) -> Config:
    """``config`` with ``image`` set for every service built from its ``dockerfile_path``.

    ``root`` is the folder of oct.toml: the build context, and what ``dockerfile_path`` is relative
    to. An image whose tag already exists is not built again: the tag is a hash of its inputs.
    """
    services = dockerfile_services(config)
    if not services:
        return config
    say = on_phase or (lambda _message: None)
    contexts = {s.name: context_files(config, s, root) for s in services}  # all missing files first
    own = client is None
    engine = (
        client if client is not None else docker_engine(f"build the image of service '{services[0].name}'")
    )
    images: dict[str, str] = {}
    try:
        from docker.errors import ImageNotFound

        for service in services:
            context = contexts[service.name]
            tag = _tag(config, service, context)
            try:
                engine.images.get(tag)
                say(f"image {tag} of service {service.name} is up to date")
            except ImageNotFound:
                say(f"building image {tag} of service {service.name} from {service.dockerfile_path}")
                _build(engine, service, config.project.name, context, tag)
            images[service.name] = tag
    finally:
        if own:
            engine.close()
    return with_images(config, images)


def with_images(config: Config, images: Mapping[str, str]) -> Config:
    """A copy of ``config`` whose services named in ``images`` run those images."""
    services = [
        s.model_copy(update={"image": images[s.name]}) if s.name in images else s
        for s in config.project.services
    ]
    project = config.project.model_copy(update={"services": services})
    return config.model_copy(update={"project": project})
