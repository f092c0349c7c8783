"""The leader's AWS provider: followers are EC2 instances in the cluster's own subnets.

A follower boots from the same user data as the leader did (cloud-init, ``oct-ctl bootstrap``,
the cluster's oct wheel pinned by hash, through a link the leader signs with its instance role),
told the node id the leader reserved and the leader's address to join (:mod:`.launch`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from octctl.node_settings import NodeSettings
from octctl.providers.aws import disks, ebs, ecr, instances, public_dns
from octctl.providers.aws.bootstrap import BootstrapConfig
from octctl.providers.aws.launch import launch_node
from octctl.providers.aws.session import AwsClients, call
from octctl.providers.aws.settings import AwsNodeSettings
from octctl.providers.base import Disk, DiskRequest, NodeRequest, Provider

log = logging.getLogger(__name__)


class AwsProvider(Provider):
    #: cloud-init installs Docker, a venv and oct before oct-ctl starts: minutes, not seconds.
    launch_timeout = 900.0
    #: Volumes are EBS volumes (:mod:`.ebs`), which follow their service to a replacement node.
    network_disks = True

    def __init__(self, settings: NodeSettings, aws: AwsNodeSettings) -> None:
        self.settings = settings
        self.aws = aws
        self._clients: AwsClients | None = None

    @property
    def clients(self) -> AwsClients:
        """Connected on first use: a follower that never leads never needs AWS credentials."""
        if self._clients is None:
            self._clients = AwsClients.connect(self.aws.resources.region)
        return self._clients

    def reserve(self, request: NodeRequest) -> str:
        return f"n-{uuid.uuid4().hex[:12]}"

    @property
    def instance_types(self) -> tuple[str, ...]:
        """The types the node role may launch (``infra.node_policy``), which genesis wrote in the ledger."""
        return tuple(self.aws.resources.instance_types)

    def provision(self, node: str, request: NodeRequest) -> None:
        kind = request.instance_type or self.aws.instance_type
        config = BootstrapConfig(
            cluster=request.cluster,
            join=list(request.join),
            cpus=request.cpus,
            memory=request.memory,
            api_port=self.settings.api_port,
            raft_port=self.settings.raft_port,
            dns_domain=self.settings.dns_domain,
            dns_ttl=self.settings.dns_ttl,
            node=node,
            # (the node's own type: its price, and the type it launches should it lead and grow by copies)
            provider=self.aws.model_copy(update={"instance_type": kind}),
        )
        instance = launch_node(self.clients, config, role="follower", subnet=self._subnet_in(request.zone))
        log.info("node %s is instance %s (%s)", node, instance.id, kind)

    def _subnet_in(self, zone: str | None) -> str | None:
        """The cluster's subnet in ``zone`` (None: let the launch spread nodes over the zones)."""
        if zone is None:
            return None
        subnets = call(self.clients.ec2, "describe_subnets", SubnetIds=self.aws.resources.subnet_ids)[
            "Subnets"
        ]
        for subnet in subnets:
            if subnet["AvailabilityZone"] == zone:
                return str(subnet["SubnetId"])
        raise ValueError(f"the cluster has no subnet in {zone}, where its volumes' disks are")

    def _instances_of(self, node: str) -> list[instances.Instance]:
        return instances.find_instances(
            self.clients,
            self.aws.resources.cluster,
            extra_filters=[{"Name": f"tag:{instances.TOKEN_TAG}", "Values": [node]}],
        )

    def attach_disk(self, request: DiskRequest, node: str) -> Disk | None:
        running = [i for i in self._instances_of(node) if i.state == "running"]
        if not running:
            raise ValueError(f"node {node} has no running instance to attach volume {request.volume} to")
        disk = ebs.ensure_disk(self.clients, self.aws.resources, request, running[0])
        return ebs.attach(self.clients, disk, running[0])

    def node_zone(self, node: str) -> str | None:
        return next((i.zone for i in self._instances_of(node) if i.zone), None)

    def mount_disk(self, disk: str, device: str, folder: Path) -> None:
        """Format once and mount, on this machine (:mod:`.disks`)."""
        disks.mount(disk, device, folder, node=self.settings.node)

    def fill_from_snapshot(self, snapshot: str, folder: Path) -> None:
        """A scratch disk made from the snapshot is attached to this machine and mounted beside
        ``folder``, its content copied over ``folder``'s, and it is unmounted and deleted again: the
        volume keeps its own disk (and the leader's record of it) through a restore."""
        running = [i for i in self._instances_of(self.settings.node) if i.state == "running"]
        me = running[0] if running else None
        if me is None or me.zone is None:
            raise ValueError(f"this node ({self.settings.node}) has no running instance to restore on")
        scratch = ebs.scratch_from_snapshot(self.clients, self.aws.resources, snapshot, me.zone)
        try:
            attached = ebs.attach(self.clients, scratch, me)
            place = folder.parent / f".restore-{attached.id}"
            disks.mount(attached.id, attached.device, place, node=self.settings.node, at_boot=False)
            try:
                disks.replace_contents(place, folder)
            finally:
                disks.unmount(place)
                place.rmdir()
        finally:
            ebs.discard(self.clients, scratch["VolumeId"], me.id)

    def retire(self, node: str) -> None:
        found = self._instances_of(node)
        if found:
            instances.terminate(self.clients, [i.id for i in found], wait=False)
            log.info("terminated %s (node %s)", ", ".join(i.id for i in found), node)

    def public_addresses(self, nodes: Sequence[str]) -> dict[str, str]:
        return public_dns.node_addresses(self.clients, self.aws.resources.cluster, nodes)

    def publish(self, zone: str, names: Mapping[str, Sequence[str]], owner: str) -> bool:
        """Route53 records ``<service>.<domain>`` -> the public IPv4 of each node that serves it."""
        records, changed = public_dns.publish(self.clients, self.aws.resources.cluster, zone, names, owner)
        if changed:
            shown = ", ".join(f"{n} -> {' '.join(a)}" for n, a in sorted(records.items()))
            log.info("public DNS: %s", shown or "no names")
        return all(len(records.get(name, ())) == len(set(nodes)) for name, nodes in names.items())

    def registry_auth(self, image: str) -> dict[str, str] | None:
        """ECR images (built from ``dockerfile_path`` on AWS) need a login, which the node's instance
        role gives; anything else is pulled anonymously."""
        return ecr.registry_auth(image)
