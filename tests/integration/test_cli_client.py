"""The CLI's client against stub oct-ctl servers (HTTPS on loopback), and the commands through it.

The client skips dead nodes and moves on from 503 and 401, retries until a leader appears, names
every address when none answers, and maps 422 and other errors to the right exceptions; status
prints exactly the response or its tables, and deploy reports what changed per service.
What needs no server is in ``tests/unit/test_cli_commands.py``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from octcli import api, state
from octcli.client import OctClient
from octcli.errors import InvalidConfig, OctError, Unreachable
from octcli.main import app
from octcli.providers import local
from octctl.api.models import DeploymentView, StatusResponse
from octctl.tls import server_context
from tests.cli_inputs import (
    STUB_CA,
    STUB_CERT,
    STUB_KEY,
    dead_address,
    project,
    record,
    runner,
    running,
    snapshot,
)

__all__ = ["project"]  # the shared fixture, for these tests

Reply = tuple[int, dict[str, Any]]


class Stub:
    """A tiny oct-ctl stand-in on 127.0.0.1 (HTTPS, certificate from ``STUB_CA``) that records what it
    was sent."""

    def __init__(self, routes: dict[tuple[str, str], Callable[[], Reply]]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str, str | None]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?")[0]
                stub.seen.append((self.command, path, self.headers.get("Authorization")))
                route = stub.routes.get((self.command, path))
                code, body = route() if route else (404, {"error": "no such route"})
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        tls = server_context(STUB_CERT, STUB_KEY, STUB_CA)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stubs() -> Iterator[Callable[[dict[tuple[str, str], Callable[[], Reply]]], Stub]]:
    made: list[Stub] = []

    def make(routes: dict[tuple[str, str], Callable[[], Reply]]) -> Stub:
        made.append(Stub(routes))
        return made[-1]

    yield make
    for stub in made:
        stub.close()


def ok_status() -> Reply:
    return 200, json.loads(snapshot().model_dump_json())


def test_client_skips_a_dead_node_and_sends_the_token(stubs: Any) -> None:
    stub = stubs({("GET", "/v1/status"): ok_status})
    dead = dead_address()
    with OctClient([dead, stub.address], "tok-123", STUB_CA, timeout=2.0, retry_for=0) as client:
        assert client.status().cluster == "c-test"
        assert client.nodes[0] == stub.address  # the node that answered is asked first next time
        client.status()
    assert stub.seen == [("GET", "/v1/status", "Bearer tok-123")] * 2
    assert "tok-123" not in repr(client)


def test_client_moves_on_from_503_and_401(stubs: Any) -> None:
    no_leader = stubs({("GET", "/v1/status"): lambda: (503, {"error": "no leader elected yet; retry"})})
    foreign = stubs({("GET", "/v1/status"): lambda: (401, {"error": "missing or wrong bearer token"})})
    good = stubs({("GET", "/v1/status"): ok_status})
    with OctClient([no_leader.address, foreign.address, good.address], "tok", STUB_CA, retry_for=0) as client:
        assert client.status().node == "node-2"


def test_client_unreachable_names_every_address(stubs: Any) -> None:
    no_leader = stubs({("GET", "/v1/status"): lambda: (503, {"error": "no leader elected yet; retry"})})
    dead = dead_address()
    with (
        OctClient([dead, no_leader.address], "tok", STUB_CA, retry_for=0) as client,
        pytest.raises(Unreachable) as caught,
    ):
        client.status()
    message = str(caught.value)
    assert dead in message and no_leader.address in message and "no leader" in message
    assert caught.value.exit_code == 3


def test_client_retries_until_a_leader_appears(stubs: Any) -> None:
    answers = iter([(503, {"error": "no leader elected yet; retry"})] * 2)
    stub = stubs({("GET", "/v1/status"): lambda: next(answers, ok_status())})
    with OctClient([stub.address], "tok", STUB_CA, retry_for=10) as client:
        assert client.status().cluster == "c-test"
    assert len(stub.seen) == 3


def test_client_reports_a_token_every_node_rejects(stubs: Any) -> None:
    foreign = stubs({("GET", "/v1/status"): lambda: (401, {"error": "missing or wrong bearer token"})})
    with (
        OctClient([foreign.address], "tok", STUB_CA, retry_for=30) as client,
        pytest.raises(OctError) as caught,
    ):
        client.status()
    assert "401" in str(caught.value)
    assert not isinstance(caught.value, Unreachable)
    assert len(foreign.seen) == 1  # not retried for 30 s


def test_422_maps_to_invalid_config(stubs: Any) -> None:
    details = ["project.services[0].cpus: expected an integer", "project.services[1].name: duplicate"]
    stub = stubs(
        {("POST", "/v1/deploy"): lambda: (422, {"error": "invalid configuration", "details": details})}
    )
    with (
        OctClient([stub.address], "tok", STUB_CA, retry_for=0) as client,
        pytest.raises(InvalidConfig) as caught,
    ):
        client.deploy({"project": {}}, source_dir="/src")
    assert caught.value.problems == details
    assert caught.value.exit_code == 2


def test_other_errors_carry_the_servers_reason(stubs: Any) -> None:
    stub = stubs({("POST", "/v1/destroy"): lambda: (500, {"error": "raft log is on fire"})})
    with (
        OctClient([stub.address], "tok", STUB_CA, retry_for=0) as client,
        pytest.raises(OctError, match="raft log is on fire"),
    ):
        client.destroy()


def test_status_json_prints_exactly_the_response(stubs: Any, project: Path) -> None:
    stub = stubs({("GET", "/v1/status"): ok_status})
    state.save(project.parent / ".oct/state.json", record([dead_address(), stub.address], token="tok"))
    result = runner.invoke(app, ["status", "--json", "-c", str(project)])
    assert result.exit_code == 0, result.output
    assert result.stdout == snapshot().model_dump_json(indent=2) + "\n"
    assert ("GET", "/v1/status", "Bearer tok") in stub.seen


def test_status_tables(stubs: Any, project: Path) -> None:
    stub = stubs({("GET", "/v1/status"): ok_status})
    state.save(project.parent / ".oct/state.json", record([stub.address], token="tok"))
    result = runner.invoke(app, ["status", "-c", str(project)])
    assert result.exit_code == 0, result.output
    assert "node-2" in result.stdout and "0.25/2" in result.stdout and "64/2048 MB" in result.stdout


def test_deploy_reports_what_changed_per_service(
    stubs: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes = {"web": "replaced", "db": "unchanged", "cache": "started", "old": "removed"}
    done = snapshot(DeploymentView(id="d-7", state="succeeded"), [running()])
    stub = stubs(
        {
            ("POST", "/v1/deploy"): lambda: (202, {"deployment": "d-7", "changed": True, "changes": changes}),
            ("GET", "/v1/status"): lambda: (200, json.loads(done.model_dump_json())),
        }
    )
    monkeypatch.setattr(local, "ensure_cluster", lambda *a, **k: record([stub.address], token="tok"))

    result = runner.invoke(app, ["deploy", "-c", str(project)])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["~", "web", "replaced"] in lines and ["=", "db", "unchanged"] in lines
    assert ["+", "cache", "started"] in lines and ["-", "old", "removed"] in lines

    as_json = runner.invoke(app, ["deploy", "--json", "-c", str(project)])
    assert as_json.exit_code == 0, as_json.output
    printed = json.loads(as_json.stdout)
    assert printed["changes"] == changes
    assert printed["cluster"] == "c-test" and printed["deployment"]["id"] == "d-7"
    assert [s["name"] for s in printed["services"]] == ["web"]

    returned = api.deploy(project)
    assert isinstance(returned, api.DeployResult) and isinstance(returned, StatusResponse)
    assert returned.changes == changes and list(returned.changes) == list(changes)


def test_deploy_against_an_older_cluster_reports_no_changes(
    stubs: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = snapshot(DeploymentView(id="d-1", state="succeeded"), [running()])
    stub = stubs(
        {
            ("POST", "/v1/deploy"): lambda: (202, {"deployment": "d-1", "changed": False}),
            ("GET", "/v1/status"): lambda: (200, json.loads(done.model_dump_json())),
        }
    )
    monkeypatch.setattr(local, "ensure_cluster", lambda *a, **k: record([stub.address], token="tok"))
    assert api.deploy(project).changes == {}
