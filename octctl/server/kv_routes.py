"""The key-value store's routes: writes and linearizable reads on the leader, stale reads anywhere."""

from __future__ import annotations

from aiohttp import web

from octctl.api.models import KvEntryView, KvPut
from octctl.node import Node
from octctl.server.http import error, leader_only, node_of, ok, read_model
from octctl.state.kv import KEY_PATTERN, kv_command


def kv_key(request: web.Request) -> str:
    key = request.match_info["key"]
    if not KEY_PATTERN.match(key):
        raise web.HTTPBadRequest(reason="a key is 1-256 characters of letters, digits and _ . - /")
    return key


@leader_only
async def kv_put(request: web.Request) -> web.Response:
    key = kv_key(request)
    body = await read_model(request, KvPut)
    result = await node_of(request).raft.execute(kv_command("kv_put", key=key, value=body.value))
    return ok(KvEntryView.model_validate(result))


@leader_only
async def kv_delete(request: web.Request) -> web.Response:
    key = kv_key(request)
    result = await node_of(request).raft.execute(kv_command("kv_delete", key=key))
    return web.json_response(result, status=200 if result["deleted"] else 404)


async def kv_get(request: web.Request) -> web.StreamResponse:
    """Linearizable by default (the leader answers after a commit barrier); ``?stale=true`` lets
    any node answer at once from its replica, which may lag the leader by a few milliseconds."""
    key = kv_key(request)
    node = node_of(request)
    stale = request.query.get("stale", "").lower() in ("1", "true", "yes")
    if not stale:
        return await _kv_get_linearizable(request)
    return _kv_answer(node, key, stale=True)


@leader_only
async def _kv_get_linearizable(request: web.Request) -> web.Response:
    node = node_of(request)
    await node.raft.barrier()
    return _kv_answer(node, kv_key(request), stale=False)


def _kv_answer(node: Node, key: str, stale: bool) -> web.Response:
    entry = node.raft.machine.kv_get(key)
    if entry is None:
        return error(404, f"no key {key!r}")
    return ok(KvEntryView(key=key, value=entry["value"], revision=entry["revision"], stale=stale))
