"""From the desired oct.toml model and the placements to what each node must run.

Pure functions, used by the leader: they render ``{{ services.X.* }}`` with the addresses the
scheduler chose and give each instance a content hash, so that "nothing changed" is a string
comparison and an unchanged redeploy touches nothing.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from octctl.addresses import container_address
from octctl.config import Config, ConfigError, Service
from octctl.config.template import render_service_refs, service_refs
from octctl.dns.zone import DEFAULT_DOMAIN
from octctl.instance_ports import partner
from octctl.instances import PlacedInstances, instances_of
from octctl.runtime.base import HealthcheckSpec, InstanceSpec, PortMapping, VolumeMount
from octctl.scheduler import Demand
from octctl.state.model import NodeRecord
from octctl.state.shape import VolumeRecord


def serving_nodes(
    config: Config | None, placements: Mapping[str, str], ready: Iterable[str]
) -> dict[str, tuple[str, ...]]:
    """The nodes that serve each placed public service: every ready node (the ingress serves its
    ``external_port`` everywhere), or, for a host-bound port, the nodes running its instances."""
    if config is None:
        return {}
    everywhere = tuple(sorted(set(ready)))
    host_bound = config.project.host_bound_ports
    found: dict[str, tuple[str, ...]] = {}
    placed_of = PlacedInstances(placements)
    for service in config.project.services:
        own = tuple(sorted({node for _, node in placed_of.placed(service)}))
        if service.public_port is None or not own:
            continue
        found[service.name] = own if service.public_port in host_bound or not everywhere else everywhere
    return found


def public_names(config: Config | None, serving: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """``<service>.<domain>`` (and the bare domain for the ``apex`` service) to the nodes that
    ``serving`` says serve it (see :func:`serving_nodes`); none without a domain."""
    if config is None or not config.project.domain:
        return {}
    base = config.project.domain.strip().lower().rstrip(".")
    names: dict[str, tuple[str, ...]] = {}
    for service in config.project.services:
        nodes = serving.get(service.name)
        if service.public_port is None or not nodes:
            continue
        names[f"{service.name}.{base}"] = tuple(nodes)
        if service.apex:
            names[base] = tuple(nodes)
    return names


def demand(
    service: Service,
    instance: str | None = None,
    claimed: int | None = None,
    pinned: str | None = None,
) -> Demand:
    """What one instance of the service needs of a node; ``claimed`` is the port it takes on the
    node's address (``Project.claimed_port``), which keeps the instances that claim one port on
    distinct nodes. A proxied service's instances listen on instance ports and claim nothing."""
    return Demand(
        service=instance or service.name,
        cpus=service.cpus,
        memory=service.memory,
        host_ports=frozenset({claimed} if claimed else ()),
        group=service.name,
        pinned=pinned,
    )


def demands(config: Config, pins: Mapping[str, str] | None = None) -> list[Demand]:
    """Every instance's :func:`demand`, with the port it claims; ``pins`` names the node an
    instance must run on (where its volumes are: :func:`octctl.volumes.pins`)."""
    project = config.project
    pinned = pins or {}
    return [
        demand(s, instance, project.claimed_port(s), pinned.get(instance))
        for instance, s in instances_of(config)
    ]


def endpoints(
    config: Config,
    placements: Mapping[str, str],
    nodes: Mapping[str, NodeRecord],
    at: NodeRecord | None = None,
) -> dict[str, dict[str, str | int]]:
    """Template values of every placed service, as a service on node ``at`` sees them: a meshed
    service (``Project.meshed``) is at ``at``'s own address, where its proxy serves it whichever
    nodes run the instances, so a caller's spec does not change when its callee moves. Any other
    service is at the node running it (its first instance)."""
    found: dict[str, dict[str, str | int]] = {}
    for service in config.project.services:
        node = nodes.get(placements.get(service.name, ""))
        if node is None:
            continue
        port = service.host_port
        here = at if at is not None and config.project.meshed(service) else node
        found[service.name] = {
            "host": here["address"],
            "ip": here["address"],
            "public_ip": node.get("public_address") or node["address"],
            "port": port if port is not None else "",
        }
    return found


def network_endpoints(
    config: Config, known: Mapping[str, Mapping[str, str | int]], domain: str
) -> dict[str, dict[str, str | int]]:
    """The same values as seen from a container on the cluster network (local clusters).

    There a container cannot reach the nodes' loopback addresses, but reaches another container by
    its name at the port the user wrote, so ``host`` and ``port`` say that, in agreement with the
    names Docker resolves on that network. ``ip`` and ``public_ip`` name the node's address for
    containers (``octctl.addresses.container_address``), where its ingress listens too, so a
    container reaches a public service at ``{{ services.X.public_ip }}:<external_port>``.
    """
    found = {name: dict(values) for name, values in known.items()}
    for values in found.values():
        for key in ("ip", "public_ip"):
            if str(values[key]).startswith("127."):  # (a provider's public address stays)
                values[key] = container_address(str(values[key]))
    for service in config.project.services:
        if service.name in found and service.runtime == "docker":
            port = service.internal_port or service.external_port
            found[service.name]["host"] = f"{service.name}.{config.project.name}.{domain}"
            found[service.name]["port"] = port if port is not None else ""
    return found


def spec_hash(spec: InstanceSpec) -> str:
    # Fields added since keep the hash of a spec that does not use them, so an upgrade of oct
    # replaces no running instance.
    # ``instance_port`` is in the ports, env and probe already; ``beside`` and ``keep_previous``
    # say how to replace, not what runs.
    exclude = {"deployment", "spec_hash", "instance_port", "beside", "keep_previous"}
    exclude |= {"healthcheck"} if spec.healthcheck is None else set()
    exclude |= {"volumes"} if not spec.volumes else set()
    content = spec.model_dump(mode="json", exclude=exclude)
    for mount in content.get("volumes", ()):
        for key in ("disk", "device"):
            if mount[key] is None:
                del mount[key]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Rollout:
    """What every instance of one deployment shares."""

    deployment: str
    cluster: str = ""
    source_dir: str | None = None
    domain: str = DEFAULT_DOMAIN
    #: The cluster's volume records (where each volume's data is).
    volumes: Mapping[str, VolumeRecord] = field(default_factory=dict)
    #: The provider keeps volumes on network disks: an instance is not started on a node until
    #: its volumes' disks are attached there (:mod:`octctl.leader.disks`).
    network_disks: bool = False


def cluster_network(cluster: str) -> str:
    return f"oct-{cluster}"


def _discovery(config: Config, service: Service, node: NodeRecord, rollout: Rollout) -> dict[str, Any]:
    """How a container finds the others by name.

    On a local cluster every node shares one Docker engine, and a container cannot reach the
    nodes' 127.0.0.N addresses, so containers share the cluster's network, where Docker resolves
    their aliases (``app_1``, ``app_1.<project>.oct``) and they talk at the ports the user wrote.
    On real nodes they use the node's DNS server with the zone as search domain.
    """
    if service.runtime != "docker":
        return {}
    zone = f"{config.project.name}.{rollout.domain}"
    if config.project.provider_kind == "local":
        return {
            "network": cluster_network(rollout.cluster),
            "aliases": [service.name, f"{service.name}.{zone}"],
        }
    return {"dns": [node["address"]], "dns_search": [zone]}


def _process_env(
    config: Config,
    service: Service,
    node: NodeRecord,
    rollout: Rollout,
    port: int | None,
    instance: str | None,
) -> dict[str, str]:
    """What a process service is told (its ``envs`` override it): where to listen, who it is."""
    return {
        "HOST": node["address"],
        **({"PORT": str(port)} if port else {}),
        "OCT_PROJECT": config.project.name,
        "OCT_SERVICE": service.name,
        **({"OCT_INSTANCE": instance} if instance else {}),
        "OCT_NODE": node["id"],
        # The cluster's DNS, for programs that can be pointed at a resolver; the host's own
        # resolver is left alone, so plain lookups of service names do not work here.
        "OCT_DNS": f"{node['address']}:{node.get('dns_port', 53)}",
        "OCT_DOMAIN": f"{config.project.name}.{rollout.domain}",
        "PYTHONUNBUFFERED": "1",  # so `oct` can show a Python service's last log lines
    }


def _healthcheck(service: Service, host: str, port: int | None) -> HealthcheckSpec | None:
    """The probe of one instance: http/tcp go to where it listens as seen from its node."""
    check = service.healthcheck
    if check is None:
        return None
    return HealthcheckSpec(
        kind=check.kind,
        path=check.http or "/",
        command=shlex.split(check.command) if check.command else [],
        host=host,
        port=port if check.kind != "command" else None,
        interval=check.interval,
        timeout=check.timeout,
        retries=check.retries,
        start_period=check.start_period,
    )


def instance_spec(
    config: Config,
    service: Service,
    node: NodeRecord,
    known: Mapping[str, Mapping[str, str | int]],
    rollout: Rollout,
    instance_port: int | None = None,
    instance: str | None = None,
) -> InstanceSpec | None:
    """The rendered spec, or None while a service it references has no placement yet, or while a
    proxied service has no instance port (it listens there; the node proxies serve its port)."""
    proxied = config.project.proxy_port(service) is not None
    if proxied and instance_port is None:
        return None
    texts = [*service.envs.values(), service.command or ""]
    if any(ref not in known for text in texts for ref, _ in service_refs(text)):
        return None
    try:
        env = {k: render_service_refs(v, known) for k, v in service.envs.items()}
        command = shlex.split(render_service_refs(service.command, known)) if service.command else None
    except (ConfigError, ValueError):
        return None
    ports: list[PortMapping] = []
    port = instance_port if proxied else service.host_port
    if service.runtime == "docker" and service.internal_port and port:
        ports.append(
            PortMapping(host_ip=node["address"], host_port=port, container_port=service.internal_port)
        )
    mounts = _mounts(service, node, rollout)
    if mounts is None:
        return None
    workdir = None
    if service.runtime == "process":
        env = {**_process_env(config, service, node, rollout, port, instance), **env}
        workdir = rollout.source_dir
    spec = InstanceSpec(
        project=config.project.name,
        service=instance or service.name,
        cluster=rollout.cluster,
        node=node["id"],
        deployment=rollout.deployment,
        spec_hash="",
        runtime=service.runtime,
        image=service.image,
        command=command,
        env=env,
        cpus=service.cpus,
        memory=service.memory,
        ports=ports,
        workdir=workdir,
        healthcheck=_healthcheck(service, node["address"], port),
        volumes=mounts,
        instance_port=instance_port if proxied else None,
        keep_previous=service.update.min_healthy_time,
        **_discovery(config, service, node, rollout),
    )
    spec.spec_hash = spec_hash(spec)
    return spec


def _mounts(service: Service, node: NodeRecord, rollout: Rollout) -> list[VolumeMount] | None:
    """The service's volumes as the node mounts them; None while a disk is not attached to it."""
    mounts = []
    for volume in service.volumes:
        record = rollout.volumes.get(volume.name)
        if record is not None and "disk" in record:
            if record.get("attached") != node["id"]:
                return None
            mounts.append(
                VolumeMount(name=volume.name, path=volume.path, disk=record["disk"], device=record["device"])
            )
        elif rollout.network_disks:
            return None
        else:
            mounts.append(VolumeMount(name=volume.name, path=volume.path))
    return mounts


def replaced_beside(config: Config, service: Service) -> bool:
    """Whether a changed instance of ``service`` starts next to its running version, on the other
    port of its pair (:func:`octctl.instance_ports.partner`), instead of in its place: start-first
    meshed services in containers. Their instance port is theirs alone, so the two versions
    cannot clash. A process service keeps the surge (:mod:`octctl.leader.surge`): its records and
    log are one per instance name."""
    return (
        service.update.order == "start-first"
        and service.runtime == "docker"
        and config.project.meshed(service)
    )


def instance_specs(
    config: Config,
    placements: Mapping[str, str],
    nodes: Mapping[str, NodeRecord],
    rollout: Rollout,
    instance_ports: Mapping[str, int] | None = None,
    running: Mapping[str, Running] | None = None,
) -> dict[str, InstanceSpec]:
    """Every placed instance's spec. ``running``: what each instance runs now on its node, so a
    service replaced beside (:func:`replaced_beside`) renders its change on the port its running
    version does not use, and an unchanged one on the port it uses."""
    local = config.project.provider_kind == "local"
    seen_from: dict[tuple[str, bool], dict[str, dict[str, str | int]]] = {}
    specs: dict[str, InstanceSpec] = {}
    for instance, service in instances_of(config):
        node = nodes.get(placements.get(instance, ""))
        if node is None:
            continue
        on_network = local and service.runtime == "docker"
        values = seen_from.get((node["id"], on_network))
        if values is None:
            values = endpoints(config, placements, nodes, node)
            if on_network:
                values = network_endpoints(config, values, rollout.domain)
            seen_from[node["id"], on_network] = values
        port = (instance_ports or {}).get(instance)
        now = (running or {}).get(instance)
        if port is not None and now is not None and replaced_beside(config, service):
            spec = _beside(
                port, now, partial(instance_spec, config, service, node, values, rollout, instance=instance)
            )
        else:
            spec = instance_spec(config, service, node, values, rollout, port, instance)
        if spec is not None:
            specs[instance] = spec
    return specs


@dataclass(frozen=True)
class Running:
    """What an instance runs now on its node: its spec's hash and instance port (None: started
    before oct reported ports, so on the port the state gives it)."""

    spec_hash: str
    port: int | None


def _beside(port: int, now: Running, render: Callable[..., InstanceSpec | None]) -> InstanceSpec | None:
    """The spec on the port of the pair that ``now`` uses if nothing changed, else on the other
    one, marked ``beside``."""
    pair = (port, partner(port))
    current = now.port if now.port in pair else port
    same = render(current)
    if same is None or same.spec_hash == now.spec_hash:
        return same
    other = render(pair[1] if current == pair[0] else pair[0])
    if other is not None:
        other.beside = True
    return other
