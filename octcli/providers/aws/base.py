"""The base infrastructure of an AWS cluster, brought up to date on every deploy, not only at genesis.

A new ``external_port`` must be opened in the security group, a new ``domain`` needs its zone and
the role's right to it, and the API port is opened only to the deploying machine unless
``api_allowed_cidrs`` says otherwise. The resources themselves are made by
``octctl.providers.aws.infra``; this module decides what they must be from oct.toml and records
each change in the state record as it happens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from octcli.errors import InvalidConfig
from octcli.providers.aws.ledger import aws_settings, with_ledger
from octcli.state import ClusterRecord
from octctl.providers.aws.resources import AwsResources

if TYPE_CHECKING:
    from octctl.config import Config
    from octctl.providers.aws.session import AwsClients

__all__ = ["converge_base", "my_address"]

Phase = Callable[[str], None]
MY_ADDRESS_URL = "https://checkip.amazonaws.com"


def converge_base(
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
        current = with_ledger(current, updated)
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
