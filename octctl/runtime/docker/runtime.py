"""The docker runtime: one container per (project, service) on this node's engine.

This module is the :class:`~octctl.runtime.base.Runtime` contract over containers: run, replace,
remove, list, and read a container's state back as an :class:`~octctl.runtime.base.InstanceStatus`.
The engine connection, image pulls (with the provider's registry login) and the cluster network
each have their own module beside it.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from octctl.names import check_instance, check_name
from octctl.runtime.base import (
    LABEL_CLUSTER,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_PORT,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    InstanceSpec,
    InstanceState,
    InstanceStatus,
    LinesSoFar,
    LogStream,
    PortMapping,
    Runtime,
    RuntimeFailure,
    Usage,
)
from octctl.runtime.docker.engine import Engine, engine_errors, explain
from octctl.runtime.docker.images import Images, RegistryLogin
from octctl.runtime.docker.networks import ClusterNetworks
from octctl.runtime.docker.volumes import ensure_volumes, mounted_folders

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 20
#: Each container's log: the engine starts a new file at this size and keeps this many.
LOG_MAX_SIZE = "16m"
LOG_MAX_FILES = "3"
#: Seconds a container gets between SIGTERM and SIGKILL when a failed health check restarts it.
RESTART_TIMEOUT = 10
#: What a health check command may leave in memory of its output (it is cut further in the report).
EXEC_OUTPUT_LIMIT = 4096

#: A container that docker restarted less than this long ago is reported ``restarting``, so a crash
#: loop never looks healthy just because the leader sampled it during a short-lived run.
FRESH_RESTART_SECONDS = 1.0


def container_name(project: str, service: str) -> str:
    """Names are unique per engine, which is what makes a second ``apply`` find the first instance.

    The name goes into the engine's URLs (``/containers/<name>/json``): both parts are checked names.
    """
    return f"oct-{check_name('project', project)}-{check_instance(service)}"


#: Ends the name of a container's previous generation ('.previous' ends no instance name).
PREVIOUS_SUFFIX = ".previous"


def previous_name(name: str) -> str:
    """The name of a container's previous generation, kept while a start-first update's new one
    comes up beside it."""
    return f"{name}{PREVIOUS_SUFFIX}"


def _port_of(container: Container) -> int | None:
    port = (container.labels or {}).get(LABEL_PORT)
    return int(port) if port and port.isdigit() else None


def _port_bindings(ports: list[PortMapping]) -> dict[str, Any]:
    """Several host ports may publish one container port; the SDK wants a list for that case."""
    bindings: dict[str, list[tuple[str, int]]] = {}
    for port in ports:
        bindings.setdefault(f"{port.container_port}/{port.protocol}", []).append(
            (port.host_ip, port.host_port)
        )
    return {key: value[0] if len(value) == 1 else value for key, value in bindings.items()}


def _parse_docker_time(value: str) -> dt.datetime | None:
    """Docker prints nanoseconds, which ``fromisoformat`` rejects; microseconds are plenty here."""
    if not value or value.startswith("0001-"):
        return None
    main, _, frac = value.rstrip("Z").partition(".")
    frac = frac[:6]
    try:
        parsed = dt.datetime.fromisoformat(f"{main}.{frac}" if frac else main)
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.UTC)


class ContainerLines(LogStream):
    """The engine's log stream of one container, cut into lines. It ends when the container stops
    (the engine closes it) or :meth:`close` closes its connection."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[str]:
        pending = b""
        try:
            for chunk in self._chunks:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
        except Exception as exc:  # the connection closed under us: the stream's end, as asked
            log.debug("container log stream ended: %s", exc)
        if pending:
            yield pending.decode("utf-8", "replace")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._chunks.close()


class DockerRuntime(Runtime):
    """One container per (project, service), labelled so ``list``/destroy find every one of them."""

    name = "docker"

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        node: str = "",
        registry_login: RegistryLogin | None = None,
        volumes_dir: Path | None = None,
    ) -> None:
        self._engine = Engine(client)
        self._node = node
        #: Where the node mounts volumes' network disks (aws): a volume on a disk binds that folder.
        self._volumes_dir = volumes_dir
        self._images = Images(self._engine, registry_login)
        self._networks = ClusterNetworks(self._engine)
        self._names_lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        #: Restarts ordered by failed health checks, by container id: the engine counts only its
        #: own (``RestartCount``). Kept in memory: an oct-ctl restart forgets them.
        self._health_restarts: dict[str, int] = {}

    # -- plumbing ---------------------------------------------------------------------------------

    def _lock_for(self, name: str) -> threading.Lock:
        """Calls for different services run in parallel; two calls for the same one must not interleave."""
        with self._names_lock:
            return self._name_locks.setdefault(name, threading.Lock())

    def _find(self, name: str) -> Container | None:
        from docker.errors import NotFound

        try:
            return self._engine.client().containers.get(name)
        except NotFound:
            return None

    @staticmethod
    def _owned_by(container: Container, project: str, service: str) -> bool:
        labels = container.labels or {}
        return (
            labels.get(LABEL_MANAGED) == "true"
            and labels.get(LABEL_PROJECT) == project
            and labels.get(LABEL_SERVICE) == service
        )

    def _on_this_node(self, container: Container) -> bool:
        """Nodes of a local cluster share one engine: each sees and removes only its own containers.

        ``apply`` still replaces a same-named container of another node (a leftover of a move whose
        old node is gone), since one service has one instance cluster-wide.
        """
        return not self._node or (container.labels or {}).get(LABEL_NODE) == self._node

    # -- contract ---------------------------------------------------------------------------------

    def apply(self, spec: InstanceSpec) -> InstanceStatus:
        name = container_name(spec.project, spec.service)
        with self._lock_for(name), engine_errors(f"cannot apply {spec.service}"):
            existing = self._find(name)
            if existing is not None:
                if not self._owned_by(existing, spec.project, spec.service):
                    return self._failed(
                        spec, f"container name '{name}' is already used by a container oct does not own"
                    )
                same_hash = existing.labels.get(LABEL_SPEC_HASH) == spec.spec_hash
                if same_hash and existing.status in ("running", "restarting"):
                    return self._with_previous(self._status(existing), name)
            if spec.beside:
                previous = self._find(previous_name(name))
                if (
                    previous is not None
                    and self._owned_by(previous, spec.project, spec.service)
                    and previous.labels.get(LABEL_SPEC_HASH) == spec.spec_hash
                    and previous.status == "running"
                ):
                    return self._back_to(previous, name, spec)
                if (
                    existing is not None
                    and existing.status == "running"
                    and _port_of(existing) != spec.instance_port
                ):
                    return self._start_beside(spec, name, existing)
            if existing is not None:
                self._remove_container(name)
            self._remove_previous(spec.project, spec.service, name, anywhere=True)
            return self._run(spec, name)

    def _back_to(self, previous: Container, name: str, spec: InstanceSpec) -> InstanceStatus:
        """A rollback before the previous generation was retired: it is current again, and the
        version that was to replace it goes."""
        log.info("%s: back to its previous generation (deployment %s)", name, spec.deployment)
        self._remove_container(name)
        previous.rename(name)
        previous.reload()
        return self._status(previous)

    def _start_beside(self, spec: InstanceSpec, name: str, running: Container) -> InstanceStatus:
        """Start ``spec`` while ``running`` goes on serving as the previous generation (an older
        previous one goes first)."""
        self._remove_previous(spec.project, spec.service, name, anywhere=True)
        running.rename(previous_name(name))
        try:
            status = self._run(spec, name)
        except BaseException:
            self._remove_container(name)
            running.rename(name)  # nothing started: the running one stays what it was
            raise
        status.previous_port = _port_of(running)
        return status

    def retire_previous(self, project: str, service: str) -> None:
        name = container_name(project, service)
        with self._lock_for(name), engine_errors(f"cannot retire {service}"):
            if self._remove_previous(project, service, name):
                log.info("retired %s", previous_name(name))

    def _with_previous(self, status: InstanceStatus, name: str) -> InstanceStatus:
        previous = self._find(previous_name(name))
        if previous is not None and previous.status == "running":
            status.previous_port = _port_of(previous)
        return status

    def remove(self, project: str, service: str) -> None:
        name = container_name(project, service)
        with self._lock_for(name), engine_errors(f"cannot remove {service}"):
            existing = self._find(name)
            if (
                existing is not None
                and self._owned_by(existing, project, service)
                and self._on_this_node(existing)
            ):
                self._remove_container(name)
            self._remove_previous(project, service, name)

    def _remove_previous(self, project: str, service: str, name: str, anywhere: bool = False) -> bool:
        """Remove the instance's previous generation if there is one (of this node's, unless
        ``anywhere``: an apply takes over a leftover of a move, as it does for the instance);
        whether there was."""
        previous = self._find(previous_name(name))
        if (
            previous is None
            or not self._owned_by(previous, project, service)
            or not (anywhere or self._on_this_node(previous))
        ):
            return False
        self._remove_container(previous_name(name))
        return True

    def list(self, project: str | None = None) -> list[InstanceStatus]:
        labels = [f"{LABEL_MANAGED}=true"]
        if project is not None:
            labels.append(f"{LABEL_PROJECT}={check_name('project', project)}")
        if self._node:
            labels.append(f"{LABEL_NODE}={self._node}")
        with engine_errors("cannot list containers"):
            containers = self._engine.client().containers.list(
                all=True, filters={"label": labels}, ignore_removed=True
            )
            by_name = {c.name: c for c in containers}
            found = []
            for container in containers:
                if (
                    container.name.endswith(PREVIOUS_SUFFIX)
                    and container.name.removesuffix(PREVIOUS_SUFFIX) in by_name
                ):
                    continue  # reported as its current generation's previous_port
                status = self._status(container)
                older = by_name.get(previous_name(container.name))
                if older is not None and older.status == "running":
                    status.previous_port = _port_of(older)
                found.append(status)
            return found

    def usage(self, project: str | None = None) -> builtins.list[Usage]:
        """From the engine's stats (one reading each, not the two a rate takes): the same figures
        whichever cgroup version and driver the machine has."""
        from docker.errors import DockerException

        found = []
        for status in self.list(project):
            if status.state != "running":
                continue
            with contextlib.suppress(DockerException, KeyError, TypeError, ValueError):
                container = self._find(container_name(status.project, status.service))
                if container is not None:
                    found.append(_usage(status, container.stats(stream=False, one_shot=True)))
        return found

    def logs(self, project: str, service: str, tail: int = 50) -> builtins.list[str]:
        with engine_errors(f"cannot read logs of {service}"):
            container = self._find(container_name(project, service))
            if container is None or not self._owned_by(container, project, service):
                return []
            return self._tail(container, tail)

    def log_stream(
        self, project: str, service: str, tail: int, since: float | None = None, follow: bool = False
    ) -> LogStream:
        with engine_errors(f"cannot read logs of {service}"):
            container = self._find(container_name(project, service))
            if container is None or not self._owned_by(container, project, service):
                return LinesSoFar([])
            chunks = container.logs(
                stdout=True, stderr=True, stream=True, follow=follow, tail=max(tail, 0), since=since
            )
            return ContainerLines(chunks)

    def status(self, project: str, service: str) -> InstanceStatus | None:
        with engine_errors(f"cannot inspect {service}"):
            container = self._find(container_name(project, service))
            if container is None or not self._owned_by(container, project, service):
                return None
            return self._status(container) if self._on_this_node(container) else None

    def restart(self, project: str, service: str) -> None:
        name = container_name(project, service)
        with self._lock_for(name), engine_errors(f"cannot restart {service}"):
            container = self._find(name)
            if container is None or not self._owned_by(container, project, service):
                raise RuntimeFailure(f"{service} has no container to restart")
            log.info("restarting container %s (failed health check)", name)
            container.restart(timeout=RESTART_TIMEOUT)
            self._health_restarts[container.id] = self._health_restarts.get(container.id, 0) + 1

    def execute(
        self, project: str, service: str, argv: builtins.list[str], timeout: float
    ) -> tuple[int, str]:
        """``docker exec``. The engine has no timeout for it: the caller stops waiting instead."""
        with engine_errors(f"cannot run a command in {service}"):
            container = self._find(container_name(project, service))
            if container is None or not self._owned_by(container, project, service):
                raise RuntimeFailure(f"{service} has no container to run a command in")
            code, output = container.exec_run(list(argv), stdout=True, stderr=True)
        text = (output or b"")[-EXEC_OUTPUT_LIMIT:].decode("utf-8", "replace")
        return (code if code is not None else -1), text

    def volume_folders(self, project: str, service: str) -> dict[str, Path]:
        with engine_errors(f"cannot inspect {service}"):
            container = self._find(container_name(project, service))
            if container is None or not self._owned_by(container, project, service):
                raise RuntimeFailure(f"{service} has no container on this node")
            return mounted_folders(self._engine.client(), container, project)

    @contextlib.contextmanager
    def stopped(self, project: str, service: str) -> Iterator[dict[str, Path]]:
        name = container_name(project, service)
        with self._lock_for(name), engine_errors(f"cannot stop {service} for a restore"):
            container = self._find(name)
            if container is None or not self._owned_by(container, project, service):
                raise RuntimeFailure(f"{service} has no container on this node")
            log.info("stopping container %s for a restore", name)
            container.stop(timeout=RESTART_TIMEOUT)
            try:
                yield mounted_folders(self._engine.client(), container, project)
            finally:
                container.start()
                log.info("started container %s again after the restore", name)

    def close(self) -> None:
        """Containers keep running: the engine, not oct-ctl, supervises them across agent restarts."""
        self._engine.close()

    # -- helpers ----------------------------------------------------------------------------------

    def _labels(self, spec: InstanceSpec) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_PROJECT: spec.project,
            LABEL_SERVICE: spec.service,
            LABEL_DEPLOYMENT: spec.deployment,
            LABEL_SPEC_HASH: spec.spec_hash,
            LABEL_NODE: spec.node or self._node,
            LABEL_CLUSTER: spec.cluster,
            **({LABEL_PORT: str(spec.instance_port)} if spec.instance_port else {}),
        }

    def _remove_container(self, name: str) -> None:
        from docker.errors import APIError, NotFound

        try:
            self._engine.client().api.remove_container(name, force=True)
        except NotFound:
            pass
        except APIError as exc:
            # Two removals racing: the engine says "removal already in progress"; that is success.
            if exc.status_code != 409:
                raise

    def _run(self, spec: InstanceSpec, name: str) -> InstanceStatus:
        from docker.errors import APIError

        if not spec.image:
            return self._failed(spec, "the docker runtime needs an image")
        error = self._images.ensure(spec.image)
        if error is not None:
            return self._failed(spec, error)
        kwargs: dict[str, Any] = {
            "name": name,
            "environment": dict(spec.env),
            "nano_cpus": spec.cpus * 1_000_000,
            "mem_limit": f"{spec.memory}m",
            "ports": _port_bindings(spec.ports),
            "restart_policy": {"Name": "unless-stopped"},
            "detach": True,
            "labels": self._labels(spec),
            "init": False,
            # Rotated by the engine: a chatty service must not fill the node's disk.
            "log_config": {
                "type": "json-file",
                "config": {"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILES},
            },
        }
        if spec.volumes:
            try:
                kwargs["volumes"] = ensure_volumes(self._engine.client(), spec, self._node, self._volumes_dir)
            except APIError as exc:
                return self._failed(spec, f"cannot create the volumes of {spec.service}: {explain(exc)}")
        if spec.command is not None:
            kwargs["command"] = list(spec.command)
        if spec.dns:
            kwargs["dns"] = list(spec.dns)
        if spec.dns_search:
            kwargs["dns_search"] = list(spec.dns_search)
        if spec.network:
            from docker.types import EndpointConfig

            try:
                self._networks.ensure(spec.network, spec.cluster, spec.project)
            except APIError as exc:
                return self._failed(spec, f"cannot create network {spec.network}: {explain(exc)}")
            kwargs["network"] = spec.network
            kwargs["networking_config"] = {
                spec.network: EndpointConfig(
                    version=self._engine.client().api._version, aliases=list(spec.aliases)
                )
            }
        log.info("starting container %s (deployment %s)", name, spec.deployment)
        try:
            container = self._engine.client().containers.run(spec.image, **kwargs)
        except APIError as exc:
            # A failed start leaves a "created" container holding State.Error; keep it so ``list``
            # keeps reporting the failure to the leader, but answer with the engine's sentence.
            return self._failed(spec, explain(exc))
        container.reload()
        return self._status(container)

    def _failed(self, spec: InstanceSpec, error: str) -> InstanceStatus:
        log.warning("cannot start %s/%s: %s", spec.project, spec.service, error)
        return InstanceStatus.failed_to_start(spec, error)

    def _tail(self, container: Container, tail: int) -> builtins.list[str]:
        if tail <= 0:
            return []
        raw = container.logs(stdout=True, stderr=True, tail=tail)
        return raw.decode("utf-8", "replace").splitlines()[-tail:]

    def _status(self, container: Container) -> InstanceStatus:
        attrs = container.attrs
        state_info: dict[str, Any] = attrs.get("State") or {}
        labels: dict[str, str] = container.labels or {}
        restarts = int(attrs.get("RestartCount") or 0) + self._health_restarts.get(container.id, 0)
        docker_state = state_info.get("Status", container.status)
        exit_code: int | None = None
        error: str | None = None
        state: InstanceState
        if docker_state == "running":
            state = "running"
            started = _parse_docker_time(state_info.get("StartedAt", ""))
            if restarts >= 1 and started is not None:
                age = (dt.datetime.now(dt.UTC) - started).total_seconds()
                if age < FRESH_RESTART_SECONDS:
                    state = "restarting"
        elif docker_state == "restarting":
            state = "restarting"
            exit_code = state_info.get("ExitCode")
        elif docker_state == "created":
            state = "failed" if state_info.get("Error") else "starting"
            error = state_info.get("Error") or None
        elif docker_state == "paused":
            state = "failed"
            error = "the container is paused (not by oct)"
        else:  # exited, dead, removing
            state = "exited"
            exit_code = state_info.get("ExitCode")
            error = state_info.get("Error") or None
        if state_info.get("OOMKilled"):
            error = "killed: out of memory (raise the service's memory)"
        log_tail: list[str] = []
        if state != "running":
            with contextlib.suppress(Exception):  # a log driver without read support is not fatal
                log_tail = self._tail(container, LOG_TAIL_LINES)
        return InstanceStatus(
            project=labels.get(LABEL_PROJECT, ""),
            service=labels.get(LABEL_SERVICE, ""),
            runtime="docker",
            deployment=labels.get(LABEL_DEPLOYMENT, ""),
            spec_hash=labels.get(LABEL_SPEC_HASH, ""),
            state=state,
            error=error,
            restarts=restarts,
            exit_code=exit_code,
            log_tail=log_tail,
            port=_port_of(container),
            addresses=_addresses(attrs) if state == "running" else [],
        )


def _addresses(attrs: dict[str, Any]) -> list[str]:
    networks: dict[str, Any] = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return sorted({str(n["IPAddress"]) for n in networks.values() if n and n.get("IPAddress")})


def _usage(status: InstanceStatus, stats: dict[str, Any]) -> Usage:
    """A container's CPU time and memory, as ``docker stats`` counts it: its memory less the page
    cache it could give back (``inactive_file`` on cgroup v2, ``total_inactive_file`` on v1)."""
    memory = stats["memory_stats"]
    detail = memory.get("stats") or {}
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return Usage(
        project=status.project,
        service=status.service,
        runtime="docker",
        cpu_seconds=stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9,
        memory_bytes=max(0, int(memory.get("usage", 0)) - int(cache)),
    )
