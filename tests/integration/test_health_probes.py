"""Health probes and the monitor against real sockets: an aiohttp server that answers 200 and then
500, a TCP port that stops listening, a port where nothing answers in time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from octctl.health import HealthMonitor, Verdict
from octctl.health.probes import http_probe, tcp_probe
from octctl.runtime.base import HealthcheckSpec, InstanceSpec, InstanceStatus, RuntimeName
from tests.wait import wait_until_async

ADDRESS = "127.0.0.1"


class Server:
    """``GET /up`` answers ``status``; the test changes it."""

    def __init__(self) -> None:
        self.status = 200
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        async def up(_: web.Request) -> web.Response:
            return web.Response(status=self.status, text=f"up says {self.status}")

        app = web.Application()
        app.router.add_get("/up", up)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, ADDRESS, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    server = Server()
    await server.start()
    yield server
    await server.stop()


def check(kind: str, port: int, **overrides: object) -> HealthcheckSpec:
    fields: dict[str, object] = {
        "kind": kind,
        "path": "/up",
        "host": ADDRESS,
        "port": port,
        "interval": 0.1,
        "timeout": 0.5,
        "retries": 2,
        "start_period": 0,
    }
    fields.update(overrides)
    return HealthcheckSpec.model_validate(fields)


async def test_http_probe_judges_by_status_and_says_what_it_got(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        ok = await http_probe(session, check("http", server.port))
        assert ok.ok and ok.output == "HTTP 200 from GET /up: up says 200"
        server.status = 302
        assert (await http_probe(session, check("http", server.port))).ok  # 3xx: answering is enough
        server.status = 500
        failed = await http_probe(session, check("http", server.port))
        assert not failed.ok and failed.output == "HTTP 500 from GET /up: up says 500"
        missing = await http_probe(session, check("http", server.port, path="/nope"))
        assert not missing.ok and missing.output.startswith("HTTP 404")
        await server.stop()
        refused = await http_probe(session, check("http", server.port))
        assert (
            not refused.ok and refused.output == f"GET http://{ADDRESS}:{server.port}/up: Connection refused"
        )


async def test_tcp_probe_connects_and_fails_once_the_port_closes(server: Server) -> None:
    assert (await tcp_probe(check("tcp", server.port))).ok
    await server.stop()
    closed = await tcp_probe(check("tcp", server.port))
    assert not closed.ok and closed.output == f"connect to {ADDRESS}:{server.port}: Connection refused"


async def test_an_http_probe_that_gets_no_answer_fails_at_its_timeout() -> None:
    release = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/up", hang)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, ADDRESS, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            slow = await http_probe(session, check("http", port, timeout=0.2))
        assert not slow.ok and slow.output == f"GET http://{ADDRESS}:{port}/up: no answer within 0.2 s"
    finally:
        release.set()
        await runner.cleanup()


class RunningInstance:
    """The runtime side, faked: one running instance; a restart is counted and brings the server back."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.restarts = 0

    async def status(self, runtime: RuntimeName, project: str, service: str) -> InstanceStatus | None:
        return InstanceStatus(
            project=project,
            service=service,
            runtime=runtime,
            spec_hash="h1",
            state="running",
            restarts=self.restarts,
        )

    async def restart(self, runtime: RuntimeName, project: str, service: str) -> None:
        self.restarts += 1
        self.server.status = 200

    async def execute(
        self, runtime: RuntimeName, project: str, service: str, argv: list[str], timeout: float
    ) -> tuple[int, str]:
        raise AssertionError("no command checks here")


async def test_the_monitor_restarts_a_server_that_turns_to_500_and_sees_it_healthy_again(
    server: Server,
) -> None:
    instance = RunningInstance(server)
    states: list[str] = []

    def listener(project: str, service: str, verdict: Verdict) -> None:
        states.append(verdict.state)

    monitor = HealthMonitor(instance, listener=listener)
    spec = InstanceSpec(
        project="demo",
        service="web",
        runtime="process",
        deployment="d1",
        spec_hash="h1",
        cpus=1,
        memory=1,
        healthcheck=check("http", server.port),
    )
    monitor.watch(spec)
    try:
        await wait_until_async(lambda: states == ["healthy"], message="healthy from the 200s")
        server.status = 500
        await wait_until_async(lambda: instance.restarts == 1, message="a restart after 2 failed probes")
        await wait_until_async(lambda: states[-1] == "healthy", message="healthy again")
        assert states == ["healthy", "unhealthy", "starting", "healthy"]
        status = await instance.status("process", "demo", "web")
        assert status is not None
        report = monitor.report(status)
        assert report.health == "healthy" and report.restarts == 1
        assert report.health_output == "HTTP 200 from GET /up: up says 200"
    finally:
        await monitor.close()
