"""``AwsCluster``: the AWS provider as the library's calls see it (the contract is ``octcli/provider.py``).

Each method hands over to the module that holds its part: genesis and the base, the nodes'
addresses, the project's domain, the image registry, the teardown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from octcli.provider import ClusterProvider, DestroySummary, Save
from octcli.providers.aws.addresses import cluster_addresses
from octcli.providers.aws.disks import (
    adopt_disks,
    backup_snapshots,
    disks_region,
    kept_disks,
    remove_disks,
    snapshot_backup,
)
from octcli.providers.aws.domain import public_zone, publish_domain
from octcli.providers.aws.genesis import ensure_aws_cluster
from octcli.providers.aws.images import push_images
from octcli.providers.aws.ledger import KIND, aws_settings, is_aws, ledger_of, with_ledger
from octcli.providers.aws.teardown import destroy_summary, teardown_aws
from octcli.state import ClusterRecord

if TYPE_CHECKING:
    from octcli.state import StateStore
    from octctl.api.models import StatusResponse, VolumeView
    from octctl.config import Config

__all__ = ["AwsCluster"]

Phase = Callable[[str], None]


class AwsCluster(ClusterProvider):
    """The AWS provider for the CLI: genesis builds the base and the leader, the leader the rest."""

    kind = KIND
    #: The cluster knows its nodes by private addresses the CLI cannot reach; EC2 has the public ones.
    tracks_nodes = False

    def needs_approval(self, record: ClusterRecord | None) -> bool:
        """A deploy on AWS starts with genesis unless the record names an AWS cluster, even half-made."""
        return not is_aws(record)

    def ensure(
        self, config: Config, record: ClusterRecord | None, *, on_phase: Phase, save: Save
    ) -> ClusterRecord:
        ensured = ensure_aws_cluster(config, self.file, record, on_phase=on_phase, save=save)
        for disk in adopt_disks(config, ensured):
            on_phase(f"volume disk {disk}, kept by an earlier cluster, handed to cluster {ensured.cluster}")
        return ensured

    def ship_images(self, config: Config, built: list[str], record: ClusterRecord, on_phase: Phase) -> Config:
        """Push the built images to the cluster's ECR repositories, where the nodes' role pulls them."""
        if not built:
            return config
        region = aws_settings(config).region
        return push_images(config, built, cluster=record.cluster, region=region, on_phase=on_phase)

    def public_zone(self, config: Config, record: ClusterRecord) -> str | None:
        return public_zone(config, record)

    def addresses(self, record: ClusterRecord) -> list[str]:
        return cluster_addresses(record)

    def after_deploy(
        self, config: Config, record: ClusterRecord, status: StatusResponse, on_phase: Phase, save: Save
    ) -> None:
        placements = {i.name: i.node for s in status.services for i in s.instances if i.node}
        ready = [n.id for n in status.nodes if n.status == "ready"]
        publish_domain(config, record, placements, ready, on_phase)
        ledger = ledger_of(record)
        disks = sorted(v.disk for v in status.volumes if v.disk)
        if ledger is not None and disks != ledger.volume_ids:
            save(with_ledger(record, ledger.model_copy(update={"volume_ids": disks})))

    def summary(self, config: Config, store: StateStore, record: ClusterRecord | None) -> DestroySummary:
        return destroy_summary(config, store, record)

    def teardown(self, config: Config, record: ClusterRecord | None, *, on_phase: Phase, save: Save) -> None:
        teardown_aws(record, config, on_phase=on_phase, save=save)

    def volumes(self, config: Config, record: ClusterRecord | None) -> list[VolumeView]:
        return kept_disks(config, record)

    def snapshot_backup(
        self, config: Config, record: ClusterRecord, service: str, name: str
    ) -> dict[str, str] | None:
        return snapshot_backup(config, record, service, name)

    def backup_snapshots(self, config: Config, record: ClusterRecord, name: str) -> dict[str, str]:
        return backup_snapshots(config, record, name)

    def volumes_summary(self, config: Config, record: ClusterRecord | None) -> list[str]:
        """Named, not listed: the question comes before oct talks to AWS (listing them is a call);
        what was kept is listed after."""
        return [
            f"every EBS volume tagged oct:project={config.project.name} in {disks_region(config, record)}"
        ]

    def remove_volumes(self, config: Config, record: ClusterRecord | None, *, on_phase: Phase) -> None:
        remove_disks(config, record, on_phase=on_phase)
