"""A service's instances: what they are called, and whose they are.

A service with ``replicas = N`` runs N instances, each placed, given a port, rendered and pushed
on its own. The first is named like its service (``web``), so a service that grows from one
replica to three keeps its running instance; the others are ``web.2`` ... ``web.N``. '.' is in
no service name, so every instance name says whose it is, in file names, container names and
the agents' API alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from octctl.config import Config, Service

__all__ = ["instance_names", "instances_of", "placed_instances", "running_names", "service_of", "serving"]


def instance_names(service: Service) -> list[str]:
    return [service.name, *(f"{service.name}.{n}" for n in range(2, service.replicas + 1))]


def running_names(service: Service, placements: Mapping[str, str]) -> list[str]:
    """The service's instances and any other placed one of it (a start-first update's surge, see
    :mod:`octctl.leader.surge`), in number order."""
    own = instance_names(service)
    extra = [name for name in placements if service_of(name) == service.name and name not in own]
    return own + sorted(extra, key=lambda name: int(name.rpartition(".")[2]))


def service_of(instance: str) -> str:
    return instance.split(".", 1)[0]


def instances_of(config: Config) -> Iterator[tuple[str, Service]]:
    """Every instance of every service, in declaration order, the first of each service first."""
    for service in config.project.services:
        for name in instance_names(service):
            yield name, service


def placed_instances(service: Service, placements: Mapping[str, str]) -> list[tuple[str, str]]:
    """(instance, node) of each of the service's instances that has a node."""
    return [(name, placements[name]) for name in running_names(service, placements) if name in placements]


def serving(seen: Mapping[str, Any] | None) -> bool:
    """Whether an observed instance may take traffic: running, and healthy by its health check
    (``none``: it has none, so running is what counts). DNS, the ingress, ``depends_on`` and a
    rolling update's next step all ask this one question."""
    return (
        seen is not None
        and seen.get("state") == "running"
        and seen.get("health", "none") in ("healthy", "none")
    )
