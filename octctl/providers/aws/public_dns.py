"""A cluster's nodes seen from outside: their public IPv4 addresses, and the Route53 names of the
services they run. The leader keeps the names (it republishes a service the cluster moves); the
CLI writes the same ones once after a deploy, so that a conflict fails the deploy with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from octctl.providers.aws import instances, route53
from octctl.providers.aws.session import AwsClients


def node_addresses(clients: AwsClients, cluster: str, nodes: Iterable[str]) -> dict[str, str]:
    """The public IPv4 EC2 gave each node's instance (found by its client-token tag), for the
    nodes that have one."""
    wanted = sorted(set(nodes))
    if not wanted:
        return {}
    found = instances.find_instances(
        clients, cluster, extra_filters=[{"Name": f"tag:{instances.TOKEN_TAG}", "Values": wanted}]
    )
    return {i.node: i.public_ip for i in found if i.node and i.public_ip}


def publish(
    clients: AwsClients, cluster: str, zone: str, names: Mapping[str, str], owner: str
) -> tuple[dict[str, str], bool]:
    """Make ``zone`` hold exactly ``owner``'s records for ``names`` (public name -> node id), each at
    the public address of its node's instance. Returns the records (names whose node has no
    address yet are left out) and whether anything changed."""
    addresses = node_addresses(clients, cluster, names.values())
    records = {name: addresses[node] for name, node in names.items() if node in addresses}
    changed = route53.sync_records(zone, records, owner=owner, route53=clients.client("route53"))
    return records, changed
