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

__all__ = [
    "PlacedInstances",
    "instance_names",
    "instances_of",
    "placed_instances",
    "running_names",
    "service_of",
    "serving",
]


def instance_names(service: Service) -> list[str]:
    return [service.name, *(f"{service.name}.{n}" for n in range(2, service.replicas + 1))]


def running_names(service: Service, placements: Mapping[str, str]) -> list[str]:
    """The service's instances and any other placed one of it (a start-first update's surge, see
    :mod:`octctl.leader.surge`), in number order. For every service of a project, use one
    :class:`PlacedInstances` instead: each call here reads every placement."""
    return PlacedInstances(placements).running_names(service)


class PlacedInstances:
    """The placements with their numbered instances indexed by service, made once per pass.

    Asking each service for its instances by reading every placement made a pass over a project
    cost services x instances: 1,000 services took the DNS zone 17 ms at 300 services and the
    status four times as long as at 100 (bench/scale.py). Read-only over ``placements``.
    """

    def __init__(self, placements: Mapping[str, str]) -> None:
        self.placements = placements
        self._numbered: dict[str, list[str]] = {}
        for name in placements:
            service, dot, _ = name.partition(".")
            if dot:
                self._numbered.setdefault(service, []).append(name)

    def running_names(self, service: Service) -> list[str]:
        """As :func:`running_names`."""
        own = instance_names(service)
        numbered = self._numbered.get(service.name)
        if not numbered:
            return own
        mine = set(own)
        extra = [name for name in numbered if name not in mine]
        return own + sorted(extra, key=lambda name: int(name.rpartition(".")[2]))

    def placed(self, service: Service) -> list[tuple[str, str]]:
        """As :func:`placed_instances`."""
        placements = self.placements
        return [(name, placements[name]) for name in self.running_names(service) if name in placements]


def service_of(instance: str) -> str:
    return instance.split(".", 1)[0]


def instances_of(config: Config) -> Iterator[tuple[str, Service]]:
    """Every instance of every service, in declaration order, the first of each service first."""
    for service in config.project.services:
        for name in instance_names(service):
            yield name, service


def placed_instances(service: Service, placements: Mapping[str, str]) -> list[tuple[str, str]]:
    """(instance, node) of each of the service's instances that has a node."""
    return PlacedInstances(placements).placed(service)


def serving(seen: Mapping[str, Any] | None) -> bool:
    """Whether an observed instance may take traffic: running, and healthy by its health check
    (``none``: it has none, so running is what counts). DNS, the ingress, ``depends_on`` and a
    rolling update's next step all ask this one question."""
    return (
        seen is not None
        and seen.get("state") == "running"
        and seen.get("health", "none") in ("healthy", "none")
    )
