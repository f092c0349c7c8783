"""A cluster's nodes seen from outside: their public IPv4 addresses, and the Route53 names of the
services they serve (every node's ingress serves every public service: each name holds the
addresses of all of them). The leader keeps the names (it republishes a service the cluster moves); the
CLI writes the same ones once after a deploy, so that a conflict fails the deploy with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

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
    clients: AwsClients, cluster: str, zone: str, names: Mapping[str, Sequence[str]], owner: str
) -> tuple[dict[str, route53.Addresses], bool]:
    """Make ``zone`` hold exactly ``owner``'s records for ``names`` (public name -> the node ids
    that serve it), each at the public addresses of those nodes' instances. Returns the records
    (nodes without an address yet are left out, and a name none of whose nodes has one) and
    whether anything changed."""
    addresses = node_addresses(clients, cluster, (node for nodes in names.values() for node in nodes))
    records = {
        name: found
        for name, nodes in names.items()
        if (found := route53.addresses_of(addresses[n] for n in nodes if n in addresses))
    }
    changed = route53.sync_records(zone, records, owner=owner, route53=clients.client("route53"))
    return records, changed
