"""A real HAProxy driven by oct's ingress: balancing, reconfiguration under load without a failed
request, a bad configuration refused while the old one keeps serving, a leftover master replaced,
a dead instance taken out of rotation, and a control socket a service cannot open."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from octctl.ingress.haproxy import Haproxy, IngressError
from octctl.ingress.routes import IngressRoutes, Route, Upstream

ADDRESS = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        return int(s.getsockname()[1])


class Instance:
    """An HTTP service instance on loopback that answers with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> Upstream:
        async def hello(_: web.Request) -> web.Response:
            return web.Response(text=self.name)

        app = web.Application()
        app.router.add_get("/", hello)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, ADDRESS, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return Upstream(ADDRESS, self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class Load:
    """Keep-alive clients sending requests until stopped, counting answers by body and failures."""

    def __init__(self, url: str, clients: int = 8) -> None:
        self.url = url
        self.clients = clients
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.clients)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()

    async def _client(self) -> None:
        while not self._stop.is_set():
            try:
                async with self._session.get(self.url) as answer:
                    body = await answer.text()
                    if answer.status == 200:
                        self.answers[body] += 1
                    else:
                        self.failures.append(f"{answer.status} {body[:80]}")
            except aiohttp.ClientError as e:
                self.failures.append(repr(e))

    async def until(self, answered: int) -> None:
        """Wait until ``answered`` more requests have been answered (the load is really flowing)."""
        target = sum(self.answers.values()) + answered
        async with asyncio.timeout(20):
            while sum(self.answers.values()) < target:
                await asyncio.sleep(0.01)


@pytest.fixture
async def haproxy(tmp_path: Path) -> AsyncIterator[Haproxy]:
    proxy = Haproxy(tmp_path / "ingress", drain_seconds=5)
    yield proxy
    await proxy.stop()


async def instances(*names: str) -> tuple[list[Instance], list[Upstream]]:
    started = [Instance(name) for name in names]
    return started, [await instance.start() for instance in started]


async def test_every_request_is_answered_while_instances_come_and_go(haproxy: Haproxy) -> None:
    port = free_port()
    url = f"http://{ADDRESS}:{port}/"
    (a, b, c), (ua, ub, uc) = await instances("a", "b", "c")
    assert await haproxy.apply(IngressRoutes(ADDRESS, (Route("web", port, upstreams=(ua, ub)),)))
    async with Load(url) as load:
        await load.until(200)
        assert set(load.answers) == {"a", "b"}  # balanced over both
        for upstreams in [(ua, ub, uc), (ub, uc), (uc,), (ua, uc), (ua, ub, uc)]:
            assert await haproxy.apply(IngressRoutes(ADDRESS, (Route("web", port, upstreams=upstreams),)))
            await load.until(200)
        await haproxy.apply(IngressRoutes(ADDRESS, (Route("web", port, upstreams=(uc,)),)))
        await load.until(50)
        await a.stop()  # left the ingress before it stopped: its in-flight requests were finished
        await b.stop()
        load.answers.clear()
        await load.until(200)
        assert set(load.answers) == {"c"}
    assert load.failures == []
    await c.stop()


async def test_an_unchanged_set_does_not_reload(haproxy: Haproxy) -> None:
    port = free_port()
    (a,), (ua,) = await instances("a")
    routes = IngressRoutes(ADDRESS, (Route("web", port, upstreams=(ua,)),))
    assert await haproxy.apply(routes)
    pid, config = haproxy.pid, haproxy.config_path.stat().st_mtime_ns
    assert not await haproxy.apply(IngressRoutes(ADDRESS, (Route("web", port, upstreams=(ua, ua)),)))
    assert (haproxy.pid, haproxy.config_path.stat().st_mtime_ns) == (pid, config)
    await a.stop()


async def test_a_configuration_haproxy_cannot_serve_leaves_the_old_one_serving(haproxy: Haproxy) -> None:
    port = free_port()
    (a,), (ua,) = await instances("a")
    good = IngressRoutes(ADDRESS, (Route("web", port, upstreams=(ua,)),))
    await haproxy.apply(good)
    with socket.socket() as taken:  # another program holds the port the new route wants
        taken.bind((ADDRESS, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        bad = IngressRoutes(ADDRESS, (*good.routes, Route("db", busy, "tcp", (ua,))))
        with pytest.raises(IngressError, match="reload"):
            await haproxy.apply(bad)
    async with aiohttp.ClientSession() as session, session.get(f"http://{ADDRESS}:{port}/") as answer:
        assert (answer.status, await answer.text()) == (200, "a")
    assert await haproxy.apply(good)  # the failed set was not recorded as served
    await a.stop()


def test_two_routes_on_one_port_are_refused() -> None:
    with pytest.raises(ValueError, match="two routes on one port"):
        IngressRoutes(ADDRESS, (Route("web", 8080), Route("api", 8080)))


async def test_a_dead_instance_leaves_rotation_without_failing_requests(haproxy: Haproxy) -> None:
    port = free_port()
    (a, b), (ua, ub) = await instances("a", "b")
    await haproxy.apply(IngressRoutes(ADDRESS, (Route("web", port, upstreams=(ua, ub)),)))
    async with Load(f"http://{ADDRESS}:{port}/") as load:
        await load.until(100)
        await a.stop()  # gone without the ingress being told: connections to it are refused
        load.answers.clear()
        await load.until(300)
        assert set(load.answers) == {"b"}
    # A request whose connection is refused is sent to the other instance (option redispatch).
    assert load.failures == []
    await b.stop()


async def test_a_master_left_by_a_killed_oct_ctl_is_replaced(tmp_path: Path) -> None:
    port = free_port()
    (a,), (ua,) = await instances("a")
    routes = IngressRoutes(ADDRESS, (Route("web", port, upstreams=(ua,)),))
    first = Haproxy(tmp_path / "ingress")
    await first.apply(routes)
    left = first.pid
    assert left is not None
    second = Haproxy(tmp_path / "ingress")  # the next oct-ctl: it knows nothing of the first
    try:
        assert await second.apply(routes)
        assert second.pid != left
        with pytest.raises(ProcessLookupError):
            os.kill(left, 0)
    finally:
        await second.stop()
        await first.stop()
        await a.stop()


async def test_nothing_to_serve_runs_no_proxy(haproxy: Haproxy) -> None:
    port = free_port()
    (a,), (ua,) = await instances("a")
    await haproxy.apply(IngressRoutes(ADDRESS, (Route("web", port, upstreams=(ua,)),)))
    assert haproxy.running
    assert await haproxy.apply(IngressRoutes(ADDRESS))
    assert not haproxy.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ADDRESS, port), timeout=2).close()
    await a.stop()


async def test_a_service_user_cannot_open_the_control_socket(haproxy: Haproxy) -> None:
    port = free_port()
    (a,), (ua,) = await instances("a")
    await haproxy.apply(IngressRoutes(ADDRESS, (Route("web", port, upstreams=(ua,)),)))
    nobody = pwd.getpwnam("nobody")
    attack = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(haproxy.master_socket)!r})\n"
        "except PermissionError:\n"
        "    sys.exit(3)\n"
        "s.sendall(b'show proc\\n'); print(s.recv(100))\n"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-c", attack],
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert haproxy.master_socket.exists()  # it is there; the service just may not open it
    await a.stop()


async def test_a_deep_node_folder_still_gets_a_control_socket(tmp_path: Path) -> None:
    """HAProxy refuses Unix socket paths over 97 bytes; a project folder can be deeper than that."""
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "ingress"
    port = free_port()
    (a,), (ua,) = await instances("a")
    proxy = Haproxy(deep)
    try:
        assert await proxy.apply(IngressRoutes(ADDRESS, (Route("web", port, upstreams=(ua,)),)))
        async with aiohttp.ClientSession() as session, session.get(f"http://{ADDRESS}:{port}/") as answer:
            assert (answer.status, await answer.text()) == (200, "a")
        socket_folder = proxy.master_socket.parent
        assert socket_folder.stat().st_mode & 0o777 == 0o700
    finally:
        await proxy.stop()
        await a.stop()
    assert not socket_folder.exists()  # removed with the proxy
