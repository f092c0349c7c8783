"""The project's ``domain`` on AWS: the hosted zone the leader keeps ``<service>.<domain>`` in, and
the records the CLI writes once after a deploy.

The leader owns these records (it republishes a service the cluster moves, and repairs them every
minute); the CLI writes the same ones after a deploy only so that a name someone else holds fails
the deploy with its reason instead of only a line in the leader's log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from octcli.errors import OctError
from octcli.providers.aws.ledger import connect, ledger_of

if TYPE_CHECKING:
    from octcli.state import ClusterRecord
    from octctl.config import Config

__all__ = ["public_zone", "publish_domain"]

Phase = Callable[[str], None]


def public_zone(config: Config, record: ClusterRecord) -> str | None:
    """The hosted zone the leader keeps ``<service>.<domain>`` in: only on AWS, with a domain."""
    ledger = ledger_of(record)
    if not config.project.domain or ledger is None:
        return None
    return ledger.hosted_zone_id


def publish_domain(
    config: Config, record: ClusterRecord, placements: dict[str, str], ready: list[str], say: Phase
) -> dict[str, tuple[str, ...]]:
    """Point ``<service>.<domain>`` at the public addresses of the nodes that serve it, for services
    with an external port, and remove the names of services that no longer have one. Returns the
    records. ``placements`` maps instances to nodes; ``ready`` lists the ready nodes."""
    from botocore.exceptions import BotoCoreError, ClientError

    from octctl.providers.aws import public_dns, route53
    from octctl.specs import public_names, serving_nodes

    ledger = ledger_of(record)
    if not config.project.domain or ledger is None or not ledger.hosted_zone_id:
        return {}
    clients = connect(ledger.region)
    names = public_names(config, serving_nodes(config, placements, ready))
    try:
        wanted, _ = public_dns.publish(
            clients, ledger.cluster, ledger.hosted_zone_id, names, owner=ledger.cluster
        )
    except (BotoCoreError, ClientError, route53.RecordConflict) as e:
        raise OctError(
            f"the services run, but their DNS records in {config.project.domain} failed: {e}"
        ) from None
    if wanted:
        say("DNS: " + ", ".join(f"{name} -> {' '.join(ips)}" for name, ips in sorted(wanted.items())))
    return wanted
