"""Every node's Prometheus metrics on a real 3-node cluster, read as Prometheus would: with the
read-only scrape token and the cluster CA from ``oct scrape-config``. The figures follow what
happened (a deploy's requests and commits, the instances each node runs, a real DNS query), one
node leads; and the scrape token opens nothing but ``/v1/metrics`` (the attack: it is tried on
every other route, reads and writes)."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import yaml
from dnslib import DNSRecord
from prometheus_client.parser import text_string_to_metric_families

from octctl.server.openapi import PUBLIC_PATHS, ROUTES
from octctl.tls import client_context
from tests.e2e.harness import Project, http_get, state_record

pytestmark = pytest.mark.e2e

CONFIG = """\
[project]
name = "metrics"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 3

[[project.services]]
name = "web"
runtime = "process"
command = "sleep 3600"
replicas = 2
cpus = 100
memory = 32
"""


def prometheus_client(project: Project) -> httpx.Client:
    """A client that scrapes the project's nodes as `oct scrape-config` tells Prometheus to."""
    (scrape,) = yaml.safe_load(project.oct("scrape-config").stdout)["scrape_configs"]
    return httpx.Client(
        verify=client_context(scrape["tls_config"]["ca"]),
        headers={"Authorization": f"Bearer {scrape['authorization']['credentials']}"},
        timeout=10,
        trust_env=False,
    )


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (labels given must all match), read with the Prometheus
    client's own parser: the whole exposition must parse."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in:\n{text[:2000]}")


def sum_of(texts: list[str], name: str, **labels: str) -> float:
    """The sample ``name{labels}`` summed over scrapes of several nodes (absent counts as 0); at
    least one node must have it."""
    found = []
    for text in texts:
        try:
            found.append(value(text, name, **labels))
        except AssertionError:
            continue
    assert found, f"no node has {name}{labels}"
    return sum(found)


def test_nodes_serve_their_metrics_to_the_scrape_token_and_nothing_else(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("metrics", CONFIG)
    project.oct("deploy")
    record = state_record(project.dir)
    (scrape,) = yaml.safe_load(project.oct("scrape-config").stdout)["scrape_configs"]
    assert scrape["static_configs"][0]["targets"] == record["nodes"]
    assert scrape["metrics_path"] == "/v1/metrics" and scrape["scheme"] == "https"
    token = scrape["authorization"]["credentials"]
    assert token != record["token"]
    as_prometheus = httpx.Client(
        verify=client_context(scrape["tls_config"]["ca"]),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        trust_env=False,
    )
    status = project.status()
    placed = {i["name"]: i["node"] for s in status["services"] for i in s["instances"]}
    nodes = {n["id"]: f"{n['address']}:{n['api_port']}" for n in status["nodes"]}
    leader = next(n["id"] for n in status["nodes"] if n["role"] == "leader")

    # A real DNS query to the leader's node, counted there.
    settings = json.loads((project.dir / ".oct" / "nodes" / leader / "node.json").read_text())
    dns = (settings["address"], settings["dns_port"])
    for _ in range(130):  # all but the first answered from the cache; one in 64 is timed
        DNSRecord.question("web.metrics.oct", "A").send(*dns, timeout=3)
    # A name outside the cluster is forwarded (from loopback) to the node's upstream: timed, whether
    # the upstream answers or the node gives up and says SERVFAIL.
    DNSRecord.question("outside.example", "A").send(*dns, timeout=5)

    with as_prometheus:
        texts = {node: as_prometheus.get(f"https://{address}/v1/metrics") for node, address in nodes.items()}
        for node, answer in texts.items():
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = answer.text
            assert value(text, "oct_raft_leader") == (1.0 if node == leader else 0.0)
            assert value(text, "oct_raft_term") >= 1
            assert value(text, "oct_raft_applied_index") >= 1
            for instance, on in placed.items():
                if on == node:
                    assert value(text, "oct_instance_running", instance=instance, runtime="process") == 1
                    assert value(text, "oct_instance_healthy", instance=instance) == 1
        lead = texts[leader].text
        # The one deploy, counted by the node that served it (the leader of the moment, which may
        # have changed since) and once more by a follower if one forwarded it.
        deploys = {"method": "POST", "route": "/v1/deploy", "status": "202"}
        scrapes = [t.text for t in texts.values()]
        assert 1 <= sum_of(scrapes, "oct_api_request_seconds_count", **deploys) <= 2
        assert value(lead, "oct_raft_commit_seconds_count") >= 3
        assert value(lead, "oct_leader_pass_seconds_count") >= 1
        assert value(lead, "oct_raft_leader_changes_total") >= 1
        assert value(lead, "oct_dns_queries_total") >= 3
        assert value(lead, "oct_dns_cached_total") >= 1
        assert value(lead, "oct_dns_responses_total", rcode="NOERROR") >= 1
        assert value(lead, "oct_dns_forward_seconds_count") >= 1
        assert value(lead, "oct_dns_answer_seconds_count") >= 2
        assert value(lead, "oct_dns_zone_build_seconds_count") >= 1

        # The attack: the scrape token on every other route, reads and writes alike.
        opened = []
        base = f"https://{nodes[leader]}"
        for route in ROUTES:
            if route.path in PUBLIC_PATHS or route.openapi_path == "/v1/metrics":
                continue
            path = re.sub(r"\{(\w+)(:[^}]*)?\}", "x", route.path)
            answer = as_prometheus.request(route.method, base + path, params={"project": "metrics"}, json={})
            if answer.status_code != 401:
                opened.append(f"{route.method} {route.path}: {answer.status_code}")
        assert opened == [], "the scrape token opened other routes"
        assert (
            as_prometheus.get(f"{base}/v1/metrics", headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )


def test_ingress_requests_and_provider_calls_are_counted(make_project) -> None:  # type: ignore[no-untyped-def]
    """The quickstart: its `web` is public on every node's ingress, and the leader asked the local
    provider for the two other nodes."""
    project: Project = make_project("examples/quickstart")
    project.oct("deploy")
    status = project.status()
    follower = next(n for n in status["nodes"] if n["role"] == "follower")
    for _ in range(5):
        assert "Hello" in http_get(f"http://{follower['address']}:9100/")
    with prometheus_client(project) as prometheus:

        def scrape_of(node: dict) -> str:
            return prometheus.get(f"https://{node['address']}:{node['api_port']}/v1/metrics").text

        assert value(scrape_of(follower), "oct_ingress_connections_total", proxy="web_9100") >= 5
        # Counters live in the process that made the calls; leadership may have moved since, so
        # the calls are summed over every node, as a Prometheus query over the targets would.
        scrapes = [scrape_of(node) for node in status["nodes"]]
        calls = {"provider": "local", "call": "provision", "result": "ok"}
        assert sum_of(scrapes, "oct_provider_calls_total", **calls) >= 2
        assert sum_of(scrapes, "oct_provider_call_seconds_count", provider="local", call="reserve") >= 2
