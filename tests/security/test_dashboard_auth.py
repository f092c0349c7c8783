"""Attacks on the web dashboard of a real node: getting in without a login link, with a used,
expired, foreign or forged one, with the API token, or with a forged cookie; using the
dashboard's cookie on the API; reaching files through the static route; and a service that prints
a script into its log (docs/security.md)."""

from __future__ import annotations

import time

import httpx
import pytest

from octctl.ui.login import COOKIE, LINK_SECONDS, Logins
from tests.e2e.harness import https_client
from tests.e2e.test_api import Cluster, cluster, config, wait_deployed
from tests.wait import wait_until

__all__ = ["cluster"]  # the real single-node cluster fixture of the API tests

pytestmark = [pytest.mark.security, pytest.mark.e2e]

PAGES = ("/ui", "/ui/part/nodes", "/ui/part/events", "/ui/services/sleeper/logs")


def link(c: Cluster) -> str:
    answer = c.client.post("/v1/ui/link", json={})
    assert answer.status_code == 200, answer.text
    return answer.json()["path"]


def browser(c: Cluster, cookie: str | None = None) -> httpx.Client:
    """A client that knows only the CA, as a browser that was shown the link (or holds ``cookie``)."""
    cookies = {COOKIE: cookie} if cookie is not None else None
    return https_client(c.secrets.ca_cert, timeout=10, base_url=c.base, cookies=cookies)


def log_in(c: Cluster) -> httpx.Client:
    b = browser(c)
    answer = b.get(link(c))
    assert answer.status_code == 303 and answer.headers["location"] == "/ui"
    assert b.cookies.get(COOKIE)
    return b


def refused(answer: httpx.Response, cluster_id: str = "c-apitest") -> bool:
    return answer.status_code in (401, 403) and cluster_id not in answer.text


def test_no_way_in_without_a_fresh_link_of_this_node(cluster: Cluster) -> None:
    stranger = browser(cluster)
    for page in PAGES:
        assert refused(stranger.get(page)), page
        # The API token is not a dashboard login (it must never be needed in a browser).
        assert refused(stranger.get(page, headers={"Authorization": f"Bearer {cluster.secrets.token}"}))

    path = link(cluster)
    assert cluster.secrets.token not in path
    first, second = browser(cluster), browser(cluster)
    assert first.get(path).status_code == 303
    assert refused(second.get(path))  # a copied link, used once already
    assert first.get("/ui").status_code == 200 and "c-apitest" in first.get("/ui").text

    token = cluster.secrets.token
    for code in (
        Logins(token, "node-elsewhere").link_code(),  # made for another node
        Logins(token, cluster.settings.node).link_code(now=time.time() - LINK_SECONDS - 1),  # expired
        Logins("not-the-token", cluster.settings.node).link_code(),  # forged without the token
        "1" * 12 + "." + "A" * 22 + "." + "B" * 43,  # the right shape, a made-up MAC
        "x" * 5_000,  # junk, too long to parse
    ):
        assert refused(browser(cluster).get("/ui/login", params={"code": code}))
    assert refused(browser(cluster).get("/ui/login"))


def test_forged_cookies_are_refused_and_the_cookie_opens_no_api(cluster: Cluster) -> None:
    b = log_in(cluster)
    session = b.cookies[COOKIE]
    assert browser(cluster, session).get("/ui").status_code == 200  # (the way forged ones are sent)
    token = cluster.secrets.token
    for forged in (
        Logins("not-the-token", "any").redeem(Logins("not-the-token", "any").link_code()),
        session[:-2] + ("AA" if not session.endswith("AA") else "BB"),
        "9" * 12 + session[session.index(".") :],  # a later expiry with the old MAC
    ):
        assert forged
        assert refused(browser(cluster, forged).get("/ui"))
    expired = Logins(token, cluster.settings.node).redeem(
        Logins(token, cluster.settings.node).link_code(now=time.time() - 9 * 3600), now=time.time() - 9 * 3600
    )
    assert refused(browser(cluster, expired).get("/ui"))
    # The dashboard's cookie is not the API's credential, whatever route it is sent to.
    for route in ("/v1/status", "/v1/events", "/v1/kv/k"):
        assert b.get(route).status_code == 401
    assert b.post("/v1/destroy", json={}).status_code == 401
    assert cluster.client.get("/v1/status").json()["cluster"] == "c-apitest"


def test_the_cookie_and_pages_are_locked_down(cluster: Cluster) -> None:
    b = browser(cluster)
    answer = b.get(link(cluster))
    cookie = answer.headers["set-cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"):
        assert attribute in cookie
    page = b.get("/ui")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"  # the login code leaks nowhere
    assert page.headers["cache-control"] == "no-store"
    # The static route serves its two files and nothing else, however the path is spelled.
    assert b.get("/ui/static/oct.css").status_code == 200
    for sneaky in ("/ui/static/..%2f..%2fnode.json", "/ui/static/%2e%2e/secrets.json", "/ui/../v1/status"):
        answer = b.get(sneaky)
        assert answer.status_code in (401, 404), sneaky
        assert cluster.secrets.token not in answer.text and "BEGIN" not in answer.text


def test_a_script_in_a_log_is_shown_not_run(cluster: Cluster) -> None:
    command = "sh -c 'echo \"<script>alert(1)</script><img src=x onerror=alert(2)>\"; sleep 600'"
    deployed = cluster.client.post("/v1/deploy", json={"config": config(command=command)}).json()
    assert wait_deployed(cluster, deployed["deployment"])["deployment"]["state"] == "succeeded"
    b = log_in(cluster)
    page = wait_until(
        lambda: b.get("/ui/services/sleeper/logs").text, until=lambda text: "alert(1)" in text, timeout=20
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<script>alert" not in page and "<img src=x" not in page
