"""What a user sees when a deploy goes wrong: a clear error, a non-zero exit, nothing half-applied."""

from __future__ import annotations

import pytest

from tests.e2e.harness import octctl_pids, services_by_name

pytestmark = pytest.mark.e2e

HEADER = """
[project]
name = "{name}"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 1
"""


def test_invalid_config_is_rejected_before_anything_starts(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project(
        "broken",
        HEADER.format(name="broken")
        + """
[[project.services]]
name = "web"
image = "busybox:1.36"
cpu = 100
memory = 0
depends_on = ["db"]
""",
    )
    result = project.oct("deploy", check=False)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    # Every problem at once, each with its line, even several in one service.
    assert any("oct.toml:14:" in line and "unknown key 'cpu'; did you mean 'cpus'?" in line for line in lines)
    assert any("oct.toml:15:" in line and "memory" in line for line in lines)
    assert any("oct.toml:16:" in line and "unknown service 'db'" in line for line in lines), lines
    # Nothing was started or recorded.
    assert not (project.dir / ".oct").exists()
    assert not (project.dir / "state.json").exists()
    assert octctl_pids(project.dir) == []
    assert project.oct("validate", check=False).returncode == 2


def test_a_crashing_service_fails_the_deploy_with_its_last_log_lines(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project(
        "crashy",
        HEADER.format(name="crashy")
        + """
[[project.services]]
name = "ok"
runtime = "process"
command = "python3 -c 'import time; time.sleep(600)'"
cpus = 100
memory = 32

[[project.services]]
name = "boom"
runtime = "process"
command = "python3 -c 'import sys; print(\\"database is on fire\\"); sys.exit(3)'"
cpus = 100
memory = 32
depends_on = ["ok"]
""",
    )
    result = project.oct("deploy", "--timeout", "120", check=False)
    assert result.returncode == 1, result.stderr
    assert "boom" in result.stderr
    assert "database is on fire" in result.stderr
    status = project.status()
    assert status["deployment"]["state"] == "failed"
    assert status["deployment"]["failed_service"] == "boom"
    assert services_by_name(status)["ok"]["state"] == "running"

    # Fixing the file and deploying again recovers.
    project.edit("sys.exit(3)", "import time; time.sleep(600)")
    project.oct("deploy")
    assert {s["state"] for s in project.status()["services"]} == {"running"}


@pytest.mark.docker
def test_an_image_that_cannot_be_pulled_names_the_service_and_image(make_project, docker_client) -> None:  # type: ignore[no-untyped-def]
    project = make_project(
        "nopull",
        HEADER.format(name="nopull")
        + """
[[project.services]]
name = "ghost"
image = "oct-test/does-not-exist:1"
internal_port = 8080
cpus = 100
memory = 32
""",
    )
    result = project.oct("deploy", "--timeout", "120", check=False)
    assert result.returncode == 1
    assert "ghost" in result.stderr and "oct-test/does-not-exist:1" in result.stderr
    status = project.status()
    assert status["deployment"]["state"] == "failed"
    assert services_by_name(status)["ghost"]["state"] == "failed"
