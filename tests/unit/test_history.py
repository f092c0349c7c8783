"""The deployment history the state machine keeps: one entry per deploy that changed something,
its end copied in, a superseded one marked, 20 kept; and the deployment a rollback picks."""

from __future__ import annotations

from octctl.state.history import HISTORY_SIZE, rollback_target
from octctl.state.model import apply_command, command, empty_state, history_of


def project(greeting: str) -> dict:
    service = {"name": "web", "image": "img", "cpus": 1, "memory": 1, "envs": {"GREETING": greeting}}
    return {"project": {"name": "shop", "state_backend": {"local": {"path": "s"}}, "services": [service]}}


def deploy(state: dict, greeting: str, deployment: str, at: float = 1.0) -> None:
    apply_command(
        state, command("deploy", project=project(greeting), source_dir=None, deployment=deployment, at=at)
    )


def finish(state: dict, deployment: str, result: str = "succeeded") -> None:
    fields = {"state": result, "finished_at": 2.0, **({"error": "boom"} if result == "failed" else {})}
    apply_command(state, command("deployment_update", deployment=deployment, fields=fields))


def test_each_changing_deploy_is_recorded_with_its_changes_and_its_end() -> None:
    state = empty_state()
    deploy(state, "hi", "d-1")
    finish(state, "d-1")
    deploy(state, "hi", "d-same")  # nothing changed: no deployment, no entry
    deploy(state, "ho", "d-2")
    finish(state, "d-2", "failed")
    entries = history_of(state)
    assert [(e["id"], e["state"], e["changes"]) for e in entries] == [
        ("d-1", "succeeded", {"web": "started"}),
        ("d-2", "failed", {"web": "replaced"}),
    ]
    assert entries[1]["error"] == "boom" and entries[0]["project"] == project("hi")


def test_a_deploy_during_another_marks_it_superseded_and_the_oldest_roll_off() -> None:
    state = empty_state()
    deploy(state, "hi", "d-1")
    deploy(state, "ho", "d-2", at=5.0)
    assert [(e["id"], e["state"], e["finished_at"]) for e in history_of(state)] == [
        ("d-1", "superseded", 5.0),
        ("d-2", "pending", None),
    ]
    for n in range(30):
        deploy(state, f"v{n}", f"d-v{n}")
    assert len(history_of(state)) == HISTORY_SIZE and history_of(state)[-1]["id"] == "d-v29"


def test_a_rollback_goes_to_the_last_success_before_the_current_or_the_one_named() -> None:
    state = empty_state()
    for deployment, result in [("d-1", "succeeded"), ("d-2", "succeeded"), ("d-3", "failed")]:
        deploy(state, deployment, deployment)
        finish(state, deployment, result)
    entries = history_of(state)
    assert rollback_target(entries, "d-3", None)["id"] == "d-2"  # type: ignore[index]
    assert rollback_target(entries, "d-2", None)["id"] == "d-1"  # type: ignore[index]
    assert rollback_target(entries, "d-1", None) is None, "nothing succeeded before the first"
    assert rollback_target(entries, "d-3", "d-1")["id"] == "d-1"  # type: ignore[index]
    assert rollback_target(entries, "d-3", "d-9") is None
