"""Genesis on AWS: a cluster with an answering leader, the recorded one or a new one.

The CLI creates the base (:mod:`.base`), the cluster's secrets in SSM and the leader instance,
whose cloud-init installs the oct wheel the CLI uploads (the same code as the CLI's) and starts
``oct-ctl``; the leader starts the followers. Every id goes into the state record the moment it
exists, and an interrupted genesis is finished, not begun again, by the next ``oct deploy``.
"""

from __future__ import annotations

import contextlib
import secrets as _secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from octcli.errors import InvalidConfig, OctError
from octcli.providers.aws.addresses import answers, cluster_addresses, wait_for_address, wait_for_leader
from octcli.providers.aws.base import converge_base
from octcli.providers.aws.ledger import KIND, aws_settings, connect, is_aws, ledger_of, with_ledger
from octcli.state import ClusterRecord
from octctl.node_settings import Secrets
from octctl.providers.aws.bootstrap import BootstrapConfig
from octctl.providers.aws.pricing import Reserve, lookup
from octctl.providers.aws.resources import AwsResources, NodeArtifact
from octctl.providers.aws.settings import AwsNodeSettings
from octctl.scheduler import NodeCapacity
from octctl.specs import demands

if TYPE_CHECKING:
    from octctl.config import AwsProvider, Config
    from octctl.providers.aws.mixed_fleet import MixedFleet
    from octctl.providers.aws.session import AwsClients

__all__ = ["LEADER_WAIT", "ensure_aws_cluster"]

Phase = Callable[[str], None]
LEADER_WAIT = 900.0  # a fresh VM installs packages and oct before it answers


def ensure_aws_cluster(
    config: Config,
    config_path: Path,
    record: ClusterRecord | None,
    *,
    on_phase: Phase,
    save: Callable[[ClusterRecord], None],
    leader_wait: float = LEADER_WAIT,
) -> ClusterRecord:
    """A cluster with an answering leader: the recorded one, or genesis (finishing an interrupted one).

    The base is converged on every deploy, not only at genesis: a new ``external_port`` must be
    opened in the security group, a new ``domain`` needs its zone and the role's right to it.
    """
    from octctl.providers.aws.session import AwsError

    try:
        if is_aws(record):
            if not answers(record):
                record = record.model_copy(update={"nodes": cluster_addresses(record)})
            if answers(record):
                save(record)
                clients = connect(aws_settings(config).region)
                ledger = ledger_of(record)
                if ledger is not None:
                    return converge_base(clients, config, record, ledger, on_phase, save)[0]
                return record
        return _genesis(config, config_path, record, on_phase, save, leader_wait)
    except AwsError as e:
        raise OctError(f"{e}; what was created is in the state, run `oct deploy` again to finish") from None


def _genesis(
    config: Config,
    config_path: Path,
    record: ClusterRecord | None,
    say: Phase,
    save: Callable[[ClusterRecord], None],
    leader_wait: float,
) -> ClusterRecord:
    """A new cluster, or the one ``record`` names finished: record, base, secrets, then the leader."""
    from octctl.providers.aws.secrets_store import put_secrets

    aws = aws_settings(config)
    clients = connect(aws.region)
    resuming = is_aws(record)
    cluster = record.cluster if record is not None and resuming else "c-" + _secrets.token_hex(4)
    secrets = _cluster_secrets(clients, cluster, resuming)
    ledger = ledger_of(record) if resuming else None
    ledger = ledger or AwsResources(region=aws.region, project=config.project.name, cluster=cluster)
    fleet = _fleet(config, config_path)
    kind = fleet.types[0].name
    ami, ledger = _launch_limits(clients, ledger, kind, aws)
    current = ClusterRecord(
        cluster=cluster,
        project=config.project.name,
        provider=KIND,
        token=secrets.token,
        nodes=record.nodes if record is not None and resuming else [],
        root=str(config_path.resolve().parent / ".oct"),
        aws=ledger.model_dump(mode="json"),
        ca_cert=secrets.ca_cert,
    )
    save(current)
    say(f"{'finishing' if resuming else 'starting'} cluster {cluster} in {aws.region}: network and roles")
    current, ledger = converge_base(clients, config, current, ledger, say, save)
    put_secrets(clients.session, cluster, secrets)
    reserve = Reserve(aws.reserve_cpus, aws.reserve_memory)
    return _start_leader(
        clients, current, ledger, fleet.types[0].capacity(reserve), kind, ami, say, save, leader_wait
    )


def _cluster_secrets(clients: AwsClients, cluster: str, resuming: bool) -> Secrets:
    """New secrets, or, finishing a genesis, those stored before (the leader may already run with them)."""
    from octctl.providers.aws.secrets_store import SecretsStoreError, get_secrets

    secrets = Secrets.mint(cluster)
    if resuming:
        with contextlib.suppress(SecretsStoreError):
            secrets = get_secrets(clients.session, cluster)
    return secrets


def _fleet(config: Config, config_path: Path) -> MixedFleet:
    """The cheapest fleet that runs the services; genesis launches its first node as the leader,
    which buys the rest on the first deploy (:func:`octctl.fleet_growth.first_fleet`)."""
    from octctl.fleet_growth import project_fleet

    try:
        return project_fleet(config, demands(config))
    except ValueError as e:
        raise InvalidConfig(f"{config_path}: {e}") from None


def _launch_limits(
    clients: AwsClients, ledger: AwsResources, kind: str, aws: AwsProvider
) -> tuple[str, AwsResources]:
    """The leader's image, and the ledger naming the instance types and image the cluster may launch.

    The node role may launch only those (``infra.node_policy``), so both are in the ledger before
    the role's policy is written: every priced type of the leader's CPU architecture (one image
    boots them all) in oct.toml's families, or the one it pins, so the leader can buy the cheapest mix as the
    project changes. A genesis interrupted after the leader was launched keeps the image that
    leader was given (it launches followers with it).
    """
    from octctl.providers.aws import instances, pricing

    launched = ledger.leader_instance_id is not None
    ami = (ledger.ami if launched else None) or instances.resolve_ami(clients, kind, ami=aws.ami)
    known = pricing.lookup(kind)
    same_arch = (
        [t.name for t in pricing.candidates(known.arch, aws.instance_type, aws.families)] if known else []
    )
    types = sorted({*(ledger.instance_types if launched else ()), kind, *same_arch})
    return ami, ledger.model_copy(update={"instance_types": types, "ami": ami})


def _start_leader(
    clients: AwsClients,
    record: ClusterRecord,
    ledger: AwsResources,
    offered: NodeCapacity,
    kind: str,
    ami: str,
    say: Phase,
    save: Callable[[ClusterRecord], None],
    leader_wait: float,
) -> ClusterRecord:
    """Launch the leader instance (``kind``, offering services ``offered``) with the oct wheel,
    and wait until it answers as the leader."""
    from octctl.providers.aws.launch import launch_node

    artifact = _ship_artifact(clients, ledger, say)
    node_settings = AwsNodeSettings(resources=ledger, instance_type=kind, ami=ami, artifact=artifact)
    bootstrap = BootstrapConfig(
        cluster=record.cluster,
        cpus=offered.cpus,
        memory=offered.memory,
        node=f"{record.cluster}-genesis",
        provider=node_settings,
    )
    hourly = lookup(kind)
    say(f"starting the leader: {kind}" + (f" (${hourly.hourly}/h)" if hourly else ""))
    leader = launch_node(clients, bootstrap, role="leader")
    current = with_ledger(record, ledger.model_copy(update={"leader_instance_id": leader.id}))
    save(current)
    address = wait_for_address(clients, leader.id, say)
    current = current.model_copy(update={"nodes": [address]})
    save(current)
    wait_for_leader(current, say, leader_wait)
    return current


def _ship_artifact(clients: AwsClients, ledger: AwsResources, say: Phase) -> NodeArtifact:
    """Build the wheel of the oct running now and put it in the cluster's bucket for the nodes."""
    from octcli.artifact import build_artifact
    from octctl.providers.aws import artifacts

    if ledger.artifact_bucket is None:
        raise OctError("the cluster has no artifact bucket yet; run `oct deploy` again to finish genesis")
    with tempfile.TemporaryDirectory(prefix="oct-wheel-") as tmp:
        try:
            wheel = build_artifact(Path(tmp))
        except RuntimeError as e:
            raise OctError(str(e)) from None
        say(f"uploading oct {wheel.version} ({wheel.filename}, sha256 {wheel.sha256[:12]}…) for the nodes")
        return artifacts.upload(clients, ledger.artifact_bucket, wheel.path, wheel.sha256, wheel.version)
