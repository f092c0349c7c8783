"""The cluster's key-value store: small values applications and operators share through oct.

Kept apart from :class:`~octctl.state.model.ClusterState` on purpose. KV writes can come thousands
per second; if they lived in the cluster state, each one would invalidate the cached state view and
the DNS zone built from it. Like the cluster state, it changes only through deterministic commands
applied by the Raft state machine.
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

#: Keys are path-like so they can be namespaced (``app/feature-flag``); no spaces, no control bytes.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.\-/]{1,256}$")
#: What one value may weigh in the replicated log, in UTF-8 bytes (the API refuses more up front).
MAX_VALUE_BYTES = 64 * 1024


class KvEntry(TypedDict):
    value: str
    revision: int


class KvState(TypedDict):
    revision: int  # bumped by every write or delete; the revision of the store as a whole
    items: dict[str, KvEntry]


def empty_kv() -> KvState:
    return {"revision": 0, "items": {}}


def kv_command(op: str, **args: Any) -> dict[str, Any]:
    return {"op": op, "args": args}


def apply_kv(kv: KvState, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Apply one ``kv_put`` / ``kv_delete``; like cluster commands, errors are returned, not raised."""
    key = args.get("key")
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        return {"error": f"invalid key {key!r}"}
    if op == "kv_put":
        value = args.get("value")
        if not isinstance(value, str):
            return {"error": "value must be a string"}
        if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
            return {"error": f"value is over {MAX_VALUE_BYTES} bytes in UTF-8"}
        kv["revision"] += 1
        kv["items"][key] = {"value": value, "revision": kv["revision"]}
        return {"key": key, "value": value, "revision": kv["revision"]}
    if op == "kv_delete":
        if kv["items"].pop(key, None) is None:
            return {"key": key, "deleted": False, "revision": kv["revision"]}
        kv["revision"] += 1
        return {"key": key, "deleted": True, "revision": kv["revision"]}
    return {"error": f"unknown kv command {op!r}"}
