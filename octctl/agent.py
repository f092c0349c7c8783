"""The node agent: runs what the leader pushes, through the runtime each service asks for.

Runtime calls block (docker SDK, process supervision), so they run in a thread pool; one lock per
service keeps two pushes for the same service from racing while different services start in
parallel. Which runtimes this node has used is remembered on disk, so that after a daemon restart
it still reports (and can remove) instances it started before. Instances with a health check are
probed by :class:`~octctl.health.HealthMonitor` (started by :meth:`Agent.watch_health`), and what
it judges is part of what :meth:`Agent.list` reports.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from octctl.health import HealthMonitor
from octctl.instances import serving
from octctl.log_pump import lines_of
from octctl.names import check_instance, check_name
from octctl.runtime.base import InstanceSpec, InstanceStatus, Runtime, RuntimeFailure, RuntimeName, Usage
from octctl.runtime.process.volumes import volume_folder
from octctl.volume_archive import check as check_archive
from octctl.volume_archive import pack, unpack

if TYPE_CHECKING:
    from octctl.runtime.docker import RegistryLogin

log = logging.getLogger(__name__)

RUNTIMES_FILE = "runtimes.json"
#: The instances whose health this node checks, so a restarted oct-ctl goes on checking them.
HEALTHCHECKS_FILE = "healthchecks.json"
#: Seconds an instance's previous generation (a start-first update beside it) goes on running
#: once the new one serves without a break: every node's ingress moves to the new one well within
#: it, and what the old one was answering is done.
RETIRE_AFTER = 3.0
#: How often the new generation is looked at meanwhile.
RETIRE_POLL = 0.25
#: ``Provider.mount_disk``: (disk, device, folder).
MountDisk = Callable[[str, str, Path], None]
#: ``Provider.fill_from_snapshot``: (snapshot, folder).
FillFromSnapshot = Callable[[str, Path], None]


def make_runtime(
    name: RuntimeName,
    data_dir: Path,
    node: str,
    registry_login: RegistryLogin | None = None,
    volumes_dir: Path | None = None,
) -> Runtime:
    """Import lazily: a node that only runs processes never loads the docker SDK."""
    if name == "docker":
        from octctl.runtime.docker import DockerRuntime

        return DockerRuntime(node=node, registry_login=registry_login, volumes_dir=volumes_dir)
    from octctl.runtime.process import ProcessRuntime, service_user

    # As root, services run as an unprivileged user (oct-svc or nobody), never as the daemon.
    return ProcessRuntime(
        state_dir=data_dir / "processes", node=node, run_as=service_user(), volumes_dir=volumes_dir
    )


def _restore(runtime: Runtime, project: str, service: str, archive: Path) -> list[str]:
    with runtime.stopped(project, service) as folders:
        return unpack(archive, folders)


class Agent:
    def __init__(
        self,
        node: str,
        data_dir: Path,
        workers: int = 8,
        registry_login: RegistryLogin | None = None,
        volumes_dir: Path | None = None,
        mount_disk: MountDisk | None = None,
        fill_from_snapshot: FillFromSnapshot | None = None,
    ) -> None:
        self.node = node
        #: The provider's ``mount_disk``: a volume on a network disk is mounted at its folder
        #: before its instance starts (both runtimes then find the data there).
        self.mount_disk = mount_disk
        #: The provider's ``fill_from_snapshot`` (``oct restore`` of an EBS snapshot backup).
        self.fill_from_snapshot = fill_from_snapshot
        self.data_dir = data_dir
        #: Where process services' volume folders are (``NodeSettings.volumes_dir``); by default
        #: beside the data folder, which services may not enter (``/var/lib/oct-volumes``).
        self.volumes_dir = volumes_dir or data_dir.parent / f"{data_dir.name}-volumes"
        self.registry_login = registry_login
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent")
        # Probes get threads of their own: a hung `docker exec` must not hold up an apply.
        self._probe_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="agent-health")
        self._runtimes: dict[str, Runtime] = {}
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        #: The task that retires an instance's previous generation, by (project, instance).
        self._retiring: dict[tuple[str, str], asyncio.Task[None]] = {}
        for name in self._remembered():
            self._runtime(name)
        self.health = HealthMonitor(self, data_dir / HEALTHCHECKS_FILE)

    def _remembered(self) -> list[RuntimeName]:
        try:
            names = json.loads((self.data_dir / RUNTIMES_FILE).read_text())
        except (OSError, ValueError):
            return []
        return [n for n in names if n in ("docker", "process")]

    def _runtime(self, name: RuntimeName) -> Runtime:
        runtime = self._runtimes.get(name)
        if runtime is None:
            runtime = make_runtime(name, self.data_dir, self.node, self.registry_login, self.volumes_dir)
            self._runtimes[name] = runtime
            (self.data_dir / RUNTIMES_FILE).write_text(json.dumps(sorted(self._runtimes)))
        return runtime

    async def _call(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @staticmethod
    def _check(project: str, service: str) -> None:
        """Names become file and container names: refuse (``InvalidName``) any that could be a path."""
        check_name("project", project)
        check_instance(service)

    def _mount_disks(self, spec: InstanceSpec) -> None:
        for mount in spec.volumes:
            if mount.disk is None:
                continue
            if self.mount_disk is None or mount.device is None:
                raise RuntimeFailure(
                    f"volume {mount.name} is on disk {mount.disk}, which this node cannot mount"
                )
            folder = volume_folder(self.volumes_dir, spec.project, mount.name)
            try:
                self.mount_disk(mount.disk, mount.device, folder)
            except Exception as e:
                raise RuntimeFailure(f"cannot mount disk {mount.disk} of volume {mount.name}: {e}") from e

    async def apply(self, spec: InstanceSpec) -> InstanceStatus:
        self._check(spec.project, spec.service)
        async with self._locks[(spec.project, spec.service)]:
            try:
                # A service that switched runtime must not keep running in the old one.
                for name, runtime in list(self._runtimes.items()):
                    if name != spec.runtime:
                        await self._call(runtime.remove, spec.project, spec.service)
                await self._call(self._mount_disks, spec)
                status: InstanceStatus = await self._call(self._runtime(spec.runtime).apply, spec)
            except RuntimeFailure as e:
                status = InstanceStatus(
                    project=spec.project,
                    service=spec.service,
                    runtime=spec.runtime,
                    state="failed",
                    error=str(e),
                )
            log.info("applied %s/%s: %s", spec.project, spec.service, status.state)
            if status.state == "failed":
                self.health.forget(spec.project, spec.service)  # nothing runs to be checked
            else:
                self.health.watch(spec)
            self._stop_retiring(spec.project, spec.service)
            self._retire_when_serving(status, max(RETIRE_AFTER, spec.keep_previous))
            return self.health.report(status)

    def _retire_when_serving(self, status: InstanceStatus, keep: float = RETIRE_AFTER) -> None:
        """Start retiring the instance's previous generation, if it has one and nobody is, once
        the current one has served ``keep`` seconds without a break. (One an earlier oct-ctl
        left, found by :meth:`list`, is kept :data:`RETIRE_AFTER`: the spec's
        ``keep_previous`` went with that oct-ctl.)"""
        key = (status.project, status.service)
        if status.previous_port is None or (key in self._retiring and not self._retiring[key].done()):
            return
        task = self._retire(status.runtime, *key, keep)
        self._retiring[key] = asyncio.get_running_loop().create_task(task)

    def _stop_retiring(self, project: str, service: str) -> None:
        task = self._retiring.pop((project, service), None)
        if task is not None:
            task.cancel()

    async def _retire(self, runtime: RuntimeName, project: str, service: str, keep: float) -> None:
        """Once the current generation has served (running, and healthy if it has a check) for
        ``keep`` seconds without a break, stop the previous one: a version that crashes or
        fails its check soon after starting leaves the old one serving. An apply or a removal
        meanwhile cancels this (the apply starts it again for what it leaves)."""
        loop = asyncio.get_running_loop()
        serving_since: float | None = None
        try:
            while serving_since is None or loop.time() - serving_since < keep:
                await asyncio.sleep(RETIRE_POLL)
                current = await self._call(self._runtime(runtime).status, project, service)
                if current is None:
                    return
                if not serving(self.health.report(current).model_dump()):
                    serving_since = None
                elif serving_since is None:
                    serving_since = loop.time()
            async with self._locks[(project, service)]:
                await self._call(self._runtime(runtime).retire_previous, project, service)
        except RuntimeFailure as e:
            log.warning("cannot retire the previous generation of %s/%s: %s", project, service, e)
        finally:
            if self._retiring.get((project, service)) is asyncio.current_task():
                del self._retiring[(project, service)]

    async def remove(self, project: str, service: str) -> None:
        self._check(project, service)
        async with self._locks[(project, service)]:
            self._stop_retiring(project, service)
            self.health.forget(project, service)
            for runtime in list(self._runtimes.values()):
                try:
                    await self._call(runtime.remove, project, service)
                except RuntimeFailure as e:
                    log.warning("%s runtime cannot remove %s/%s: %s", runtime.name, project, service, e)
            log.info("removed %s/%s", project, service)

    async def list(self, project: str | None = None) -> builtins.list[InstanceStatus]:
        if project is not None:
            check_name("project", project)
        found: builtins.list[InstanceStatus] = []
        for runtime in list(self._runtimes.values()):
            try:
                statuses = [self.health.report(s) for s in await self._call(runtime.list, project)]
            except RuntimeFailure as e:
                log.warning("%s runtime cannot list instances: %s", runtime.name, e)
                continue
            for status in statuses:
                self._retire_when_serving(status)  # a previous generation an earlier oct-ctl left
            found.extend(statuses)
        return found

    async def usage(self) -> builtins.list[Usage]:
        """What every instance here uses now (``Runtime.usage``); a runtime that fails is left out."""
        found: builtins.list[Usage] = []
        for runtime in list(self._runtimes.values()):
            try:
                found.extend(await self._call(runtime.usage))
            except RuntimeFailure as e:
                log.warning("%s runtime cannot read usage: %s", runtime.name, e)
        return found

    async def logs(self, project: str, service: str, tail: int) -> builtins.list[str]:
        self._check(project, service)
        for runtime in list(self._runtimes.values()):
            try:
                lines: builtins.list[str] = await self._call(runtime.logs, project, service, tail)
            except RuntimeFailure:
                continue
            if lines:
                return lines
        return []

    async def log_stream(
        self, project: str, service: str, tail: int, since: float | None, follow: bool
    ) -> AsyncIterator[str]:
        """The instance's log lines (see ``Runtime.log_stream``), through :mod:`octctl.log_pump`."""
        try:
            runtime = await self._owner(project, service)
        except RuntimeFailure:
            return  # nothing runs here (any more): no lines
        stream = await self._call(runtime.log_stream, project, service, tail, since, follow)
        async for line in lines_of(stream, f"{project}/{service}"):
            yield line

    # Backups of an instance's volumes (``oct backup`` / ``oct restore``; ``octctl/volume_archive.py``).

    async def _owner(self, project: str, service: str) -> Runtime:
        """The runtime that runs the instance here."""
        self._check(project, service)
        for runtime in list(self._runtimes.values()):
            if await self._call(runtime.status, project, service) is not None:
                return runtime
        raise RuntimeFailure(f"{service} does not run on this node")

    async def backup(self, project: str, service: str, out: Path) -> builtins.list[str]:
        """Pack the instance's volumes into ``out`` while it runs; returns their names."""
        runtime = await self._owner(project, service)
        folders = await self._call(runtime.volume_folders, project, service)
        if not folders:
            raise RuntimeFailure(f"{service} has no volumes")
        await self._call(pack, folders, out)
        log.info("backed up the volumes of %s/%s (%s)", project, service, ", ".join(sorted(folders)))
        return sorted(folders)

    async def restore(self, project: str, service: str, archive: Path) -> builtins.list[str]:
        """Stop the instance, replace its volumes' content with ``archive``'s, start it again.
        The archive is checked first: a bad one (``BadArchive``) stops nothing."""
        async with self._locks[(project, service)]:  # no apply or health restart meanwhile
            runtime = await self._owner(project, service)
            folders = await self._call(runtime.volume_folders, project, service)
            await self._call(check_archive, archive, folders)
            restored: builtins.list[str] = await self._call(_restore, runtime, project, service, archive)
        log.info("restored the volumes of %s/%s (%s)", project, service, ", ".join(restored))
        return restored

    async def restore_snapshots(
        self, project: str, service: str, snapshots: dict[str, str]
    ) -> builtins.list[str]:
        """Stop the instance, fill each named volume from its snapshot, start it again."""
        fill = self.fill_from_snapshot
        if fill is None:
            raise RuntimeFailure("this node's provider keeps no snapshots")
        async with self._locks[(project, service)]:
            runtime = await self._owner(project, service)
            folders = await self._call(runtime.volume_folders, project, service)
            unknown = sorted(set(snapshots) - set(folders))
            if unknown:
                raise RuntimeFailure(f"{service} has no volume {', '.join(unknown)}")

            def restore() -> None:
                with runtime.stopped(project, service) as stopped:
                    for volume, snapshot in sorted(snapshots.items()):
                        fill(snapshot, stopped[volume])

            await self._call(restore)
        log.info("restored %s/%s from snapshots %s", project, service, snapshots)
        return sorted(snapshots)

    async def watch_health(self) -> None:
        """Run the health checks (resuming those a previous oct-ctl saved) until cancelled."""
        await self.health.run()

    # What the health monitor needs (``octctl.health.Instances``): the runtime calls of one instance.

    async def status(self, runtime: RuntimeName, project: str, service: str) -> InstanceStatus | None:
        self._check(project, service)
        found: InstanceStatus | None = await self._probe_call(self._runtime(runtime).status, project, service)
        return found

    async def restart(self, runtime: RuntimeName, project: str, service: str) -> None:
        self._check(project, service)
        async with self._locks[(project, service)]:  # never in the middle of an apply or remove
            await self._call(self._runtime(runtime).restart, project, service)

    async def execute(
        self, runtime: RuntimeName, project: str, service: str, argv: builtins.list[str], timeout: float
    ) -> tuple[int, str]:
        self._check(project, service)
        result: tuple[int, str] = await self._probe_call(
            self._runtime(runtime).execute, project, service, argv, timeout
        )
        return result

    async def _probe_call(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._probe_pool, fn, *args)

    def close(self) -> None:
        for runtime in self._runtimes.values():
            try:
                runtime.close()
            except Exception:
                log.exception("closing the %s runtime failed", runtime.name)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
