"""The oct.toml schema (reference: opencloudtool 0.8 ``oct-config``), as strict pydantic models.

Differences from the reference are deliberate and listed where they occur: unknown keys are errors
(the reference silently ignores them, so a typo like ``cpu = 500`` used to vanish), values are
strict (``cpus = "500"`` is an error, not a coercion), and a few keys are optional here.
"""

from __future__ import annotations

import shlex
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import ConfigError, Problem
from .graph import find_cycles, topological_sort

ProviderKind = Literal["local", "aws"]
RuntimeKind = Literal["docker", "process"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LocalBackend(_Model):
    """State kept in a file on the machine running ``oct``."""

    path: str


class S3Backend(_Model):
    """State kept in one S3 object, so a team shares it."""

    region: str
    bucket: str
    key: str


class StateBackend(_Model):
    """Where state lives; TOML shape ``[project.state_backend.local]`` mirrors the reference's tagged enum."""

    local: LocalBackend | None = None
    s3: S3Backend | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.local is None) == (self.s3 is None):
            raise ValueError("expected exactly one of [.local] or [.s3]")
        return self


class LocalProvider(_Model):
    """A simulated cluster on this machine; capacities let placement be tested without a cloud."""

    nodes: int = Field(default=3, ge=1, le=250, description="127.0.0.N addresses bound the count")
    cpus: int = Field(default=4000, gt=0, description="millicores of capacity per node")
    memory: int = Field(default=4096, gt=0, description="MB of capacity per node")


class AwsProvider(_Model):
    """The reference's only target; its region was hard-coded to us-west-2, now it is the default.

    Every key has a default, so an empty ``[project.provider.aws]`` (or no provider table at all)
    picks the cheapest instance type that fits and opens the API to the deploying machine only.
    Instance types and the sizes they offer are in ``octctl/providers/aws/pricing.py``;
    ``validate.py`` checks the values against it.
    """

    region: str = "us-west-2"
    instance_type: str | None = Field(
        default=None, description="pin every node to this type instead of the cheapest that fits"
    )
    arch: Literal["any", "x86_64", "arm64"] = Field(
        default="any", description="x86_64 for images built for amd64 only; arm64 types are cheaper"
    )
    families: list[str] | None = Field(
        default=None,
        description="only types of these families (t4g, m7g, c7g, t3, m6i, c6i); None: all oct prices",
    )
    min_nodes: int = Field(default=1, ge=1, le=1000)
    max_nodes: int = Field(
        default=10, ge=1, le=1000, description="the leader never starts more, whatever the load"
    )
    api_allowed_cidrs: list[str] | None = Field(
        default=None, description="who may reach the API port; None = the deploying machine's address"
    )
    ami: str | None = Field(
        default=None, description="image id for every node; None = the current Debian 12 for the region"
    )
    # (the defaults are pricing.DEFAULT_RESERVE, measured by bench/node_reserve.py)
    reserve_cpus: int = Field(
        default=50, ge=0, description="millicores per node kept from services for the OS, Docker and oct-ctl"
    )
    reserve_memory: int = Field(
        default=384, ge=0, description="MB per node kept from services for the OS, Docker and oct-ctl"
    )


class Provider(_Model):
    """Where nodes come from; at most one kind, and none at all means AWS as in the reference."""

    local: LocalProvider | None = None
    aws: AwsProvider | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> Self:
        if self.local is not None and self.aws is not None:
            raise ValueError("expected at most one of [.local] or [.aws]")
        return self


class Healthcheck(_Model):
    """``[project.services.healthcheck]``: how the node that runs an instance tells it is healthy.

    The defaults are the issue's example rather than Docker's (30 s interval, 30 s timeout, no start
    period): a rolling update waits on these checks, so a verdict within seconds matters more than
    a quiet probe. Timings are seconds and may be fractions. ``timeout < interval`` and a port for
    http/tcp are checked in ``healthcheck_checks.py``, where the whole service is known.
    """

    http: str | None = Field(default=None, description="GET this path on the instance port; 2xx-3xx: healthy")
    tcp: bool | None = Field(default=None, description="true: connecting to the instance's port is healthy")
    command: str | None = Field(default=None, description="run in the instance; exit status 0 is healthy")
    interval: float = Field(default=2.0, ge=0.1, le=3600.0, description="seconds between probes")
    timeout: float = Field(default=1.0, gt=0.0, le=600.0, description="seconds one probe may take")
    retries: int = Field(default=3, ge=1, le=100, description="consecutive failures before unhealthy")
    start_period: float = Field(
        default=10.0, ge=0.0, le=3600.0, description="seconds after a start in which failures do not count"
    )

    @field_validator("http")
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or any(c.isspace() or c < " " for c in value)):
            raise ValueError(
                f'expected a path starting with "/" and holding no spaces (like "/up"), got "{value}"'
            )
        return value

    @field_validator("tcp")
    @classmethod
    def _only_true(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError("tcp = false checks nothing: write tcp = true, or use http or command")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if sum(kind is not None for kind in (self.http, self.tcp, self.command)) != 1:
            raise ValueError('expected exactly one of http = "/path", tcp = true or command = "..."')
        return self

    @property
    def kind(self) -> Literal["http", "tcp", "command"]:
        if self.http is not None:
            return "http"
        return "tcp" if self.tcp else "command"


class UpdatePolicy(_Model):
    """``[project.services.update]``: how a changed service is rolled out.

    ``stop-first`` drains an instance out of DNS and the ingress, stops it and starts its new
    version; ``start-first`` first starts ``max_parallel`` extra instances of the new version, so
    as many as ``replicas`` serve throughout (see :mod:`octctl.leader.surge`).
    """

    order: Literal["stop-first", "start-first"] = "stop-first"
    max_parallel: int = Field(default=1, ge=1, le=100, description="instances replaced at once")
    min_healthy_time: float = Field(
        default=0,
        ge=0,
        le=3600,
        description="seconds a replaced instance must stay healthy before the next batch",
    )
    healthy_deadline: float = Field(
        default=300, gt=0, le=3600, description="seconds a new instance may take to pass its check"
    )
    auto_rollback: bool = Field(default=True, description="on failure, deploy the last good version again")


#: The largest EBS gp3 volume, in GB; local volumes are not sized.
MAX_VOLUME_SIZE = 16384


class Volume(_Model):
    """One of a service's ``volumes``: data kept across redeploys, restarts and node replacement.

    Written either as compose's short form, ``"pgdata:/var/lib/postgresql/data"`` (``"pgdata"``
    alone for a process service, which finds its folder in ``$OCT_VOLUME_PGDATA``), or as a table
    ``[[project.services.volumes]]`` with ``name``, ``path`` and ``size``. One key for both, so a
    service's volumes are read in one place. Names and paths are checked in ``volume_checks.py``,
    where the whole project is known.
    """

    name: str
    path: str | None = Field(default=None, description="docker: where the container sees the volume")
    size: int = Field(
        default=10, ge=1, le=MAX_VOLUME_SIZE, description="GB (aws); local volumes are not sized"
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: object) -> object:
        if not isinstance(data, str):
            return data
        name, colon, path = data.partition(":")
        if colon and not path:
            raise ValueError(f'"{data}" names no path after the colon: write "name:/path" or "name"')
        return {"name": name, "path": path or None}


class Service(_Model):
    """One service of the project; ``cpus`` in millicores and ``memory`` in MB, as in the reference.

    ``image`` defaults to "" (the reference requires the key but accepts "") so ``process``
    services need not carry a meaningless image.
    """

    name: str
    image: str = ""
    dockerfile_path: str | None = None
    command: str | None = None
    internal_port: int | None = Field(default=None, ge=1, le=65535)
    external_port: int | None = Field(default=None, ge=1, le=65535)
    cpus: int = Field(gt=0, description="millicores")
    memory: int = Field(gt=0, description="MB")
    depends_on: list[str] = Field(default_factory=list)
    envs: dict[str, str] = Field(default_factory=dict)
    runtime: RuntimeKind = "docker"
    replicas: int = Field(default=1, ge=1, le=100, description="instances, spread over distinct nodes")
    apex: bool = Field(
        default=False,
        description="also serve this public service at the bare project domain (https://<domain>)",
    )
    healthcheck: Healthcheck | None = Field(
        default=None, description="without one, an instance that keeps running counts as healthy"
    )
    update: UpdatePolicy = Field(default_factory=UpdatePolicy)
    volumes: list[Volume] = Field(
        default_factory=list, description="named volumes that keep their data (docs/oct-toml.md, Volumes)"
    )
    allow: list[str] | None = Field(
        default=None,
        description="the services that may call this one over the mesh (docs/mesh.md); default: all",
    )

    @property
    def host_port(self) -> int | None:
        """The port the service claims on its node's address: what others (and users) connect to.

        An internal-only port is published too, on the node's own address, so that a service on
        another node can reach it at ``{{ services.X.host }}:{{ services.X.port }}``.
        """
        if self.runtime == "docker" and not self.internal_port:
            return None  # as in the reference: without internal_port there is nothing to publish
        return self.external_port or self.internal_port

    @property
    def public_port(self) -> int | None:
        """The port the world reaches the service at (``external_port``), when it is published at
        all (see :attr:`host_port`): what a public DNS name and the status endpoint point to."""
        return self.external_port if self.host_port is not None else None

    def command_argv(self) -> list[str] | None:
        """``command`` as an argv, or ``None`` to keep the image's default command.

        The reference split on single spaces; we use ``shlex.split`` so arguments can be quoted
        (``sh -c 'echo hi'``). Render ``{{ services.X.attr }}`` references before calling this, since
        the braces contain spaces. Raises ``ValueError`` on unbalanced quotes (validation reports it).
        """
        if self.command is None:
            return None
        return shlex.split(self.command)


class ClusterSettings(_Model):
    """``[project.cluster]``: how the control plane looks after itself (Nomad's autopilot, in small)."""

    replace_dead_after: int = Field(
        default=120,
        ge=5,
        description="seconds a node may stay unreachable before the leader removes it from the "
        "cluster and asks the provider for a replacement",
    )


#: The CA a project with a ``domain`` gets certificates from unless ``[project.acme]`` names another.
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


class AcmeSettings(_Model):
    """``[project.acme]``: where the certificates for ``domain`` come from (an ACME CA).

    ``ca_file`` is for a private CA (step-ca, a test's Caddy) whose directory is not signed by a
    public root: ``oct deploy`` reads it next to oct.toml and sends its text as ``ca_pem``, since
    the leader that orders certificates runs on a machine where that path means nothing.
    """

    directory: str = LETS_ENCRYPT
    email: str | None = None
    ca_file: str | None = None
    ca_pem: str | None = None


def node_bound_ports(services: list[Service]) -> frozenset[int]:
    """Internal ports several internal-only ``services`` claim (see ``Project.node_bound_ports``)."""
    claims = [s.host_port for s in services if s.public_port is None and s.host_port is not None]
    return frozenset(port for port in claims if claims.count(port) > 1)


class Project(_Model):
    """``[project]``; ``user_state_backend`` is optional: the reference requires it but never uses it."""

    name: str
    domain: str | None = None
    state_backend: StateBackend
    user_state_backend: StateBackend | None = None
    provider: Provider | None = None
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    acme: AcmeSettings | None = None
    services: list[Service]

    @property
    def host_bound_ports(self) -> frozenset[int]:
        """External ports claimed by several services, as the original's multi-host examples do.

        One owner makes a port the mesh's (every node's ingress serves it); several owners make it
        each one's on its own node: they are placed on distinct nodes, and a node's ingress serves
        the port only for the one it runs (see docs/oct-toml.md, Ports)."""
        claims = [s.external_port for s in self.services if s.external_port is not None]
        return frozenset(port for port in claims if claims.count(port) > 1)

    @property
    def node_bound_ports(self) -> frozenset[int]:
        """Internal ports several internal-only services claim (two backends on 8000): each is
        published on its own node's address, as before the mesh, since one node cannot serve two
        services on one port. A port one service claims is the mesh's (:meth:`proxy_port`)."""
        return node_bound_ports(self.services)

    def proxy_port(self, service: Service) -> int | None:
        """The port nodes' proxies serve ``service`` at, or None when its instances publish their
        own port (a node-bound internal port) or none. A proxied service's instances listen on
        instance ports (:mod:`octctl.instance_ports`), never on this one.

        - ``external_port``: the public port, on every node (on its own node if host-bound);
        - ``internal_port`` of an internal-only service that no other internal-only service
          claims: the mesh's, on every node's address, for the project's other services.
        """
        if service.public_port is not None:
            return service.public_port
        port = service.host_port
        return port if port is not None and port not in self.node_bound_ports else None

    def claimed_port(self, service: Service) -> int | None:
        """The port an instance of ``service`` takes on its node's address, which keeps two that
        claim the same port on distinct nodes: a host-bound ``external_port``, or a node-bound
        internal one. A meshed service claims nothing: its instances get instance ports."""
        if service.public_port is not None:
            return service.public_port if service.public_port in self.host_bound_ports else None
        return service.host_port if self.proxy_port(service) is None else None

    def meshed(self, service: Service) -> bool:
        """Served at :meth:`proxy_port` by every node, so a caller reaches it at its own node's
        address, wherever the instances run (see docs/mesh.md)."""
        port = self.proxy_port(service)
        return port is not None and not (service.public_port is not None and port in self.host_bound_ports)

    @property
    def provider_kind(self) -> ProviderKind:
        """``"aws"`` unless a local provider is configured, matching the AWS-only reference."""
        if self.provider is not None and self.provider.local is not None:
            return "local"
        return "aws"

    @property
    def https(self) -> AcmeSettings | None:
        """How public services get certificates, or None when they are not served over HTTPS.

        HTTPS needs a ``domain``. On AWS it is on by default (Let's Encrypt); a local cluster uses
        it only with an ``[project.acme]`` section, because a public CA cannot reach 127.0.0.N to
        check a challenge, so the default would only fail and retry.
        """
        if not self.domain:
            return None
        if self.acme is not None:
            return self.acme
        return AcmeSettings() if self.provider_kind == "aws" else None


class Config(_Model):
    """A whole oct.toml. Build it with ``load_config`` (file) or ``parse_config_data`` (JSON)."""

    project: Project

    def service(self, name: str) -> Service:
        """The service called ``name``; ``KeyError`` if there is none."""
        for service in self.project.services:
            if service.name == name:
                return service
        raise KeyError(f"no service named {name!r}")

    def topological_order(self) -> list[str]:
        """Service names, dependencies before dependents, ties in declaration order.

        Deterministic so every leader computes the same start order. Raises ``ConfigError`` if the
        graph cannot be ordered (duplicate names, unknown dependencies or a cycle), which
        ``validate_config`` would have reported already.
        """
        names = [service.name for service in self.project.services]
        deps = {service.name: service.depends_on for service in self.project.services}
        problems: list[Problem] = []
        if len(set(names)) != len(names):
            problems.append(Problem(None, None, "project.services", "service names are not unique"))
        for i, service in enumerate(self.project.services):
            for j, dep in enumerate(service.depends_on):
                if dep not in deps:
                    path = f"project.services[{i}].depends_on[{j}]"
                    problems.append(Problem(None, None, path, f"unknown service '{dep}'"))
        order = None if problems else topological_sort(names, deps)
        if order is None:
            for cycle in find_cycles(names, deps):
                problems.append(
                    Problem(None, None, "project.services", "dependency cycle: " + " -> ".join(cycle))
                )
            for service in self.project.services:
                if service.name in service.depends_on:
                    problems.append(
                        Problem(None, None, "project.services", f"service '{service.name}' depends on itself")
                    )
            raise ConfigError(problems)
        return order
