"""End-to-end helpers: real `oct` commands driving real `oct-ctl` processes on 127.0.0.N.

Every test gets its own copy of a project folder, so its cluster state (.oct/, state.json) is
private; a finalizer runs `oct destroy` and then kills anything left, so a failing test never
leaves nodes, processes or containers behind for the next one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from octctl.providers.local import octctl_pids

REPO = Path(__file__).resolve().parents[2]
OCT = [sys.executable, "-m", "octcli"]


@dataclass
class Project:
    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / "oct.toml"

    def oct(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*OCT, *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
            env={**os.environ, "COLUMNS": "200"},
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"oct {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}"
                f"\nstderr:\n{proc.stderr}"
                f"\nnode logs:\n{self.node_logs()}"
            )
        return proc

    def status(self) -> dict:
        return json.loads(self.oct("status", "--json").stdout)

    def edit(self, old: str, new: str) -> None:
        text = self.config.read_text()
        assert old in text, f"{old!r} not in oct.toml"
        self.config.write_text(text.replace(old, new, 1))

    def node_logs(self) -> str:
        logs = []
        for log in sorted((self.dir / ".oct").glob("nodes/*/oct-ctl.log")):
            lines = log.read_text(errors="replace").splitlines()[-30:]
            logs.append(f"--- {log.parent.name}\n" + "\n".join(lines))
        return "\n".join(logs)


def kill_leftovers(project_dir: Path) -> None:
    for pid in octctl_pids(project_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def http_get(url: str, timeout: float = 20.0) -> str:
    """GET with retries until the deadline: a service may take a moment to bind after it runs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def services_by_name(status: dict) -> dict[str, dict]:
    return {s["name"]: s for s in status["services"]}
