"""Every call to the node's provider is counted and timed (``MeteredProvider``), a failing one as
an error before its exception goes on; and HAProxy's ``show stat`` rows become the ingress's
connection and response counters."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from octctl.metrics import NodeFigures, NodeMetrics
from octctl.providers.base import NodeRequest, Provider
from octctl.providers.metered import MeteredProvider


class Flaky(Provider):
    launch_timeout = 42.0

    def reserve(self, request: NodeRequest) -> str:
        return "node-9"

    def provision(self, node: str, request: NodeRequest) -> None:
        raise RuntimeError("InsufficientInstanceCapacity")

    def retire(self, node: str) -> None:
        pass


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_calls_and_errors_are_counted_and_errors_still_raised() -> None:
    metrics = NodeMetrics(NodeFigures)
    provider = MeteredProvider(
        Flaky(), lambda call, ok, seconds: metrics.provider_call("aws", call, ok, seconds)
    )
    assert provider.launch_timeout == 42.0
    assert provider.reserve(None) == "node-9"  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="InsufficientInstanceCapacity"):
        provider.provision("node-9", None)  # type: ignore[arg-type]
    assert provider.public_addresses(["node-9"]) == {}  # (the base's default, counted too)
    found = samples(metrics)
    call = "oct_provider_calls_total"
    assert found[(call, (("call", "reserve"), ("provider", "aws"), ("result", "ok")))] == 1
    assert found[(call, (("call", "provision"), ("provider", "aws"), ("result", "error")))] == 1
    assert found[(call, (("call", "public_addresses"), ("provider", "aws"), ("result", "ok")))] == 1
    assert found[("oct_provider_call_seconds_count", (("call", "provision"), ("provider", "aws")))] == 1


def test_haproxy_counters_become_ingress_metrics() -> None:
    rows = [
        {"pxname": "web_9100", "svname": "FRONTEND", "stot": "12", "hrsp_2xx": ""},
        {"pxname": "db_5432", "svname": "FRONTEND", "stot": "5", "dreq": "3"},
        {"pxname": "web_9100", "svname": "127.0.0.2_20000", "stot": "12"},
        {"pxname": "web_9100", "svname": "BACKEND", "stot": "12", "hrsp_2xx": ""},  # (TCP: no statuses)
        {"pxname": "web_443", "svname": "FRONTEND", "stot": "7"},
        {
            "pxname": "site_web",
            "svname": "BACKEND",
            "stot": "7",
            "hrsp_2xx": "5",
            "hrsp_5xx": "2",
            "hrsp_4xx": "0",
        },
    ]
    metrics = NodeMetrics(lambda: NodeFigures(ingress=rows))
    found = samples(metrics)
    assert found[("oct_ingress_connections_total", (("proxy", "web_9100"),))] == 12
    assert found[("oct_ingress_connections_total", (("proxy", "web_443"),))] == 7
    assert found[("oct_ingress_denied_total", (("proxy", "db_5432"),))] == 3, "callers allow refused"
    responses = {k[1]: v for k, v in found.items() if k[0] == "oct_ingress_responses_total"}
    assert responses == {
        (("code", "2xx"), ("proxy", "site_web")): 5,
        (("code", "4xx"), ("proxy", "site_web")): 0,
        (("code", "5xx"), ("proxy", "site_web")): 2,
    }


def test_every_provider_call_goes_through_the_meter() -> None:
    """A method added to the contract and not to the wrapper would silently skip the provider's
    own implementation (the base's default would answer instead)."""
    public = {name for name in vars(Provider) if not name.startswith("_") and callable(vars(Provider)[name])}
    missing = public - set(vars(MeteredProvider))
    assert not missing, sorted(missing)
    assert MeteredProvider(Flaky(), lambda *_: None).network_disks is False
