"""The service mesh's names and this node's certificate for it.

Calls between services go through the proxies of the nodes (:mod:`octctl.served_routes`): the
caller's node proxy carries a connection to an instance on another node through that node's
proxy, over mutual TLS on :data:`octctl.addresses.MESH_PORT`. Both ends present a certificate of
the cluster CA. The server name a hop asks for says which instance it wants
(``<port>.<service>.<project>.mesh``), and the answering node's certificate must match it: it names
each service placed on the node (``*.<service>.<project>.mesh``), so only a node certified for the
service can answer for it. The certificate is issued again when that set changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from octctl.tls import issue_node_certificate


def service_name(project: str, service: str) -> str:
    """The name a node's mesh certificate carries for each service it serves."""
    return f"{service}.{project}.mesh"


def server_name(project: str, service: str, port: int) -> str:
    """The server name (SNI) a hop asks for: one instance of ``service``, at ``port`` on its node."""
    return f"{port}.{service_name(project, service)}"


@dataclass
class MeshIdentity:
    """Issues this node's mesh certificate from the cluster CA, for the services it serves.

    Each node holds the CA key (it issues its API certificate the same way, :mod:`octctl.tls`),
    so no round trip is needed; the certificate is kept while the names stay the same, so an
    unchanged placement never rewrites the proxy's configuration.
    """

    node: str
    address: str
    ca_key: str = field(repr=False)
    ca_cert: str = field(repr=False)
    _issued: tuple[tuple[str, ...], str] | None = field(default=None, repr=False)

    def credentials(self, names: tuple[str, ...]) -> str:
        """The certificate (CN = the node; SANs: its address, the node, and ``*.<name>`` for each
        of ``names``, which the server names of its instances match) and its key, PEM."""
        if self._issued is None or self._issued[0] != names:
            sans = [self.address, *(f"*.{name}" for name in names)]
            key, cert = issue_node_certificate(self.ca_key, self.ca_cert, self.node, sans)
            self._issued = (names, cert + key)
        return self._issued[1]
