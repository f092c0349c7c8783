"""The listening socket of the API: HTTPS with a bounded TLS handshake."""

from __future__ import annotations

import asyncio

from aiohttp import web

from octctl.server.limits import HANDSHAKE_TIMEOUT


class TlsSite(web.TCPSite):
    """``TCPSite`` whose TLS handshakes must finish within ``HANDSHAKE_TIMEOUT`` (aiohttp passes none,
    and asyncio's default lets a silent connection sit for 60 s before HTTP's own timeouts apply)."""

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
