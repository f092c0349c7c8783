"""TLS for every control connection: the cluster CA, node certificates, server and client contexts.

Each cluster has its own certificate authority, minted with the other cluster secrets
(:meth:`octctl.node_settings.Secrets.mint`) and kept where they are kept. Every node holds the CA
key, as it already holds the API token and the Raft password (which grant the same power), and at
start issues itself a certificate for its own addresses: a node's certificate is issued by the node
that has proven membership by holding the cluster secrets.

- The API is served over TLS only (:func:`server_context`); the CLI and the nodes trust the
  cluster CA and nothing else (:func:`client_context`).
- Nodes present their certificate when they call each other (mutual TLS); agent routes refuse a
  caller without one (:func:`peer_is_node`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_DAYS",
    "NODE_DAYS",
    "NodeIdentity",
    "certificate_names",
    "client_context",
    "issue_node_certificate",
    "new_ca",
    "peer_is_node",
    "server_context",
]

CA_DAYS = 3650
NODE_DAYS = 365
#: Certificates start this long before "now", so a node whose clock is a little behind accepts them.
BACKDATE = datetime.timedelta(hours=1)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """Signatures only; the CA also signs certificates (and revocation lists), a node never does."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def new_ca(cluster: str) -> tuple[str, str]:
    """A new cluster CA: ``(key_pem, cert_pem)``, ECDSA P-256, CA:TRUE pathlen 0, ~10 years."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "oct"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"oct cluster CA {cluster}"[:64]),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), _cert_pem(cert)


def _san(addresses: list[str], node: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for address in dict.fromkeys(addresses):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    names.append(x509.DNSName(node))
    return names


def issue_node_certificate(
    ca_key_pem: str, ca_cert_pem: str, node: str, addresses: list[str]
) -> tuple[str, str]:
    """A certificate for ``node``: ``(key_pem, cert_pem)``, CN=node, SANs: ``addresses`` (IPs, or
    DNS names for anything that is not an IP) and ``DNS:<node>``; serverAuth and clientAuth, ~1 year.
    """
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the cluster CA key is not an EC key")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=NODE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_san(addresses, node)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _key_pem(key), _cert_pem(cert)


def _load_chain(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """``load_cert_chain`` reads files only: write them to a private temporary folder and delete them."""
    with tempfile.TemporaryDirectory(prefix="oct-tls-") as folder:  # mode 0700
        cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
        for path, text in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        context.load_cert_chain(cert_path, key_path)


def server_context(cert_pem: str, key_pem: str, ca_pem: str) -> ssl.SSLContext:
    """The API's TLS: TLS 1.2 or later, the node's certificate; a client certificate is optional
    but, when one is presented, it must chain to the cluster CA (and to nothing else)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert_pem, key_pem)
    context.load_verify_locations(cadata=ca_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(ca_pem: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client's TLS that trusts the cluster CA only (no system CAs), with ``cert``/``key`` (a node
    certificate) presented for mutual TLS when given.

    Host name checking is off on purpose: the CLI reaches AWS nodes by their public IP, test
    harnesses reach nodes through mapped addresses, and neither is always in the certificate. What
    authenticates a node is the pinned cluster CA: only a holder of the cluster's secrets can issue
    a certificate that chains to it. The certificate chain is still verified (``CERT_REQUIRED``).
    """
    context = ssl.create_default_context(cadata=ca_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if cert is not None and key is not None:
        _load_chain(context, cert, key)
    return context


def peer_is_node(transport: Any) -> bool:
    """True when the peer of ``transport`` (``request.transport``) presented a certificate that chains
    to the cluster CA and is meant for a client (the server context verified it during the
    handshake; without a valid one ``getpeercert()`` is empty)."""
    if transport is None:
        return False
    peercert = transport.get_extra_info("peercert")
    if not peercert:
        ssl_object = transport.get_extra_info("ssl_object")
        peercert = ssl_object.getpeercert() if ssl_object is not None else None
    return bool(peercert)


@dataclass(frozen=True)
class NodeIdentity:
    """A node's certificate, issued by itself from the cluster CA at start; kept in memory only."""

    node: str
    key_pem: str = field(repr=False)
    cert_pem: str
    ca_pem: str

    @classmethod
    def issue(cls, ca_key_pem: str, ca_cert_pem: str, node: str, addresses: list[str]) -> NodeIdentity:
        key_pem, cert_pem = issue_node_certificate(ca_key_pem, ca_cert_pem, node, addresses)
        return cls(node=node, key_pem=key_pem, cert_pem=cert_pem, ca_pem=ca_cert_pem)

    def server_context(self) -> ssl.SSLContext:
        return server_context(self.cert_pem, self.key_pem, self.ca_pem)

    def client_context(self) -> ssl.SSLContext:
        """For calls to other nodes: trusts the cluster CA, presents this node's certificate."""
        return client_context(self.ca_pem, self.cert_pem, self.key_pem)


def certificate_names(cert_pem: str | bytes) -> tuple[str, list[str]]:
    """The common name and the subject alternative names (as text) of a PEM certificate."""
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    cert = x509.load_pem_x509_certificate(data)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in san]
    except x509.ExtensionNotFound:
        names = []
    return (str(common[0].value) if common else ""), names
