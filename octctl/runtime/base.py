"""The contract between a node's agent and the thing that actually runs a service.

The leader decides *what* runs where; a runtime only knows how to make one instance on this node
match an :class:`InstanceSpec`. Every method is blocking and is called from a worker thread, so a
slow image pull or a hung engine never stalls the daemon's event loop.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from octctl.names import check_instance, check_name

RuntimeName = Literal["docker", "process"]
InstanceState = Literal["starting", "running", "restarting", "exited", "failed"]

#: Labels (docker) / record keys (process) that mark an instance as oct's, so destroy finds them all.
LABEL_MANAGED = "oct.managed"
LABEL_PROJECT = "oct.project"
LABEL_SERVICE = "oct.service"
LABEL_DEPLOYMENT = "oct.deployment"
LABEL_SPEC_HASH = "oct.spec-hash"
LABEL_NODE = "oct.node"
LABEL_CLUSTER = "oct.cluster"
LABEL_VOLUME = "oct.volume"
#: The instance port a container listens on (public services), read back into its status.
LABEL_PORT = "oct.instance-port"


class PortMapping(BaseModel):
    """Publish ``container_port`` of the instance on ``host_ip:host_port`` of the node."""

    host_ip: str
    host_port: int = Field(ge=1, le=65535)
    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"


HealthState = Literal["starting", "healthy", "unhealthy", "none"]
HealthKind = Literal["http", "tcp", "command"]


class HealthcheckSpec(BaseModel):
    """How the node probes one instance (rendered from ``[project.services.healthcheck]``).

    ``host`` and ``port`` are where the instance listens as seen from its node: the node's address
    and the instance port (public services), the published ``internal_port`` or the process's
    ``PORT``. They are part of the spec, so the probe follows the instance when its port moves.
    """

    kind: HealthKind
    path: str = Field(default="/", description="http: the path to GET")
    command: list[str] = Field(default_factory=list, description="command: argv run in the instance")
    host: str = ""
    port: int | None = Field(default=None, ge=1, le=65535)
    interval: float = Field(default=2.0, gt=0)
    timeout: float = Field(default=1.0, gt=0)
    retries: int = Field(default=3, ge=1)
    start_period: float = Field(default=10.0, ge=0)


class VolumeMount(BaseModel):
    """One of the instance's volumes: kept by the node across the instance's replacements.

    ``path`` is where a container sees it; a process has none and finds its folder in
    ``$OCT_VOLUME_<NAME>`` instead (``octctl/volumes.py``).
    """

    name: str
    path: str | None = None
    #: aws: the network disk holding the data and the device it was attached as; the node mounts
    #: it at the volume's folder before the instance starts (``Provider.mount_disk``).
    disk: str | None = None
    device: str | None = None

    @field_validator("name")
    @classmethod
    def _a_name(cls, value: str) -> str:
        """It names a Docker volume and a folder: never a path or other junk."""
        return check_name("volume", value)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"volume path {value!r} is not absolute")
        return value


class InstanceSpec(BaseModel):
    """Everything a node needs to run one service, fully rendered by the leader.

    ``spec_hash`` identifies the desired content: the agent replaces an instance whose hash differs
    and leaves an identical one alone, which is what makes redeploying an unchanged spec a no-op.
    """

    project: str
    service: str
    cluster: str = ""
    node: str = ""
    deployment: str
    spec_hash: str
    runtime: RuntimeName = "docker"
    image: str = ""
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cpus: int = Field(gt=0, description="millicores")
    memory: int = Field(gt=0, description="MB")
    ports: list[PortMapping] = Field(default_factory=list)
    workdir: str | None = Field(default=None, description="process runtime: working directory")
    network: str | None = Field(
        default=None, description="docker: a network shared by the cluster's containers (created if missing)"
    )
    aliases: list[str] = Field(default_factory=list, description="docker: names of the instance on `network`")
    dns: list[str] = Field(default_factory=list, description="docker: resolvers given to the container")
    dns_search: list[str] = Field(default_factory=list, description="docker: search domains of the container")
    healthcheck: HealthcheckSpec | None = Field(
        default=None, description="probed by the node (octctl/health/); none: running counts as healthy"
    )
    volumes: list[VolumeMount] = Field(default_factory=list, description="data kept across replacements")
    instance_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="where the ingress reaches it on its node (public services); reported back in its status",
    )
    beside: bool = Field(
        default=False,
        description="start-first: start it next to the running version (on another instance port), "
        "which stays as the instance's previous generation until retire_previous",
    )
    keep_previous: float = Field(
        default=0,
        ge=0,
        description="beside: seconds it must serve without a break before its previous generation "
        "is retired (the service's min_healthy_time)",
    )

    @field_validator("project", "service")
    @classmethod
    def _a_name(cls, value: str, info: ValidationInfo) -> str:
        """Both end up in file and container names: a spec never carries a path or other junk.
        ``service`` names the instance (``web``, ``web.2``: see ``octctl/instances.py``)."""
        if info.field_name == "service":
            return check_instance(value)
        return check_name(str(info.field_name), value)


class InstanceStatus(BaseModel):
    """What a runtime observes about one instance; reported to the leader and shown by ``oct status``."""

    project: str
    service: str
    runtime: RuntimeName
    deployment: str = ""
    spec_hash: str = ""
    state: InstanceState
    error: str | None = None
    restarts: int = 0
    exit_code: int | None = None
    log_tail: list[str] = Field(default_factory=list)
    health: HealthState = Field(
        default="none",
        description="the node's verdict from the service's healthcheck; none: it has no check, so "
        "running (state) is what counts",
    )
    health_output: str = Field(default="", description="what the last telling probe said (at most 512 bytes)")
    health_changed_at: float | None = Field(default=None, description="when health last changed (Unix time)")
    port: int | None = Field(default=None, description="the instance port it listens on (its spec's)")
    previous_port: int | None = Field(
        default=None,
        description="the instance port of its previous generation, which still runs and serves until "
        "this one does (a start-first replacement beside it)",
    )
    addresses: list[str] = Field(
        default_factory=list,
        description="the container's own addresses on its networks: where its calls come from, which "
        "is how the mesh knows which service is calling (allow); none for a process",
    )

    @classmethod
    def failed_to_start(cls, spec: InstanceSpec, error: str) -> InstanceStatus:
        """The status of an instance of ``spec`` that could not be started, saying why."""
        return cls(
            project=spec.project,
            service=spec.service,
            runtime=spec.runtime,
            deployment=spec.deployment,
            spec_hash=spec.spec_hash,
            state="failed",
            error=error,
        )


class Usage(BaseModel):
    """What one instance uses: CPU time so far (a rate needs two readings) and memory now."""

    project: str
    service: str = Field(description="the instance: web, web.2 ...")
    runtime: RuntimeName
    cpu_seconds: float = Field(description="user and system CPU time since it started")
    memory_bytes: int = Field(description="memory in use now (the page cache it could give back excluded)")


class LogStream(abc.ABC):
    """An instance's log lines, oldest first: the last ``tail`` then, when following, each new one
    as it is written. Iterating blocks (a worker thread's job); :meth:`close` from another thread
    ends it, the iteration then stops at once or at its next line."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[str]: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class LinesSoFar(LogStream):
    """A stream that only has what was already written (a runtime that cannot follow)."""

    def __init__(self, lines: builtins.list[str]) -> None:
        self._lines = lines

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def close(self) -> None:
        self._lines = []


class RuntimeFailure(Exception):
    """A runtime could not do what was asked; the message is shown to the user as is."""


class Runtime(abc.ABC):
    """Runs instances of services on this node.

    Contract:
    - ``apply`` is idempotent: an instance with the same ``spec_hash`` already present is left
      running untouched; a different hash is replaced (old one removed first, since both may want
      the same host port), except with ``spec.beside`` (a start-first update to another instance
      port) where a runtime that can keeps the running one as the instance's *previous generation*:
      still serving, reported as the new status's ``previous_port``, stopped by
      :meth:`retire_previous`. A beside apply whose spec is the previous generation's (a rollback
      before it was retired) makes that one current again and drops the other. It returns the
      observed status right after starting; a failure to start (image missing and not pullable,
      command not found, port taken) is returned as ``state="failed"`` with a clear ``error``,
      never raised.
    - ``remove`` is idempotent: removing an absent instance is not an error.
    - ``list`` reports every instance this runtime owns for ``project`` (all projects if None),
      including ones that crashed, so the leader can see and repair them.
    - Nothing here logs secrets: env values are never written to a log line.
    """

    name: RuntimeName

    @abc.abstractmethod
    def apply(self, spec: InstanceSpec) -> InstanceStatus:
        """Create or replace the instance so it matches ``spec``."""

    @abc.abstractmethod
    def remove(self, project: str, service: str) -> None:
        """Stop and delete the instance of ``service`` if there is one."""

    @abc.abstractmethod
    def list(self, project: str | None = None) -> list[InstanceStatus]:
        """Observe every instance this runtime owns."""

    @abc.abstractmethod
    def logs(self, project: str, service: str, tail: int = 50) -> builtins.list[str]:
        """The last ``tail`` lines of the instance's output (empty if it has none)."""

    def log_stream(
        self, project: str, service: str, tail: int, since: float | None = None, follow: bool = False
    ) -> LogStream:
        """The instance's last ``tail`` lines (written after ``since``, a Unix time, where the
        runtime knows when a line was written) and, with ``follow``, the lines written from then on,
        until the instance is gone or the stream closed. The default: what :meth:`logs` gives."""
        return LinesSoFar(self.logs(project, service, tail))

    def status(self, project: str, service: str) -> InstanceStatus | None:
        """The instance of ``service`` as ``list`` reports it, or None if there is none here.

        Health checks ask every few seconds; runtimes override this with a cheaper lookup.
        """
        return next((s for s in self.list(project) if s.service == service), None)

    def usage(self, project: str | None = None) -> builtins.list[Usage]:
        """What each running instance (of ``project``) uses now; instances it cannot tell are left
        out. Read at a metrics scrape and by ``oct top``, never on the leader's polls."""
        return []

    def retire_previous(self, project: str, service: str) -> None:  # noqa: B027 - optional hook
        """Stop and delete the instance's previous generation, if it has one (the agent calls it
        once the current one serves). A runtime that never keeps one has nothing to do."""

    def restart(self, project: str, service: str) -> None:
        """Restart the instance the way a crash would (counted in ``restarts``); used when its
        health check fails. Raises :class:`RuntimeFailure` when there is no instance to restart."""
        raise RuntimeFailure(f"the {self.name} runtime cannot restart instances")

    def execute(
        self, project: str, service: str, argv: builtins.list[str], timeout: float
    ) -> tuple[int, str]:
        """Run ``argv`` inside the instance (a health check command): its exit status and output."""
        raise RuntimeFailure(f"the {self.name} runtime cannot run commands in instances")

    def volume_folders(self, project: str, service: str) -> dict[str, Path]:
        """Where on this machine each of the instance's volumes keeps its data, by volume name
        (what ``oct backup`` packs). Raises :class:`RuntimeFailure` when there is no instance."""
        raise RuntimeFailure(f"the {self.name} runtime has no volumes")

    @contextlib.contextmanager
    def stopped(self, project: str, service: str) -> Iterator[dict[str, Path]]:
        """Stop the instance, give its :meth:`volume_folders`, and start it again afterwards (what
        ``oct restore`` does in between). The caller holds the service's lock, so no apply runs."""
        raise RuntimeFailure(f"the {self.name} runtime has no volumes")
        yield {}  # (unreachable: makes this a generator for contextmanager)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and stop supervisors; instances keep running unless the runtime says otherwise."""
