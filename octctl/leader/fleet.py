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
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace

from octctl.config import Config
from octctl.config.models import ClusterSettings
from octctl.fleet_growth import (
    Growth,
    Machines,
    NewNode,
    awaiting,
    first_fleet,
    grow,
    is_first_deploy,
    machines,
)
from octctl.fleet_size import FleetSize, fleet_size
from octctl.instance_ports import instance_ports
from octctl.leader.deployments import fail_deployment
from octctl.leader.disks import attach_disks, disk_zone
from octctl.leader.ports import ClusterLog
from octctl.node_settings import NodeSettings, Secrets
from octctl.providers.base import NodeRequest, Provider
from octctl.scheduler import Demand, NodeCapacity, place
from octctl.specs import demands
from octctl.state.desired import desired_project
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
                await self._move_disks(view, config, node)
            return True
        return False

    async def _move_disks(self, view: ClusterState, config: Config, record: NodeRecord) -> None:
        """The dead node's volumes on network disks go to a replacement of its type launched in
        their zone (a disk cannot leave its zone); the service is pinned there and waits for it."""
        dead = record["id"]
        moving = sorted(name for name, r in volumes_of(view).items() if r["node"] == dead and "disk" in r)
        zone = disk_zone(view, dead)
        if not moving or self.provider is None or zone is None:
            return
        request = replace(self._copy(view, config, record.get("instance_type")), zone=zone)
        try:
            node = await asyncio.to_thread(self.provider.reserve, request)
        except Exception as e:
            log.error("cannot replace node %s, which held %s: %s", dead, ", ".join(moving), e)
            return
        await self.cluster.execute(
            command("provisioning", node=node, at=time.time(), instance_type=request.instance_type)
        )
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

    def machines(self, config: Config) -> Machines | None:
        """What this cluster may buy when its provider prices machine types (None: copies)."""
        if self.provider is None:
            return None
        return machines(config, self.provider.instance_types)

    async def schedule(
        self, view: ClusterState, config: Config | None, optional: Set[str] = frozenset()
    ) -> dict[str, str]:
        """Place services, and launch the nodes they need.

        Copies of this node first grow the fleet to its minimum, so a deploy spreads over it; priced
        machines are bought for what does not fit (and the minimum), each for the instances it is
        bought for (:mod:`octctl.fleet_growth`), and a first deploy buys the project's whole
        fleet. ``optional`` instances (a start-first update's surge) are placed if there is room,
        but never grow the fleet.
        """
        self.reshaped = False
        self.ports = {}
        if config is None:
            return {}
        fleet = self.size(config)
        buying = self.machines(config)
        homes = volumes_of(view)
        needs = demands(config, pins(config, homes))
        if self.provider is not None:
            await self._settle_intents(view, time.time())
            if buying is None:
                await self._launch(view, grow((), fleet, self._count(view), None))
            else:
                await self._first_fleet(view, config, needs, buying)
            view = self.cluster.view()  # the intents just committed count as growing
        ready = sum(1 for n in view["nodes"].values() if n["status"] == "ready")
        growing = bool(view["provisioning"]) or any(n["status"] == "joining" for n in view["nodes"].values())
        self.ports = dict(view.get("instance_ports", {}))
        if ready < fleet.min_nodes and growing:
            return dict(view["placements"])  # let the fleet reach its minimum, so the deploy spreads
        capacities = [
            NodeCapacity(node=n["id"], cpus=n["cpus"], memory=n["memory"], schedulable=n["status"] == "ready")
            for n in view["nodes"].values()
        ]
        awaited, current = awaiting(view)
        plan = place([d for d in needs if d.service not in awaited], capacities, current)
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
        short = buying is not None and self._count(view) < fleet.min_nodes
        if unplaced or short:
            try:
                growth = grow([d for d in needs if d.service in unplaced], fleet, self._count(view), buying)
            except ValueError as e:
                await self._fail(view, str(e), [])
            else:
                await self._launch(view, growth)
        else:
            await self._shrink(self.cluster.view(), fleet, placements)
        return placements

    @staticmethod
    def _count(view: ClusterState) -> int:
        """The fleet's nodes, those being launched included."""
        return len(view["nodes"]) + len(view["provisioning"])

    async def _first_fleet(
        self, view: ClusterState, config: Config, needs: Sequence[Demand], buying: Machines
    ) -> None:
        """A first deploy buys the project's cheapest fleet at once, this (genesis) node first."""
        genesis = self.settings.instance_type
        if genesis is None or not is_first_deploy(view, self.settings.node):
            return
        growth = first_fleet(config, needs, buying, genesis)
        if growth is not None:
            log.info(
                "first deploy: %s holds %s; launching %s",
                self.settings.node,
                ", ".join(growth.first) or "nothing",
                ", ".join(n.instance_type or "a copy" for n in growth.nodes) or "nothing more",
            )
            await self._launch(view, growth)

    async def _fail(self, view: ClusterState, error: str, log_tail: list[str]) -> None:
        if await fail_deployment(self.cluster, view, None, error, log_tail):
            self.reshaped = True

    # -- machines ----------------------------------------------------------------------------------

    def _request(self, view: ClusterState, node: NewNode) -> NodeRequest:
        """A launch of ``node``; who it asks to join: this leader first, then every other member, so
        a node whose launch outlives this leader still finds the cluster."""
        others = sorted(api_address(n) for n in view["nodes"].values() if n["id"] != self.settings.node)
        return NodeRequest(
            cluster=self.settings.cluster,
            cpus=node.cpus,
            memory=node.memory,
            join=(self.settings.api_address, *others),
            secrets=self.secrets,
            instance_type=node.instance_type,
        )

    def _copy(
        self, view: ClusterState, config: Config | None, instance_type: str | None = None
    ) -> NodeRequest:
        """A launch like this node (or of ``instance_type``, when the cluster buys priced machines)."""
        buying = self.machines(config) if config is not None else None
        if buying is not None and instance_type is not None and buying.sells(instance_type):
            return self._request(view, buying.node(instance_type))
        return self._request(view, NewNode(self.settings.cpus, self.settings.memory))

    async def _launch(self, view: ClusterState, growth: Growth) -> None:
        """Ask the provider for ``growth``'s nodes: each launch an intent in Raft (with its type and
        the instances it is for) before the provider is called; they start in parallel and join
        one by one."""
        assert self.provider is not None
        now = time.time()
        for index, new in enumerate(growth.nodes):
            request = self._request(view, new)
            try:
                node = await asyncio.to_thread(self.provider.reserve, request)
            except Exception as e:
                log.error("cannot start another node: %s", e)
                await self._fail(view, f"cannot start another node: {e}", [])
                return
            targets = sorted(i for i, k in growth.targets.items() if k == index)
            await self.cluster.execute(
                command("provisioning", node=node, at=now, instance_type=new.instance_type, targets=targets)
            )
            self.launched.add(node)
            if not await self._provision(view, node, request):
                return
            what = f" ({new.instance_type})" if new.instance_type else ""
            log.info("provisioned node %s%s for %s", node, what, ", ".join(targets) or "the fleet's minimum")

    async def _settle_intents(self, view: ClusterState, now: float) -> None:
        """Retire launches that never joined; finish the ones an earlier leader left half done (of
        the type it asked for: a provider refuses the same launch id with other parameters)."""
        assert self.provider is not None
        config = desired_project(view)
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
                request = self._copy(view, config, view.get("launch_types", {}).get(node))
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
