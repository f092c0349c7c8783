"""The cluster CA and node certificates (``octctl/tls.py``), and the secrets that carry the CA."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from octctl.node_settings import Secrets
from octctl.tls import (
    certificate_names,
    client_context,
    issue_node_certificate,
    new_ca,
    peer_is_node,
    server_context,
)


def test_the_ca_is_a_p256_ca_that_signs_only_leaf_certificates() -> None:
    _, cert_pem = new_ca("c-1")
    ca = x509.load_pem_x509_certificate(cert_pem.encode())
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert 3600 <= lifetime.days <= 3700


def test_a_node_certificate_names_the_node_and_its_addresses() -> None:
    ca_key, ca_pem = new_ca("c-1")
    _, cert_pem = issue_node_certificate(ca_key, ca_pem, "node-12", ["127.0.0.12", "203.0.113.7"])
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem.encode()))
    assert certificate_names(cert_pem) == ("node-12", ["127.0.0.12", "203.0.113.7", "node-12"])
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert 360 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 370


def test_minted_secrets_hold_a_ca_and_fit_an_ssm_standard_parameter() -> None:
    secrets = Secrets.mint("c-abcdef01")
    assert "BEGIN PRIVATE KEY" in secrets.ca_key and "BEGIN CERTIFICATE" in secrets.ca_cert
    assert len(secrets.model_dump_json().encode()) < 4096 // 2  # SSM standard tier: 4 KB
    assert Secrets.mint().ca_cert != secrets.ca_cert  # a CA per cluster


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
