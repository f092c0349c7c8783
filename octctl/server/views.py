"""Turn the replicated state into the ``/v1/status`` answer (pure: state in, model out)."""

from __future__ import annotations

from octctl.api.models import (
    DeploymentView,
    EventView,
    HistoryView,
    InstanceView,
    NodeView,
    ServiceView,
    StatusResponse,
    VolumeState,
    VolumeView,
)
from octctl.config import Config, Service
from octctl.instances import PlacedInstances, instance_names, service_of
from octctl.sites import sites
from octctl.state.desired import desired_project
from octctl.state.model import (
    ClusterState,
    NodeRecord,
    acme_of,
    drain_key,
    draining_of,
    history_of,
    raft_address,
    volumes_of,
)
from octctl.state.shape import events_of
from octctl.volumes import waiting_in, waiting_reason


def leader_id(state: ClusterState, leader_raft_address: str | None) -> str | None:
    for node in state["nodes"].values():
        if raft_address(node) == leader_raft_address:
            return node["id"]
    return None


def urls(state: ClusterState, service: Service, node: NodeRecord | None, names: tuple[str, ...]) -> list[str]:
    """A public service's addresses for people: its HTTPS names (plain HTTP until the certificate
    for them is issued), then its ``external_port`` at its node's public address (any node's
    would do: the ingress serves it on every node)."""
    if service.public_port is None or node is None:
        return []
    certificate = acme_of(state)["certificates"].get(service.name)
    scheme = "https" if certificate is not None and tuple(certificate["names"]) == names else "http"
    found = [f"{scheme}://{name}/" for name in names]
    address = node.get("public_address", node["address"])
    return [*found, f"http://{address}:{service.public_port}/"]


def instance_views(
    state: ClusterState, service: Service, placed_of: PlacedInstances | None = None
) -> list[InstanceView]:
    draining = draining_of(state)
    views = []
    own = instance_names(service)
    placed_of = placed_of or PlacedInstances(state["placements"])
    for name in placed_of.running_names(service):
        node_id = state["placements"].get(name)
        record = state["nodes"].get(node_id or "")
        seen = state["instances"].get(node_id or "", {}).get(name)
        port = (seen or {}).get("port") or state.get("instance_ports", {}).get(
            name, service.host_port if service.public_port is None else None
        )
        views.append(
            InstanceView(
                name=name,
                node=node_id,
                address=record["address"] if record else None,
                port=port,
                state=seen["state"] if seen else "pending",
                deployment=seen.get("deployment", "") if seen else "",
                spec_hash=seen.get("spec_hash", "") if seen else "",
                health=seen.get("health", "none") if seen else "none",
                health_output=seen.get("health_output", "") if seen else "",
                restarts=seen.get("restarts", 0) if seen else 0,
                draining=node_id is not None and drain_key(name, node_id) in draining,
                surge=name not in own,
            )
        )
    return views


def volume_views(state: ClusterState, config: Config | None) -> list[VolumeView]:
    """Every volume the cluster holds or the project declares, by name."""
    records = volumes_of(state)
    sized = config is not None and config.project.provider_kind == "aws"  # local volumes are not
    declared = {v.name: (s, v) for s in (config.project.services if config else []) for v in s.volumes}
    views = []
    for name in sorted(set(records) | set(declared)):
        record = records.get(name)
        service, volume = declared.get(name, (None, None))
        state_name: VolumeState
        if record is None:
            state_name = "pending"
        elif service is None:
            state_name = "unused"
        elif (
            waiting_reason(service, records, state["nodes"], state["placements"], state["provisioning"])
            is not None
        ):
            state_name = "waiting"
        else:
            state_name = "in use"
        views.append(
            VolumeView(
                name=name,
                service=service.name if service else record["service"] if record else "",
                node=record["node"] if record else None,
                state=state_name,
                size_gb=volume.size if volume is not None and sized else None,
                disk=record.get("disk") if record else None,
                where=f"EBS {record['disk']} in {record['zone']}" if record and "disk" in record else None,
            )
        )
    return views


def status_view(state: ClusterState, node: str, leader: str | None) -> StatusResponse:
    config = desired_project(state)
    services = config.project.services if config else []
    used: dict[str, tuple[int, int]] = {}
    by_name = {s.name: s for s in services}
    for name, placed in state["placements"].items():
        svc = by_name.get(service_of(name))
        if svc is not None:
            cpus, memory = used.get(placed, (0, 0))
            used[placed] = (cpus + svc.cpus, memory + svc.memory)
    nodes = [
        NodeView(
            id=n["id"],
            address=n["address"],
            api_port=n["api_port"],
            role="leader" if n["id"] == leader else "follower" if n.get("voter", True) else "non-voter",
            status=n["status"],
            cpus=n["cpus"],
            memory=n["memory"],
            cpus_used=used.get(n["id"], (0, 0))[0],
            memory_used=used.get(n["id"], (0, 0))[1],
            last_seen=n["last_seen"],
            instance_type=n.get("instance_type"),
        )
        for n in sorted(state["nodes"].values(), key=lambda n: n["id"])
    ]
    views = []
    site_names = {site.service: site.names for site in sites(config)}
    placed_of = PlacedInstances(state["placements"])
    for svc in services:
        node_id = state["placements"].get(svc.name)
        record = state["nodes"].get(node_id or "")
        instance = state["instances"].get(node_id or "", {}).get(svc.name)
        port = svc.host_port  # a docker service without internal_port publishes nothing
        views.append(
            ServiceView(
                name=svc.name,
                node=node_id,
                address=record["address"] if record else None,
                runtime=svc.runtime,
                state=instance["state"] if instance else "pending",
                endpoint=f"http://{record['address']}:{port}" if record and port else None,
                urls=urls(state, svc, record, site_names.get(svc.name, ())),
                restarts=instance.get("restarts", 0) if instance else 0,
                error=instance.get("error") if instance else waiting_in(state, svc),
                instances=instance_views(state, svc, placed_of),
            )
        )
    deployment = state["deployment"]
    return StatusResponse(
        cluster=state["cluster"],
        project=config.project.name if config else None,
        node=node,
        leader=leader,
        stale=leader != node,
        deployment=DeploymentView.model_validate(deployment) if deployment else None,
        nodes=nodes,
        services=views,
        volumes=volume_views(state, config),
    )


def history_views(state: ClusterState) -> list[HistoryView]:
    """The recorded deployments, newest first, the current one marked."""
    current = state["deployment"]["id"] if state["deployment"] else None
    return [
        HistoryView.model_validate({**entry, "current": entry["id"] == current})
        for entry in reversed(history_of(state))
    ]


def recent_events(state: ClusterState, count: int) -> list[EventView]:
    """The newest ``count`` entries of the trail, newest first."""
    return [EventView.model_validate(e) for e in reversed(events_of(state)[-count:])] if count else []
