"""Where nodes come from: the contract every provider implements, node side.

A provider is a folder under ``octctl/providers/`` with two halves:

- :class:`ProviderSettings`, its section of ``node.json`` (``{"kind": "<name>", ...}``). Every node
  carries it, so whichever node leads can act for the provider; :mod:`octctl.providers.registry`
  maps each kind to its settings class and builds the provider from them.
- :class:`Provider`, what the leader asks for capacity and hands it back to when idle.

A provider only launches and stops machines; it never talks Raft. A launched node joins the
cluster by itself (its settings carry the addresses of existing members), so a provider call can
return as soon as the machine is on its way.

Launching is split in two so that no machine is ever started without the cluster knowing: the
leader first *reserves* a node id (no machine yet) and commits it to Raft as an intent, then asks
the provider to *provision* that id. A leader that dies in between leaves an intent its successor
finishes by provisioning the same id again, which must not start a second machine, or undoes by
retiring it.

Providers sit above the node's settings: they write the node files of the nodes they start, and
the node settings keep a provider's section as written (:class:`~octctl.node_settings.ProviderSection`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ConfigDict

from octctl.node_settings import ProviderSection

if TYPE_CHECKING:
    from octctl.node_settings import Secrets


@dataclass(frozen=True)
class NodeRequest:
    cluster: str
    cpus: int
    memory: int
    join: tuple[str, ...]
    secrets: Secrets
    #: Where the node must be (a provider's availability zone): a replacement for a node whose
    #: volumes are on disks that cannot leave their zone. None: wherever the provider spreads nodes.
    zone: str | None = None
    #: The machine type to launch (one of :attr:`Provider.instance_types`); None: the provider's own.
    instance_type: str | None = None


@dataclass(frozen=True)
class DiskRequest:
    """A volume that needs a network disk (:meth:`Provider.attach_disk`)."""

    project: str
    volume: str
    service: str
    size_gb: int
    #: The disk recorded for the volume; None the first time (found by its tags, or created).
    disk: str | None = None


@dataclass(frozen=True)
class Disk:
    """A network disk attached to a node: what the node needs to find and mount it."""

    id: str
    zone: str
    device: str


class ProviderSettings(ProviderSection):
    """Contract: a subclass declares ``kind: Literal["<name>"] = "<name>"`` (written to ``node.json``)
    and the fields its provider needs on every node. It imports nothing heavy (no boto3): every node
    reads its section through it at start-up. Unknown fields are refused, so a typo in a section
    stops the node at start instead of being ignored."""

    model_config = ConfigDict(extra="forbid")

    kind: str


class Provider(abc.ABC):
    """Contract: ``reserve`` picks the id of a new node without starting anything; ``provision``
    starts that node and returns before it has joined, and provisioning an id again does not start
    a second machine. ``retire`` stops the node and frees what it used; retiring an unknown or
    already stopped node is not an error."""

    #: Volumes live on network disks the leader attaches (:meth:`attach_disk`), not on the node.
    network_disks: bool = False

    #: Seconds a provisioned node may take to join before the leader gives up and retires it: a
    #: local process joins in a second, a fresh VM installs packages first.
    launch_timeout: float = 90.0

    @property
    def instance_types(self) -> tuple[str, ...]:
        """The machine types this cluster may launch, each with its price (``NodeRequest.instance_type``):
        the leader then buys the cheapest mix (:mod:`octctl.fleet_growth`). Empty (the default): every
        node is a copy of the template, and a request's type is ignored."""
        return ()

    @abc.abstractmethod
    def reserve(self, request: NodeRequest) -> str:
        """The id the next node will join with."""

    @abc.abstractmethod
    def provision(self, node: str, request: NodeRequest) -> None:
        """Launch node ``node`` (idempotent for the same id)."""

    @abc.abstractmethod
    def retire(self, node: str) -> None:
        """Stop the node and release its resources."""

    def public_addresses(self, nodes: Sequence[str]) -> dict[str, str]:
        """The public IPv4 address of each of ``nodes`` that has one. The default: nodes of this
        provider have none, and ``{{ services.X.public_ip }}`` is the node's own address."""
        return {}

    def publish(self, zone: str, names: Mapping[str, Sequence[str]], owner: str) -> bool:
        """Make ``zone`` hold exactly ``names`` for ``owner``: each public name pointing at the
        public addresses of the nodes (ids) it maps to, and no other name ``owner`` published there.

        Returns False when some node has no public address yet (the leader tries again later).
        Only providers with public DNS implement it; the leader calls it only for deployments
        that name a zone, which only such providers' deploys do.
        """
        raise NotImplementedError(f"{type(self).__name__} has no public DNS")

    # -- volumes on network disks (leader side, then node side) ---------------------------------------

    def attach_disk(self, request: DiskRequest, node: str) -> Disk | None:
        """Make the volume's disk attached to ``node``'s machine, and return it: found by the
        volume's tags or created (in the node's zone, sized, encrypted) when ``request.disk`` is
        None; detached first from any other machine (forcibly when that machine is gone).
        Idempotent. None: the provider's volumes are folders of the node (the default; nothing to
        attach, and a service with volumes waits for its node when it dies)."""
        return None

    def node_zone(self, node: str) -> str | None:
        """The zone of ``node``'s machine, for a replacement that must reach its disks."""
        return None

    def mount_disk(self, disk: str, device: str, folder: Path) -> None:
        """Node side: mount the attached ``disk`` at ``folder``, formatting it first if it is blank
        (never otherwise). Idempotent. Only called for volumes :meth:`attach_disk` gave a disk."""
        raise NotImplementedError(f"{type(self).__name__} has no disks")

    def fill_from_snapshot(self, snapshot: str, folder: Path) -> None:
        """Node side: replace the content of ``folder`` (a stopped service's volume) with the
        snapshot's (``oct restore`` of a provider's backup). Only providers with disks have them."""
        raise NotImplementedError(f"{type(self).__name__} has no snapshots")

    def container_address(self, address: str) -> str | None:
        """An address of the node at ``address`` that its containers can reach, made ready here
        (the node's ingress listens there too), or None when containers reach ``address`` itself
        (a real machine). Local clusters: containers cannot reach 127.0.0.N."""
        return None

    def release_container_address(self, address: str) -> None:  # noqa: B027 (optional hook)
        """Undo :meth:`container_address` when the node stops."""

    def registry_auth(self, image: str) -> dict[str, str] | None:
        """The docker ``auth_config`` for pulling ``image`` from this provider's private registry,
        or None to pull it as the engine would on its own (public images, ``docker login``).
        Called on every node, leader or not, with the node's own credentials; errors propagate
        (the runtime reports them as a failed login)."""
        return None
