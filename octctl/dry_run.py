"""What deploying a config would do to the running cluster, worked out without doing it (pure).

The leader answers ``oct plan`` with this (``POST /v1/plan``) from its own state, through the
same parts a deploy goes through: the deploy command's per-service changes, the scheduler's
placement with the real nodes (and the nodes the fleet would launch for what does not fit), the
instance specs whose hashes decide whether an instance is restarted, and the price table. It
replays one pass of the leader, so it shows where a deploy starts, not every step a rolling
update takes on its way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from octctl.api.models import (
    SENSITIVE,
    FieldChange,
    PlannedChange,
    PlannedInstance,
    PlanResponse,
    ServicePlan,
)
from octctl.config import Config
from octctl.fleet_cost import billed_types, fleet_cost, volumes_gb
from octctl.fleet_growth import Growth, NewNode, awaiting, first_fleet, grow, is_first_deploy, machines
from octctl.fleet_size import FleetSize, fleet_size
from octctl.instance_ports import instance_ports
from octctl.instances import instance_names, service_of
from octctl.runtime.base import InstanceSpec
from octctl.scheduler import NodeCapacity, place
from octctl.specs import Rollout, demands, instance_specs
from octctl.state.desired import desired_project
from octctl.state.model import ClusterState, service_changes, volumes_of
from octctl.volumes import pins

__all__ = ["NodeFacts", "dry_run", "field_changes"]

#: New nodes join with ids the provider picks, which the scheduler sees after the nodes of
#: today (local: the next free address; AWS: a new instance's): planned ones sort last too.
_LAST = "\uffff"
_CHANGES: dict[str, PlannedChange] = {"started": "create", "removed": "remove", "unchanged": "unchanged"}


@dataclass(frozen=True)
class NodeFacts:
    """What the asking node knows beyond the state: its own size (new cloud nodes copy it), the
    leader, the provider's kind and instance type (for the price), the DNS domain (in specs)."""

    own: NodeCapacity
    leader: str | None
    kind: str
    instance_type: str | None
    domain: str
    #: The machine types the cluster may buy (``Provider.instance_types``); empty: copies.
    instance_types: tuple[str, ...] = ()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        found: dict[str, Any] = {}
        for key, inner in value.items():
            found.update(_flat(inner, f"{prefix}{key}."))
        return found
    return {prefix.rstrip("."): value}


def field_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[FieldChange]:
    """The fields of a service that differ, dotted; env values never shown (they hold secrets)."""
    old, new = _flat(dict(before or {})), _flat(dict(after or {}))
    changes = []
    for name in sorted(set(old) | set(new)):
        was, now = old.get(name), new.get(name)
        if was == now:
            continue
        if name.startswith("envs."):
            was, now = (SENSITIVE if was is not None else None), (SENSITIVE if now is not None else None)
        changes.append(FieldChange(field=name, before=was, after=now))
    return changes


def _comparable(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """A service built from a Dockerfile gets its image at deploy: compare it by its Dockerfile."""
    if (
        old is not None
        and new.get("dockerfile_path")
        and new.get("dockerfile_path") == old.get("dockerfile_path")
    ):
        return {**new, "image": old.get("image")}
    return new


@dataclass
class _Pass:
    """One leader pass, replayed: the nodes it would launch, and the instances each is for."""

    capacities: list[NodeCapacity]
    launch: dict[str, NewNode] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)

    def add(self, growth: Growth) -> None:
        for index, new in enumerate(growth.nodes):
            name = f"new-{len(self.launch) + 1}"
            self.launch[name] = new
            self.capacities.append(NodeCapacity(_LAST + name, new.cpus, new.memory))
            self.targets.update({i: _LAST + name for i, k in growth.targets.items() if k == index})


def _fleet(
    state: ClusterState, config: Config, fleet: FleetSize, facts: NodeFacts
) -> tuple[dict[str, str], dict[str, NewNode], list[str], list[str]]:
    """Placements, nodes to launch, nodes to retire, instances with no room: one leader pass
    (``octctl.leader.fleet.Fleet.schedule``), with the same growth (:mod:`octctl.fleet_growth`)."""
    live = [n for n in state["nodes"].values() if n["status"] != "retiring"]
    step = _Pass(
        [
            NodeCapacity(node=n["id"], cpus=n["cpus"], memory=n["memory"], schedulable=n["status"] == "ready")
            for n in live
        ]
    )
    count = len(state["nodes"]) + len(state["provisioning"])
    buying = machines(config, facts.instance_types)
    needs = demands(config, pins(config, volumes_of(state)))
    if buying is None:
        step.add(grow((), fleet, count, None))
    elif (
        facts.leader is not None and facts.instance_type is not None and is_first_deploy(state, facts.leader)
    ):
        step.add(first_fleet(config, needs, buying, facts.instance_type) or Growth())
    awaited, current = awaiting(state)
    placeable = [d for d in needs if d.service not in awaited]
    plan = place(placeable, step.capacities, {**step.targets, **current})
    waiting = [d for d in needs if d.service in plan.unplaced and d.pinned is None]
    if waiting or (buying is not None and count + len(step.launch) < fleet.min_nodes):
        with contextlib.suppress(ValueError):  # (bigger than any node: unplaced, the deploy fails it)
            step.add(grow(waiting, fleet, count + len(step.launch), buying))
        plan = place(placeable, step.capacities, {**step.targets, **current})
    placements = {i: node.removeprefix(_LAST) for i, node in plan.placements.items()}
    busy = set(placements.values())
    idle = sorted(
        n["id"] for n in live if n["id"] != facts.leader and n["status"] == "ready" and n["id"] not in busy
    )
    spare = max(0, len(live) + len(step.launch) - fleet.min_nodes)
    retire = list(reversed(idle))[:spare]
    return placements, step.launch, retire, list(plan.unplaced)


def dry_run(state: ClusterState, config: Config, source_dir: str | None, facts: NodeFacts) -> PlanResponse:
    """What ``deploy`` of ``config`` would do to the cluster in ``state``."""
    new_json = config.model_dump(mode="json")
    changes = service_changes(state["project"], new_json, state["source_dir"], source_dir)
    placements, launch, retire, unplaced = _fleet(state, config, fleet_size(config, facts.own), facts)
    rollout = Rollout("plan", state["cluster"], source_dir, facts.domain)
    ports = state.get("instance_ports", {})
    new_ports = instance_ports(config, placements, state)  # (as the leader will assign them)
    new_specs = instance_specs(config, placements, state["nodes"], rollout, new_ports)
    old = desired_project(state)
    # (read through today's model, so fields added to oct since that deploy are not changes)
    old_services = {s.name: s.model_dump(mode="json") for s in old.project.services} if old else {}
    old_rollout = Rollout("plan", state["cluster"], state["source_dir"], facts.domain)
    old_specs = instance_specs(old, state["placements"], state["nodes"], old_rollout, ports) if old else {}
    specs = (old_specs, new_specs)

    services = [
        _service_plan(name, change, config, new_json, old_services.get(name), state, placements, specs)
        for name, change in changes.items()
    ]

    before = billed_types(state["nodes"].values(), facts.instance_type)
    kept = billed_types((n for n in state["nodes"].values() if n["id"] not in retire), facts.instance_type)
    after = [*kept, *(new.instance_type or facts.instance_type for new in launch.values())]
    cost_before = fleet_cost(facts.kind, before, volumes_gb(old))
    cost_after = fleet_cost(facts.kind, after, volumes_gb(config))
    current = state["deployment"]
    return PlanResponse(
        cluster=state["cluster"],
        deployment=current["id"] if current else None,
        changed=any(s.change != "unchanged" for s in services) or bool(launch or retire),
        services=services,
        launch=list(launch),
        launch_types={name: new.instance_type for name, new in launch.items() if new.instance_type},
        retire=retire,
        unplaced=unplaced,
        nodes_before=len(before),
        nodes_after=len(after),
        monthly_usd_before=float(cost_before.monthly_usd) if cost_before.monthly_usd is not None else None,
        monthly_usd_after=float(cost_after.monthly_usd) if cost_after.monthly_usd is not None else None,
        cost_note=cost_after.note,
    )


def _service_plan(
    name: str,
    change: str,
    config: Config,
    new_json: Mapping[str, Any],
    before: dict[str, Any] | None,
    state: ClusterState,
    placements: Mapping[str, str],
    specs: tuple[Mapping[str, InstanceSpec], Mapping[str, InstanceSpec]],
) -> ServicePlan:
    service = next((s for s in config.project.services if s.name == name), None)
    after = next((s for s in new_json["project"]["services"] if s["name"] == name), None)
    # (a new service is all in oct.toml, a removed one all gone: their fields say nothing more)
    fields = field_changes(before, _comparable(after, before)) if before and after else []
    names = (
        instance_names(service)
        if service is not None
        else sorted(i for i in state["placements"] if service_of(i) == name)
    )
    instances = [
        PlannedInstance(name=i, node=placements.get(i) if service else None, was=state["placements"].get(i))
        for i in names
    ]
    kind = _CHANGES.get(change)
    if kind is None:  # replaced: its instances restart only where their spec changes
        old_specs, new_specs = specs
        common = [i for i in names if i in old_specs and i in new_specs]
        restarted = any(new_specs[i].spec_hash != old_specs[i].spec_hash for i in common)
        kind = "replace" if restarted or not common else "update"
        if not fields:  # (what every instance carries changed: the project's name, its folder)
            fields = [FieldChange(field="(project)", before="as deployed", after="changed")]
    moved = [i for i in instances if i.was is not None and i.node != i.was and service is not None]
    if kind == "unchanged" and moved:
        kind = "replace"  # (a node it ran on goes, or it had no room before)
        fields = [FieldChange(field=f"{i.name} node", before=i.was, after=i.node) for i in moved]
    return ServicePlan(name=name, change=kind, fields=fields, instances=instances)
