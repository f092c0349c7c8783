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
from typing import TYPE_CHECKING

import httpx

from octcli.client import OctClient
from octcli.errors import InvalidConfig, OctError, Timeout
from octcli.state import ClusterRecord
from octctl import __version__
from octctl.addresses import DEFAULT_API_PORT
from octctl.bootstrap import BootstrapConfig
from octctl.config.models import AwsProvider
from octctl.node_settings import Secrets
from octctl.providers.aws.resources import AwsNodeSettings, AwsResources, NodeArtifact
from octctl.specs import demand

if TYPE_CHECKING:
    from octctl.config import Config
    from octctl.providers.aws.instances import Instance
    from octctl.providers.aws.session import AwsClients

__all__ = ["ADDRESS_BOOK_ENV", "ensure_aws_cluster", "teardown_aws"]

Phase = Callable[[str], None]
#: A JSON file mapping instance id -> the address its API is reached at. For a test harness that
#: plays the hypervisor (every "instance" is a local process on 127.0.0.N); unset, the CLI uses the
#: instance's public IP as AWS reports it.
ADDRESS_BOOK_ENV = "OCT_AWS_ADDRESS_BOOK"
LEADER_WAIT = 900.0  # a fresh VM installs packages and oct before it answers
MY_ADDRESS_URL = "https://checkip.amazonaws.com"


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
        if record is not None and record.provider == "aws":
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

    from octctl.providers.aws import instances, route53
    from octctl.specs import public_names

    ledger = ledger_of(record)
    if not config.project.domain or ledger is None or not ledger.hosted_zone_id:
        return {}
    clients = connect(ledger.region)
    addresses: dict[str, str] = {}
    for service, node in placements.items():
        found = instances.find_instances(
            clients, ledger.cluster, extra_filters=[{"Name": f"tag:{instances.TOKEN_TAG}", "Values": [node]}]
        )
        if found and found[0].public_ip:
            addresses[service] = found[0].public_ip
    wanted = public_names(config, addresses)
    api = clients.client("route53")
    try:
        route53.sync_records(ledger.hosted_zone_id, wanted, owner=ledger.cluster, route53=api)
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
    from octctl.providers.aws import artifacts, instances, pricing
    from octctl.providers.aws.secrets_store import SecretsStoreError, get_secrets, put_secrets
    from octctl.providers.aws.user_data import render_user_data

    aws = aws_settings(config)
    clients = connect(aws.region)
    resuming = record is not None and record.provider == "aws"
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
        provider="aws",
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
        project=config.project.name,
        region=aws.region,
        cpus=fleet.capacity.cpus,
        memory=fleet.capacity.memory,
        node=node,
        aws=node_settings,
    )
    say(f"starting the leader: {kind} (${fleet.instance_type.hourly}/h)")
    leader = instances.launch(
        clients,
        ledger,
        role="leader",
        instance_type=kind,
        user_data=render_user_data(bootstrap, __version__, artifacts.presigned_url(clients, artifact)),
        client_token=node,
        ami=ami,
    )
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
