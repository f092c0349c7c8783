"""Genesis and afterlife on AWS: the CLI builds the base and the leader; the leader does the rest.

Genesis creates the base infrastructure (``octctl.providers.aws.infra``), stores the cluster's
secrets in SSM, and runs the leader instance, whose cloud-init installs the same oct version and
starts ``oct-ctl``. Every id goes into the state record the moment it exists, and every step finds
what an earlier, interrupted run made (by ledger id, tags or client token), so re-running ``oct
deploy`` after a failure finishes genesis and ``oct destroy`` removes whatever was made.

Afterlife terminates every instance of the cluster (followers first through the leader, when it
answers), then the base infrastructure in reverse order, the secrets, the image repositories and
the hosted zone oct created; it works from the record and the tags even with the leader gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets as _secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

import httpx

from octcli.client import OctClient
from octcli.errors import InvalidConfig, OctError, Timeout
from octcli.images import push_images
from octcli.provider import ClusterProvider, DestroySummary, Save
from octcli.state import ClusterRecord
from octctl.addresses import DEFAULT_API_PORT
from octctl.config.models import AwsProvider
from octctl.node_settings import Secrets
from octctl.providers.aws.bootstrap import BootstrapConfig
from octctl.providers.aws.resources import AwsResources, NodeArtifact
from octctl.providers.aws.settings import AwsNodeSettings
from octctl.specs import demand

if TYPE_CHECKING:
    from octcli.state import StateStore
    from octctl.api.models import StatusResponse
    from octctl.config import Config
    from octctl.providers.aws.instances import Instance
    from octctl.providers.aws.session import AwsClients

__all__ = ["ADDRESS_BOOK_ENV", "AwsCluster", "ensure_aws_cluster", "teardown_aws"]

Phase = Callable[[str], None]
#: A JSON file mapping instance id -> the address its API is reached at. For a test harness that
#: plays the hypervisor (every "instance" is a local process on 127.0.0.N); unset, the CLI uses the
#: instance's public IP as AWS reports it.
ADDRESS_BOOK_ENV = "OCT_AWS_ADDRESS_BOOK"
LEADER_WAIT = 900.0  # a fresh VM installs packages and oct before it answers
MY_ADDRESS_URL = "https://checkip.amazonaws.com"


class AwsCluster(ClusterProvider):
    """The AWS provider for the CLI: genesis builds the base and the leader, the leader the rest."""

    kind = "aws"
    #: The cluster knows its nodes by private addresses the CLI cannot reach; EC2 has the public ones.
    tracks_nodes = False

    def needs_approval(self, record: ClusterRecord | None) -> bool:
        """A deploy on AWS starts with genesis unless the record names an AWS cluster, even half-made."""
        return not _ours(record)

    def ensure(
        self, config: Config, record: ClusterRecord | None, *, on_phase: Phase, save: Save
    ) -> ClusterRecord:
        return ensure_aws_cluster(config, self.file, record, on_phase=on_phase, save=save)

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
        self, config: Config, record: ClusterRecord, status: StatusResponse, on_phase: Phase
    ) -> None:
        placements = {s.name: s.node for s in status.services if s.node}
        publish_domain(config, record, placements, on_phase)

    def summary(self, config: Config, store: StateStore, record: ClusterRecord | None) -> DestroySummary:
        ledger = ledger_of(record)
        region = ledger.region if ledger is not None else aws_settings(config).region
        project = config.project.name
        if ledger is None:
            removes = [
                f"every cluster tagged oct:project={project} in {region}: its instances, VPC, subnets, "
                "internet gateway, route table, security group, IAM role and instance profile",
                f"the project's ECR repositories in {region}",
            ]
        else:
            instances = ledger.instance_ids()
            removes = [
                f"{len(instances)} EC2 instance{'' if len(instances) == 1 else 's'}"
                + (f" ({', '.join(instances)})" if instances else "")
                + " and any other instance tagged with the cluster",
                f"the VPC {ledger.vpc_id or '(tagged with the cluster)'} with its subnets, internet gateway, "
                "route table and security group",
                f"the IAM role {ledger.role_name or '(tagged with the cluster)'} and its instance profile",
                f"the secrets parameter /oct/{ledger.cluster}/secrets",
                "the cluster's ECR repositories",
            ]
            if ledger.hosted_zone_id:
                zone = ledger.hosted_zone_id
                removes.append(f"the Route53 zone {zone} oct created (if only oct's records are left in it)")
        if record is not None:
            removes.append(f"the state record {store.where}")
        return DestroySummary(
            project=project,
            provider=self.kind,
            cluster=record.cluster if record is not None else None,
            region=region,
            nodes=list(record.nodes) if record is not None else [],
            state=store.where,
            removes=removes,
        )

    def teardown(self, config: Config, record: ClusterRecord | None, *, on_phase: Phase, save: Save) -> None:
        teardown_aws(record, config, on_phase=on_phase, save=save)


def _ours(record: ClusterRecord | None) -> TypeGuard[ClusterRecord]:
    """Whether ``record`` is of an AWS cluster (a deploy that switched provider starts anew)."""
    return record is not None and record.provider == AwsCluster.kind


def aws_settings(config: Config) -> AwsProvider:
    provider = config.project.provider
    return provider.aws if provider is not None and provider.aws is not None else AwsProvider()


def connect(region: str) -> AwsClients:
    from octctl.providers.aws.session import AwsClients, AwsError

    try:
        clients = AwsClients.connect(region)
        clients.account()  # fails early, in one line, without credentials
    except AwsError as e:
        raise OctError(str(e)) from None
    return clients


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
        if _ours(record):
            if not _answers(record):
                record = record.model_copy(update={"nodes": cluster_addresses(record)})
            if _answers(record):
                save(record)
                clients = connect(aws_settings(config).region)
                ledger = ledger_of(record)
                if ledger is not None:
                    return _converge_base(clients, config, record, ledger, on_phase, save)[0]
                return record
        return _genesis(config, config_path, record, on_phase, save, leader_wait)
    except AwsError as e:
        raise OctError(f"{e}; what was created is in the state, run `oct deploy` again to finish") from None


def _converge_base(
    clients: AwsClients,
    config: Config,
    record: ClusterRecord,
    ledger: AwsResources,
    say: Phase,
    save: Callable[[ClusterRecord], None],
) -> tuple[ClusterRecord, AwsResources]:
    """The project's zone (if it has a domain) and the base, created or brought up to date."""
    from octctl.providers.aws import infra, route53

    current = record

    def keep(updated: AwsResources) -> None:
        nonlocal current
        current = current.model_copy(update={"aws": updated.model_dump(mode="json")})
        save(current)

    domain = config.project.domain
    if domain and not ledger.hosted_zone_id:
        zone_id, name_servers = route53.ensure_zone(
            domain,
            {"oct:project": ledger.project, "oct:cluster": ledger.cluster},
            route53=clients.client("route53"),
        )
        ledger = ledger.model_copy(update={"hosted_zone_id": zone_id})
        keep(ledger)
        say(f"DNS zone of {domain} is ready; delegate {domain} to: {', '.join(name_servers)}")
    if not ledger.instance_types or not ledger.ami:  # a cluster made before the ledger recorded them
        ledger = _launch_limits_from_instances(clients, ledger)
        if ledger.instance_types and ledger.ami:
            keep(ledger)
    aws = aws_settings(config)
    ledger = infra.ensure_base(
        clients,
        ledger,
        api_cidrs=aws.api_allowed_cidrs or [my_address()],
        external_ports=[s.external_port for s in config.project.services if s.external_port],
        record=keep,
    )
    return current, ledger


def _launch_limits_from_instances(clients: AwsClients, ledger: AwsResources) -> AwsResources:
    """The ledger with the instance types and image of the cluster's instances filled in where it
    has none, so that the node role's policy lets the leader launch followers like them."""
    from octctl.providers.aws import instances

    found = instances.find_instances(clients, ledger.cluster)
    types = sorted({i.instance_type for i in found if i.instance_type})
    image = next((i.image_id for i in sorted(found, key=lambda i: i.role != "leader") if i.image_id), None)
    return ledger.model_copy(
        update={"instance_types": ledger.instance_types or types, "ami": ledger.ami or image}
    )


def public_zone(config: Config, record: ClusterRecord) -> str | None:
    """The hosted zone the leader keeps ``<service>.<domain>`` in: only on AWS, with a domain."""
    ledger = ledger_of(record)
    if not config.project.domain or ledger is None:
        return None
    return ledger.hosted_zone_id


def publish_domain(
    config: Config, record: ClusterRecord, placements: dict[str, str], say: Phase
) -> dict[str, str]:
    """Point ``<service>.<domain>`` at the public address of the node running it, for services with
    an external port, and remove the names of services that no longer have one. Returns the records.

    The leader owns these records (it republishes a service the cluster moves, and repairs them
    every minute); the CLI writes the same ones once after a deploy, so that a name someone else
    holds fails the deploy with its reason instead of only a line in the leader's log.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from octctl.providers.aws import public_dns, route53
    from octctl.specs import public_names

    ledger = ledger_of(record)
    if not config.project.domain or ledger is None or not ledger.hosted_zone_id:
        return {}
    clients = connect(ledger.region)
    names = public_names(config, placements)
    try:
        wanted, _ = public_dns.publish(
            clients, ledger.cluster, ledger.hosted_zone_id, names, owner=ledger.cluster
        )
    except (BotoCoreError, ClientError, route53.RecordConflict) as e:
        raise OctError(
            f"the services run, but their DNS records in {config.project.domain} failed: {e}"
        ) from None
    if wanted:
        say("DNS: " + ", ".join(f"{name} -> {ip}" for name, ip in sorted(wanted.items())))
    return wanted


def _genesis(
    config: Config,
    config_path: Path,
    record: ClusterRecord | None,
    say: Phase,
    save: Callable[[ClusterRecord], None],
    leader_wait: float,
) -> ClusterRecord:
    from octctl.providers.aws import instances, pricing
    from octctl.providers.aws.launch import launch_node
    from octctl.providers.aws.secrets_store import SecretsStoreError, get_secrets, put_secrets

    aws = aws_settings(config)
    clients = connect(aws.region)
    resuming = _ours(record)
    cluster = record.cluster if record is not None and resuming else "c-" + _secrets.token_hex(4)
    secrets = Secrets.mint(cluster)
    if resuming:
        with contextlib.suppress(SecretsStoreError):
            secrets = get_secrets(clients.session, cluster)  # the leader may already run with these
    ledger = ledger_of(record) if resuming else None
    ledger = ledger or AwsResources(region=aws.region, project=config.project.name, cluster=cluster)
    try:
        fleet = pricing.cheapest_fleet(
            [demand(s) for s in config.project.services],
            reserve=pricing.Reserve(aws.reserve_cpus, aws.reserve_memory),
            arch=aws.arch,
            instance_type=aws.instance_type,
            min_nodes=aws.min_nodes,
            max_nodes=aws.max_nodes,
        )
    except ValueError as e:
        raise InvalidConfig(f"{config_path}: {e}") from None
    kind = fleet.instance_type.name
    # The node role may launch only the cluster's instance types and image (infra.node_policy), so
    # both are in the ledger before the role's policy is written. A genesis interrupted after the
    # leader was launched keeps the image that leader was given (it launches followers with it).
    launched = ledger.leader_instance_id is not None
    ami = (ledger.ami if launched else None) or instances.resolve_ami(clients, kind, ami=aws.ami)
    types = sorted({*ledger.instance_types, kind}) if launched else [kind]
    ledger = ledger.model_copy(update={"instance_types": types, "ami": ami})
    current = ClusterRecord(
        cluster=cluster,
        project=config.project.name,
        provider=AwsCluster.kind,
        token=secrets.token,
        nodes=record.nodes if record is not None and resuming else [],
        root=str(config_path.resolve().parent / ".oct"),
        aws=ledger.model_dump(mode="json"),
        ca_cert=secrets.ca_cert,
    )
    save(current)

    def keep(updated: AwsResources) -> None:
        nonlocal current
        current = current.model_copy(update={"aws": updated.model_dump(mode="json")})
        save(current)

    say(f"{'finishing' if resuming else 'starting'} cluster {cluster} in {aws.region}: network and roles")
    current, ledger = _converge_base(clients, config, current, ledger, say, save)
    put_secrets(clients.session, cluster, secrets)

    node = f"{cluster}-genesis"
    artifact = _ship_artifact(clients, ledger, say)
    node_settings = AwsNodeSettings(resources=ledger, instance_type=kind, ami=ami, artifact=artifact)
    bootstrap = BootstrapConfig(
        cluster=cluster,
        cpus=fleet.capacity.cpus,
        memory=fleet.capacity.memory,
        node=node,
        provider=node_settings,
    )
    say(f"starting the leader: {kind} (${fleet.instance_type.hourly}/h)")
    leader = launch_node(clients, bootstrap, role="leader")
    keep(ledger.model_copy(update={"leader_instance_id": leader.id}))
    address = _wait_for_address(clients, leader.id, say)
    current = current.model_copy(update={"nodes": [address]})
    save(current)
    _wait_for_leader(current, say, leader_wait)
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


def ledger_of(record: ClusterRecord | None) -> AwsResources | None:
    raw = getattr(record, "aws", None) if record is not None else None
    return AwsResources.model_validate(raw) if raw else None


def my_address() -> str:
    """This machine's public address as a /32, the default who-may-reach-the-API rule."""
    try:
        answer = httpx.get(MY_ADDRESS_URL, timeout=5.0).text.strip()
        return f"{answer}/32" if answer.count(".") == 3 else _no_address(f"unexpected answer {answer[:40]!r}")
    except httpx.HTTPError as e:
        return _no_address(type(e).__name__)


def _no_address(why: str) -> str:
    raise InvalidConfig(
        f"cannot tell this machine's public address ({why}) to open the API port to it alone; set "
        'api_allowed_cidrs = ["<your address>/32"] under [project.provider.aws]'
    )


def api_address(instance: Instance) -> str | None:
    book = os.environ.get(ADDRESS_BOOK_ENV)
    if book:
        with contextlib.suppress(OSError, ValueError):
            host = json.loads(Path(book).read_text()).get(instance.id)
            return f"{host}:{DEFAULT_API_PORT}" if host else None
        return None
    return f"{instance.public_ip}:{DEFAULT_API_PORT}" if instance.public_ip else None


def cluster_addresses(record: ClusterRecord) -> list[str]:
    """The API addresses of the cluster's running instances, from EC2 (the recorded ones may be gone:
    the leader the CLI first met can have been replaced since)."""
    from octctl.providers.aws.instances import find_instances
    from octctl.providers.aws.session import AwsError

    ledger = ledger_of(record)
    if ledger is None:
        return record.nodes
    try:
        running = find_instances(connect(ledger.region), ledger.cluster, states=("running",))
    except AwsError as e:
        raise OctError(str(e)) from None
    found = [address for instance in running if (address := api_address(instance)) is not None]
    return found or record.nodes


def _wait_for_address(clients: AwsClients, instance_id: str, say: Phase, timeout: float = 300.0) -> str:
    from octctl.providers.aws.instances import get_instance

    deadline = time.monotonic() + timeout
    while True:
        instance = get_instance(clients, instance_id)
        if instance is None or instance.state in ("shutting-down", "terminated"):
            raise OctError(f"the leader instance {instance_id} is gone; run `oct deploy` again")
        address = api_address(instance) if instance.state == "running" else None
        if address is not None:
            say(f"leader instance {instance_id} is running at {address.rsplit(':', 1)[0]}")
            return address
        if time.monotonic() > deadline:
            raise Timeout(f"instance {instance_id} got no address within {timeout:.0f} s")
        time.sleep(1.0)


def _answers(record: ClusterRecord) -> bool:
    if not record.nodes:  # genesis stopped before the leader had an address
        return False
    with OctClient(record.nodes, record.token, record.ca_cert, timeout=3.0, retry_for=0) as client:
        for node in record.nodes:
            with contextlib.suppress(OctError):
                if client.status(node).leader:
                    return True
    return False


def _wait_for_leader(record: ClusterRecord, say: Phase, timeout: float) -> None:
    say(f"waiting for oct-ctl on {record.nodes[0]} (installing on a fresh VM takes a few minutes)")
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 30
    while not _answers(record):
        if time.monotonic() > deadline:
            raise Timeout(
                f"the leader at {record.nodes[0]} did not answer within {timeout:.0f} s; its boot log is "
                "in the EC2 console (Get system log); run `oct deploy` again to keep waiting"
            )
        if time.monotonic() > next_note:
            say(f"still waiting for {record.nodes[0]}")
            next_note += 30
        time.sleep(1.0)


def teardown_aws(
    record: ClusterRecord | None, config: Config, *, on_phase: Phase, save: Callable[[ClusterRecord], None]
) -> None:
    """Remove everything of the project's cluster from AWS: instances, base, secrets, images, zone.

    Works from the record's ledger and from tags; with no record at all, every cluster of the
    project is swept. Each step records what remains, so a re-run after a failure finishes.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from octctl.providers.aws import ecr, infra, route53
    from octctl.providers.aws.secrets_store import SecretsStoreError, delete_secrets
    from octctl.providers.aws.session import AwsError

    aws = aws_settings(config)
    ledger = ledger_of(record)
    region = ledger.region if ledger is not None else aws.region
    clients = connect(region)
    whole_project = ledger is None
    ledger = ledger or AwsResources(region=region, project=config.project.name, cluster="-")

    def keep(updated: AwsResources) -> None:
        if record is not None:
            save(record.model_copy(update={"aws": updated.model_dump(mode="json")}))

    try:
        on_phase("terminating the instances, then the network and roles")
        ledger = infra.destroy_base(clients, ledger, record=keep, whole_project=whole_project)
        if ledger.hosted_zone_id:
            route53.delete_zone(ledger.hosted_zone_id, route53=clients.client("route53"))
            keep(ledger := ledger.model_copy(update={"hosted_zone_id": None}))
        ecr.delete_repositories(
            config.project.name,
            client=clients.client("ecr"),
            cluster=None if whole_project else ledger.cluster,
        )
        if not whole_project:
            delete_secrets(clients.session, ledger.cluster)
    except (AwsError, BotoCoreError, ClientError, SecretsStoreError, route53.ZoneInUse) as e:
        raise OctError(f"{e}; what remains is in the state, run `oct destroy` again to finish") from None
