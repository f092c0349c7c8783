"""Waiting for a deployment: progress, failure and timeout, against scripted status answers.

The wait follows only its own deployment and keeps the record in step with the cluster's nodes,
turns a failed deployment into ``DeployFailed`` with the service's error and log tail (exit 1),
and gives up with ``Timeout`` (exit 4) pointing at ``oct status``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from octcli import rollout
from octcli.errors import DeployFailed, Timeout
from octcli.providers import local
from octcli.state import ClusterRecord
from octctl.api.models import DeploymentView, HistoryResponse, HistoryView, StatusResponse
from tests.cli_inputs import record, running, snapshot


class FakeClient:
    def __init__(self, answers: list[StatusResponse], history: list[HistoryView] | None = None) -> None:
        self.answers = answers
        self.recorded = history or []

    def status(self) -> StatusResponse:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def history(self) -> HistoryResponse:
        return HistoryResponse(deployments=self.recorded)

    def learn(self, nodes: list[str]) -> None:
        pass


def wait(client: FakeClient, deployment: str, timeout: float = 10) -> StatusResponse:
    """Wait for ``deployment`` on a local cluster whose record nobody looks at."""
    return rollout.wait_for_deployment(
        client,  # type: ignore[arg-type]
        deployment,
        local.LocalCluster(Path("oct.toml")),
        record(["127.0.0.2:31888"]),
        lambda r: None,
        None,
        timeout=timeout,
    )


def test_wait_reports_progress_and_ignores_other_deployments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "POLL_INTERVAL", 0)
    old = snapshot(DeploymentView(id="d-old", state="succeeded"))
    mine = snapshot(DeploymentView(id="d-new", state="in_progress"), [running(state_="starting")])
    done = snapshot(DeploymentView(id="d-new", state="succeeded"), [running()])
    seen: list[str] = []
    saved: list[ClusterRecord] = []
    result = rollout.wait_for_deployment(
        FakeClient([old, mine, done]),  # type: ignore[arg-type]
        "d-new",
        local.LocalCluster(Path("oct.toml")),
        record(["127.0.0.9:31888"]),
        saved.append,
        lambda s: seen.append(s.deployment.state if s.deployment else "-"),
        timeout=10,
    )
    assert result is done
    assert seen == ["in_progress", "succeeded"]
    assert saved and saved[-1].nodes == ["127.0.0.2:31888"]  # the record follows the cluster's nodes


def test_wait_raises_deploy_failed_with_service_error_and_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "POLL_INTERVAL", 0)
    failed = snapshot(
        DeploymentView(
            id="d-1",
            state="failed",
            failed_service="web",
            error="exited with code 127",
            log_tail=["sh: nope"],
        )
    )
    monkeypatch.setattr(rollout, "ROLLBACK_GRACE", 0.05)  # (nothing rolls it back here)
    with pytest.raises(DeployFailed) as caught:
        wait(FakeClient([failed]), "d-1")
    message = str(caught.value)
    assert "web" in message and "exited with code 127" in message and "sh: nope" in message
    assert caught.value.exit_code == 1


def entry(id_: str, state: str, **more: object) -> HistoryView:
    return HistoryView.model_validate(
        {
            "id": id_,
            "generation": 1,
            "started_at": 0,
            "finished_at": None,
            "state": state,
            "changes": {},
            **more,
        }
    )


def test_a_deployment_rolled_back_after_it_failed_is_reported_with_the_rollback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rollout, "POLL_INTERVAL", 0)
    rolling_back = snapshot(DeploymentView(id="d-back", state="in_progress"))
    failed = entry("d-new", "failed", failed_service="web", error="web did not pass", log_tail=["boom"])
    history = [entry("d-back", "in_progress", rollback_of="d-good"), failed, entry("d-good", "succeeded")]
    with pytest.raises(DeployFailed) as caught:
        wait(FakeClient([rolling_back], history), "d-new")
    message = str(caught.value)
    assert "service web failed: web did not pass" in message and "  boom" in message
    assert "rolled back automatically: deployment d-back deploys d-good again" in message


def test_a_failure_seen_before_its_rollback_is_reported_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader commits the failure, then the rollback: a poll in between still reports both."""
    monkeypatch.setattr(rollout, "POLL_INTERVAL", 0)
    failed_view = DeploymentView(id="d-new", state="failed", failed_service="web", error="web did not pass")
    rolling_back = snapshot(DeploymentView(id="d-back", state="in_progress"))
    failed = entry("d-new", "failed", failed_service="web", error="web did not pass")
    history = [entry("d-back", "in_progress", rollback_of="d-good"), failed, entry("d-good", "succeeded")]
    with pytest.raises(DeployFailed) as caught:
        wait(FakeClient([snapshot(failed_view), snapshot(failed_view), rolling_back], history), "d-new")
    assert "rolled back automatically: deployment d-back deploys d-good again" in str(caught.value)


def test_wait_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "POLL_INTERVAL", 0.01)
    pending = snapshot(DeploymentView(id="d-1", state="pending"))
    with pytest.raises(Timeout) as caught:
        wait(FakeClient([pending]), "d-1", timeout=0.1)
    assert caught.value.exit_code == 4 and "oct status" in str(caught.value)
