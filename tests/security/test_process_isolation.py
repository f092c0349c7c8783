"""A process service attacks its own node: the secrets, the daemon's identity and its environment.

A `runtime = "process"` service used to run as oct-ctl's user (root on AWS) with oct-ctl's whole
environment: it could read the node's ``secrets.json`` (API token and Raft password, full control
of the cluster) and any variable set for the daemon. Now, when oct-ctl runs as root, services run
as the unprivileged ``oct-svc`` (or ``nobody``) with only their spec's env and a minimal base.
Needs root, like CI: as another user oct-ctl cannot switch users, so the claim cannot be tested.
"""

from __future__ import annotations

import json
import os
import shlex

import pytest

from octctl.providers.local.provider import octctl_pids
from tests.e2e.conftest import make_project  # noqa: F401  (the fixture, for this folder too)
from tests.e2e.harness import Project, services_by_name
from tests.security.one_node import one_sleeper, the_node
from tests.wait import wait_until

pytestmark = [pytest.mark.security, pytest.mark.e2e]

PROJECT = "isolation"
MARKER_NAME = "OCT_TEST_DAEMON_ONLY"
MARKER_VALUE = "daemon-environment-must-not-leak-7f3a"

# What the attacker service does: tell who it is, try to read the node's secrets (by the absolute
# path and relative to its working directory, the project folder) and the daemon's environment,
# print its own environment, then stay up so the deploy succeeds.
ATTACK = """
import os, sys, time
print("uid", os.getuid(), "gid", os.getgid(), "groups", os.getgroups(), flush=True)
for path in sys.argv[1:]:
    try:
        with open(path) as handle:
            print("READ", path, handle.read(), flush=True)
    except OSError as exc:
        print("DENIED", path, type(exc).__name__, flush=True)
for key, value in sorted(os.environ.items()):
    print("ENV", key + "=" + value, flush=True)
print("attack done", flush=True)
time.sleep(600)
"""


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "this attack test must run as root (CI does): only a root oct-ctl can run services as "
            "another user, and nothing that needs root may skip itself"
        )


def attacker_command(targets: list[str]) -> str:
    """A TOML basic string holding the attacker's argv (JSON escaping is valid TOML escaping)."""
    return json.dumps(shlex.join(["python3", "-c", ATTACK, *targets]))


def test_a_process_service_cannot_read_the_node_secrets_or_the_daemon_env(  # type: ignore[no-untyped-def]
    make_project,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_root()
    # The CLI starts the node with its own environment: the marker is in the daemon's environment.
    monkeypatch.setenv(MARKER_NAME, MARKER_VALUE)
    project: Project = make_project(PROJECT, one_sleeper(PROJECT))
    project.oct("deploy", "--timeout", "60")
    node = the_node(project)
    secrets_file = node.folder / "secrets.json"
    secrets = json.loads(secrets_file.read_text())
    token = json.loads((project.dir / "state.json").read_text())["token"]
    assert secrets["token"] == token
    # What keeps them out: the node folder is the daemon's alone, its secrets doubly so.
    assert node.folder.stat().st_mode & 0o777 == 0o700
    assert (project.dir / ".oct").stat().st_mode & 0o777 == 0o700
    for name in ("secrets.json", "node.json"):
        assert (node.folder / name).stat().st_mode & 0o777 == 0o600, name
    relative = secrets_file.relative_to(project.dir)  # from the service's working directory
    (daemon_pid,) = octctl_pids(project.dir)
    targets = [
        str(secrets_file),
        str(relative),
        str(node.folder / "node.json"),
        f"/proc/{daemon_pid}/environ",
    ]

    old = "command = \"python3 -c 'import time; time.sleep(600)'\""
    project.edit(old, f"command = {attacker_command(targets)}")
    project.oct("deploy", "--timeout", "60")
    sleeper = services_by_name(project.status())["sleeper"]
    assert sleeper["state"] == "running", sleeper

    out = wait_until(
        lambda: project.oct("logs", "sleeper").stdout,
        until=lambda out: "attack done" in out,
        timeout=30,
        interval=0.5,
        message="the attacker to finish",
    )
    (log_file,) = node.folder.glob(f"processes/{PROJECT}-sleeper.log")
    # (oct logs puts each line after its instance and node: "sleeper node-N | ...")
    shown = "\n".join(line.split(" | ", 1)[1] for line in out.splitlines() if " | " in line)
    for text in (shown, log_file.read_text()):
        lines = text.splitlines()
        # Not root: no uid 0, no group 0 (not even as a supplementary group).
        (who,) = [line for line in lines if line.startswith("uid ")]
        fields = who.split()
        assert fields[1] != "0" and fields[3] != "0", who
        assert (
            "0" not in who.split("groups", 1)[1].replace("[", " ").replace("]", " ").replace(",", " ").split()
        )
        # The secrets stay secret: every read is refused, and no secret shows up anywhere.
        for target in targets:
            assert f"DENIED {target} PermissionError" in lines, f"{target} was not refused:\n{text}"
        assert not any(line.startswith("READ") for line in lines), text
        assert token not in text and secrets["raft_password"] not in text
        # The daemon's environment stays the daemon's.
        assert MARKER_NAME not in text and MARKER_VALUE not in text, text
        env = dict(line[4:].split("=", 1) for line in lines if line.startswith("ENV "))
        assert env["HOST"] and env["OCT_SERVICE"] == "sleeper", env
        assert env["LANG"] == "C.UTF-8" and env["PATH"].startswith("/usr/local/sbin:"), env
