"""The health monitor driving fake runtime calls: a command check that fails until told otherwise,
restarts through the runtime, and the verdict in what the agent reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

from octctl.health import HealthMonitor, Verdict
from octctl.runtime.base import HealthcheckSpec, InstanceSpec, InstanceStatus, RuntimeName
from tests.wait import wait_until_async


class FakeInstances:
    """One running instance whose check command answers ``self.code``; a restart counts like a crash."""

    def __init__(self) -> None:
        self.code = 1
        self.restarts = 0
        self.state = "running"
        self.spec_hash = "h1"
        self.executions = 0
        self.hang: asyncio.Event | None = None

    def status_now(self) -> InstanceStatus:
        return InstanceStatus(
            project="demo",
            service="web",
            runtime="docker",
            spec_hash=self.spec_hash,
            state=self.state,  # type: ignore[arg-type]
            restarts=self.restarts,
        )

    async def status(self, runtime: RuntimeName, project: str, service: str) -> InstanceStatus | None:
        return self.status_now()

    async def restart(self, runtime: RuntimeName, project: str, service: str) -> None:
        self.restarts += 1

    async def execute(
        self, runtime: RuntimeName, project: str, service: str, argv: list[str], timeout: float
    ) -> tuple[int, str]:
        self.executions += 1
        if self.hang is not None:
            await self.hang.wait()
        return self.code, "ready" if self.code == 0 else "not ready"


def spec(retries: int = 2, timeout: float = 0.05) -> InstanceSpec:
    check = HealthcheckSpec(
        kind="command", command=["check"], interval=0.1, timeout=timeout, retries=retries, start_period=0
    )
    return InstanceSpec(
        project="demo", service="web", deployment="d1", spec_hash="h1", cpus=1, memory=1, healthcheck=check
    )


def recorder() -> tuple[list[str], object]:
    states: list[str] = []

    def listener(project: str, service: str, verdict: Verdict) -> None:
        states.append(verdict.state)

    return states, listener


async def test_failing_check_restarts_the_instance_then_a_passing_one_makes_it_healthy() -> None:
    instances = FakeInstances()
    states, listener = recorder()
    monitor = HealthMonitor(instances, listener=listener)  # type: ignore[arg-type]
    monitor.watch(spec())
    try:
        await wait_until_async(lambda: instances.restarts >= 1, message="a restart")
        assert states[:2] == ["unhealthy", "starting"]
        report = monitor.report(instances.status_now())
        assert report.health == "starting" and report.health_output == "exit 1: not ready"
        instances.code = 0
        await wait_until_async(lambda: monitor.report(instances.status_now()).health == "healthy")
        report = monitor.report(instances.status_now())
        assert report.health_output == "exit 0: ready" and report.health_changed_at is not None
        assert states[-1] == "healthy"
    finally:
        await monitor.close()


async def test_a_restart_by_the_runtime_starts_the_judgement_over() -> None:
    instances = FakeInstances()
    instances.code = 0
    states, listener = recorder()
    monitor = HealthMonitor(instances, listener=listener)  # type: ignore[arg-type]
    monitor.watch(spec())
    try:
        await wait_until_async(lambda: states == ["healthy"], until=bool)
        instances.restarts += 1  # the runtime restarted it on its own (a crash)
        await wait_until_async(lambda: states[1:2] == ["starting"])
        await wait_until_async(lambda: states[2:3] == ["healthy"])
    finally:
        await monitor.close()


async def test_an_instance_that_is_not_running_is_not_probed() -> None:
    instances = FakeInstances()
    instances.state = "restarting"
    monitor = HealthMonitor(instances)  # type: ignore[arg-type]
    monitor.watch(spec())
    try:
        await asyncio.sleep(0.35)  # several intervals
        assert instances.executions == 0 and instances.restarts == 0
        assert monitor.report(instances.status_now()).health == "starting"
    finally:
        await monitor.close()


async def test_a_hung_command_is_not_started_twice() -> None:
    instances = FakeInstances()
    instances.hang = asyncio.Event()
    monitor = HealthMonitor(instances)  # type: ignore[arg-type]
    monitor.watch(spec(retries=3))
    try:
        await wait_until_async(lambda: instances.restarts >= 1, message="unhealthy after 3 failed probes")
        assert instances.executions == 1
        assert "is still running" in monitor.report(instances.status_now()).health_output
    finally:
        instances.hang.set()
        await monitor.close()


async def test_reports_only_for_the_watched_spec_and_none_without_a_check() -> None:
    instances = FakeInstances()
    monitor = HealthMonitor(instances)  # type: ignore[arg-type]
    monitor.watch(spec())
    try:
        other = instances.status_now().model_copy(update={"spec_hash": "h0"})
        assert monitor.report(other).health == "none"
        monitor.watch(spec().model_copy(update={"healthcheck": None, "spec_hash": "h2"}))
        assert monitor.verdict("demo", "web") is None
        instances.spec_hash = "h2"
        assert monitor.report(instances.status_now()).health == "none"
    finally:
        await monitor.close()


async def test_watches_are_saved_and_resumed_by_the_next_monitor(tmp_path: Path) -> None:
    state_file = tmp_path / "healthchecks.json"
    instances = FakeInstances()
    instances.code = 0
    first = HealthMonitor(instances, state_file)  # type: ignore[arg-type]
    first.watch(spec())
    await first.close()
    second = HealthMonitor(instances, state_file)  # type: ignore[arg-type]
    runner = asyncio.create_task(second.run())
    try:
        await wait_until_async(lambda: second.report(instances.status_now()).health == "healthy")
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    second.forget("demo", "web")
    third = HealthMonitor(instances, state_file)  # type: ignore[arg-type]
    runner = asyncio.create_task(third.run())
    await asyncio.sleep(0)
    assert third.verdict("demo", "web") is None
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
