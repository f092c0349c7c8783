"""Attacks on the API's TLS, against a real `oct-ctl` node started by `oct deploy`.

The API used to be plain HTTP: the bearer token and rendered ``{{ env.X }}`` values crossed the
network in clear, and anything answering on a node's address was believed. Now every node serves
HTTPS with a certificate from its cluster's CA, the CLI pins that CA (and nothing else), and the
agent routes also need the caller to present a node certificate from the same CA (mutual TLS).
"""

from __future__ import annotations

import re
import socket
import ssl
import warnings

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from octcli.client import OctClient
from octcli.errors import OctError
from octctl.node_settings import Secrets, read_node_files
from octctl.server.openapi import ROUTES
from octctl.tls import client_context, issue_node_certificate
from tests.e2e.conftest import make_project  # noqa: F401  (the fixture, for this folder too)
from tests.e2e.harness import Project, api_client, https_client, node_tls, services_by_name, state_record
from tests.security.one_node import one_sleeper

pytestmark = [pytest.mark.security, pytest.mark.e2e]

PROJECT = "tls"


def deployed(make_project) -> tuple[Project, str]:  # type: ignore[no-untyped-def]  # noqa: F811
    """A one-node cluster with a running service, and that node's API address."""
    project = make_project(PROJECT, one_sleeper(PROJECT))
    project.oct("deploy", "--timeout", "60")
    status = project.status()
    assert status["deployment"]["state"] == "succeeded", status["deployment"]
    assert services_by_name(status)["sleeper"]["state"] == "running"
    (api,) = state_record(project.dir)["nodes"]
    return project, api


def host_port(api: str) -> tuple[str, int]:
    host, _, port = api.rpartition(":")
    return host, int(port)


def test_plain_http_gets_no_http_answer(make_project) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    project, api = deployed(make_project)
    token = state_record(project.dir)["token"]
    # A raw plain-HTTP request, as a client without TLS would send it: the node reads it as a broken
    # TLS handshake and never answers in HTTP (it sends a TLS alert or nothing, then closes).
    with socket.create_connection(host_port(api), timeout=10) as raw:
        raw.sendall(
            f"GET /v1/status HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        answer = b""
        try:
            while chunk := raw.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
    assert not answer.startswith(b"HTTP/"), answer[:200]
    assert b"Bearer" not in answer and b"cluster" not in answer
    # And through an ordinary HTTP client: no response at all.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{api}/v1/health", timeout=10, headers={"Authorization": f"Bearer {token}"})
    # Over HTTPS with the pinned CA, the same node answers.
    with api_client(project.dir) as client:
        assert client.get("/v1/status").status_code == 200


def test_a_client_pinning_another_clusters_ca_refuses_the_node(make_project) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    project, api = deployed(make_project)
    record = state_record(project.dir)
    impostor_ca = Secrets.mint("c-other").ca_cert  # the CA of a second cluster
    with https_client(impostor_ca, timeout=10) as other, pytest.raises(httpx.ConnectError) as caught:
        other.get(f"https://{api}/v1/health")
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    # The CLI's client: the node is not ours, the token is never sent.
    with (
        OctClient([api], record["token"], impostor_ca, retry_for=0) as client,
        pytest.raises(OctError) as refused,
    ):
        client.status()
    assert "another cluster" in str(refused.value)
    # A record from before TLS (no CA) is refused outright, never downgraded to plain HTTP.
    with pytest.raises(OctError, match="no cluster CA"):
        OctClient([api], record["token"], None)
    # With the right CA, it works.
    with OctClient([api], record["token"], record["ca_cert"], retry_for=0) as client:
        assert client.status().deployment is not None


def test_agent_routes_need_a_node_certificate(make_project) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    project, api = deployed(make_project)
    (folder,) = sorted((project.dir / ".oct").glob("nodes/*"))
    _, secrets = read_node_files(folder)
    headers = {"Authorization": f"Bearer {secrets.token}"}
    agent = f"https://{api}/v1/agent/instances?project={PROJECT}"
    routes = [
        ("GET", agent),
        ("GET", f"https://{api}/v1/agent/instances/sleeper/logs?project={PROJECT}&tail=5"),
        ("DELETE", f"https://{api}/v1/agent/instances/sleeper?project={PROJECT}"),
        ("PUT", f"https://{api}/v1/agent/instances/sleeper"),
        ("GET", f"https://{api}/v1/agent/instances/sleeper/backup?project={PROJECT}"),
        ("GET", f"https://{api}/v1/agent/instances/sleeper/logs/stream?project={PROJECT}&follow=true"),
        ("GET", f"https://{api}/v1/agent/node/logs?follow=true"),
        ("PUT", f"https://{api}/v1/agent/instances/sleeper/restore?project={PROJECT}"),
        ("PUT", f"https://{api}/v1/agent/instances/sleeper/restore-snapshots?project={PROJECT}"),
        ("GET", f"https://{api}/v1/agent/access/sleeper?tail=5"),
        ("GET", f"https://{api}/v1/agent/usage"),
    ]
    # (every agent route of the API's table is tried: a new one must be added here)
    agent_routes = {(r.method, r.openapi_path) for r in ROUTES if r.path.startswith("/v1/agent/")}
    tried = {(m, re.sub(r"https://[^/]+|\?.*", "", u).replace("/sleeper", "/{service}")) for m, u in routes}
    assert agent_routes <= tried, agent_routes - tried

    # The right token, the right CA, but no client certificate: 403 on every agent route.
    with https_client(secrets.ca_cert, timeout=10) as no_cert:
        for method, url in routes:
            answer = no_cert.request(method, url, headers={**headers, "X-Oct-Term": "1"}, json={})
            assert answer.status_code == 403, (method, url, answer.text)
            assert "node certificate" in answer.json()["error"]
        # The rest of the API is still the CLI's (token only).
        assert no_cert.get(f"https://{api}/v1/status", headers=headers).status_code == 200

    # A node certificate from another cluster's CA: the handshake itself fails.
    other = Secrets.mint("c-other")
    key, cert = issue_node_certificate(other.ca_key, other.ca_cert, "intruder", ["127.0.0.1"])
    foreign = httpx.Client(verify=client_context(secrets.ca_cert, cert, key), timeout=10, trust_env=False)
    with foreign, pytest.raises(httpx.TransportError):
        foreign.get(agent, headers=headers).raise_for_status()

    # A certificate from the cluster CA (what every node issues itself): served.
    with httpx.Client(verify=node_tls(secrets), timeout=10, trust_env=False) as node:
        listed = node.get(agent, headers=headers)
        assert listed.status_code == 200, listed.text
        assert [i["service"] for i in listed.json()["instances"]] == ["sleeper"]
        # ... and still not without the token.
        assert node.get(agent).status_code == 401

    # The real cluster, whose leader drives agents over mutual TLS, still deploys a change.
    project.config.write_text(one_sleeper(PROJECT).replace("time.sleep(600)", "time.sleep(601)"))
    project.oct("deploy", "--timeout", "60")
    status = project.status()
    assert status["deployment"]["state"] == "succeeded", status["deployment"]
    assert services_by_name(status)["sleeper"]["state"] == "running"


def test_the_node_serves_a_certificate_of_its_cluster_ca_naming_it(make_project) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    project, api = deployed(make_project)
    (folder,) = sorted((project.dir / ".oct").glob("nodes/*"))
    settings, secrets = read_node_files(folder)
    record = state_record(project.dir)
    assert record["ca_cert"] == secrets.ca_cert  # the CLI pins the CA the nodes hold
    assert secrets.ca_key not in (project.dir / "state.json").read_text()  # the CLI has no CA key

    served = x509.load_pem_x509_certificate(ssl.get_server_certificate(host_port(api), timeout=10).encode())
    ca = x509.load_pem_x509_certificate(secrets.ca_cert.encode())
    served.verify_directly_issued_by(ca)  # raises unless the cluster CA signed it
    assert served.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == settings.node
    san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert settings.node in san.get_values_for_type(x509.DNSName)
    assert settings.address in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    usages = served.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
    assert not served.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca_constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert ca_constraints.ca and ca_constraints.path_length == 0

    # The handshake is TLS 1.2 or later, and the CA alone is enough to verify it.
    with (
        socket.create_connection(host_port(api), timeout=10) as raw,
        client_context(secrets.ca_cert).wrap_socket(raw) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # TLS 1.1 is refused by the node: this client would speak it (security level 0 lets OpenSSL
    # offer it), the node ends the handshake (an alert, or just closing).
    old = client_context(secrets.ca_cert)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with (
        socket.create_connection(host_port(api), timeout=10) as raw,
        pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|UNEXPECTED_EOF"),
    ):
        old.wrap_socket(raw)
