"""The node's health checks: one asyncio task per instance that has a check.

Each tick asks the runtime how the instance is (a crash or a restart by the runtime starts the
judgement over, like Docker resets a container's health when it restarts), probes it when it runs
(http/tcp from here, a command inside it through the runtime), feeds the result to its
:class:`~octctl.health.verdict.Verdict`, and restarts it through the runtime once it is
unhealthy. The agent adds the verdicts to what it reports (:meth:`HealthMonitor.report`), which
is how they reach the leader. Which checks are watched is kept in a file, so a restarted oct-ctl
goes on watching containers that outlived it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

from octctl.runtime.base import HealthcheckSpec, InstanceSpec, InstanceStatus, RuntimeFailure, RuntimeName

from .probes import Probe, http_probe, tcp_probe
from .verdict import Verdict, bounded

log = logging.getLogger(__name__)

Key = tuple[str, str]


class Instances(Protocol):
    """What the monitor needs of the node's runtimes (the agent provides it)."""

    async def status(self, runtime: RuntimeName, project: str, service: str) -> InstanceStatus | None: ...

    async def restart(self, runtime: RuntimeName, project: str, service: str) -> None: ...

    async def execute(
        self, runtime: RuntimeName, project: str, service: str, argv: list[str], timeout: float
    ) -> tuple[int, str]: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


@dataclass
class Watch:
    """One watched instance: its check, its verdict and the task that probes it."""

    runtime: RuntimeName
    project: str
    service: str
    spec_hash: str
    check: HealthcheckSpec
    verdict: Verdict
    task: asyncio.Task[None] | None = None
    #: A command probe still running after its timeout (docker exec cannot be cancelled): the
    #: next probe fails at once rather than start a second one.
    pending: asyncio.Future[tuple[int, str]] | None = field(default=None, repr=False)


#: Called with (project, service, verdict) after every change of a verdict's state.
Listener = Callable[[str, str, Verdict], None]


class HealthMonitor:
    def __init__(
        self,
        instances: Instances,
        state_file: Path | None = None,
        *,
        clock: Clock | None = None,
        listener: Listener | None = None,
    ) -> None:
        self._instances = instances
        self._state_file = state_file
        self._clock = clock or SystemClock()
        #: Told of every change of a verdict (tests and diagnostics).
        self.listener = listener
        self._watches: dict[Key, Watch] = {}
        self._session: aiohttp.ClientSession | None = None

    # -- what the agent calls ---------------------------------------------------------------------

    def watch(self, spec: InstanceSpec) -> None:
        """Probe ``spec``'s instance from now on (an instance without a check is not watched).

        Idempotent: a watch of the same spec hash keeps its verdict; another one starts over.
        """
        key = (spec.project, spec.service)
        current = self._watches.get(key)
        if current is not None and current.spec_hash == spec.spec_hash and spec.healthcheck is not None:
            return
        self._stop(key)
        if spec.healthcheck is not None:
            self._start(spec.runtime, spec.project, spec.service, spec.spec_hash, spec.healthcheck)
        self._save()

    def forget(self, project: str, service: str) -> None:
        self._stop((project, service))
        self._save()

    def report(self, status: InstanceStatus) -> InstanceStatus:
        """``status`` with the instance's health; ``none`` when its spec has no check."""
        watch = self._watches.get((status.project, status.service))
        if watch is None or watch.spec_hash != status.spec_hash:
            return status
        verdict = watch.verdict
        return status.model_copy(
            update={
                "health": verdict.state,
                "health_output": verdict.output,
                "health_changed_at": verdict.changed_at,
            }
        )

    def verdict(self, project: str, service: str) -> Verdict | None:
        watch = self._watches.get((project, service))
        return None if watch is None else watch.verdict

    async def run(self) -> None:
        """Resume the watches a previous oct-ctl saved, then hold the tasks until cancelled."""
        for runtime, project, service, spec_hash, check in self._load():
            if (project, service) not in self._watches:
                self._start(runtime, project, service, spec_hash, check)
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        for key in list(self._watches):
            self._stop(key)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one instance -----------------------------------------------------------------------------

    def _start(
        self, runtime: RuntimeName, project: str, service: str, spec_hash: str, check: HealthcheckSpec
    ) -> None:
        verdict = Verdict(check=check, started=self._clock.monotonic(), changed_at=self._clock.time())
        watch = Watch(runtime, project, service, spec_hash, check, verdict)
        watch.task = asyncio.get_running_loop().create_task(
            self._watch(watch), name=f"health {project}/{service}"
        )
        self._watches[(project, service)] = watch

    def _stop(self, key: Key) -> None:
        watch = self._watches.pop(key, None)
        if watch is not None and watch.task is not None:
            watch.task.cancel()

    async def _watch(self, watch: Watch) -> None:
        restarts: int | None = None
        while self._watches.get((watch.project, watch.service)) is watch:
            try:
                restarts = await self._tick(watch, restarts)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad tick must not end the instance's checks for good
                log.exception("health check of %s/%s failed", watch.project, watch.service)
            await asyncio.sleep(watch.check.interval)

    async def _tick(self, watch: Watch, restarts: int | None) -> int | None:
        status = await self._instances.status(watch.runtime, watch.project, watch.service)
        if status is None or status.spec_hash != watch.spec_hash:
            return restarts  # being replaced or removed: the agent changes or ends this watch
        if status.state != "running" or (restarts is not None and status.restarts != restarts):
            # Down, or restarted by its runtime since the last tick: health starts over when it runs.
            self._restarted(watch)
        if status.state != "running":
            return status.restarts
        probe = await self._probe(watch)
        verdict = watch.verdict
        if verdict.record(probe.ok, probe.output, self._clock.monotonic(), self._clock.time()):
            self._changed(watch)
        if verdict.state != "unhealthy":
            return status.restarts
        log.warning(
            "%s/%s is unhealthy after %d failed checks (%s); restarting it",
            watch.project,
            watch.service,
            verdict.failures,
            verdict.output,
        )
        try:
            await self._instances.restart(watch.runtime, watch.project, watch.service)
        except RuntimeFailure as exc:
            log.warning("cannot restart %s/%s: %s", watch.project, watch.service, exc)
            return status.restarts  # still unhealthy: tried again after the next probe
        self._restarted(watch)
        after = await self._instances.status(watch.runtime, watch.project, watch.service)
        return None if after is None else after.restarts

    def _restarted(self, watch: Watch) -> None:
        if watch.verdict.restarted(self._clock.monotonic(), self._clock.time()):
            self._changed(watch)

    def _changed(self, watch: Watch) -> None:
        verdict = watch.verdict
        log.info("%s/%s is %s: %s", watch.project, watch.service, verdict.state, verdict.output)
        if self.listener is not None:
            self.listener(watch.project, watch.service, verdict)

    async def _probe(self, watch: Watch) -> Probe:
        check = watch.check
        if check.kind == "http":
            if self._session is None:
                self._session = aiohttp.ClientSession()
            return await http_probe(self._session, check)
        if check.kind == "tcp":
            return await tcp_probe(check)
        return await self._command(watch)

    async def _command(self, watch: Watch) -> Probe:
        check = watch.check
        if watch.pending is not None and not watch.pending.done():
            return Probe(False, f"the previous check ({' '.join(check.command)}) is still running")
        future = asyncio.ensure_future(
            self._instances.execute(watch.runtime, watch.project, watch.service, check.command, check.timeout)
        )
        done, _ = await asyncio.wait({future}, timeout=check.timeout + 0.5)
        if not done:
            watch.pending = future
            future.add_done_callback(_consume)
            return Probe(False, f"{' '.join(check.command)}: no answer within {check.timeout:g} s")
        watch.pending = None
        try:
            code, output = future.result()
        except RuntimeFailure as exc:
            return Probe(False, bounded(str(exc)))
        text = output.strip()
        return Probe(code == 0, bounded(f"exit {code}" + (f": {text}" if text else "")))

    # -- the watch list on disk -------------------------------------------------------------------

    def _save(self) -> None:
        if self._state_file is None:
            return
        data = [
            {
                "runtime": w.runtime,
                "project": w.project,
                "service": w.service,
                "spec_hash": w.spec_hash,
                "check": w.check.model_dump(mode="json"),
            }
            for w in self._watches.values()
        ]
        temporary = self._state_file.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(data))
            os.replace(temporary, self._state_file)
        except OSError as exc:
            log.warning("cannot save the health checks to %s: %s", self._state_file, exc)

    def _load(self) -> list[tuple[RuntimeName, str, str, str, HealthcheckSpec]]:
        if self._state_file is None:
            return []
        try:
            data = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("cannot read the health checks in %s: %s", self._state_file, exc)
            return []
        found = []
        for item in data if isinstance(data, list) else []:
            with contextlib.suppress(Exception):  # one damaged entry costs only its own check
                runtime: RuntimeName = "process" if item["runtime"] == "process" else "docker"
                check = HealthcheckSpec.model_validate(item["check"])
                # Names are checked by the agent before any runtime call (instance names too).
                found.append(
                    (runtime, str(item["project"]), str(item["service"]), str(item["spec_hash"]), check)
                )
        return found


def _consume(future: asyncio.Future[tuple[int, str]]) -> None:
    """Read a late command probe's result so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()
