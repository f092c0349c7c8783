"""The leader converges a deployment: in dependency order, once per change, failing once.

Dependents start only after what they depend on runs, a changed service is replaced and a removed
one removed, a failed start fails the deployment once (a new deployment tries again), a leader
cut off from its majority acts on nothing, and a new term starts with fresh duties.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from octctl.state.machine import RaftUnavailable
from tests.unit.leader_fakes import deploy, project, service, ticks


def test_dependents_start_only_after_what_they_depend_on_runs(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    deploy(raft, project(service("db"), service("cache"), service("app", depends_on=["db", "cache"])))
    ticks(reconciler, 1)
    assert sorted(s for _, _, s in agents.calls) == ["cache", "db"]
    ticks(reconciler, 1)
    assert [s for _, _, s in agents.calls][-1] == "app"
    ticks(reconciler, 2)
    assert raft.state["deployment"]["state"] == "succeeded"  # type: ignore[index]
    assert len({raft.state["placements"][s] for s in ("db", "cache", "app")}) == 3  # spread
    # Nothing changed: further ticks push nothing.
    before = list(agents.calls)
    assert ticks(reconciler, 3) == [False, False, False]
    assert agents.calls == before


def test_a_changed_service_is_replaced_and_a_removed_one_removed(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    deploy(raft, project(service("a"), service("b")))
    ticks(reconciler, 3)
    agents.calls.clear()
    deploy(raft, project(service("a", envs={"MODE": "debug"})), deployment="d2")
    ticks(reconciler, 3)
    assert sorted((op, s) for op, _, s in agents.calls) == [("apply", "a"), ("remove", "b")]
    assert raft.state["deployment"]["state"] == "succeeded"  # type: ignore[index]


def test_a_failed_start_fails_the_deployment_once(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, _ = parts
    agents.fail_image = "nope:1"
    deploy(raft, project(service("ok"), service("bad", image="nope:1")))
    ticks(reconciler, 4)
    deployment = raft.state["deployment"]
    assert deployment is not None and deployment["state"] == "failed"
    assert deployment["failed_service"] == "bad" and "nope:1" in (deployment["error"] or "")
    assert [s for op, _, s in agents.calls if op == "apply"].count("bad") == 1, (
        "retried within one deployment"
    )
    # A new deployment of the same spec tries again.
    deploy(raft, project(service("ok"), service("bad", image="nope:1")), deployment="d2")
    ticks(reconciler, 1)
    assert [s for op, _, s in agents.calls if op == "apply"].count("bad") == 2


def test_a_leader_cut_off_from_the_majority_acts_on_nothing(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, provider = parts
    raft.cut_off = True
    deploy(raft, project(service("a"), nodes=5))
    assert ticks(reconciler, 3) == [False, False, False]
    assert agents.calls == [] and provider.provisioned == []
    assert raft.state["placements"] == {}
    raft.cut_off = False
    ticks(reconciler, 3)
    assert len(provider.provisioned) == 2 and raft.barriers == 6  # healed: it grows the fleet again


def test_a_new_term_starts_with_fresh_duties(parts) -> None:  # type: ignore[no-untyped-def]
    """What a leader learned in one term (a push that failed, missed polls) is not carried into
    the next: a new term acts on the replicated state alone, as a leader on another node would."""
    reconciler, raft, agents, _ = parts
    agents.fail_image = "busybox:1.36"
    deploy(raft, project(service("a")))
    ticks(reconciler, 2)
    first = reconciler.duties
    assert first.converger.failed, "the failed push is remembered within the term"
    tries = len(agents.specs)
    ticks(reconciler, 2)
    assert len(agents.specs) == tries, "not retried in the same term"

    raft.current_term = agents.term = 8
    agents.fail_image = None
    ticks(reconciler, 1)
    assert reconciler.duties is not first and reconciler.duties.term == 8
    assert len(agents.specs) == tries + 1, "the new term tries again"


def test_dependents_wait_until_every_instance_of_a_dependency_passes_its_check(parts) -> None:  # type: ignore[no-untyped-def]
    """A dependency that runs but is still starting its health check does not count yet, on any
    node: its dependent starts only once all of its instances report healthy."""
    reconciler, raft, agents, _ = parts
    deploy(raft, project(service("db", replicas=2), service("app", depends_on=["db"])))
    ticks(reconciler, 1)
    assert sorted(s for _, _, s in agents.calls) == ["db", "db.2"]
    for instances in agents.running.values():  # the nodes' probes have not passed yet
        for status in instances.values():
            status.health = "starting"
    ticks(reconciler, 3)
    assert "app" not in [s for _, _, s in agents.calls]
    assert raft.state["deployment"]["state"] in ("pending", "in_progress")  # type: ignore[index]
    first = next(s for i in agents.running.values() for s in i.values() if s.service == "db")
    first.health = "healthy"
    ticks(reconciler, 2)
    assert "app" not in [s for _, _, s in agents.calls], "one healthy instance of two is not enough"
    for instances in agents.running.values():
        for status in instances.values():
            status.health = "healthy"
    ticks(reconciler, 2)
    assert [s for _, _, s in agents.calls][-1] == "app"


def test_a_pass_cut_short_by_a_lost_quorum_is_no_error(parts, caplog) -> None:  # type: ignore[no-untyped-def]
    """A write that times out mid-pass (the majority went away after the barrier) ends the pass
    quietly: the next pass's barrier says whether this node still leads. A bug still logs its
    traceback."""
    reconciler, _, _, _ = parts

    async def one_pass_raising(error: Exception) -> list[logging.LogRecord]:
        async def tick() -> bool:
            raise error

        caplog.clear()
        reconciler.tick = tick
        task = asyncio.create_task(reconciler.run())
        reconciler.wake()
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return list(caplog.records)

    async def scenario() -> tuple[list[logging.LogRecord], list[logging.LogRecord]]:
        quorum = await one_pass_raising(RaftUnavailable("raft did not commit within 5s (no quorum?)"))
        bug = await one_pass_raising(KeyError("a bug"))
        return quorum, bug

    with caplog.at_level(logging.INFO, logger="octctl.leader.loop"):
        quorum, bug = asyncio.run(scenario())
    assert [r.getMessage() for r in quorum][:1] == [
        "leader pass stopped: raft did not commit within 5s (no quorum?)"
    ]
    assert not any(r.exc_info for r in quorum)
    assert any(r.exc_info and r.getMessage() == "leader pass failed" for r in bug)
