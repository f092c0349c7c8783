"""HTTP service instances on loopback and a load that counts their answers, for the ingress tests."""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter

import aiohttp
from aiohttp import web

from octctl.ingress.routes import Upstream

ADDRESS = "127.0.0.1"


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
        app.router.add_route("*", "/", hello)
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


async def instances(*names: str) -> tuple[list[Instance], list[Upstream]]:
    started = [Instance(name) for name in names]
    return started, [await instance.start() for instance in started]


async def fetch_from(
    address: str, port: int, host: str, path: str = "/", tls: ssl.SSLContext | None = None
) -> tuple[int, str, str]:
    """(status, Location header, body) of one HTTP/1.1 GET to ``address``, with ``host`` as Host
    (and as SNI and the name to verify, over TLS): the exact bytes a browser would send, to any
    address, whatever DNS says."""
    reader, writer = await asyncio.open_connection(
        address, port, ssl=tls, server_hostname=host if tls else None
    )
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.decode(errors="replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
    return int(lines[0].split()[1]), headers.get("location", ""), body
