"""HTTPS calls from one node to another: the leader driving agents, a new node joining.

The session's connector carries the node's TLS client context (``Node.start``): the cluster CA is
the only trusted authority and the node presents its own certificate (mutual TLS).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from octctl.api.models import TERM_HEADER, JoinRequest, MembersResponse
from octctl.runtime.base import InstanceSpec, InstanceStatus, Usage


class PeerError(Exception):
    """A peer did not answer (``status`` None), or answered with an error status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AgentReport:
    """One poll of an agent: what it runs, and the ``address:port`` of every instance its node's
    ingress may send traffic to (None: unknown, say its proxy has not applied routes yet)."""

    instances: list[InstanceStatus]
    ingress: frozenset[str] | None = None


#: A backup or restore may take long; what bounds it is the time between two chunks.
ARCHIVE_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=300.0)
CHUNK = 1 << 16


class PeerClient:
    def __init__(self, token: str, session: aiohttp.ClientSession) -> None:
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session = session

    async def _request(
        self,
        method: str,
        address: str,
        path: str,
        body: Any = None,
        timeout: float = 5.0,
        term: int | None = None,
    ) -> Any:
        url = f"https://{address}{path}"
        headers = self._headers if term is None else {**self._headers, TERM_HEADER: str(term)}
        try:
            async with self._session.request(
                method, url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                data = await resp.json(content_type=None)
                if resp.status >= 400:
                    reason = data.get("error") if isinstance(data, dict) else None
                    raise PeerError(f"{method} {url}: {resp.status} {reason or ''}".strip(), resp.status)
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise PeerError(f"{method} {url}: {type(e).__name__} {e}".strip()) from e

    async def instances(self, address: str, project: str | None = None) -> list[InstanceStatus]:
        return (await self.report(address, project)).instances

    async def usage(self, address: str) -> list[Usage]:
        data = await self._request("GET", address, "/v1/agent/usage", timeout=5.0)
        return [Usage.model_validate(item) for item in data["instances"]]

    async def report(self, address: str, project: str | None = None) -> AgentReport:
        path = "/v1/agent/instances" + (f"?project={project}" if project else "")
        data = await self._request("GET", address, path, timeout=3.0)
        ingress = data.get("ingress")
        return AgentReport(
            [InstanceStatus.model_validate(item) for item in data["instances"]],
            frozenset(str(u) for u in ingress) if isinstance(ingress, list) else None,
        )

    async def apply(
        self, address: str, spec: InstanceSpec, term: int, timeout: float = 300.0
    ) -> InstanceStatus:
        data = await self._request(
            "PUT", address, f"/v1/agent/instances/{spec.service}", spec.model_dump(mode="json"), timeout, term
        )
        return InstanceStatus.model_validate(data)

    async def remove(self, address: str, project: str, service: str, term: int) -> None:
        path = f"/v1/agent/instances/{service}?project={project}"
        await self._request("DELETE", address, path, timeout=60.0, term=term)

    async def logs(self, address: str, project: str, service: str, tail: int) -> list[str]:
        data = await self._request(
            "GET", address, f"/v1/agent/instances/{service}/logs?project={project}&tail={tail}"
        )
        return list(data["lines"])

    async def access(self, address: str, service: str, tail: int) -> list[dict[str, Any]]:
        """That node's access log lines of ``service``: ``{"when": unix time, "text": line}``."""
        data = await self._request("GET", address, f"/v1/agent/access/{service}?tail={tail}")
        return list(data["lines"])

    async def backup(self, address: str, project: str, service: str) -> AsyncIterator[bytes]:
        """The node's backup of the instance's volumes (a gzipped tarball), chunk by chunk."""
        url = f"https://{address}/v1/agent/instances/{service}/backup"
        try:
            async with self._session.get(
                url, params={"project": project}, headers=self._headers, timeout=ARCHIVE_TIMEOUT
            ) as resp:
                if resp.status >= 400:
                    raise PeerError(f"{address}: {await _reason(resp)}", resp.status)
                async for chunk in resp.content.iter_chunked(CHUNK):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as e:
            raise PeerError(f"GET {url}: {type(e).__name__} {e}".strip()) from e

    def log_stream(
        self, address: str, project: str, service: str, tail: int, since: float | None, follow: bool
    ) -> AsyncIterator[str]:
        """That node's instance's log lines (``Agent.log_stream`` there), one by one."""
        params = {"project": project, "tail": str(tail), "follow": "true" if follow else "false"}
        if since is not None:
            params["since"] = repr(since)
        return self._lines(address, f"/v1/agent/instances/{service}/logs/stream", params, follow)

    def node_log(self, address: str, tail: int, follow: bool) -> AsyncIterator[str]:
        """That node's own log (``octctl/node_logs.py``), line by line."""
        params = {"tail": str(tail), "follow": "true" if follow else "false"}
        return self._lines(address, "/v1/agent/node/logs", params, follow)

    async def _lines(
        self, address: str, path: str, params: dict[str, str], follow: bool
    ) -> AsyncIterator[str]:
        url = f"https://{address}{path}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=None if follow else 30.0)
        try:
            async with self._session.get(url, params=params, headers=self._headers, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise PeerError(f"{address}: {await _reason(resp)}", resp.status)
                pending = b""
                async for chunk in resp.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise PeerError(f"GET {url}: {type(e).__name__} {e}".strip()) from e

    async def restore(self, address: str, project: str, service: str, archive: Path) -> list[str]:
        """Send ``archive`` for the node to restore into the instance's volumes; the volumes restored."""
        with archive.open("rb") as body:
            return await self._restore(address, f"{service}/restore", project, data=body)

    async def restore_snapshots(
        self, address: str, project: str, service: str, snapshots: dict[str, str]
    ) -> list[str]:
        """Have the node restore the instance's volumes from EBS snapshots; the volumes restored."""
        return await self._restore(
            address, f"{service}/restore-snapshots", project, json={"snapshots": snapshots}
        )

    async def _restore(self, address: str, path: str, project: str, **body: Any) -> list[str]:
        url = f"https://{address}/v1/agent/instances/{path}"
        try:
            async with self._session.put(
                url, params={"project": project}, headers=self._headers, timeout=ARCHIVE_TIMEOUT, **body
            ) as resp:
                if resp.status >= 400:
                    raise PeerError(f"{address}: {await _reason(resp)}", resp.status)
                data = await resp.json(content_type=None)
                return [str(name) for name in data["restored"]]
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as e:
            raise PeerError(f"PUT {url}: {type(e).__name__} {e}".strip()) from e

    async def members(self, address: str) -> MembersResponse:
        return MembersResponse.model_validate(await self._request("GET", address, "/v1/cluster/members"))

    async def join(self, address: str, request: JoinRequest) -> MembersResponse:
        data = await self._request("POST", address, "/v1/cluster/join", request.model_dump(), timeout=30.0)
        return MembersResponse.model_validate(data)


async def _reason(resp: aiohttp.ClientResponse) -> str:
    """The error a node answered with (its JSON ``error``), or the status line."""
    try:
        data = await resp.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        data = None
    reason = data.get("error") if isinstance(data, dict) else None
    return str(reason or f"{resp.status} {resp.reason}")
