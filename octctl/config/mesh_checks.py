"""Checks of ``allow`` (docs/mesh.md): it names services of the project, and it is on a service the
mesh serves, so a call to it always passes a proxy that can refuse it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .locate import KeyPath
from .messages import did_you_mean, quoted_list
from .models import Service, node_bound_ports

Finding = tuple[KeyPath, str]


def check_allow(services: Sequence[tuple[int, Service]]) -> Iterator[Finding]:
    known = list(dict.fromkeys(service.name for _, service in services))
    bound = node_bound_ports([service for _, service in services])
    for i, service in services:
        if service.allow is None:
            continue
        path = ("project", "services", i, "allow")
        if service.external_port is not None:
            yield (
                path,
                (
                    f"service '{service.name}' is public (external_port {service.external_port}): anyone may "
                    "reach it there, so allow cannot keep callers out; remove allow or external_port"
                ),
            )
        elif service.host_port is None:
            yield path, f"service '{service.name}' listens on no port (internal_port), so nothing can call it"
        elif service.host_port in bound:
            yield (
                path,
                (
                    f"service '{service.name}' shares internal_port {service.host_port} with another "
                    "service, so the mesh cannot serve it and allow cannot be enforced: give it a port "
                    "of its own"
                ),
            )
        for j, name in enumerate(service.allow):
            if name not in known:
                yield (
                    (*path, j),
                    f"unknown service '{name}' in allow{did_you_mean(name, known)} "
                    f"(known services: {quoted_list(known)})",
                )
