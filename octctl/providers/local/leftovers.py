"""What a local node leaves behind when it dies: docker containers, process-runtime children and
its ingress (a HAProxy master and its workers).

A node that is killed cannot clean up after itself, so whoever retires it does: the leader's
local provider when it replaces a dead node, and the CLI when it tears a whole project down. Both
must find the leftovers from labels and records alone, whatever state the node died in.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from octctl import procfs
from octctl.procfs import pid_alive
from octctl.runtime.base import LABEL_CLUSTER, LABEL_MANAGED, LABEL_NODE, LABEL_PROJECT

Phase = Callable[[str], None]


class CleanupError(Exception):
    """The Docker engine answered but refused to remove something."""


def remove_containers(
    project: str | None = None,
    *,
    cluster: str | None = None,
    node: str | None = None,
    on_phase: Phase | None = None,
) -> None:
    """Force-remove oct's docker containers (and, unless ``node`` narrows it, networks) matching all
    the given labels, if this machine has a Docker engine.

    No engine is normal (the process runtime needs none), so failing to reach one is not an error.
    With ``cluster`` known, only that cluster's containers go: another checkout of a project with
    the same name on this engine is left alone.
    """
    try:
        import docker  # the SDK is heavy and optional at run time

        engine = docker.from_env(timeout=10)
        engine.ping()
    except Exception:
        return
    labels = [f"{LABEL_MANAGED}=true"]
    for label, value in ((LABEL_PROJECT, project), (LABEL_CLUSTER, cluster), (LABEL_NODE, node)):
        if value:
            labels.append(f"{label}={value}")
    try:
        containers = engine.containers.list(all=True, filters={"label": labels})
        if containers and on_phase is not None:
            on_phase(f"removing {len(containers)} container(s)")
        for container in containers:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        if node is None:  # a cluster network outlives any one node
            for network in engine.networks.list(filters={"label": labels}):
                with contextlib.suppress(docker.errors.APIError):
                    network.remove()
    except docker.errors.DockerException as e:
        raise CleanupError(f"could not remove the containers labelled {', '.join(labels)}: {e}") from None
    finally:
        engine.close()


def process_records(under: Path) -> list[tuple[int, int | None]]:
    """``(pid, start_time)`` of process-runtime instances, from the ``processes/*.json`` records
    anywhere under ``under`` (a project's ``.oct`` folder, or one node's folder).

    ``start_time`` (clock ticks since boot, /proc stat field 22) is what the process runtime stores
    to tell its child from an unrelated process that got the same pid after a reboot.
    """
    found: list[tuple[int, int | None]] = []
    for path in sorted(under.rglob("processes/*.json")):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            data = json.loads(path.read_text())
            pid = int(data["pid"])
            start_time = data.get("start_time")
            if pid > 1:
                found.append((pid, int(start_time) if start_time is not None else None))
    return found


def kill_process_instances(under: Path, *, on_phase: Phase | None = None, grace: float = 5.0) -> None:
    """SIGTERM the process group of each recorded instance, then SIGKILL what is left after ``grace``.

    Instances run in their own session, so the group takes their helpers down too. A pid is only
    signalled while it is provably the recorded child (same start time, or, without one, a group
    leader): killing the group of a recycled pid would hit someone else's programs.
    """
    groups = sorted({pid for pid, start_time in process_records(under) if _is_instance(pid, start_time)})
    if groups and on_phase is not None:
        on_phase(f"stopping {len(groups)} process instance(s)")
    _stop_groups(groups, grace)


def stop_ingresses(under: Path, *, on_phase: Phase | None = None, grace: float = 5.0) -> None:
    """Stop the HAProxy of each node folder under ``under`` that its dead ``oct-ctl`` left running.

    The master runs in its own session with its workers; it is found by the pid file it wrote and
    signalled only while its argv still names that folder's configuration (a recycled pid is
    someone else's program).
    """
    from octctl.ingress.haproxy import master_socket_in, remove_socket_folder

    groups, sockets = [], []
    for pid_file in sorted(under.rglob("ingress/haproxy.pid")):
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        argv = procfs.cmdline(pid) or []
        if str(pid_file.with_name("haproxy.cfg")) in argv and _is_instance(pid, None):
            groups.append(pid)
            sockets.append(master_socket_in(argv))
    if groups and on_phase is not None:
        on_phase(f"stopping {len(groups)} ingress proxy(ies)")
    _stop_groups(groups, grace)
    for socket in sockets:
        remove_socket_folder(socket)


def _stop_groups(groups: list[int], grace: float) -> None:
    """SIGTERM each process group, then SIGKILL what is left after ``grace``."""
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.05)
    for pgid in groups:
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def _is_instance(pid: int, start_time: int | None) -> bool:
    try:
        if not pid_alive(pid) or os.getpgid(pid) != pid:
            return False
    except ProcessLookupError:
        return False
    if start_time is None or not procfs.available():
        return True
    return procfs.start_time(pid) == start_time


def _group_alive(pgid: int) -> bool:
    if procfs.PROC.exists():
        return procfs.group_has_members(pgid)  # killpg(0) would also count zombies nobody reaps
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
