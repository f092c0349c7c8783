"""TLS handshakes on loopback with the contexts of ``octctl/tls.py``: nodes and other clients are
told apart by their certificates. Certificate contents are checked in ``tests/unit/test_tls.py``."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
from cryptography import x509

from octctl.tls import client_context, issue_node_certificate, new_ca, peer_is_node, server_context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[bool, str | None]:
    """One TLS handshake on loopback: (the server saw a verified node certificate, TLS version)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bool] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                seen.append(peer_is_node(_Transport(tls)))
        except (ssl.SSLError, OSError):
            seen.append(False)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(socket.create_connection(listener.getsockname(), timeout=5)) as tls:
            version = tls.version()
    finally:
        thread.join(timeout=5)
        listener.close()
    return seen[0], version


class _Transport:
    def __init__(self, tls: ssl.SSLSocket) -> None:
        self.tls = tls

    def get_extra_info(self, name: str) -> object:
        return self.tls.getpeercert() if name == "peercert" else None


def test_contexts_pin_the_cluster_ca_and_tell_nodes_from_other_clients() -> None:
    ca_key, ca_pem = new_ca("c-1")
    key, cert = issue_node_certificate(ca_key, ca_pem, "node-1", ["127.0.0.1"])
    server = server_context(cert, key, ca_pem)
    # The CLI: the CA only, no certificate of its own; verifies the node whatever address it used.
    assert handshake(server, client_context(ca_pem))[0] is False
    # Another node: presents its certificate from the same CA.
    other_key, other_cert = issue_node_certificate(ca_key, ca_pem, "node-2", ["127.0.0.2"])
    node, version = handshake(server, client_context(ca_pem, other_cert, other_key))
    assert node is True and version in ("TLSv1.2", "TLSv1.3")
    # A client that pins another cluster's CA refuses the node.
    _, foreign_ca = new_ca("c-2")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, client_context(foreign_ca))
    # No system CAs are trusted.
    assert [c["subject"] for c in client_context(ca_pem).get_ca_certs()] == [
        x509_subject(ca_pem)  # only the pinned one
    ]


def x509_subject(pem: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    names = {"O": "organizationName", "CN": "commonName"}
    return tuple(((names[attr.rfc4514_attribute_name], str(attr.value)),) for attr in cert.subject)
