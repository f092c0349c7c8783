"""The CLI's half of a provider: how ``oct`` finds, starts and removes a cluster of one kind.

The library's calls (:mod:`octcli.api`) know no provider: they ask the one :func:`cluster_provider`
gives for the kind the project or its state record names. The node's half of a provider is
``octctl/providers/base.py``; docs/providers.md says how to add one (a module or package in
``octcli/providers/`` and a line in :data:`PROVIDERS`).
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, Field

from octcli.errors import OctError

if TYPE_CHECKING:
    from octcli.errors import Unreachable
    from octcli.state import ClusterRecord, StateStore
    from octctl.api.models import StatusResponse, VolumeView
    from octctl.config import Config

Phase = Callable[[str], None]
Save = Callable[["ClusterRecord"], None]


class DestroySummary(BaseModel):
    """What ``destroy`` is about to remove, worked out before anything is touched."""

    project: str
    provider: Literal["local", "aws"]
    cluster: str | None = Field(
        description="the cluster id from the state record; None: no record (on AWS every cluster "
        "tagged with the project's name is then removed)"
    )
    region: str | None = Field(default=None, description="aws: where the cluster is")
    nodes: list[str] = Field(description="the nodes' API addresses (host:port) in the state record")
    state: str = Field(description="where the state record is (a path, or s3://bucket/key)")
    removes: list[str] = Field(description="what goes, one line each, for a person to read")
    keeps: list[str] = Field(
        default_factory=list, description="the volumes that stay (without --volumes), one line each"
    )


class ClusterProvider(abc.ABC):
    """Contract: every method may be called again after an interrupted run of itself and finishes
    what that run started, working from the state record and from what the provider finds (files,
    tags), never from memory. ``save`` is called with each new state of the record as soon as it
    exists, so that a crash leaves a record ``oct destroy`` can clean up after.

    ``file`` is the project's oct.toml: it names the project's folder.
    """

    #: The kind as ``Project.provider_kind`` and ``ClusterRecord.provider`` name it.
    kind: ClassVar[str]
    #: Whether the record's node list follows the nodes the cluster reports (their addresses are
    #: reachable from the CLI); if not, :meth:`addresses` finds them when the recorded ones fail.
    tracks_nodes: ClassVar[bool] = True

    def __init__(self, file: Path) -> None:
        self.file = file

    def needs_approval(self, record: ClusterRecord | None) -> bool:
        """Whether :meth:`ensure` would create resources that cost money (a genesis in the cloud),
        so that the deploy asks first."""
        return False

    @abc.abstractmethod
    def ensure(
        self, config: Config, record: ClusterRecord | None, *, on_phase: Phase, save: Save
    ) -> ClusterRecord:
        """A cluster with an answering leader: the recorded one, restarted or finished as needed,
        or a new one (genesis)."""

    def ship_images(self, config: Config, built: list[str], record: ClusterRecord, on_phase: Phase) -> Config:
        """``config`` with the images built for ``built`` services where the nodes pull them. The
        default: the nodes share the engine that built them."""
        return config

    def public_zone(self, config: Config, record: ClusterRecord) -> str | None:
        """The provider's DNS zone the leader keeps ``<service>.<domain>`` in; None: no public DNS."""
        return None

    def addresses(self, record: ClusterRecord) -> list[str] | None:
        """Where the cluster's nodes answer now, when none of the recorded addresses does; None
        when there is nowhere else to look."""
        return None

    def unreachable(self, error: Unreachable) -> Unreachable:
        """What to tell a person when no node of the recorded cluster answers."""
        return error

    def after_deploy(
        self, config: Config, record: ClusterRecord, status: StatusResponse, on_phase: Phase, save: Save
    ) -> None:
        """What follows a deploy every service of which runs (on AWS: the public names, and the
        volumes' disks into the ledger)."""
        return None

    def recover(self, config: Config, record: ClusterRecord | None) -> ClusterRecord | None:
        """The record, or one rebuilt from what the provider finds when the state file is lost."""
        return record

    def absent(self, config: Config, record: ClusterRecord | None, *, on_phase: Phase) -> bool:
        """True when there is no cluster to destroy (nothing is asked then), after removing what a
        lost one may have left behind. The default: a cluster may exist even without a record."""
        return False

    @abc.abstractmethod
    def summary(self, config: Config, store: StateStore, record: ClusterRecord | None) -> DestroySummary:
        """What :meth:`teardown` would remove, for a person to approve."""

    @abc.abstractmethod
    def teardown(self, config: Config, record: ClusterRecord | None, *, on_phase: Phase, save: Save) -> None:
        """Remove every trace of the project's cluster, whether or not any part of it still runs;
        with no record, whatever the provider finds of the project. Volumes stay (see
        :meth:`remove_volumes`)."""

    def volumes(self, config: Config, record: ClusterRecord | None) -> list[VolumeView]:
        """The project's volumes as the provider finds them, cluster or none (``where`` set, and
        ``state`` "kept"); the default: a provider that makes none."""
        return []

    def snapshot_backup(
        self, config: Config, record: ClusterRecord, service: str, name: str
    ) -> dict[str, str] | None:
        """Back up ``service``'s volumes as provider snapshots named ``name``: ``{volume: id}``.
        None (the default): this provider has none, and backups are tarballs."""
        return None

    def backup_snapshots(self, config: Config, record: ClusterRecord, name: str) -> dict[str, str]:
        """The snapshots of the backup ``name`` (``{volume: id}``); raises OctError without."""
        raise OctError(f"{name}: no such backup file")

    def volumes_summary(self, config: Config, record: ClusterRecord | None) -> list[str]:
        """The volumes as ``oct destroy`` names them before it is confirmed (kept, or removed with
        ``--volumes``)."""
        return [f"volume {v.name} ({v.where})" for v in self.volumes(config, record)]

    def remove_volumes(self, config: Config, record: ClusterRecord | None, *, on_phase: Phase) -> None:
        """Remove the project's volumes and their data (``oct destroy --volumes``), after
        :meth:`teardown`; safe to repeat."""
        return None


#: Each provider's CLI class by kind (``module.Class``), imported when first used.
PROVIDERS: dict[str, str] = {
    "local": "octcli.providers.local.LocalCluster",
    "aws": "octcli.providers.aws.cluster.AwsCluster",
}


def cluster_provider(kind: str, file: Path) -> ClusterProvider:
    """The provider of ``kind`` for the project of ``file``."""
    module, _, name = PROVIDERS[kind].rpartition(".")
    provider: type[ClusterProvider] = getattr(importlib.import_module(module), name)
    return provider(file)
