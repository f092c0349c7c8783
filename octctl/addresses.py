"""Default ports and ``host[:port]`` parsing: the bottom of the import graph.

The CLI, the providers, node settings and the wire models all need these; keeping them here
(importing nothing of oct) lets each of them do so without reaching into a higher layer. A node
record's own addresses are spelled by ``octctl.state.model.api_address``/``raft_address``.
"""

from __future__ import annotations

DEFAULT_API_PORT = 31888
DEFAULT_RAFT_PORT = 31889
DEFAULT_DNS_PORT = 53
#: Where each node's proxy takes the service mesh's mutual-TLS hops from other nodes.
MESH_PORT = 31890
#: Where public services' instances listen (the ingress forwards there; octctl/instance_ports.py):
#: below Linux's ephemeral range (32768-60999), above the usual service ports, clear of oct's own.
INSTANCE_PORTS = range(20000, 30000)


def host_port(address: str, default: int) -> tuple[str, int]:
    """Split ``host[:port]``; a bare host (or an IPv6 address, which has several colons) gets ``default``."""
    host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    return (host, int(port)) if port else (address, default)


def container_address(local_address: str) -> str:
    """A local node's second address, the one containers can reach: ``127.0.0.N`` -> ``198.18.0.N``.

    A container's 127.0.0.N is its own loopback, so a local node's ingress also listens on an
    address outside 127/8 (RFC 2544's benchmarking range: never routed), which a container reaches
    through its network's gateway like any host address; ``{{ services.X.ip }}`` names it there.
    """
    return "198.18.0." + local_address.rsplit(".", 1)[-1]
