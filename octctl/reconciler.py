"""The leader's loop: make what nodes run match what the cluster state says they should.

Each tick observes every node's agent, schedules, then pushes the difference: removals first (they
free ports and capacity), then creates and replacements, a service only once everything it
``depends_on`` runs with its current spec. Pushes of one tick run concurrently, so independent
services start in parallel across nodes. All decisions go through Raft before or as they are
acted on, so a new leader picks up where the old one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from octctl.config import Config
from octctl.config.models import ClusterSettings
from octctl.node_settings import NodeSettings, Secrets
from octctl.peers import PeerClient, PeerError
from octctl.providers.base import NodeRequest, Provider
from octctl.runtime.base import InstanceSpec, InstanceStatus
from octctl.scheduler import NodeCapacity, nodes_needed, place
from octctl.specs import Rollout, demand, instance_specs, public_names
from octctl.state.machine import NotLeader, RaftNode, RaftUnavailable
from octctl.state.model import MAX_VOTERS, ClusterState, NodeRecord, command, pending_voters

log = logging.getLogger(__name__)

#: An instance that keeps crashing this often makes the deployment fail (it keeps being restarted).
CRASH_LOOP_RESTARTS = 3
#: Consecutive failed polls before a node counts as unreachable (a busy agent may miss one).
UNREACHABLE_AFTER = 3
#: Public DNS names are published as soon as a service is placed somewhere else, and besides
#: re-checked this often (one read), which repairs records changed behind the leader's back.
PUBLISH_REFRESH = 60.0
#: The next try after a publish failed (provider API unreachable, throttled) or a node had no
#: public address yet.
PUBLISH_RETRY = 10.0

Observed = dict[str, dict[str, dict[str, Any]]]  # node -> service -> InstanceStatus as JSON


def api_address(node: NodeRecord) -> str:
    return f"{node['address']}:{node['api_port']}"


def raft_address(node: NodeRecord) -> str:
    return f"{node['address']}:{node['raft_port']}"


def is_up(instance: Mapping[str, Any] | None, spec: InstanceSpec) -> bool:
    return (
        instance is not None
        and instance.get("spec_hash") == spec.spec_hash
        and instance["state"] == "running"
    )


@dataclass(frozen=True)
class Fleet:
    min_nodes: int
    max_nodes: int | None
    template: NodeCapacity  # the size of a node the provider would add


@dataclass
class Reconciler:
    raft: RaftNode
    peers: PeerClient
    settings: NodeSettings
    secrets: Secrets
    provider: Provider | None
    interval: float = 1.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: (node, service) -> (spec hash, deployment) of a push that failed; not retried for the same pair.
    _failed: dict[tuple[str, str], InstanceStatus] = field(default_factory=dict)
    _misses: dict[str, int] = field(default_factory=dict)
    #: Nodes this leader asked the provider for (intents of earlier leaders are not in it).
    _launched: set[str] = field(default_factory=set)
    #: What this leader last published as public DNS names, and when to check them again.
    _published: tuple[Any, ...] | None = None
    _publish_due: float = 0.0
    #: Nodes whose public address this leader asked the provider for: when it may ask again
    #: (never after an answer, ``PUBLISH_RETRY`` after a failure).
    _addresses_asked: dict[str, float] = field(default_factory=dict)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            if not self.raft.is_leader():
                self._failed.clear()
                self._misses.clear()
                self._launched.clear()
                self._published = None
                self._addresses_asked.clear()
                continue
            try:
                busy = await self.tick()
            except Exception:
                log.exception("reconcile tick failed")
                busy = False
            if busy:
                self._wake.set()

    # -- one tick ------------------------------------------------------------------------------
    async def tick(self) -> bool:
        """One pass; True when it changed something and another pass should follow at once.

        It starts with a commit barrier: decisions are taken on a state that includes every write
        acknowledged so far, by a node that a majority still follows. A leader cut off from the
        majority fails the barrier and stops acting (commands to nodes, provider calls) right there.
        """
        try:
            await self.raft.barrier()
        except (NotLeader, RaftUnavailable) as e:
            log.info("not reconciling: %s", e)
            return False
        view = self.raft.view()
        observed = await self._observe(view)
        view = self.raft.view()
        config = Config.model_validate(view["project"]) if view["project"] else None
        replaced = await self._replace_dead(view, config)
        promoted = await self._promote(self.raft.view() if replaced else view)
        if replaced or promoted:
            view = self.raft.view()
        deployment = view["deployment"]

        placements = await self._schedule(view, config)
        await self._learn_public_addresses(self.raft.view())
        view = self.raft.view()
        specs = (
            instance_specs(
                config,
                placements,
                view["nodes"],
                Rollout(deployment["id"], view["cluster"], view["source_dir"], self.settings.dns_domain),
            )
            if config is not None and deployment is not None
            else {}
        )
        changed = await self._converge(view, config, specs, observed)
        await self._update_deployment(view, config, specs, observed)
        await self._publish(self.raft.view(), config)
        return changed

    async def _learn_public_addresses(self, view: ClusterState) -> None:
        """Record the provider's public address of nodes that have none recorded yet, before specs
        are rendered, so ``{{ services.X.public_ip }}`` is the address the world reaches (AWS), and
        a service is not started with the private one first. Each node is asked about once per
        leader (an instance has its public address from launch; a local node never has one), and
        again ``PUBLISH_RETRY`` after a failed call."""
        if self.provider is None:
            return
        now = time.monotonic()
        missing = [
            n["id"]
            for n in view["nodes"].values()
            if "public_address" not in n and self._addresses_asked.get(n["id"], -PUBLISH_RETRY) <= now
        ]
        if not missing:
            return
        for node in missing:
            self._addresses_asked[node] = float("inf")
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                None, self.provider.public_addresses, missing
            )
        except Exception as e:  # the provider's API: public_ip stays the node's address meanwhile
            log.warning("public addresses of %s unknown (next try in %.0fs): %s", missing, PUBLISH_RETRY, e)
            for node in missing:
                self._addresses_asked[node] = now + PUBLISH_RETRY
            return
        for node, address in sorted(found.items()):
            if node in missing:
                await self.raft.execute(command("node_public_address", node=node, address=address))

    async def _publish(self, view: ClusterState, config: Config | None) -> None:
        """Keep ``<service>.<domain>`` pointing at the node that runs the service, through the
        provider's public DNS, when the deployment names a zone (AWS). A service the cluster moves
        (a dead node, a rescheduling) is republished at once, not at the next ``oct deploy``."""
        zone = view.get("public_zone")
        if self.provider is None or not zone:
            return
        names = public_names(config, view["placements"])
        wanted = (zone, view["cluster"], sorted(names.items()))
        now = time.monotonic()
        if wanted == self._published and now < self._publish_due:
            return
        self._published, self._publish_due = wanted, now + PUBLISH_RETRY
        loop = asyncio.get_running_loop()
        try:
            complete = await loop.run_in_executor(None, self.provider.publish, zone, names, view["cluster"])
        except Exception as e:  # the provider's API: logged, tried again after PUBLISH_RETRY
            log.warning("public DNS names not published (next try in %.0fs): %s", PUBLISH_RETRY, e)
            return
        if complete:
            self._publish_due = now + PUBLISH_REFRESH

    async def _observe(self, view: ClusterState) -> Observed:
        """Ask every agent what it runs; record changes (and node liveness) in Raft."""
        nodes = list(view["nodes"].values())
        results = await asyncio.gather(
            *(self.peers.instances(api_address(n)) for n in nodes), return_exceptions=True
        )
        observed: Observed = {}
        now = time.time()
        for node, result in zip(nodes, results, strict=True):
            if isinstance(result, BaseException):
                misses = self._misses[node["id"]] = self._misses.get(node["id"], 0) + 1
                if node["status"] == "ready" and misses >= UNREACHABLE_AFTER:
                    log.warning("node %s is unreachable: %s", node["id"], result)
                    await self.raft.execute(
                        command("node_status", node=node["id"], status="unreachable", at=now)
                    )
                continue
            self._misses.pop(node["id"], None)
            seen = {i.service: i.model_dump(mode="json") for i in result}
            for (node_id, service), failure in self._failed.items():
                if node_id == node["id"] and service not in seen:
                    seen[service] = failure.model_dump(mode="json")
            observed[node["id"]] = seen
            if node["status"] in ("joining", "unreachable") or (
                node["status"] == "ready" and now - (node["last_seen"] or 0) > 10
            ):
                await self.raft.execute(command("node_status", node=node["id"], status="ready", at=now))
            if view["instances"].get(node["id"]) != seen:
                await self.raft.execute(command("observe", node=node["id"], instances=seen))
        return observed

    async def _replace_dead(self, view: ClusterState, config: Config | None) -> bool:
        """Take nodes unreachable for too long out of the cluster, one at a time.

        A dead voter still counts towards the majority, so every further failure brings the cluster
        closer to losing quorum; removing it (the survivors are a majority of the old and the new
        membership, so the change commits) restores the margin, and the fleet step then asks the
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
            await self.retire(node)
            return True
        return False

    async def _promote(self, view: ClusterState) -> bool:
        """Keep up to MAX_VOTERS voters: when one has gone, make a ready non-voter a voter.

        The decision goes through Raft; the node reopens its replica as a voter and asks to be
        added (see ``Node._follow_role``). One promotion at a time: none while one is under way.
        """
        voters = self.raft.members()
        if len(voters) >= MAX_VOTERS or pending_voters(view, voters):
            return False  # full, or a promotion is under way
        candidates = sorted(
            n["id"] for n in view["nodes"].values() if not n.get("voter", True) and n["status"] == "ready"
        )
        if not candidates:
            return False
        log.info("promoting %s to voter (%d of %d voters)", candidates[0], len(voters), MAX_VOTERS)
        await self.raft.execute(command("node_role", node=candidates[0], voter=True))
        return True

    def _fleet(self, config: Config) -> Fleet:
        """How many nodes the project wants at least and at most, and the size of a new one."""
        provider = config.project.provider
        if provider is not None and provider.local is not None:
            local = provider.local
            return Fleet(local.nodes, None, NodeCapacity(node="new", cpus=local.cpus, memory=local.memory))
        template = NodeCapacity(node="new", cpus=self.settings.cpus, memory=self.settings.memory)
        aws = provider.aws if provider is not None else None
        if aws is not None:
            return Fleet(aws.min_nodes, aws.max_nodes, template)
        return Fleet(1, None, template)

    async def _schedule(self, view: ClusterState, config: Config | None) -> dict[str, str]:
        """Place services; grow the fleet to the minimum first so a deploy spreads over it."""
        if config is None:
            return {}
        fleet = self._fleet(config)
        if self.provider is not None:
            await self._grow(view, fleet, fleet.min_nodes)
            view = self.raft.view()
        ready = sum(1 for n in view["nodes"].values() if n["status"] == "ready")
        growing = bool(view["provisioning"]) or any(n["status"] == "joining" for n in view["nodes"].values())
        if ready < fleet.min_nodes and growing:
            return dict(view["placements"])  # let the fleet reach its minimum, so the deploy spreads
        demands = [demand(s) for s in config.project.services]
        capacities = [
            NodeCapacity(node=n["id"], cpus=n["cpus"], memory=n["memory"], schedulable=n["status"] == "ready")
            for n in view["nodes"].values()
        ]
        plan = place(demands, capacities, view["placements"])
        placements = dict(plan.placements)
        if placements != view["placements"]:
            await self.raft.execute(command("set_placements", placements=placements))
        if plan.unplaced and self.provider is not None and not growing:
            # (while nodes are still joining, they may be what the unplaced services are waiting for)
            try:
                missing = nodes_needed([d for d in demands if d.service in plan.unplaced], fleet.template)
            except ValueError as e:
                await self._fail(view, None, str(e), [])
            else:
                await self._grow(view, fleet, len(view["nodes"]) + missing)
        elif not plan.unplaced and self.provider is not None and not growing:
            await self._shrink(self.raft.view(), fleet, placements)
        return placements

    def _request(self, fleet: Fleet, view: ClusterState) -> NodeRequest:
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

    async def _grow(self, view: ClusterState, fleet: Fleet, wanted: int) -> None:
        """Ask the provider for the missing nodes; they start in parallel and join one by one.

        Each new node is an intent in Raft before the provider is called, and intents a previous
        leader left are provisioned again (the provider does not start a second machine for the
        same id), so a failover in the middle neither orphans nor duplicates a machine.
        """
        now = time.time()
        assert self.provider is not None
        request = self._request(fleet, view)
        for node, since in view["provisioning"].items():
            if now - since > self.provider.launch_timeout:
                log.warning(
                    "node %s did not join within %.0fs; retiring it", node, self.provider.launch_timeout
                )
                await asyncio.to_thread(self.provider.retire, node)
                await self.raft.execute(command("provisioning_done", node=node))
            elif node not in self._launched and node not in view["nodes"]:
                log.info("finishing the launch of node %s that an earlier leader started", node)
                self._launched.add(node)
                await self._provision(view, node, request)
        if fleet.max_nodes is not None:
            wanted = min(wanted, fleet.max_nodes)
        missing = wanted - len(view["nodes"]) - len(view["provisioning"])
        for _ in range(max(0, missing)):
            try:
                node = await asyncio.to_thread(self.provider.reserve, request)
            except Exception as e:
                log.error("cannot start another node: %s", e)
                await self._fail(view, None, f"cannot start another node: {e}", [])
                return
            await self.raft.execute(command("provisioning", node=node, at=now))
            self._launched.add(node)
            if not await self._provision(view, node, request):
                return
            log.info("provisioned node %s towards %d nodes", node, wanted)

    async def _provision(self, view: ClusterState, node: str, request: NodeRequest) -> bool:
        assert self.provider is not None
        try:
            await asyncio.to_thread(self.provider.provision, node, request)
            return True
        except Exception as e:  # the provider's failure is the deployment's, in words the user sees
            log.error("cannot start node %s: %s", node, e)
            await self._fail(view, None, f"cannot start another node: {e}", [])
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.provider.retire, node)
            await self.raft.execute(command("provisioning_done", node=node))
            return False

    async def _shrink(self, view: ClusterState, fleet: Fleet, placements: Mapping[str, str]) -> None:
        """Hand back one empty follower a tick while the fleet is above its minimum.

        Not while a node is unreachable: a membership change counts the new voter set at once, so
        removing a live voter of three while another is dead leaves one of two, and no majority.
        The dead node goes first (``_replace_dead``).
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

    async def _converge(
        self, view: ClusterState, config: Config | None, specs: dict[str, InstanceSpec], observed: Observed
    ) -> bool:
        project = config.project.name if config else None
        removals = [
            (node, service, instance["project"])
            for node, instances in observed.items()
            for service, instance in instances.items()
            if service not in specs or specs[service].node != node or instance.get("project") != project
        ]
        pushes: list[InstanceSpec] = []
        if config is not None:
            for name in config.topological_order():
                spec = specs.get(name)
                if spec is None:
                    continue
                current = observed.get(spec.node, {}).get(name)
                if (
                    current is not None
                    and current.get("spec_hash") == spec.spec_hash
                    and current["state"] not in ("failed", "exited")
                ):
                    continue  # running, or being restarted by its runtime; "exited" is re-applied
                failure = self._failed.get((spec.node, name))
                if failure is not None and (failure.spec_hash, failure.deployment) == (
                    spec.spec_hash,
                    spec.deployment,
                ):
                    continue  # this deployment already failed with this exact spec; a new deploy retries
                deps = config.service(name).depends_on
                if all(d in specs and is_up(observed.get(specs[d].node, {}).get(d), specs[d]) for d in deps):
                    pushes.append(spec)
        nodes = view["nodes"]
        removals = [(n, s, p) for n, s, p in removals if n in nodes]
        pushes = [spec for spec in pushes if spec.node in nodes]
        if not removals and not pushes:
            return False
        removed = await asyncio.gather(*(self._remove(nodes[n], p, s) for n, s, p in removals))
        results = await asyncio.gather(*(self._push(nodes[spec.node], spec) for spec in pushes))
        progressed = any(removed)
        for spec, status in zip(pushes, results, strict=True):
            if status is None:
                continue
            progressed = True
            observed.setdefault(spec.node, {})[spec.service] = status.model_dump(mode="json")
            await self.raft.execute(
                command(
                    "observe_one",
                    node=spec.node,
                    service=spec.service,
                    instance=status.model_dump(mode="json"),
                )
            )
        # Only progress earns an immediate next tick: a node refusing every call must not spin us.
        return progressed

    async def _remove(self, node: NodeRecord, project: str, service: str) -> bool:
        try:
            await self.peers.remove(api_address(node), project, service, self.raft.term())
        except PeerError as e:
            log.warning("could not remove %s from %s: %s", service, node["id"], e)
            return False
        self._failed.pop((node["id"], service), None)
        await self.raft.execute(command("observe_one", node=node["id"], service=service, instance=None))
        return True

    async def _push(self, node: NodeRecord, spec: InstanceSpec) -> InstanceStatus | None:
        """Start or replace one instance; None when the node did not answer (retried next tick,
        or the service moves once the node counts as unreachable)."""
        log.info("starting %s on %s (spec %s)", spec.service, node["id"], spec.spec_hash)
        try:
            status = await self.peers.apply(api_address(node), spec, self.raft.term())
        except PeerError as e:
            log.warning("node %s did not start %s: %s", node["id"], spec.service, e)
            return None
        if status.state == "failed":
            status.spec_hash = spec.spec_hash
            status.deployment = spec.deployment
            self._failed[(node["id"], spec.service)] = status
        else:
            self._failed.pop((node["id"], spec.service), None)
        return status

    async def _update_deployment(
        self, view: ClusterState, config: Config | None, specs: dict[str, InstanceSpec], observed: Observed
    ) -> None:
        deployment = view["deployment"]
        if deployment is None:
            return
        state = deployment["state"]
        if state == "destroying":
            await self._finish_destroy(view, observed)
            return
        if state not in ("pending", "in_progress") or config is None:
            return
        names = [s.name for s in config.project.services]
        running = 0
        for name in names:
            spec = specs.get(name)
            instance = observed.get(spec.node, {}).get(name) if spec else None
            if spec is None or instance is None or instance.get("spec_hash") != spec.spec_hash:
                continue
            if instance["state"] == "failed" or (
                instance["state"] in ("restarting", "exited")
                and instance.get("restarts", 0) >= CRASH_LOOP_RESTARTS
            ):
                error = (
                    instance.get("error") or f"{name} keeps exiting (exit code {instance.get('exit_code')})"
                )
                await self._fail(view, name, error, instance.get("log_tail") or [])
                return
            if instance["state"] == "running":
                running += 1
        fields: dict[str, Any] = {"message": f"{running}/{len(names)} services running"}
        if running == len(names):
            fields.update(state="succeeded", finished_at=time.time())
        elif state == "pending":
            fields["state"] = "in_progress"
        if fields.get("state") or fields["message"] != deployment["message"]:
            await self.raft.execute(command("deployment_update", deployment=deployment["id"], fields=fields))

    async def _fail(self, view: ClusterState, service: str | None, error: str, log_tail: list[str]) -> None:
        deployment = view["deployment"]
        if deployment is None or deployment["state"] not in ("pending", "in_progress"):
            return
        fields = {
            "state": "failed",
            "finished_at": time.time(),
            "failed_service": service,
            "error": error,
            "log_tail": log_tail[-20:],
            "message": f"{service} failed" if service else error,
        }
        await self.raft.execute(command("deployment_update", deployment=deployment["id"], fields=fields))

    async def _finish_destroy(self, view: ClusterState, observed: Observed) -> None:
        """Once no instance is left on any reachable node, hand every other node back to the provider.

        An unreachable node's last-seen instances cannot be removed through its agent; retiring the
        node (the provider stops the machine and what ran on it) is what removes them, so they must
        not hold up the destroy until the node is replaced.
        """
        deployment = view["deployment"]
        assert deployment is not None
        reachable = {n for n, record in view["nodes"].items() if record["status"] != "unreachable"}
        left = [seen for node, seen in view["instances"].items() if node in reachable]
        if any(observed.values()) or any(left):
            return
        # Unreachable nodes leave Raft first: each removal must still find a majority of the voters
        # that remain, and a dead voter counted among them could leave none (see ``_shrink``).
        others = [n for n in view["nodes"].values() if n["id"] != self.settings.node]
        for node in sorted(others, key=lambda n: n["status"] != "unreachable"):
            await self.retire(node)
        await self.raft.execute(
            command(
                "deployment_update",
                deployment=deployment["id"],
                fields={"state": "destroyed", "finished_at": time.time(), "message": "all services removed"},
            )
        )

    async def retire(self, node: NodeRecord) -> None:
        """Leave Raft first (while the node can still acknowledge), then stop the machine."""
        await self.raft.execute(command("node_status", node=node["id"], status="retiring", at=time.time()))
        if raft_address(node) in self.raft.members():
            await self.raft.remove_member(raft_address(node))
        if self.provider is not None:
            await asyncio.to_thread(self.provider.retire, node["id"])
        await self.raft.execute(command("node_left", node=node["id"]))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
