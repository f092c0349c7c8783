"""The health verdict of one instance, probe result by probe result, on a clock the test turns."""

from __future__ import annotations

from octctl.health.verdict import OUTPUT_LIMIT, Verdict, bounded
from octctl.runtime.base import HealthcheckSpec


def verdict(retries: int = 3, start_period: float = 10.0) -> Verdict:
    check = HealthcheckSpec(
        kind="tcp", host="127.0.0.2", port=20000, retries=retries, start_period=start_period
    )
    return Verdict(check=check, started=100.0, changed_at=1000.0)


def test_failures_inside_the_start_period_do_not_count() -> None:
    v = verdict(retries=1, start_period=10.0)
    assert v.record(False, "refused", now=105.0, wall=1005.0) is False
    assert (v.state, v.failures, v.output, v.changed_at) == ("starting", 0, "refused", 1000.0)


def test_past_the_start_period_retries_failures_make_it_unhealthy() -> None:
    v = verdict(retries=3, start_period=10.0)
    assert not v.record(False, "refused", now=111.0, wall=1011.0)
    assert not v.record(False, "refused", now=113.0, wall=1013.0)
    assert v.state == "starting" and v.failures == 2
    assert v.record(False, "reset", now=115.0, wall=1015.0)
    assert (v.state, v.output, v.changed_at) == ("unhealthy", "reset", 1015.0)
    assert not v.record(False, "reset", now=117.0, wall=1017.0)  # stays unhealthy, no new change
    assert v.changed_at == 1015.0


def test_a_success_makes_it_healthy_even_inside_the_start_period() -> None:
    v = verdict()
    assert v.record(True, "HTTP 200 from GET /up", now=101.0, wall=1001.0)
    assert (v.state, v.output, v.changed_at) == ("healthy", "HTTP 200 from GET /up", 1001.0)


def test_once_healthy_failures_count_at_once_and_a_success_resets_them() -> None:
    v = verdict(retries=2, start_period=10.0)
    v.record(True, "ok", now=101.0, wall=1001.0)
    assert not v.record(False, "HTTP 500", now=102.0, wall=1002.0)  # inside the window: it counts now
    assert v.failures == 1 and v.state == "healthy"
    assert not v.record(True, "ok", now=103.0, wall=1003.0)
    assert v.failures == 0
    v.record(False, "HTTP 500", now=104.0, wall=1004.0)
    assert v.record(False, "HTTP 500", now=105.0, wall=1005.0)
    assert v.state == "unhealthy"


def test_a_steady_healthy_instance_keeps_one_output() -> None:
    """What the node reports must not change with every probe (the leader writes changes to Raft)."""
    v = verdict()
    v.record(True, "HTTP 200: t=1", now=101.0, wall=1001.0)
    v.record(True, "HTTP 200: t=2", now=103.0, wall=1003.0)
    assert v.output == "HTTP 200: t=1"


def test_a_restart_starts_the_judgement_over_and_keeps_the_reason() -> None:
    v = verdict(retries=1, start_period=5.0)
    v.record(False, "refused", now=200.0, wall=1100.0)
    assert v.state == "unhealthy"
    assert v.restarted(now=201.0, wall=1101.0)
    assert (v.state, v.failures, v.output, v.changed_at) == ("starting", 0, "refused", 1101.0)
    assert not v.record(False, "refused", now=205.0, wall=1105.0)  # a fresh start period
    assert v.record(False, "refused", now=206.5, wall=1106.5)
    assert v.state == "unhealthy"
    assert not verdict().restarted(now=101.0, wall=1001.0)  # starting already: no change


def test_outputs_are_bounded_without_splitting_a_character() -> None:
    v = verdict()
    v.record(False, "é" * 1000, now=101.0, wall=1001.0)
    assert len(v.output.encode()) <= OUTPUT_LIMIT
    assert v.output == "é" * (OUTPUT_LIMIT // 2)
    assert bounded("short") == "short"
