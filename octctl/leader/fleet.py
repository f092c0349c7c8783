"""Membership and machines: replace the dead, keep five voters, grow, shrink, place services.

Every launch is an intent in Raft before the provider is called, and intents a previous leader
left are provisioned again (the provider does not start a second machine for the same id), so a
failover in the middle neither orphans nor duplicates a machine. Nodes leave Raft before their
machine stops, while they can still acknowledge the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Set
from dataclasses import dataclass, field, replace

from octctl.config import Config
from octctl.config.models import ClusterSettings
from octctl.fleet_size import FleetSize, fleet_size
from octctl.instance_ports import assign_instance_ports
from octctl.instances import instances_of
from octctl.leader.deployments import fail_deployment
from octctl.leader.disks import attach_disks, disk_zone
from octctl.leader.ports import ClusterLog
from octctl.node_settings import NodeSettings, Secrets
from octctl.providers.base import NodeRequest, Provider
from octctl.scheduler import NodeCapacity, nodes_needed, place
from octctl.specs import demands
from octctl.state.model import (
    MAX_VOTERS,
    ClusterState,
    NodeRecord,
    api_address,
    command,
    pending_voters,
    raft_address,
    volumes_of,
)
from octctl.volumes import new_homes, pins

__all__ = ["Fleet", "FleetSize"]

log = logging.getLogger(__name__)


@dataclass
class Fleet:
    cluster: ClusterLog
    settings: NodeSettings
    secrets: Secrets
    provider: Provider | None
    #: Nodes this leader asked the provider for (intents of earlier leaders are not in it).
    launched: set[str] = field(default_factory=set)
    #: Set by :meth:`schedule` when it failed the deployment or retired a node: the rest of the
    #: pass would act on a snapshot that no longer holds.
    reshaped: bool = False
    #: The instance ports that go with the placements :meth:`schedule` returned last.
    ports: dict[str, int] = field(default_factory=dict)

    # -- membership --------------------------------------------------------------------------------

    async def replace_dead(self, view: ClusterState, config: Config | None) -> bool:
        """Take nodes unreachable for too long out of the cluster, one at a time.

        A dead voter still counts towards the majority, so every further failure brings the cluster
        closer to losing quorum; removing it (the survivors are a majority of the old and the new
        membership, so the change commits) restores the margin, and growing the fleet then asks the
        provider for a replacement. A node that comes back after this has been retired for good.
        """
        after = (config.project.cluster if config else ClusterSettings()).replace_dead_after
        now = time.time()
        for node in view["nodes"].values():
            if node["id"] == self.settings.node or node["status"] != "unreachable":
                continue
            silent = now - (node["last_seen"] or node["joined_at"])
            if silent < after:
                continue
            log.warning("node %s unreachable for %.0fs (limit %ds): replacing it", node["id"], silent, after)
            await self.retire(node, replaced=f"was unreachable for {silent:.0f} s")
            if config is not None:
                await self._move_disks(view, config, node["id"])
            return True
        return False

    async def _move_disks(self, view: ClusterState, config: Config, dead: str) -> None:
        """The dead node's volumes on network disks go to a replacement launched in their zone
        (a disk cannot leave its zone); the service is pinned there and waits for it to join."""
        moving = sorted(name for name, r in volumes_of(view).items() if r["node"] == dead and "disk" in r)
        zone = disk_zone(view, dead)
        if not moving or self.provider is None or zone is None:
            return
        request = replace(self._request(self.size(config), view), zone=zone)
        try:
            node = await asyncio.to_thread(self.provider.reserve, request)
        except Exception as e:
            log.error("cannot replace node %s, which held %s: %s", dead, ", ".join(moving), e)
            return
        await self.cluster.execute(command("provisioning", node=node, at=time.time()))
        await self.cluster.execute(command("volume_moved", volumes=moving, node=node, at=time.time()))
        self.launched.add(node)
        log.info("node %s replaces %s in %s, for %s", node, dead, zone, ", ".join(moving))
        await self._provision(view, node, request)

    async def promote(self, view: ClusterState) -> bool:
        """Keep up to MAX_VOTERS voters: when one has gone, make a ready non-voter a voter.

        The decision goes through Raft; the node reopens its replica as a voter and asks to be
        added (see ``Node._follow_role``). One promotion at a time: none while one is under way.
        """
        voters = self.cluster.members()
        if len(voters) >= MAX_VOTERS or pending_voters(view, voters):
            return False  # full, or a promotion is under way
        candidates = sorted(
            n["id"] for n in view["nodes"].values() if not n.get("voter", True) and n["status"] == "ready"
        )
        if not candidates:
            return False
        log.info("promoting %s to voter (%d of %d voters)", candidates[0], len(voters), MAX_VOTERS)
        await self.cluster.execute(command("node_role", node=candidates[0], voter=True))
        return True

    async def retire(self, node: NodeRecord, replaced: str | None = None) -> None:
        """Leave Raft first (while the node can still acknowledge), then stop the machine.
        ``replaced``: why a dead node goes (the event trail says it is replaced)."""
        self.reshaped = True
        await self.cluster.execute(
            command("node_status", node=node["id"], status="retiring", at=time.time(), reason=replaced)
        )
        if raft_address(node) in self.cluster.members():
            await self.cluster.remove_member(raft_address(node))
        if self.provider is not None:
            await asyncio.to_thread(self.provider.retire, node["id"])
        await self.cluster.execute(command("node_left", node=node["id"], at=time.time()))

    # -- placement ---------------------------------------------------------------------------------

    def size(self, config: Config) -> FleetSize:
        """How many nodes the project wants at least and at most, and the size of a new one."""
        return fleet_size(
            config, NodeCapacity(node="new", cpus=self.settings.cpus, memory=self.settings.memory)
        )

    async def schedule(
        self, view: ClusterState, config: Config | None, optional: Set[str] = frozenset()
    ) -> dict[str, str]:
        """Place services; grow the fleet to the minimum first so a deploy spreads over it.
        ``optional`` instances (a start-first update's surge) are placed if there is room, but
        never grow the fleet."""
        self.reshaped = False
        self.ports = {}
        if config is None:
            return {}
        fleet = self.size(config)
        if self.provider is not None:
            await self._grow(view, fleet, fleet.min_nodes)
            view = self.cluster.view()  # the intents just committed count as growing
        ready = sum(1 for n in view["nodes"].values() if n["status"] == "ready")
        growing = bool(view["provisioning"]) or any(n["status"] == "joining" for n in view["nodes"].values())
        self.ports = dict(view.get("instance_ports", {}))
        if ready < fleet.min_nodes and growing:
            return dict(view["placements"])  # let the fleet reach its minimum, so the deploy spreads
        homes = volumes_of(view)
        needs = demands(config, pins(config, homes))
        capacities = [
            NodeCapacity(node=n["id"], cpus=n["cpus"], memory=n["memory"], schedulable=n["status"] == "ready")
            for n in view["nodes"].values()
        ]
        plan = place(needs, capacities, view["placements"])
        placements = dict(plan.placements)
        ports = instance_ports(config, placements, view)
        if placements != view["placements"] or ports != self.ports:
            await self.cluster.execute(
                command("set_placements", placements=placements, ports=ports, at=time.time())
            )
            self.ports = ports
        found = new_homes(config, placements, homes)
        if found:
            await self.cluster.execute(command("volume_homes", homes=found, at=time.time()))
        if self.provider is not None and self.provider.network_disks:
            await attach_disks(self.cluster, self.provider, self.cluster.view(), config, placements)
        if self.provider is None or growing:
            # (while nodes are still joining, they may be what the unplaced services are waiting for)
            return placements
        # (a new node would not help an instance pinned to the node holding its volumes)
        unplaced = set(plan.unplaced) - optional - {d.service for d in needs if d.pinned is not None}
        if unplaced:
            try:
                missing = nodes_needed([d for d in needs if d.service in unplaced], fleet.template)
            except ValueError as e:
                await self._fail(view, str(e), [])
            else:
                await self._grow(view, fleet, len(view["nodes"]) + missing)
        else:
            await self._shrink(self.cluster.view(), fleet, placements)
        return placements

    async def _fail(self, view: ClusterState, error: str, log_tail: list[str]) -> None:
        if await fail_deployment(self.cluster, view, None, error, log_tail):
            self.reshaped = True

    # -- machines ----------------------------------------------------------------------------------

    def _request(self, fleet: FleetSize, view: ClusterState) -> NodeRequest:
        """Who a new node asks to join: this leader first, then every other member, so a node whose
        launch outlives this leader still finds the cluster."""
        others = sorted(api_address(n) for n in view["nodes"].values() if n["id"] != self.settings.node)
        return NodeRequest(
            cluster=self.settings.cluster,
            cpus=fleet.template.cpus,
            memory=fleet.template.memory,
            join=(self.settings.api_address, *others),
            secrets=self.secrets,
        )

    async def _grow(self, view: ClusterState, fleet: FleetSize, wanted: int) -> None:
        """Ask the provider for the missing nodes; they start in parallel and join one by one."""
        assert self.provider is not None
        now = time.time()
        request = self._request(fleet, view)
        await self._settle_intents(view, request, now)
        if fleet.max_nodes is not None:
            wanted = min(wanted, fleet.max_nodes)
        missing = wanted - len(view["nodes"]) - len(view["provisioning"])
        for _ in range(max(0, missing)):
            try:
                node = await asyncio.to_thread(self.provider.reserve, request)
            except Exception as e:
                log.error("cannot start another node: %s", e)
                await self._fail(view, f"cannot start another node: {e}", [])
                return
            await self.cluster.execute(command("provisioning", node=node, at=now))
            self.launched.add(node)
            if not await self._provision(view, node, request):
                return
            log.info("provisioned node %s towards %d nodes", node, wanted)

    async def _settle_intents(self, view: ClusterState, request: NodeRequest, now: float) -> None:
        """Retire launches that never joined; finish the ones an earlier leader left half done."""
        assert self.provider is not None
        for node, since in view["provisioning"].items():
            if now - since > self.provider.launch_timeout:
                log.warning(
                    "node %s did not join within %.0fs; retiring it", node, self.provider.launch_timeout
                )
                await asyncio.to_thread(self.provider.retire, node)
                await self.cluster.execute(command("provisioning_done", node=node))
            elif node not in self.launched and node not in view["nodes"]:
                log.info("finishing the launch of node %s that an earlier leader started", node)
                self.launched.add(node)
                await self._provision(view, node, replace(request, zone=disk_zone(view, node)))

    async def _provision(self, view: ClusterState, node: str, request: NodeRequest) -> bool:
        assert self.provider is not None
        try:
            await asyncio.to_thread(self.provider.provision, node, request)
            return True
        except Exception as e:  # the provider's failure is the deployment's, in words the user sees
            log.error("cannot start node %s: %s", node, e)
            await self._fail(view, f"cannot start another node: {e}", [])
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.provider.retire, node)
            await self.cluster.execute(command("provisioning_done", node=node))
            return False

    async def _shrink(self, view: ClusterState, fleet: FleetSize, placements: Mapping[str, str]) -> None:
        """Hand back one empty follower a pass while the fleet is above its minimum.

        Not while a node is unreachable: a membership change counts the new voter set at once, so
        removing a live voter of three while another is dead leaves one of two, and no majority.
        The dead node goes first (:meth:`replace_dead`).
        """
        if any(n["status"] == "unreachable" for n in view["nodes"].values()):
            return
        busy = set(placements.values()) | {n for n, seen in view["instances"].items() if seen}
        idle = sorted(
            n["id"]
            for n in view["nodes"].values()
            if n["id"] != self.settings.node and n["status"] == "ready" and n["id"] not in busy
        )
        if idle and len(view["nodes"]) > fleet.min_nodes:
            log.info("node %s runs nothing and the fleet is above its minimum: retiring it", idle[-1])
            await self.retire(view["nodes"][idle[-1]])


def instance_ports(config: Config, placements: Mapping[str, str], view: ClusterState) -> dict[str, int]:
    """The instance port of each placed instance of a public service (see :mod:`octctl.instance_ports`)."""
    instances = list(instances_of(config))
    return assign_instance_ports(
        public={name for name, s in instances if s.public_port is not None},
        placements=placements,
        published={
            name: s.host_port for name, s in instances if s.public_port is None and s.host_port is not None
        },
        before=view.get("instance_ports", {}),
        placed_before=view["placements"],
        reserved={s.public_port for s in config.project.services if s.public_port is not None},
    )
