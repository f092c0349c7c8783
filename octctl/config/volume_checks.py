"""Checks of ``volumes`` that need the whole project: a volume belongs to one service and one
instance, at an absolute path, and is never written by two instances at once."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence

from octctl.names import NAME_PATTERN, NAME_RULE, volume_env

from .locate import KeyPath
from .models import Service

Finding = tuple[KeyPath, str]


def check_volumes(services: Sequence[tuple[int, Service]]) -> Iterator[Finding]:
    owners: dict[str, str] = {}
    for i, service in services:
        paths: set[str] = set()
        for j, volume in enumerate(service.volumes):
            at: KeyPath = ("project", "services", i, "volumes", j)
            if not NAME_PATTERN.fullmatch(volume.name):
                yield (*at, "name"), f"volume name '{volume.name}' is not valid: {NAME_RULE}"
            owner = owners.setdefault(volume.name, service.name)
            if owner != service.name or volume.name in {v.name for v in service.volumes[:j]}:
                yield (
                    (*at, "name"),
                    f"volume '{volume.name}' is already {owner}'s: a volume belongs to one service "
                    "(its data lives on the node that runs it)",
                )
            yield from _check_path(at, service, volume.name, volume.path, paths)
        if not service.volumes:
            continue
        base: KeyPath = ("project", "services", i)
        names = ", ".join(v.name for v in service.volumes)
        if service.replicas > 1:
            yield (
                (*base, "replicas"),
                f"service '{service.name}' has volumes ({names}) and {service.replicas} replicas: a "
                "volume is one instance's data, so a service with volumes runs one instance",
            )
        if service.update.order == "start-first":
            yield (
                (*base, "update", "order"),
                f"service '{service.name}' has volumes ({names}): start-first would run its old and "
                'new instance on the same data at once; use order = "stop-first"',
            )


def _check_path(
    at: KeyPath, service: Service, name: str, path: str | None, seen: set[str]
) -> Iterator[Finding]:
    if service.runtime == "process":
        if path is not None:
            yield (
                (*at, "path"),
                f"service '{service.name}' is a process: it finds volume '{name}' in "
                f'${volume_env(name)}, not at a path; write "{name}" alone',
            )
        return
    if path is None:
        yield (*at, "path"), f"volume '{name}' needs the path the container sees it at: \"{name}:/data\""
        return
    normal = posixpath.normpath(path)
    if not path.startswith("/"):
        yield (*at, "path"), f"volume path '{path}' must be absolute (the path inside the container)"
    elif normal == "/":
        yield (*at, "path"), "a volume cannot be mounted over the container's whole file system (/)"
    elif normal in seen:
        yield (*at, "path"), f"two volumes of service '{service.name}' are mounted at {normal}"
    seen.add(normal)
