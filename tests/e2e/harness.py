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
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import httpx

from octctl.node_settings import NodeSettings, Secrets, read_node_files
from octctl.providers.local.provider import octctl_pids
from octctl.tls import client_context, issue_node_certificate
from tests.wait import wait_until

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

    def get() -> str:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return str(resp.read().decode())

    # Any body is an answer, even an empty one: only an error means "not yet".
    return wait_until(
        get,
        until=lambda _: True,
        timeout=timeout,
        interval=0.2,
        ignore=(OSError,),
        message=f"{url} to answer",
    )


def services_by_name(status: dict) -> dict[str, dict]:
    return {s["name"]: s for s in status["services"]}


# -- oct's own API: HTTPS with the cluster CA -------------------------------------------------------
def state_record(project_dir: Path, state_file: str = "state.json") -> dict:
    return dict(json.loads((project_dir / state_file).read_text()))


def https_client(ca_pem: str, timeout: float = 30, **kwargs: object) -> httpx.Client:
    """A bare HTTPS client (no token) that trusts only the cluster CA ``ca_pem``."""
    return httpx.Client(verify=client_context(ca_pem), timeout=timeout, trust_env=False, **kwargs)  # type: ignore[arg-type]


def api_client(
    project_dir: Path, node: str | None = None, timeout: float = 30, state_file: str = "state.json"
) -> httpx.Client:
    """A client of the project's cluster as the CLI is: the token and the pinned CA from the state
    file, ``https://`` to ``node`` (an API address ``host:port``; default: the first recorded node)."""
    record = state_record(project_dir, state_file)
    return httpx.Client(
        base_url=f"https://{node or record['nodes'][0]}",
        headers={"Authorization": f"Bearer {record['token']}"},
        verify=client_context(record["ca_cert"]),
        timeout=timeout,
        trust_env=False,
    )


def node_tls(
    secrets: Secrets, node: str = "test-node", addresses: tuple[str, ...] = ("127.0.0.1",)
) -> ssl.SSLContext:
    """The TLS of a caller that holds the cluster secrets like a node: the CA pinned, and a node
    certificate issued from the cluster CA presented (what the agent routes ask for)."""
    key, cert = issue_node_certificate(secrets.ca_key, secrets.ca_cert, node, list(addresses))
    return client_context(secrets.ca_cert, cert, key)


def node_client(settings: NodeSettings, secrets: Secrets, timeout: float = 30) -> httpx.Client:
    """A client of one node that carries the token and presents a node certificate (agent routes)."""
    return httpx.Client(
        base_url=f"https://{settings.api_address}",
        headers={"Authorization": f"Bearer {secrets.token}"},
        verify=node_tls(secrets),
        timeout=timeout,
        trust_env=False,
    )


def node_files_client(data_dir: Path, timeout: float = 30) -> httpx.Client:
    """:func:`node_client` for the node whose files are in ``data_dir``."""
    settings, secrets = read_node_files(data_dir)
    return node_client(settings, secrets, timeout)
