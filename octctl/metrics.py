"""This node's Prometheus metrics (``GET /v1/metrics``, text format; docs/operations.md#metrics).

Histograms and counters are fed as things happen (API requests, Raft commits, leader passes,
leadership changes), through small callbacks the parts are given, so no part imports this
module. What a state already holds (Raft indexes, the DNS server's counts, the instances this
node runs) is read when Prometheus scrapes, by a collector of its own: it costs nothing between
scrapes. Each node has its own registry, not the process-wide default, so several nodes in one
test process never mix their figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from octctl.runtime.base import InstanceStatus, Usage

__all__ = ["CONTENT_TYPE", "NodeFigures", "NodeMetrics", "dns_counts"]

# ``*_created`` series (when each counter began) double the output and say nothing a restart of
# oct-ctl does not (see process start time); Prometheus does not need them.
disable_created_metrics()

#: Prometheus' text exposition format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: From a fast local commit to a slow cross-zone one; API calls and leader passes alike.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: A node answers its own names in tens of microseconds.
DNS_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01)
#: The DNS server's counts (``octctl.dns.stats.Stats`` fields) by the rcode they answered with.
DNS_RCODES = {"answered": "NOERROR", "nxdomain": "NXDOMAIN", "servfail": "SERVFAIL", "refused": "REFUSED"}


@dataclass
class NodeFigures:
    """What the collector reads at a scrape, filled in by the node just before."""

    term: int = 0
    commit_index: int = 0
    applied_index: int = 0
    is_leader: bool = False
    dns: dict[str, int] = field(default_factory=dict)
    instances: Sequence[InstanceStatus] = ()
    usage: Sequence[Usage] = ()
    ingress: Sequence[Mapping[str, str]] = ()  # HAProxy's ``show stat`` rows


class _StateCollector(Collector):
    def __init__(self, figures: Callable[[], NodeFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        now = self._figures()
        yield GaugeMetricFamily("oct_raft_term", "The Raft term this node is in.", value=now.term)
        yield GaugeMetricFamily(
            "oct_raft_commit_index", "The highest Raft log index known committed.", value=now.commit_index
        )
        yield GaugeMetricFamily(
            "oct_raft_applied_index", "The highest Raft log index applied here.", value=now.applied_index
        )
        yield GaugeMetricFamily("oct_raft_leader", "1 while this node leads.", value=int(now.is_leader))
        yield from _dns(now.dns)
        yield from _instances(now.instances)
        yield from _usage(now.usage)
        yield from _ingress(now.ingress)


def _dns(counts: dict[str, int]) -> Iterator[Metric]:
    cached = counts.get("cached", 0)
    yield CounterMetricFamily(
        "oct_dns_queries", "DNS queries received.", value=counts.get("queries", 0) + cached
    )
    yield CounterMetricFamily(
        "oct_dns_cached", "Queries answered with an identical one's reply.", value=cached
    )
    answers = CounterMetricFamily(
        "oct_dns_responses", "Answers made (not cached) by rcode.", labels=["rcode"]
    )
    for name, rcode in DNS_RCODES.items():
        answers.add_metric([rcode], counts.get(name, 0))
    yield answers
    yield CounterMetricFamily(
        "oct_dns_forwarded", "Queries for outside names passed upstream.", value=counts.get("forwarded", 0)
    )


def _instances(found: Sequence[InstanceStatus]) -> Iterator[Metric]:
    labels = ["project", "instance", "runtime"]
    running = GaugeMetricFamily("oct_instance_running", "1 while the instance runs.", labels=labels)
    healthy = GaugeMetricFamily(
        "oct_instance_healthy", "1 while it passes its health check (or runs, without one).", labels=labels
    )
    restarts = CounterMetricFamily("oct_instance_restarts", "Restarts of the instance.", labels=labels)
    for status in found:
        key = [status.project, status.service, status.runtime]
        up = status.state == "running"
        running.add_metric(key, int(up))
        healthy.add_metric(key, int(up and status.health in ("healthy", "none")))
        restarts.add_metric(key, status.restarts)
    yield from (running, healthy, restarts)


def _usage(found: Sequence[Usage]) -> Iterator[Metric]:
    labels = ["project", "instance", "runtime"]
    cpu = CounterMetricFamily(
        "oct_instance_cpu_seconds", "CPU time (user and system) the instance has used.", labels=labels
    )
    memory = GaugeMetricFamily(
        "oct_instance_memory_bytes", "Memory the instance uses now, page cache excluded.", labels=labels
    )
    for used in found:
        key = [used.project, used.service, used.runtime]
        cpu.add_metric(key, used.cpu_seconds)
        memory.add_metric(key, used.memory_bytes)
    yield from (cpu, memory)


#: HAProxy's response counters of HTTP proxies (its ``show stat`` columns), by status class.
HTTP_CLASSES = {"hrsp_1xx": "1xx", "hrsp_2xx": "2xx", "hrsp_3xx": "3xx", "hrsp_4xx": "4xx", "hrsp_5xx": "5xx"}


def _ingress(rows: Sequence[Mapping[str, str]]) -> Iterator[Metric]:
    connections = CounterMetricFamily(
        "oct_ingress_connections",
        "Connections the node's ingress accepted, by proxy (<service>_<port>, web_80, web_443).",
        labels=["proxy"],
    )
    responses = CounterMetricFamily(
        "oct_ingress_responses",
        "HTTP responses the ingress sent for a service's site, by status class.",
        labels=["proxy", "code"],
    )
    denied = CounterMetricFamily(
        "oct_ingress_denied",
        "Connections or requests the node's proxy refused: callers a service's allow does not name.",
        labels=["proxy"],
    )
    for row in rows:
        proxy = row.get("pxname", "")
        if row.get("svname") == "FRONTEND" and row.get("stot", "").isdigit():
            connections.add_metric([proxy], int(row["stot"]))
        if row.get("svname") == "FRONTEND" and row.get("dreq", "").isdigit():
            denied.add_metric([proxy], int(row["dreq"]))
        if row.get("svname") == "BACKEND":
            for column, code in HTTP_CLASSES.items():
                if row.get(column, "").isdigit():
                    responses.add_metric([proxy, code], int(row[column]))
    yield from (connections, responses, denied)


class NodeMetrics:
    """The registry of one node, and the callbacks its parts feed."""

    def __init__(self, figures: Callable[[], NodeFigures]) -> None:
        self.registry = CollectorRegistry()
        self.api_seconds = Histogram(
            "oct_api_request_seconds",
            "API requests by method, route and status.",
            ["method", "route", "status"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "oct_raft_commit_seconds",
            "Time from proposing a write to its commit and apply here (this node's writes).",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.leader_changes = Counter(
            "oct_raft_leader_changes",
            "Times this node became leader or stepped down.",
            registry=self.registry,
        )
        self.pass_seconds = Histogram(
            "oct_leader_pass_seconds",
            "One reconcile pass of the leader.",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.dns_forward_seconds = Histogram(
            "oct_dns_forward_seconds",
            "Queries for outside names, from sending them upstream to the answer.",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.dns_answer_seconds = Histogram(
            "oct_dns_answer_seconds",
            "One UDP query in 64 answered at once (zone or cache), from receipt to the reply sent.",
            buckets=DNS_BUCKETS,
            registry=self.registry,
        )
        self.dns_zone_seconds = Histogram(
            "oct_dns_zone_build_seconds",
            "Building the DNS zone from the replicated state, once per state change a query sees.",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.provider_calls = Counter(
            "oct_provider_calls",
            "Calls to the cluster's provider (launch, retire, public addresses, DNS, registry login).",
            ["provider", "call", "result"],
            registry=self.registry,
        )
        self.provider_seconds = Histogram(
            "oct_provider_call_seconds",
            "How long each call to the provider took.",
            ["provider", "call"],
            buckets=(*BUCKETS, 30.0, 60.0, 120.0),
            registry=self.registry,
        )
        self.registry.register(_StateCollector(figures))

    def provider_call(self, provider: str, call: str, ok: bool, seconds: float) -> None:
        self.provider_calls.labels(provider, call, "ok" if ok else "error").inc()
        self.provider_seconds.labels(provider, call).observe(seconds)

    def api_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.api_seconds.labels(method, route, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def dns_counts(stats: Any) -> dict[str, int]:
    """The DNS server's ``Stats`` as a plain dict (none while it is not serving)."""
    return dict(vars(stats)) if stats is not None else {}
