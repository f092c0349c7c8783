"""The nodes' firewall: one security group whose ingress rules are exactly what oct asks for.

The rules are computed (:func:`desired_rules`) and compared with what AWS has
(:func:`current_rules`) as sets of :class:`Rule`, so a re-run closes what nobody asks for any more
(a removed service's port, an old deployer address) and opens what is missing, and nothing else.
Genesis and teardown of the group sit beside the rules, as for the network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from octctl.addresses import DEFAULT_API_PORT, DEFAULT_RAFT_PORT, MESH_PORT
from octctl.providers.aws.infra.steps import Genesis, Teardown, tag_filters, tag_spec
from octctl.providers.aws.session import AwsError, call

__all__ = [
    "DNS_PORT",
    "Rule",
    "current_rules",
    "delete_security_groups",
    "desired_rules",
    "ensure_security_group",
]

DNS_PORT = 53
RESERVED_PORTS = {DEFAULT_API_PORT: "API", DEFAULT_RAFT_PORT: "Raft", MESH_PORT: "mesh", DNS_PORT: "DNS"}


@dataclass(frozen=True, order=True)
class Rule:
    """One ingress rule of the nodes' security group; ``source`` is a CIDR or a security group id."""

    protocol: str
    from_port: int
    to_port: int
    source: str
    description: str = field(default="", compare=False)

    def permission(self) -> dict[str, Any]:
        """The rule in the shape ``AuthorizeSecurityGroupIngress`` takes."""
        perm: dict[str, Any] = {
            "IpProtocol": self.protocol,
            "FromPort": self.from_port,
            "ToPort": self.to_port,
        }
        entry = {"Description": self.description} if self.description else {}
        if self.source.startswith("sg-"):
            perm["UserIdGroupPairs"] = [{"GroupId": self.source, **entry}]
        elif ":" in self.source:
            perm["Ipv6Ranges"] = [{"CidrIpv6": self.source, **entry}]
        else:
            perm["IpRanges"] = [{"CidrIp": self.source, **entry}]
        return perm


def desired_rules(group_id: str, api_cidrs: Sequence[str], external_ports: Iterable[int]) -> set[Rule]:
    """Least privilege: the API only from the deployer, cluster traffic only between nodes.

    - API (31888/tcp) from each of ``api_cidrs`` (the deployer's address by default);
    - API, Raft (31889/tcp) and DNS (53/tcp+udp) from the group itself: agents, Raft replication
      and node-to-node DNS, never from outside;
    - the mesh port (31890/tcp) from the group itself: a node's proxy reaches another node's
      instances through that node's proxy, over mutual TLS. Instance ports and internal ports
      stay closed between nodes, so a workload cannot go around the mesh to another node's
      instances;
    - each service ``external_port`` (tcp) from anywhere: it is the project's public address.
    """
    rules: set[Rule] = set()
    for raw in api_cidrs:
        try:
            network = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise ValueError(f"api_cidrs: {raw!r} is not an IP address or CIDR block") from None
        rules.add(Rule("tcp", DEFAULT_API_PORT, DEFAULT_API_PORT, str(network), "oct API from the deployer"))
    rules.add(Rule("tcp", DEFAULT_API_PORT, DEFAULT_API_PORT, group_id, "oct API between nodes"))
    rules.add(Rule("tcp", DEFAULT_RAFT_PORT, DEFAULT_RAFT_PORT, group_id, "oct Raft between nodes"))
    rules.add(Rule("tcp", DNS_PORT, DNS_PORT, group_id, "oct DNS between nodes"))
    rules.add(Rule("udp", DNS_PORT, DNS_PORT, group_id, "oct DNS between nodes"))
    rules.add(Rule("tcp", MESH_PORT, MESH_PORT, group_id, "oct service mesh between nodes"))
    for port in sorted(set(external_ports)):
        if not 1 <= port <= 65535:
            raise ValueError(f"external_port {port} is not a port number (1-65535)")
        if port in RESERVED_PORTS:
            raise ValueError(f"external_port {port} is oct's own {RESERVED_PORTS[port]} port on every node")
        rules.add(Rule("tcp", port, port, "0.0.0.0/0", f"service port {port}"))
    return rules


def current_rules(group: Mapping[str, Any]) -> set[Rule]:
    """The group's ingress rules as :class:`Rule` s, one per source."""
    rules: set[Rule] = set()
    for perm in group.get("IpPermissions", []):
        proto = str(perm.get("IpProtocol", "-1"))
        low, high = int(perm.get("FromPort", -1)), int(perm.get("ToPort", -1))
        for r in perm.get("IpRanges", []):
            rules.add(Rule(proto, low, high, r["CidrIp"], r.get("Description", "")))
        for r in perm.get("Ipv6Ranges", []):
            rules.add(Rule(proto, low, high, r["CidrIpv6"], r.get("Description", "")))
        for r in perm.get("UserIdGroupPairs", []):
            rules.add(Rule(proto, low, high, r["GroupId"], r.get("Description", "")))
    return rules


def ensure_security_group(
    step: Genesis, vpc_id: str, api_cidrs: Sequence[str], external_ports: Iterable[int]
) -> str:
    led = step.ledger
    name = led.name("nodes")
    found = step.find(
        "describe_security_groups",
        "SecurityGroups",
        "GroupIds",
        led.security_group_id,
        [
            *tag_filters(led),
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": [name]},
        ],
    )
    if found is None:
        group_id = call(
            step.ec2,
            "create_security_group",
            GroupName=name,
            Description=f"oct nodes of {led.project} ({led.cluster})",
            VpcId=vpc_id,
            TagSpecifications=tag_spec("security-group", led, name),
        )["GroupId"]
        led.security_group_id = group_id
        step.record()
        found = call(step.ec2, "describe_security_groups", GroupIds=[group_id])["SecurityGroups"][0]
    group_id = str(found["GroupId"])
    if led.security_group_id != group_id:
        led.security_group_id = group_id
        step.record()
    want = desired_rules(group_id, api_cidrs, external_ports)
    have = current_rules(found)
    # The group is oct's alone: a rule nobody asked for (a removed service's port, an old
    # deployer address) is closed again. Each change is harmless to repeat.
    changes = (
        ("revoke_security_group_ingress", have - want, "InvalidPermission.NotFound"),
        ("authorize_security_group_ingress", want - have, "InvalidPermission.Duplicate"),
    )
    for operation, rules, already_done in changes:
        for rule in sorted(rules):
            try:
                call(step.ec2, operation, GroupId=group_id, IpPermissions=[rule.permission()])
            except AwsError as e:
                if e.code != already_done:
                    raise
    return group_id


def delete_security_groups(step: Teardown) -> None:
    led = step.ledger
    ids = {*([led.security_group_id] if led.security_group_id else [])}
    ids |= set(step.tagged("describe_security_groups", "SecurityGroups", "GroupId"))
    for group in sorted(ids):
        step.delete("delete_security_group", GroupId=group)
        if led.security_group_id == group:
            led.security_group_id = None
            step.record()
