"""What one node needs to know about itself at start-up, kept in its data directory.

The same two files are written by the CLI (genesis), by the local provider (new followers) and, on
AWS, by cloud-init: ``node.json`` (public settings) and ``secrets.json`` (mode 0600: the API token,
the Raft password and the cluster CA, which must never appear on a command line or in a log).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets as _secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from octctl.addresses import DEFAULT_API_PORT, DEFAULT_RAFT_PORT
from octctl.tls import new_ca

NODE_FILE = "node.json"
SECRETS_FILE = "secrets.json"
#: The default of ``api_idle_timeout`` (``octctl.server.limits.IDLE_TIMEOUT`` says why 20 s).
DEFAULT_API_IDLE_TIMEOUT = 20.0


class ProviderSection(BaseModel):
    """A node's ``provider`` section: ``kind`` names the provider, the rest is that provider's own.

    Node settings sit below the providers (a provider writes the node files of the nodes it starts),
    so they keep the section as written, like a Nomad task's driver config; the node reads it into
    the kind's settings class when it builds its provider (:mod:`octctl.providers.registry`), at
    start-up. A section given as a provider's settings object is kept as its fields, so settings
    built in code and the same settings read from a file are equal.
    """

    model_config = ConfigDict(extra="allow")

    kind: str = "local"


class NodeTemplate(BaseModel):
    """What every node of a cluster is told alike; :class:`NodeSettings` adds who and where one is.

    The AWS user data carries a template (``BootstrapConfig``) that each VM completes at boot.
    """

    cluster: str
    api_port: int = Field(default=DEFAULT_API_PORT, ge=1, le=65535)
    raft_port: int = Field(default=DEFAULT_RAFT_PORT, ge=1, le=65535)
    cpus: int = Field(gt=0, description="millicores this node offers to services")
    memory: int = Field(gt=0, description="MB this node offers to services")
    join: list[str] = Field(
        default_factory=list, description="API addresses (host:port) of existing members; empty = genesis"
    )
    dns_port: int = Field(default=53, ge=1, le=65535, description="UDP and TCP, on the node's address")
    dns_domain: str = Field(default="oct", description="the zone is <project>.<dns_domain>.")
    dns_ttl: int = Field(default=5, ge=0, le=3600)
    dns_upstreams: list[str] | None = Field(
        default=None, description="host[:port] resolvers for names outside the zone; None = /etc/resolv.conf"
    )
    provider: ProviderSection = Field(
        default_factory=ProviderSection,
        description="where followers come from; the default (local, no root) never provisions",
    )
    volumes_dir: str | None = Field(
        default=None,
        description="where process services' volume folders are; None: beside the data folder "
        "(<data folder>-volumes); a local cluster's nodes share <project>/.oct-volumes",
    )
    api_idle_timeout: float = Field(
        default=DEFAULT_API_IDLE_TIMEOUT,
        gt=0,
        le=3600,
        description="seconds an API connection may go without a complete request head (idle or "
        "trickling); keep it above the keep-alive of the nodes' and the CLI's clients (15 s, 5 s)",
    )
    guard_containers: bool = Field(
        default=False,
        description="drop containers' TCP to the Raft and API ports of any node (iptables; VMs: on)",
    )

    @field_validator("provider", mode="before")
    @classmethod
    def _as_written(cls, section: Any) -> Any:
        return section.model_dump() if isinstance(section, ProviderSection) else section

    @property
    def instance_type(self) -> str | None:
        """The machine's type, which a cloud provider's section names (its price, in the state)."""
        value = getattr(self.provider, "instance_type", None)
        return value if isinstance(value, str) else None

    @model_validator(mode="before")
    @classmethod
    def _provider_section(cls, data: Any) -> Any:
        """Read what oct wrote before providers had a section of their own: ``provider`` the kind's
        name, beside it ``provider_root`` (local) and a section named after the kind (``aws``)."""
        legacy = isinstance(data, dict) and (
            isinstance(data.get("provider"), str)
            or ("provider" not in data and bool({"provider_root", "aws"} & data.keys()))
        )
        if not legacy:
            return data
        data = dict(data)
        kind = data.pop("provider", "local")
        root = data.pop("provider_root", None)
        sections = {name: data.pop(name) for name in ("aws",) if name in data}
        section = sections.get(kind) or {}
        data["provider"] = {"kind": kind, **section, **({"root": root} if root is not None else {})}
        return data


class NodeSettings(NodeTemplate):
    node: str
    address: str
    public_address: str | None = Field(
        default=None, description="aws: the instance's public IPv4, also named in its TLS certificate"
    )

    @property
    def raft_address(self) -> str:
        return f"{self.address}:{self.raft_port}"

    @property
    def api_address(self) -> str:
        return f"{self.address}:{self.api_port}"


def scrape_token(token: str) -> str:
    """The read-only bearer token of ``GET /v1/metrics``: derived from the API token (so every
    node and the CLI know it without storing it), and revealing nothing of it."""
    return hmac.new(token.encode(), b"oct-metrics-scrape", hashlib.sha256).hexdigest()


class Secrets(BaseModel):
    """The cluster's key material: every node holds all of it (see ``octctl/tls.py``)."""

    token: str
    raft_password: str
    ca_key: str = Field(description="PEM: the cluster CA's private key; nodes issue their certificate")
    ca_cert: str = Field(description="PEM: the cluster CA's certificate, pinned by the CLI and the nodes")

    @classmethod
    def mint(cls, cluster: str = "") -> Secrets:
        ca_key, ca_cert = new_ca(cluster)
        return cls(
            token=_secrets.token_urlsafe(32),
            raft_password=_secrets.token_urlsafe(32),
            ca_key=ca_key,
            ca_cert=ca_cert,
        )

    @property
    def scrape_token(self) -> str:
        return scrape_token(self.token)

    def raft_proof(self, *facts: object) -> str:
        """HMAC of ``facts`` keyed by the Raft password: a joining node proves it holds the same
        password before the leader makes it a member. Adding a node that cannot speak (encrypted)
        Raft would leave a member that never answers, and a cluster of one could then commit nothing.
        """
        message = "\x00".join(str(f) for f in facts).encode()
        return hmac.new(self.raft_password.encode(), message, hashlib.sha256).hexdigest()


def write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only, without a window where it is world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_node_files(data_dir: Path, settings: NodeSettings, secrets: Secrets) -> None:
    """The folder is private (0700): besides the secrets, the Raft journal holds rendered env values."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    write_private(data_dir / NODE_FILE, settings.model_dump_json(indent=2))  # 0600 like every file here
    write_private(data_dir / SECRETS_FILE, secrets.model_dump_json())


def read_node_files(data_dir: Path) -> tuple[NodeSettings, Secrets]:
    settings = NodeSettings.model_validate(json.loads((data_dir / NODE_FILE).read_text()))
    secrets = Secrets.model_validate(json.loads((data_dir / SECRETS_FILE).read_text()))
    return settings, secrets
