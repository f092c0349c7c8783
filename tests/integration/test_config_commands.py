"""Which commands need which ``{{ env.X }}`` variables, through the real ``oct`` command.

``oct validate`` (like deploy and plan) needs every variable and lists a missing one together with
every other problem; status, logs, destroy and unlock only need the variables that find the
cluster, so an incident responder or a CI teardown job without the services' secrets can run them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from octcli import api
from octcli.errors import InvalidConfig, Unreachable
from octctl.config.render import ALLOWED
from tests.unit.test_config_sandbox import VALUE_LINE, payloads
from tests.unit.test_config_template import HEADER

OCT = Path(sys.executable).with_name("oct")

PROJECT = """\
[project]
name = "{name}"

[project.state_backend.local]
path = ".oct/state.json"

[project.provider.local]
nodes = 1

[[project.services]]
name = "db"
runtime = "process"
command = "serve --password {{{{ env.OCT_TEST_DB_PASSWORD }}}}"
cpus = 250
memory = 64

[project.services.envs]
TOKEN = "{{{{ env.OCT_TEST_TOKEN }}}}"
"""


def oct_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCT_TEST_")}
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "500"  # one problem per line, however long
    return subprocess.run(
        [str(OCT), *args], capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "oct.toml"
    path.write_text(PROJECT.format(name="envless"))
    return path


def line_of(path: Path, snippet: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1) if snippet in line)


def test_validate_lists_missing_variables_with_schema_and_semantic_problems(tmp_path: Path) -> None:
    path = tmp_path / "oct.toml"
    path.write_text(
        PROJECT.format(name="shop").replace("cpus = 250", 'cpus = "lots"')
        + '\n[[project.services]]\nname = "web"\nruntime = "process"\ncommand = "run"\n'
        + 'cpus = 1\nmemory = 1\ndepends_on = ["dbb"]\n'
    )
    result = oct_cli("validate", "-c", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {path}: 4 problems",
        f"{path}:{line_of(path, 'OCT_TEST_DB_PASSWORD')}: project.services[0].command: "
        "environment variable OCT_TEST_DB_PASSWORD is not set",
        f'{path}:{line_of(path, "lots")}: project.services[0].cpus: expected an integer, got "lots"',
        f"{path}:{line_of(path, 'OCT_TEST_TOKEN')}: project.services[0].envs.TOKEN: "
        "environment variable OCT_TEST_TOKEN is not set",
        f"{path}:{line_of(path, 'dbb')}: project.services[1].depends_on[0]: unknown service 'dbb' in "
        "depends_on; did you mean 'db'? (known services: 'db', 'web')",
    ]


def test_plan_needs_every_variable(project: Path) -> None:
    result = oct_cli("plan", "-c", str(project))
    assert result.returncode == 2
    assert "environment variable OCT_TEST_TOKEN is not set" in result.stderr


def test_status_and_logs_do_not_need_the_services_variables(project: Path) -> None:
    for args in (("status",), ("logs", "db")):
        result = oct_cli(*args, "-c", str(project))
        # Past the config: what stops them is that there is no cluster (exit 3), not a variable.
        assert result.returncode == 3, result.stderr
        assert "project envless has no cluster yet" in result.stderr
        assert "not set" not in result.stderr


def test_destroy_and_unlock_do_not_need_the_services_variables(project: Path) -> None:
    result = oct_cli("destroy", "--yes", "-c", str(project))
    assert result.returncode == 0, result.stderr
    assert "destroyed" in result.stdout
    result = oct_cli("unlock", "-c", str(project))
    assert result.returncode == 0, result.stderr
    assert "no lock is held" in result.stdout


def test_variables_that_find_the_cluster_are_still_needed(project: Path) -> None:
    project.write_text(project.read_text().replace('name = "envless"', 'name = "{{ env.OCT_TEST_PROJECT }}"'))
    result = oct_cli("status", "-c", str(project))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {project}: 1 problem",
        f"{project}:2: project.name: environment variable OCT_TEST_PROJECT is not set (it is needed to find "
        "the cluster: only the variables inside project.services may be unset for this command)",
    ]


def test_library_commands_without_the_services_variables(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OCT_TEST_TOKEN", "OCT_TEST_DB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Unreachable, match="has no cluster yet"):
        api.status(project)
    api.destroy(project, approve=True)
    assert api.unlock(project) is None
    with pytest.raises(InvalidConfig) as caught:
        api.validate(project)
    assert len(caught.value.problems) == 2


OCT = Path(sys.executable).with_name("oct")


def test_oct_validate_refuses_the_payload_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "oct.toml"
    path.write_text(HEADER + f"A = '''{payloads(marker)[0]}'''\nB = '''{{{{ 'x' * 10**10 }}}}'''\n")
    started = time.monotonic()
    result = subprocess.run(
        [str(OCT), "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result.stderr
    assert not marker.exists()
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {path}: 2 problems"
    assert lines[1] == f"{path}:{VALUE_LINE}: project.services[0].envs.A: {ALLOWED} (found a call)"
    assert lines[2] == f"{path}:{VALUE_LINE + 1}: project.services[0].envs.B: {ALLOWED} (found an operator)"
