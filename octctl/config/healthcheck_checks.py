"""Checks of ``[project.services.healthcheck]`` that need the whole service: a probe that can never
answer in time, an http/tcp probe with no port to reach, a command that cannot be run."""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Sequence

from .locate import KeyPath
from .models import Service

Finding = tuple[KeyPath, str]


def _seconds(value: float) -> str:
    return f"{value:g} s"


def check_healthchecks(services: Sequence[tuple[int, Service]]) -> Iterator[Finding]:
    for i, service in services:
        check = service.healthcheck
        if check is None:
            continue
        path: KeyPath = ("project", "services", i, "healthcheck")
        if check.timeout >= check.interval:
            yield (
                (*path, "timeout"),
                f"timeout ({_seconds(check.timeout)}) must be shorter than interval "
                f"({_seconds(check.interval)}): a probe must end before the next one starts",
            )
        if check.kind in ("http", "tcp") and service.host_port is None:
            why = (
                "a docker service publishes a port only with internal_port"
                if service.runtime == "docker"
                else "give it an internal_port or an external_port"
            )
            yield (
                (*path, check.kind),
                f"service '{service.name}' listens on no port for a {check.kind} check to reach ({why}); "
                'use command = "..." instead',
            )
        if check.command is not None:
            yield from _check_command((*path, "command"), check.command)


def _check_command(path: KeyPath, command: str) -> Iterator[Finding]:
    if "\x00" in command:
        yield path, "the command holds a NUL byte, which no argument can carry"
        return
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        yield path, f"cannot split command into arguments: {exc}"
        return
    if not argv:
        yield path, "command is empty"
