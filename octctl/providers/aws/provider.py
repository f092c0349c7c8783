"""The leader's AWS provider: followers are EC2 instances in the cluster's own subnets.

A follower boots from the same user data as the leader did (cloud-init, ``oct-ctl bootstrap``,
the cluster's oct wheel pinned by hash, through a link the leader signs with its instance role),
told the node id the leader reserved and the leader's address to join.
The reserved id is also the instance's ``ClientToken``, so asking again for the same id (a new
leader finishing its predecessor's launch) returns the instance that exists instead of a second.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence

from octctl import __version__
from octctl.bootstrap import BootstrapConfig
from octctl.node_settings import NodeSettings
from octctl.providers.aws import artifacts, instances, route53
from octctl.providers.aws.session import AwsClients
from octctl.providers.aws.user_data import render_user_data
from octctl.providers.base import NodeRequest, Provider

log = logging.getLogger(__name__)


class AwsProvider(Provider):
    #: cloud-init installs Docker, a venv and oct before oct-ctl starts: minutes, not seconds.
    launch_timeout = 900.0

    def __init__(self, settings: NodeSettings) -> None:
        if settings.aws is None:
            raise ValueError("an aws node needs the aws section in node.json (written by oct-ctl bootstrap)")
        self.settings = settings
        self.aws = settings.aws
        self._clients: AwsClients | None = None

    @property
    def clients(self) -> AwsClients:
        """Connected on first use: a follower that never leads never needs AWS credentials."""
        if self._clients is None:
            self._clients = AwsClients.connect(self.aws.resources.region)
        return self._clients

    def reserve(self, request: NodeRequest) -> str:
        return f"n-{uuid.uuid4().hex[:12]}"

    def provision(self, node: str, request: NodeRequest) -> None:
        resources = self.aws.resources
        config = BootstrapConfig(
            cluster=request.cluster,
            project=resources.project,
            region=resources.region,
            join=list(request.join),
            cpus=request.cpus,
            memory=request.memory,
            api_port=self.settings.api_port,
            raft_port=self.settings.raft_port,
            dns_domain=self.settings.dns_domain,
            dns_ttl=self.settings.dns_ttl,
            node=node,
            aws=self.aws,
        )
        if self.aws.artifact is None:
            raise ValueError("this cluster's node settings name no oct wheel: followers cannot be installed")
        link = artifacts.presigned_url(self.clients, self.aws.artifact)
        user_data = render_user_data(config, __version__, link)
        instance = instances.launch(
            self.clients,
            resources,
            role="follower",
            instance_type=self.aws.instance_type,
            user_data=user_data,
            client_token=node,
            ami=self.aws.ami,
        )
        log.info("node %s is instance %s (%s)", node, instance.id, self.aws.instance_type)

    def retire(self, node: str) -> None:
        found = instances.find_instances(
            self.clients,
            self.aws.resources.cluster,
            extra_filters=[{"Name": f"tag:{instances.TOKEN_TAG}", "Values": [node]}],
        )
        if found:
            instances.terminate(self.clients, [i.id for i in found], wait=False)
            log.info("terminated %s (node %s)", ", ".join(i.id for i in found), node)

    def public_addresses(self, nodes: Sequence[str]) -> dict[str, str]:
        """The public IPv4 EC2 gave each node's instance (found by its client-token tag)."""
        if not nodes:
            return {}
        found = instances.find_instances(
            self.clients,
            self.aws.resources.cluster,
            extra_filters=[{"Name": f"tag:{instances.TOKEN_TAG}", "Values": sorted(set(nodes))}],
        )
        return {i.node: i.public_ip for i in found if i.node and i.public_ip}

    def publish(self, zone: str, names: Mapping[str, str], owner: str) -> bool:
        """Route53 records ``<service>.<domain>`` -> the public IPv4 of the instance of each node."""
        addresses = self.public_addresses(list(names.values()))
        records = {name: addresses[node] for name, node in names.items() if node in addresses}
        if route53.sync_records(zone, records, owner=owner, route53=self.clients.client("route53")):
            log.info(
                "public DNS: %s", ", ".join(f"{n} -> {a}" for n, a in sorted(records.items())) or "no names"
            )
        return len(records) == len(names)
