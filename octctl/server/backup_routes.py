"""``oct backup`` and ``oct restore``: a service's volumes as a tarball, to the CLI and back.

The node that runs the instance packs and unpacks (``Agent.backup``/``restore``); any other node
the CLI reaches passes the bytes through, chunk by chunk for a backup and as a whole file for a
restore (received first, so a broken upload never reaches the instance's node). What arrives is
bounded before anything is read from it: the token first (as every route), then
:data:`MAX_ARCHIVE` bytes at most, each chunk within ``BODY_TIMEOUT`` of the last.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from aiohttp import web

from octctl.api.models import SnapshotRestoreRequest
from octctl.names import check_name, new_id
from octctl.node import Node
from octctl.peers import CHUNK, PeerError
from octctl.runtime.base import RuntimeFailure
from octctl.server.agent_routes import project_and_service
from octctl.server.http import error, node_of, read_model
from octctl.server.limits import BODY_TIMEOUT
from octctl.state.desired import desired_project
from octctl.state.model import api_address
from octctl.volume_archive import BadArchive

__all__ = [
    "MAX_ARCHIVE",
    "agent_backup",
    "agent_restore",
    "agent_restore_snapshots",
    "service_backup",
    "service_restore",
    "service_restore_snapshots",
]

log = logging.getLogger(__name__)

#: The largest archive a restore accepts.
MAX_ARCHIVE = 64 * 1024**3
ARCHIVE_TYPE = "application/octet-stream"  # (a gzipped tarball)


def _scratch(node: Node) -> Path:
    """A new file name in the node's private folder for archives on their way (0700)."""
    folder = node.data_dir / "archives"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{new_id('a')}.tar.gz"


async def _receive(request: web.Request, dest: Path) -> None:
    if request.content_length is not None and request.content_length > MAX_ARCHIVE:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_ARCHIVE, actual_size=request.content_length)
    size = 0
    with open(dest, "wb", opener=lambda path, flags: os.open(path, flags, 0o600)) as out:
        while True:
            try:
                async with asyncio.timeout(BODY_TIMEOUT):
                    chunk = await request.content.readany()
            except TimeoutError:
                raise web.HTTPRequestTimeout(
                    reason=f"no part of the archive came for {BODY_TIMEOUT:g} s"
                ) from None
            if not chunk:
                return
            size += len(chunk)
            if size > MAX_ARCHIVE:
                raise web.HTTPRequestEntityTooLarge(max_size=MAX_ARCHIVE, actual_size=size)
            await asyncio.to_thread(out.write, chunk)


async def _send_file(request: web.Request, path: Path) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": ARCHIVE_TYPE})
    response.content_length = path.stat().st_size
    await response.prepare(request)
    with path.open("rb") as archive:
        while chunk := await asyncio.to_thread(archive.read, CHUNK):
            await response.write(chunk)
    await response.write_eof()
    return response


def _failure(e: Exception) -> web.Response:
    if isinstance(e, BadArchive):
        return error(422, str(e))
    return error(409, str(e))


async def _backup_here(request: web.Request, project: str, service: str) -> web.StreamResponse:
    node = node_of(request)
    archive = _scratch(node)
    try:
        await node.agent.backup(project, service, archive)
        return await _send_file(request, archive)
    except RuntimeFailure as e:
        return _failure(e)
    finally:
        archive.unlink(missing_ok=True)


async def _restore_here(request: web.Request, project: str, service: str, archive: Path) -> web.Response:
    try:
        restored = await node_of(request).agent.restore(project, service, archive)
    except (RuntimeFailure, BadArchive) as e:
        return _failure(e)
    return web.json_response({"restored": restored})


async def agent_backup(request: web.Request) -> web.StreamResponse:
    project, service = project_and_service(request)
    return await _backup_here(request, project, service)


async def agent_restore(request: web.Request) -> web.Response:
    project, service = project_and_service(request)
    archive = _scratch(node_of(request))
    try:
        await _receive(request, archive)
        return await _restore_here(request, project, service, archive)
    finally:
        archive.unlink(missing_ok=True)


def _placed(node: Node, service: str) -> tuple[str, str]:
    """(project, node id) of the service's one instance: 404/409 with the reason otherwise."""
    view = node.raft.view()
    config = desired_project(view)
    if config is None or service not in {s.name for s in config.project.services}:
        raise web.HTTPNotFound(reason=f"no service {service!r} is deployed")
    if not config.service(service).volumes:
        raise web.HTTPConflict(reason=f"service {service!r} has no volumes")
    placed = view["placements"].get(service)
    if placed is None or placed not in view["nodes"]:
        raise web.HTTPConflict(reason=f"service {service!r} runs on no node now (see `oct status`)")
    return config.project.name, placed


async def service_backup(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    service = check_name("service", request.match_info["service"])
    project, placed = _placed(node, service)
    if placed == node.settings.node:
        return await _backup_here(request, project, service)
    chunks = node.peers.backup(api_address(node.raft.view()["nodes"][placed]), project, service)
    try:
        first = await anext(chunks, b"")
    except PeerError as e:
        return error(e.status or 502, str(e))
    response = web.StreamResponse(headers={"Content-Type": ARCHIVE_TYPE})
    await response.prepare(request)
    await response.write(first)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except PeerError as e:  # the answer has begun: cutting it short is how the CLI learns of it
        log.warning("backup of %s from %s broke off: %s", service, placed, e)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def service_restore(request: web.Request) -> web.Response:
    node = node_of(request)
    service = check_name("service", request.match_info["service"])
    project, placed = _placed(node, service)
    archive = _scratch(node)
    try:
        await _receive(request, archive)
        if placed == node.settings.node:
            return await _restore_here(request, project, service, archive)
        address = api_address(node.raft.view()["nodes"][placed])
        try:
            restored = await node.peers.restore(address, project, service, archive)
        except PeerError as e:
            return error(e.status or 502, str(e))
        return web.json_response({"restored": restored})
    finally:
        archive.unlink(missing_ok=True)


async def _restore_snapshots_here(
    request: web.Request, project: str, service: str, snapshots: dict[str, str]
) -> web.Response:
    try:
        restored = await node_of(request).agent.restore_snapshots(project, service, snapshots)
    except RuntimeFailure as e:
        return _failure(e)
    return web.json_response({"restored": restored})


async def agent_restore_snapshots(request: web.Request) -> web.Response:
    project, service = project_and_service(request)
    body = await read_model(request, SnapshotRestoreRequest)
    return await _restore_snapshots_here(request, project, service, body.snapshots)


async def service_restore_snapshots(request: web.Request) -> web.Response:
    """``oct restore`` of an EBS snapshot backup (aws): done by the node running the service."""
    node = node_of(request)
    service = check_name("service", request.match_info["service"])
    project, placed = _placed(node, service)
    body = await read_model(request, SnapshotRestoreRequest)
    if placed == node.settings.node:
        return await _restore_snapshots_here(request, project, service, body.snapshots)
    address = api_address(node.raft.view()["nodes"][placed])
    try:
        restored = await node.peers.restore_snapshots(address, project, service, body.snapshots)
    except PeerError as e:
        return error(e.status or 502, str(e))
    return web.json_response({"restored": restored})
