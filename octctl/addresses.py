"""Default ports and ``host[:port]`` parsing: the bottom of the import graph.

The CLI, the providers, node settings and the wire models all need these; keeping them here
(importing nothing of oct) lets each of them do so without reaching into a higher layer. A node
record's own addresses are spelled by ``octctl.state.model.api_address``/``raft_address``.
"""

from __future__ import annotations

DEFAULT_API_PORT = 31888
DEFAULT_RAFT_PORT = 31889
DEFAULT_DNS_PORT = 53
#: Where public services' instances listen (the ingress forwards there; octctl/instance_ports.py):
#: below Linux's ephemeral range (32768-60999), above the usual service ports, clear of oct's own.
INSTANCE_PORTS = range(20000, 30000)


def host_port(address: str, default: int) -> tuple[str, int]:
    """Split ``host[:port]``; a bare host (or an IPv6 address, which has several colons) gets ``default``."""
    host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    return (host, int(port)) if port else (address, default)
