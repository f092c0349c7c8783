"""The ingress access log through a real HAProxy: a request or connection becomes one line naming
the service, the path without its query string, the status and the instance; no header value is
logged; the file is rotated and read back per service."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp

from octctl.ingress import access_log
from octctl.ingress.access_log import AccessLog, read_access
from octctl.ingress.haproxy import Haproxy
from octctl.ingress.routes import IngressRoutes, Route, Site, Web
from tests.integration.http_instances import ADDRESS, fetch_from, instances
from tests.integration.test_ingress_haproxy import free_port
from tests.wait import wait_until_async


async def test_requests_and_connections_are_logged_per_service_without_queries_or_headers(
    tmp_path: Path,
) -> None:
    proxy = Haproxy(tmp_path / "ingress", drain_seconds=5)
    (a,), (upstream,) = await instances("a")
    tcp_port = free_port()
    web_address = "127.0.0.118"
    routes = IngressRoutes(
        web_address,
        (Route("db", tcp_port, "tcp", (upstream,)),),
        Web((Site("shop", ("shop.example.test",), (upstream,)),)),
    )
    try:
        await proxy.apply(routes)
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": "Bearer s3cret-token", "Host": "shop.example.test"}
            async with session.get(f"http://{web_address}/orders/7?token=s3cret-query", headers=headers) as r:
                assert r.status == 404  # the instance serves only / : its answer is what is logged
            async with session.get(f"http://{web_address}:{tcp_port}/") as r:
                assert r.status == 200
        log = proxy.directory / "access.log"

        async def both() -> bool:
            return bool(read_access(log, "shop", 10)) and bool(read_access(log, "db", 10))

        await wait_until_async(both, timeout=10, message="both lines in the access log")
        (shop,) = read_access(log, "shop", 10)
        assert "GET /orders/7 404" in shop.text and upstream.name in shop.text
        (db,) = read_access(log, "db", 10)
        assert db.text.startswith(f"{ADDRESS} tcp ") and upstream.name in db.text
        whole = log.read_text()
        assert "s3cret" not in whole, "no query string and no header value is logged"
        assert (await fetch_from(web_address, 80, "nowhere.example.test"))[0] == 404
    finally:
        await proxy.stop()
        await a.stop()
    assert proxy.access is None and not (proxy.master_socket.parent).exists()


async def test_the_log_is_rotated_into_one_older_file_and_read_back_in_order(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(access_log, "MAX_BYTES", 200)
    log = AccessLog(tmp_path / "access.log", tmp_path / "log.sock")
    await log.start()
    try:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=str(log.socket), family=socket.AF_UNIX
        )
        for n in range(40):
            transport.sendto(f"web_80 {1000 + n}.5 10.0.0.1 GET /{n} 200 12 1 s1".encode())
        transport.close()
        await wait_until_async(
            lambda: any(f"/{39} " in line.text for line in read_access(log.path, "web", 100)), timeout=5
        )
    finally:
        log.stop()
    files = sorted(p.name for p in tmp_path.glob("access.log*"))
    assert files == ["access.log", "access.log.1"], "one older file, not more"
    assert all(p.stat().st_size < 400 for p in tmp_path.glob("access.log*"))
    last = read_access(log.path, "web", 3)
    assert [line.when for line in last] == [1037.5, 1038.5, 1039.5]
    assert not log.socket.exists()
