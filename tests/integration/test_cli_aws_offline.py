"""The CLI's AWS paths with no AWS to reach, and the choice of state store.

An AWS endpoint that does not answer fails a deploy in one line and records no cluster; a first
AWS deploy asks on a terminal, creates nothing on "no" and goes ahead on "yes" (to the closed
endpoint); an S3 state backend opens the S3 store without contacting it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from octcli import api, state
from octcli.main import app
from tests.cli_inputs import GOOD, LOCAL, closed_aws, project, runner, terminal, write_config

__all__ = ["closed_aws", "project", "terminal"]  # the shared fixtures, for these tests


def test_aws_without_a_reachable_endpoint_fails_in_one_line_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # closed: nothing leaves this machine
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    path = write_config(tmp_path, GOOD.format(name="demo", provider=""))
    result = runner.invoke(app, ["deploy", "--yes", "-c", str(path)])
    assert result.exit_code == 1
    assert "127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / ".oct" / "state.json").exists(), "no cluster was recorded"


@pytest.mark.usefixtures("closed_aws", "terminal")
def test_a_first_aws_deploy_asks_and_no_creates_nothing(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD.format(name="demo", provider=""))
    result = runner.invoke(app, ["deploy", "-c", str(path)], input="n\n")
    assert result.exit_code == 2, result.output
    assert "Create them? [y/N]" in result.stderr
    assert "deploy cancelled: nothing was created" in result.stderr
    assert not (tmp_path / ".oct").exists()
    # Yes goes ahead: here to the closed endpoint, which fails in one line (exit 1).
    result = runner.invoke(app, ["deploy", "-c", str(path)], input="y\n")
    assert result.exit_code == 1, result.output
    assert "127.0.0.1:9" in result.stderr


def test_state_backend_picks_the_store(project: Path, tmp_path: Path) -> None:
    """Opening a store contacts nothing; the S3 store itself is tested against moto in tests/aws."""
    config = api.validate(project)
    local = state.open_store(project, config.project.state_backend)
    assert isinstance(local, state.LocalStore)
    assert local.where == str(project.parent.resolve() / ".oct/state.json")
    text = GOOD.format(name="demo", provider=LOCAL).replace(
        '[project.state_backend.local]\npath = ".oct/state.json"',
        '[project.state_backend.s3]\nregion = "us-west-2"\nbucket = "b"\nkey = "k"',
    )
    s3 = state.open_store(tmp_path, api.validate(write_config(tmp_path, text)).project.state_backend)
    assert s3.where == "s3://b/k"
