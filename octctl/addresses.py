"""Default ports and how a node's addresses are spelled: the bottom of the import graph.

The CLI, the providers, node settings, the wire models and the leader all need these; keeping them
here (importing nothing of oct) lets each of them do so without reaching into a higher layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_API_PORT = 31888
DEFAULT_RAFT_PORT = 31889
DEFAULT_DNS_PORT = 53


def api_address(node: Mapping[str, Any]) -> str:
    """``host:port`` of a node record's HTTP API (what the CLI and the peers client dial)."""
    return f"{node['address']}:{node['api_port']}"


def raft_address(node: Mapping[str, Any]) -> str:
    """``host:port`` of a node record's Raft port: how PySyncObj names a member."""
    return f"{node['address']}:{node['raft_port']}"


def host_port(address: str, default: int) -> tuple[str, int]:
    """Split ``host[:port]``; a bare host (or an IPv6 address, which has several colons) gets ``default``."""
    host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    return (host, int(port)) if port else (address, default)
