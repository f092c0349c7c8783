"""The process runtime: the :class:`~octctl.runtime.base.Runtime` contract over supervised children.

For trying oct on a machine that only has Python. This module is the contract (one instance per
(project, service), replaced when its spec hash changes) and the runtime's answer to its own
restart; the loop that keeps a child running is :mod:`~octctl.runtime.process.supervisor`.

Restart policy of oct-ctl itself: children are **not adopted**. A child survives its daemon only
when the daemon dies abruptly (clean shutdown calls :meth:`ProcessRuntime.close`, which stops them
all). On start, the runtime reads the records left in ``state_dir``, kills any recorded child that
is still alive (checked by pid *and* process start time, so a recycled pid is never touched), and
reports the instance as ``exited`` until the leader re-applies it (which starts it again) or
removes it. Adopting would need a non-child we cannot ``wait()`` on, a lost exit status and a log
file shared with a process we do not supervise; a restart of a few seconds is the honest trade.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from octctl.names import check_name
from octctl.procfs import group_usage
from octctl.runtime.base import InstanceSpec, InstanceStatus, LogStream, Runtime, RuntimeFailure, Usage
from octctl.runtime.process.isolation import ServiceUser
from octctl.runtime.process.logs import FileLines, tail_lines
from octctl.runtime.process.records import StateDir
from octctl.runtime.process.supervisor import (
    STOP_TIMEOUT,
    SupervisedInstance,
    Supervision,
    is_alive,
    signal_group,
)
from octctl.runtime.process.volumes import prepare_volumes, volume_folder

log = logging.getLogger(__name__)

RECOVERED_ERROR = (
    "stopped when oct-ctl restarted (the process runtime does not adopt children); "
    "it starts again when the leader re-applies it"
)


class ProcessRuntime(Runtime):
    """Children of this daemon, one per (project, service); see the module docstring for restarts."""

    name = "process"

    def __init__(
        self,
        state_dir: Path,
        node: str = "",
        *,
        startup_grace: float = 1.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        healthy_after: float = 30.0,
        run_as: ServiceUser | None = None,
        volumes_dir: Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.node = node
        self.volumes_dir = volumes_dir
        self._run_as = run_as
        # The folder holds logs and records: the daemon's (0700), never the services'.
        self._files = StateDir(self.state_dir)
        self._supervision = Supervision(
            files=self._files,
            node=node,
            run_as=run_as,
            startup_grace=startup_grace,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            healthy_after=healthy_after,
        )
        self._lock = threading.Lock()
        self._service_locks: dict[tuple[str, str], threading.Lock] = {}
        self._instances: dict[tuple[str, str], SupervisedInstance] = {}
        self._closed = False
        self._recover()

    def log_path(self, project: str, service: str) -> Path:
        """Where the instance's stdout and stderr go (checked names, so always inside ``state_dir``)."""
        return self._files.log_path(project, service)

    def _recover(self) -> None:
        """Kill children a previous oct-ctl left behind and remember them as ``exited`` (no adoption)."""
        recovered = [(SupervisedInstance(self._supervision, spec), data) for spec, data in self._files.load()]
        for instance, data in recovered:
            pid, start_time = data.get("pid"), data.get("start_time")
            if isinstance(pid, int) and is_alive(pid, start_time):
                log.info("%s: stopping pid %d left by a previous oct-ctl", instance.label, pid)
                signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for instance, data in recovered:
            pid, start_time = data.get("pid"), data.get("start_time")
            if isinstance(pid, int):
                while is_alive(pid, start_time) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if is_alive(pid, start_time):
                    signal_group(pid, signal.SIGKILL)
            instance.restarts = int(data.get("restarts") or 0)
            if data.get("state") == "failed":  # e.g. command not found: still true, keep saying it
                instance.state, instance.error = "failed", data.get("error")
            else:
                instance.state, instance.error = "exited", RECOVERED_ERROR
            self._instances[(instance.project, instance.service)] = instance
            instance.save()

    def _service_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._service_locks.setdefault(key, threading.Lock())

    # contract

    def apply(self, spec: InstanceSpec) -> InstanceStatus:
        key = (spec.project, spec.service)
        self._files.stem(*key)  # a spec made with model_construct skipped the model's name check
        with self._service_lock(key):
            with self._lock:
                if self._closed:
                    raise RuntimeFailure("the process runtime is shut down")
                current = self._instances.get(key)
            if current is not None:
                if current.spec.spec_hash == spec.spec_hash and current.alive():
                    return current.status()
                current.begin_stop()
                current.finish_stop(time.monotonic() + STOP_TIMEOUT)
            try:
                spec = prepare_volumes(spec, self.volumes_dir, self._run_as)
            except RuntimeFailure as exc:
                return InstanceStatus.failed_to_start(spec, str(exc))
            instance = SupervisedInstance(self._supervision, spec)
            with self._lock:
                self._instances[key] = instance
            instance.start()
            instance.wait_settled(self._supervision.startup_grace)
            return instance.status()

    def remove(self, project: str, service: str) -> None:
        key = (project, service)
        self._files.stem(project, service)
        with self._service_lock(key):
            with self._lock:
                instance = self._instances.pop(key, None)
            if instance is not None:
                instance.begin_stop()
                instance.finish_stop(time.monotonic() + STOP_TIMEOUT)
            self._files.forget(project, service)

    def list(self, project: str | None = None) -> list[InstanceStatus]:
        if project is not None:
            check_name("project", project)
        with self._lock:
            instances = [i for i in self._instances.values() if project is None or i.project == project]
        return [instance.status() for instance in instances]

    def logs(self, project: str, service: str, tail: int = 50) -> builtins.list[str]:
        return tail_lines(self._files.log_path(project, service), tail)

    def log_stream(
        self, project: str, service: str, tail: int, since: float | None = None, follow: bool = False
    ) -> LogStream:
        """A process's output has no times: ``since`` is not applied (see docs/operations.md#logs).
        The file stays at one path across restarts and replacements, so following goes on."""
        return FileLines(self._files.log_path(project, service), tail, follow)

    def status(self, project: str, service: str) -> InstanceStatus | None:
        with self._lock:
            instance = self._instances.get((project, service))
        return None if instance is None else instance.status()

    def restart(self, project: str, service: str) -> None:
        with self._lock:
            instance = self._instances.get((project, service))
        if instance is None or not instance.restart():
            raise RuntimeFailure(f"{service} has no running process to restart")
        log.info("%s: restarted (failed health check)", instance.label)

    def execute(
        self, project: str, service: str, argv: builtins.list[str], timeout: float
    ) -> tuple[int, str]:
        with self._lock:
            instance = self._instances.get((project, service))
        if instance is None:
            raise RuntimeFailure(f"{service} has no process to run a command beside")
        return instance.execute(argv, timeout)

    def volume_folders(self, project: str, service: str) -> dict[str, Path]:
        with self._lock:
            instance = self._instances.get((project, service))
        if instance is None or self.volumes_dir is None:
            raise RuntimeFailure(f"{service} has no process on this node")
        return {v.name: volume_folder(self.volumes_dir, project, v.name) for v in instance.spec.volumes}

    @contextlib.contextmanager
    def stopped(self, project: str, service: str) -> Iterator[dict[str, Path]]:
        key = (project, service)
        with self._service_lock(key):
            folders = self.volume_folders(project, service)
            with self._lock:
                current = self._instances[key]
            log.info("%s: stopping for a restore", current.label)
            current.begin_stop()
            current.finish_stop(time.monotonic() + STOP_TIMEOUT)
            try:
                yield folders
            finally:
                instance = SupervisedInstance(self._supervision, current.spec)
                instance.restarts = current.restarts
                with self._lock:
                    self._instances[key] = instance
                instance.start()
                log.info("%s: started again after the restore", instance.label)

    def usage(self, project: str | None = None) -> builtins.list[Usage]:
        """The child's process group (it is its leader: started in a session of its own), so what
        a service forks counts too."""
        with self._lock:
            running = [(key, i.running_pid()) for key, i in self._instances.items()]
        found = []
        for (owner, service), pid in running:
            if pid is None or (project is not None and owner != project):
                continue
            used = group_usage(pid)
            if used is not None:
                found.append(
                    Usage(
                        project=owner,
                        service=service,
                        runtime="process",
                        cpu_seconds=used[0],
                        memory_bytes=used[1],
                    )
                )
        return found

    def pid(self, project: str, service: str) -> int | None:
        """The current child's pid (None if not running); for diagnostics and tests."""
        with self._lock:
            instance = self._instances.get((project, service))
        return None if instance is None else instance.running_pid()

    def close(self) -> None:
        """Stop supervising and terminate every child: unlike docker, nothing outlives oct-ctl here.

        Records stay, so the next oct-ctl on this state_dir reports the instances as ``exited``
        until the leader re-applies them.
        """
        with self._lock:
            self._closed = True
            instances = list(self._instances.values())
        for instance in instances:
            instance.begin_stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        for instance in instances:
            instance.finish_stop(deadline)
            instance.save()
