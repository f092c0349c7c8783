"""The cluster CA and node certificates (``octctl/tls.py``), and the secrets that carry the CA."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from octctl.node_settings import Secrets
from octctl.tls import (
    certificate_names,
    issue_node_certificate,
    new_ca,
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
