"""The ingress access log through a real HAProxy: a request or connection becomes one line naming
the service, the path without its query string, the status and the instance; no header value is
logged; the file is rotated and read back per service."""

from __future__ import annotations

import os
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
    assert not proxy.master_socket.parent.exists()


def test_the_log_is_rotated_into_one_older_file_and_read_back_in_order(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Lines appended through the descriptor HAProxy gets (append mode) go on at the start of the
    truncated file; only the file and one older one exist."""
    monkeypatch.setattr(access_log, "MAX_BYTES", 200)
    log = AccessLog(tmp_path / "access.log")
    fd = log.open()
    rotations = 0
    try:
        for n in range(40):
            os.write(fd, f"web_80 {1000 + n}.5 10.0.0.1 GET /{n} 200 12 1 s1\n".encode())
            rotations += log.rotate_if_full()
        size = (tmp_path / "access.log").stat().st_size
        os.write(fd, b"web_80 2000.5 10.0.0.1 GET /last 200 12 1 s1\n")
    finally:
        os.close(fd)
    assert rotations >= 5
    files = sorted(p.name for p in tmp_path.glob("access.log*"))
    assert files == ["access.log", "access.log.1"], "one older file, not more"
    assert all(p.stat().st_size < 400 for p in tmp_path.glob("access.log*"))
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in tmp_path.glob("access.log*"))
    text = (tmp_path / "access.log").read_text()
    assert len(text.encode()) == size + 45 and "\0" not in text, "appended where the file ends, no hole"
    last = read_access(log.path, "web", 3)
    assert [line.when for line in last] == [1038.5, 1039.5, 2000.5]
