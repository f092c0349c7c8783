"""A real HAProxy driven by oct's ingress: balancing, reconfiguration under load without a failed
request, a bad configuration refused while the old one keeps serving, a leftover master replaced,
a dead instance taken out of rotation, and a control socket a service cannot open."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from octctl.ingress.haproxy import Haproxy, IngressError
from octctl.ingress.routes import IngressRoutes, Route, Upstream
from tests.integration.http_instances import ADDRESS, Load, instances


def free_port() -> int:
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def haproxy(tmp_path: Path) -> AsyncIterator[Haproxy]:
    proxy = Haproxy(tmp_path / "ingress", drain_seconds=5)
    yield proxy
    await proxy.stop()


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
        await load.until(20)  # (a request already on its way to a may still land there)
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


class Dropper:
    """An instance that dies under every request: it reads it and closes without an answer."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def start(self) -> Upstream:
        async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                head = await reader.readuntil(b"\r\n\r\n")
                self.methods.append(head.split(b" ", 1)[0].decode())
            writer.close()

        self.server = await asyncio.start_server(drop, ADDRESS, 0)
        return Upstream(ADDRESS, self.server.sockets[0].getsockname()[1])


async def test_a_request_an_instance_dropped_is_sent_again_only_when_it_is_idempotent(
    haproxy: Haproxy,
) -> None:
    port = free_port()
    dropper = Dropper()
    bad = await dropper.start()
    (a,), (good,) = await instances("a")
    await haproxy.apply(IngressRoutes(ADDRESS, (Route("web", port, "http", (bad, good)),)))
    url = f"http://{ADDRESS}:{port}/"
    # A new connection for each request: aiohttp sends an idempotent request again by itself when
    # a reused connection closes without an answer, which would hide what the proxy does.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(10):
            async with session.get(url) as answer:
                assert (answer.status, await answer.text()) == (200, "a")
        assert "GET" in dropper.methods, "the dropping instance took some requests"
        answered = 0
        for _ in range(10):
            # (HAProxy answers a dropped one 502, or closes the client's connection as the
            # instance closed its own: either way it is not answered)
            with contextlib.suppress(aiohttp.ClientError):
                async with session.post(url, data=b"x") as answer:
                    answered += answer.status == 200
    dropped = dropper.methods.count("POST")
    assert dropped > 0 and answered == 10 - dropped, (
        "a POST the instance dropped is not sent twice",
        answered,
    )
    dropper.server.close()
    await a.stop()
