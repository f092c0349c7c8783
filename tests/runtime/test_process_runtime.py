"""ProcessRuntime with real child processes (python children serving HTTP on loopback)."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from octctl.runtime.base import InstanceSpec, InstanceStatus, RuntimeFailure
from octctl.runtime.process import RECOVERED_ERROR, ProcessRuntime, ServiceUser
from tests.wait import wait_until

from .helpers import free_port, http_get, pid_alive

REPO_ROOT = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent(
    """
    import http.server, os

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ.get("GREETING", "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    print("listening", flush=True)
    server.serve_forever()
    """
)

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)"]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[ProcessRuntime]:
    rt = ProcessRuntime(tmp_path / "state", node="node-a", startup_grace=0.5)
    yield rt
    rt.close()


def make_spec(service: str = "web", **overrides: Any) -> InstanceSpec:
    fields: dict[str, Any] = {
        "project": "demo",
        "service": service,
        "deployment": "d1",
        "spec_hash": "h1",
        "runtime": "process",
        "command": SLEEPER,
        "cpus": 100,
        "memory": 64,
    }
    fields.update(overrides)
    return InstanceSpec(**fields)


def server_spec(port: int, **overrides: Any) -> InstanceSpec:
    env = {"PORT": str(port), "GREETING": "hello-from-env"}
    return make_spec(command=[sys.executable, "-c", SERVER], env=env, **overrides)


def find_status(
    runtime: ProcessRuntime, service: str, when: Callable[[InstanceStatus], bool] = lambda _: True
) -> InstanceStatus | None:
    """The service's status if it satisfies ``when`` (a check for :func:`~tests.wait.wait_until`)."""
    status = next((s for s in runtime.list("demo") if s.service == service), None)
    return status if status is not None and when(status) else None


def test_child_serves_http_with_the_spec_env(runtime: ProcessRuntime) -> None:
    port = free_port()

    status = runtime.apply(server_spec(port))

    assert status.state == "running", status
    assert (status.project, status.service, status.runtime) == ("demo", "web", "process")
    assert (status.deployment, status.spec_hash) == ("d1", "h1")
    assert (
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/"), message="HTTP answer") == "hello-from-env"
    )


def test_env_values_never_reach_the_record(runtime: ProcessRuntime, tmp_path: Path) -> None:
    runtime.apply(make_spec(env={"API_TOKEN": "s3cret-value"}))

    record = (tmp_path / "state" / "demo-web.json").read_text()
    assert "API_TOKEN" in record
    assert "s3cret-value" not in record


def test_the_daemon_environment_is_not_passed_on(
    runtime: ProcessRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCT_DAEMON_ONLY", "must-not-leak")
    monkeypatch.setenv("LC_ALL", "C")
    dump = [
        sys.executable,
        "-c",
        "import json, os, time; print(json.dumps(dict(os.environ)), flush=True); time.sleep(120)",
    ]

    runtime.apply(make_spec(command=dump, env={"PORT": "8080", "GREETING": "hi"}))

    line = wait_until(lambda: next(iter(runtime.logs("demo", "web")), None), message="the env line")
    env = json.loads(line)
    env.pop("LC_CTYPE", None)  # Python's own locale coercion may add it in the child
    path = env.pop("PATH")
    assert env == {"HOME": env["HOME"], "LANG": "C.UTF-8", "PORT": "8080", "GREETING": "hi"}
    assert path.startswith("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    assert os.path.dirname(sys.executable) in path.split(":")


def test_a_workdir_the_service_user_cannot_read_fails_clearly(tmp_path: Path) -> None:
    """Checked before anything starts (no root needed): the status says why, the daemon lives on."""
    nobody = pwd.getpwnam("nobody")
    user = ServiceUser(name="nobody", uid=nobody.pw_uid, gid=nobody.pw_gid, home="/nonexistent")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    rt = ProcessRuntime(tmp_path / "state", startup_grace=0.2, run_as=user)
    try:
        status = rt.apply(make_spec(workdir=str(private)))
        assert status.state == "failed", status
        assert status.error is not None
        assert f"working directory '{private}' is not readable by the service user 'nobody'" in status.error
        assert "permission denied" in status.error
        assert rt.pid("demo", "web") is None
    finally:
        rt.close()


def test_killed_child_is_restarted(runtime: ProcessRuntime) -> None:
    port = free_port()
    runtime.apply(server_spec(port))
    first_pid = runtime.pid("demo", "web")
    assert first_pid is not None

    os.kill(first_pid, signal.SIGKILL)

    restarted = wait_until(
        lambda: find_status(runtime, "web", lambda s: s.state == "running" and s.restarts == 1),
        message="the restart",
    )
    assert restarted.exit_code is None
    new_pid = runtime.pid("demo", "web")
    assert new_pid is not None and new_pid != first_pid
    assert wait_until(lambda: http_get(f"http://127.0.0.1:{port}/"), message="HTTP after restart")


def test_crash_loop_is_never_reported_running(runtime: ProcessRuntime) -> None:
    crash = [sys.executable, "-c", "import sys; print('boom', flush=True); sys.exit(3)"]

    status = runtime.apply(make_spec(command=crash))

    assert status.state in ("restarting", "exited"), status
    assert status.exit_code == 3
    assert "boom" in status.log_tail
    looping = wait_until(lambda: find_status(runtime, "web", lambda s: s.restarts >= 2), message="restarts")
    assert looping.state != "running"


def test_missing_executable_fails_clearly(runtime: ProcessRuntime) -> None:
    status = runtime.apply(make_spec(command=["/nonexistent/oct-test-binary", "--flag"]))

    assert status.state == "failed"
    assert status.error == "command not found: '/nonexistent/oct-test-binary'"
    listed = find_status(runtime, "web")
    assert listed is not None and listed.state == "failed"


def test_same_hash_is_left_alone_and_a_new_hash_replaces(runtime: ProcessRuntime) -> None:
    runtime.apply(make_spec())
    first_pid = runtime.pid("demo", "web")
    assert first_pid is not None

    again = runtime.apply(make_spec(deployment="d2"))
    assert again.deployment == "d1"
    assert runtime.pid("demo", "web") == first_pid

    replaced = runtime.apply(make_spec(deployment="d2", spec_hash="h2"))
    assert replaced.state == "running"
    assert (replaced.deployment, replaced.spec_hash) == ("d2", "h2")
    assert runtime.pid("demo", "web") not in (None, first_pid)
    assert wait_until(lambda: not pid_alive(first_pid), message="the old child to be gone")


def test_remove_kills_the_whole_process_group(runtime: ProcessRuntime, tmp_path: Path) -> None:
    parent = textwrap.dedent(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print("grandchild", child.pid, flush=True)
        time.sleep(120)
        """
    )
    runtime.apply(make_spec(command=[sys.executable, "-c", parent]))
    pid = runtime.pid("demo", "web")
    assert pid is not None
    line = wait_until(
        lambda: next((ln for ln in runtime.logs("demo", "web") if ln.startswith("grandchild")), None),
        message="the grandchild's pid",
    )
    grandchild = int(line.split()[1])
    assert pid_alive(grandchild)

    runtime.remove("demo", "web")

    assert wait_until(lambda: not pid_alive(pid) and not pid_alive(grandchild), message="the group to die")
    assert runtime.list("demo") == []
    assert not (tmp_path / "state" / "demo-web.json").exists()
    assert (tmp_path / "state" / "demo-web.log").exists()  # logs outlive the instance
    runtime.remove("demo", "web")  # idempotent


def test_logs_tail(runtime: ProcessRuntime) -> None:
    chatty = [
        sys.executable,
        "-c",
        "import time\nfor i in range(500): print('line', i, flush=True)\ntime.sleep(120)",
    ]
    runtime.apply(make_spec(command=chatty))

    assert wait_until(lambda: runtime.logs("demo", "web", tail=3) == ["line 497", "line 498", "line 499"])
    assert len(runtime.logs("demo", "web")) == 50
    assert runtime.logs("demo", "absent") == []


def test_close_leaves_no_child_alive(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path / "state", startup_grace=0.2)
    rt.apply(make_spec("a"))
    rt.apply(make_spec("b"))
    pids = [rt.pid("demo", "a"), rt.pid("demo", "b")]
    assert None not in pids

    rt.close()

    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    assert {s.state for s in rt.list("demo")} == {"exited"}
    with pytest.raises(RuntimeFailure):
        rt.apply(make_spec("c"))


def test_children_left_by_a_dead_daemon_are_killed_and_reported_exited(tmp_path: Path) -> None:
    """Simulate oct-ctl being SIGKILLed: its child survives in its own session, the next one kills it."""
    state = tmp_path / "state"
    daemon = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from octctl.runtime.base import InstanceSpec
        from octctl.runtime.process import ProcessRuntime
        rt = ProcessRuntime(Path({str(state)!r}), startup_grace=0.2)
        spec = InstanceSpec(project="demo", service="web", deployment="d1", spec_hash="h1",
                            runtime="process", command={SLEEPER!r}, cpus=100, memory=64)
        rt.apply(spec)
        print(rt.pid("demo", "web"), flush=True)
        os._exit(0)  # no close(): the way a crash or SIGKILL leaves things
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", daemon], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert out.returncode == 0, out.stderr
    orphan = int(out.stdout.split()[-1])
    try:
        assert pid_alive(orphan)

        rt = ProcessRuntime(state, startup_grace=0.2)
        try:
            assert not pid_alive(orphan)
            [status] = rt.list("demo")
            assert (status.state, status.error, status.spec_hash) == ("exited", RECOVERED_ERROR, "h1")

            again = rt.apply(make_spec())
            assert again.state == "running"
            assert rt.pid("demo", "web") not in (None, orphan)
        finally:
            rt.close()
    finally:
        if pid_alive(orphan):
            os.killpg(orphan, signal.SIGKILL)


def test_workdir_and_stale_record_of_an_unrelated_pid(tmp_path: Path) -> None:
    """A recorded pid that now belongs to someone else (pid reuse) must never be signalled."""
    state = tmp_path / "state"
    state.mkdir()
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record = {
            "pid": bystander.pid,
            "start_time": 1,  # not the bystander's real start time
            "spec": make_spec().model_dump(exclude={"env"}),
        }
        (state / "demo-web.json").write_text(json.dumps(record))

        rt = ProcessRuntime(state, startup_grace=0.2)
        try:
            assert bystander.poll() is None
            assert [s.state for s in rt.list()] == ["exited"]
            workdir = tmp_path / "wd"
            workdir.mkdir()
            pwd = [sys.executable, "-c", "import os, time; print(os.getcwd(), flush=True); time.sleep(120)"]
            rt.apply(make_spec(spec_hash="h2", command=pwd, workdir=str(workdir)))
            assert wait_until(lambda: rt.logs("demo", "web") == [str(workdir)], message="cwd line")
        finally:
            rt.close()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_chatty_child_has_its_log_rotated_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from octctl.runtime.process import supervisor

    monkeypatch.setattr(supervisor, "MAX_LOG_BYTES", 4000)
    monkeypatch.setattr(supervisor, "LOG_CHECK", 0.1)
    # ~10 KB/s: the file may outgrow its bound by what is written between two checks, and a
    # check can come late on a busy machine (the bound below leaves it 1.2 s).
    chatty = "import time\nwhile True:\n    print('x' * 99, flush=True)\n    time.sleep(0.01)\n"
    rt = ProcessRuntime(tmp_path / "state", startup_grace=0.3)
    try:
        assert rt.apply(make_spec(command=[sys.executable, "-c", chatty])).state == "running"
        pid = rt.pid("demo", "web")
        log = rt.log_path("demo", "web")
        older = log.with_suffix(".log.1")
        wait_until(lambda: older.exists() and older.stat().st_size >= 4000, timeout=10, message="a rotation")
        assert rt.pid("demo", "web") == pid, "rotated under the running child, not by restarting it"
        wait_until(lambda: rt.logs("demo", "web", 1) == ["x" * 99], timeout=10, message="lines after it")
        assert log.stat().st_size < 4000 * 4, "the file stays near its bound"
    finally:
        rt.close()
