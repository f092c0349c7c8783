"""The oct commands' answers that need no cluster: checks, questions and exit codes.

``oct validate`` prints every problem and exits 2, an invalid config stops deploy before anything
starts, status without a cluster is unreachable (3), a deploy request refuses a zone that is no
Route53 id, an AWS deploy or destroy asks (and refuses without ``--yes``) while a local deploy
never asks, and the library exports every command. What talks to something (stub servers, node
processes, a closed AWS endpoint) is in ``tests/integration/test_cli_*.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from octcli import api
from octcli.errors import InvalidConfig, NotConfirmed, OctError
from octcli.main import app
from octcli.providers import local
from octcli.state import ClusterRecord
from octctl.config import ConfigError, load_config
from tests.cli_inputs import BAD, GOOD, closed_aws, declining, project, runner, write_config

__all__ = ["closed_aws", "project"]  # the shared fixtures, for these tests

# -- oct validate ------------------------------------------------------------------------------------


def test_validate_ok(project: Path) -> None:
    result = runner.invoke(app, ["validate", "-c", str(project)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{project}: ok (1 service)"


def test_validate_accepts_the_folder(project: Path) -> None:
    result = runner.invoke(app, ["validate", "--config", str(project.parent)])
    assert result.exit_code == 0, result.output
    assert "ok (1 service)" in result.stdout


def test_validate_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, BAD)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    expected = [str(problem) for problem in caught.value.problems]
    assert len(expected) >= 3

    result = runner.invoke(app, ["validate", "-c", str(path)])

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    for line in expected:
        assert line in result.stderr.splitlines()


def test_validate_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "-c", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "no such file" in result.stderr


def test_library_validate_raises_with_all_problems(tmp_path: Path) -> None:
    path = write_config(tmp_path, BAD)
    with pytest.raises(InvalidConfig) as caught:
        api.validate(path)
    assert caught.value.exit_code == 2
    assert len(caught.value.problems) >= 3


# -- deploy / destroy without a cluster --------------------------------------------------------------


def test_invalid_config_stops_deploy_before_anything_starts(tmp_path: Path) -> None:
    path = write_config(tmp_path, BAD)
    result = runner.invoke(app, ["deploy", "-c", str(path)])
    assert result.exit_code == 2
    assert not (tmp_path / ".oct").exists()


def test_status_without_cluster_is_unreachable(project: Path) -> None:
    result = runner.invoke(app, ["status", "-c", str(project)])
    assert result.exit_code == 3
    assert "oct deploy" in result.stderr


def test_a_deploy_request_refuses_a_zone_that_is_no_route53_id() -> None:
    from pydantic import ValidationError

    from octctl.api.models import DeployRequest

    assert DeployRequest(config={}, public_zone="/hostedzone/Z0123ABC").public_zone == "/hostedzone/Z0123ABC"
    for bad in ("", "../../etc", "Z1; rm -rf /", "x" * 40):
        with pytest.raises(ValidationError):
            DeployRequest(config={}, public_zone=bad)


# -- asking before spending or destroying ------------------------------------------------------------


@pytest.mark.usefixtures("closed_aws")
def test_a_first_aws_deploy_shows_the_plan_and_refuses_without_yes(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD.format(name="demo", provider=""))
    result = runner.invoke(app, ["deploy", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "refusing to create AWS resources without confirmation" in result.stderr
    assert "run with --yes" in result.stderr
    assert "t4g" in result.stderr or "t3" in result.stderr, "the plan's instance types are shown"
    assert "a month" in result.stderr and "$" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / ".oct").exists(), "nothing was created, not even the state"


@pytest.mark.usefixtures("closed_aws")
def test_library_deploy_on_aws_needs_approve(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD.format(name="demo", provider=""))
    with pytest.raises(NotConfirmed, match="approve=True") as caught:
        api.deploy(path)
    assert caught.value.exit_code == 2
    shown: list[Any] = []
    with pytest.raises(NotConfirmed, match="cancelled"):
        api.deploy(path, approve=declining(shown))
    assert shown and shown[0].provider == "aws" and shown[0].monthly_usd > 0
    assert shown[0].model_dump() == api.plan(path).model_dump(), "what `oct plan` shows"
    assert not (tmp_path / ".oct").exists()


def test_a_local_deploy_never_asks(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[object] = []

    def no_cluster(*args: object, **kwargs: object) -> ClusterRecord:
        raise OctError("stop here")

    monkeypatch.setattr(local, "ensure_cluster", no_cluster)
    with pytest.raises(OctError, match="stop here"):
        api.deploy(project, approve=declining(asked))
    assert asked == []


@pytest.mark.usefixtures("closed_aws")
def test_aws_destroy_without_a_record_asks_about_every_tagged_cluster(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD.format(name="demo", provider=""))
    result = runner.invoke(app, ["destroy", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "every cluster tagged oct:project=demo in us-west-2" in result.stderr
    seen: list[api.DestroySummary] = []
    with pytest.raises(NotConfirmed):
        api.destroy(path, approve=declining(seen))
    assert seen[0].provider == "aws" and seen[0].cluster is None and seen[0].region == "us-west-2"


# -- the library's surface ---------------------------------------------------------------------------


def test_the_library_exports_every_command(project: Path) -> None:
    import octcli
    from octcli.plan import build  # loading the module must not shadow the function

    assert build is not None
    for name in ("deploy", "destroy", "status", "logs", "validate", "plan", "unlock"):
        assert name in octcli.__all__ and getattr(octcli, name) is getattr(api, name), name
    assert octcli.plan(project).provider == "local"
    assert octcli.unlock(project) is None
    assert octcli.NotConfirmed.exit_code == 2
