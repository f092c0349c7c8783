"""HTTPS through a real HAProxy with a certificate really issued over ACME, by a real CA (Caddy's
``acme_server``) that checked the challenge the proxy answered: served over plain HTTP until the
certificate exists, then over TLS (verified against that CA's root only), HTTP redirected, unknown
names and challenges refused. Needs root (ports 80 and 443) and caddy."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from octctl.ingress.acme_orders import AcmeEndpoint, AcmeError, Order, new_key_pem
from octctl.ingress.haproxy import Haproxy
from octctl.ingress.routes import IngressRoutes, Site, Web
from tests.acme_ca import AcmeCa, acme_ca
from tests.integration.http_instances import fetch_from, instances

#: Ports 80 and 443 of an address no other test binds.
ADDRESS = "127.0.0.117"
NAME = "web.example.test"


async def fetch(
    port: int, host: str, path: str = "/", tls: ssl.SSLContext | None = None
) -> tuple[int, str, str]:
    return await fetch_from(ADDRESS, port, host, path, tls)


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Haproxy]:
    haproxy = Haproxy(tmp_path / "ingress", drain_seconds=5)
    yield haproxy
    await haproxy.stop()


@pytest.fixture
def ca(tmp_path: Path) -> AsyncIterator[AcmeCa]:
    with acme_ca(tmp_path / "ca") as running:
        running.point(NAME, ADDRESS)
        yield running


async def test_a_site_gets_a_certificate_over_acme_and_is_served_over_https(
    proxy: Haproxy, ca: AcmeCa
) -> None:
    (instance,), (upstream,) = await instances("hello from web")
    site = Site("web", (NAME,), (upstream,))

    # Before its certificate: plain HTTP on 80, by name; another name is refused.
    await proxy.apply(IngressRoutes(ADDRESS, web=Web((site,))))
    assert await fetch(80, NAME) == (200, "", "hello from web")
    assert (await fetch(80, "other.example.test"))[0] == 404

    endpoint = AcmeEndpoint(ca.directory, ca_pem=ca.root.read_text())
    with Order(endpoint, new_key_pem(), None, [NAME]) as order:
        challenges = await asyncio.to_thread(order.begin)
        answers = tuple((c.token, c.validation) for c in challenges)
        await proxy.apply(IngressRoutes(ADDRESS, web=Web((site,), answers)))
        token, answer = answers[0]
        assert await fetch(80, NAME, f"/.well-known/acme-challenge/{token}") == (200, "", answer)
        issued = await asyncio.to_thread(order.finish, 30)
    assert issued.names == (NAME,)

    secure = replace(site, certificate=issued.fullchain + issued.key)
    await proxy.apply(IngressRoutes(ADDRESS, web=Web((secure,))))
    trust = ca.ssl_context()
    assert await fetch(443, NAME, tls=trust) == (200, "", "hello from web")
    assert await fetch(80, NAME, "/path?q=1") == (301, f"https://{NAME}/path?q=1", "")
    # Another name: refused on 443 (and its TLS handshake gets this site's certificate, which does
    # not name it: a verifying client stops there).
    with pytest.raises(ssl.SSLCertVerificationError):
        await fetch(443, "other.example.test", tls=trust)
    no_check = ssl.create_default_context()
    no_check.check_hostname, no_check.verify_mode = False, ssl.CERT_NONE
    assert (await fetch(443, "other.example.test", tls=no_check))[0] == 404
    # A finished challenge is no longer answered, and nothing else under its path is forwarded.
    assert (await fetch(80, NAME, f"/.well-known/acme-challenge/{token}"))[0] == 404
    # The key is on disk only in the proxy's private folder, readable by its owner alone.
    files = list(proxy.directory.glob("certificates-*/web.pem"))
    assert len(files) == 1 and files[0].stat().st_mode & 0o077 == 0
    await proxy.stop()
    assert list(proxy.directory.glob("certificates-*")) == [], "no key left once the proxy stops"
    await instance.stop()


async def test_a_challenge_nobody_answers_fails_the_order_with_the_cas_reason(
    proxy: Haproxy, ca: AcmeCa
) -> None:
    (instance,), (upstream,) = await instances("web")
    await proxy.apply(IngressRoutes(ADDRESS, web=Web((Site("web", (NAME,), (upstream,)),))))
    endpoint = AcmeEndpoint(ca.directory, ca_pem=ca.root.read_text())
    with Order(endpoint, new_key_pem(), None, [NAME]) as order:
        await asyncio.to_thread(order.begin)
        with pytest.raises(AcmeError, match="not issued"):
            await asyncio.to_thread(order.finish, 8)
    await instance.stop()


async def test_an_untrusted_directory_is_refused(ca: AcmeCa) -> None:
    """Without the private CA's root, the directory's own certificate is not trusted."""
    with (
        Order(AcmeEndpoint(ca.directory), new_key_pem(), None, [NAME]) as order,
        pytest.raises(AcmeError) as refused,
    ):
        await asyncio.to_thread(order.begin)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
