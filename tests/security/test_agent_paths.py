"""Attacks on the agent routes with names that are paths, against a real `oct-ctl` process.

The process runtime keeps ``<project>-<service>.log`` and ``<project>-<service>.json`` in the
node's ``processes/`` folder. The agent routes took ``project`` from the query string (and from the
body of ``PUT``) and used it in those paths as given, so with the cluster token a project such as
``../../../../outside/loot`` (or ``/abs/path/loot``) made ``GET .../logs`` read, ``DELETE`` unlink,
and ``PUT`` create (and start a process logging into) files outside the node folder. The node must
answer 400 with a JSON error to every such name, touch no file, and keep running its services.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import make_project  # noqa: F401  (the fixture, for this folder too)
from tests.e2e.harness import services_by_name
from tests.security.one_node import one_sleeper, the_node

pytestmark = [pytest.mark.security, pytest.mark.e2e]

PROJECT = "paths"
TOML = one_sleeper(PROJECT)


def spec(project: str, service: str) -> dict:
    return {
        "project": project,
        "service": service,
        "deployment": "d-attack",
        "spec_hash": "h-attack",
        "runtime": "process",
        "command": ["python3", "-c", "print('planted', flush=True); import time; time.sleep(600)"],
        "cpus": 10,
        "memory": 10,
    }


def test_agent_routes_refuse_names_that_are_paths(make_project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    project = make_project(PROJECT, TOML)
    project.oct("deploy")
    node = the_node(project)
    processes = node.folder / "processes"
    assert processes.is_dir(), "the process runtime is in use on the node"

    # The loot: files outside the node folder, named the way the runtime names its own.
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = f"oct-secret-{uuid.uuid4().hex}"
    loot = {outside / "loot-x.log": f"{secret}\n", outside / "loot-x.json": json.dumps({"secret": secret})}
    for path, content in loot.items():
        path.write_text(content)
    relative = os.path.relpath(outside / "loot", processes)  # ../../../../outside/loot
    assert relative.startswith("..") and (processes / f"{relative}-x.log").resolve() == outside / "loot-x.log"
    planted = os.path.relpath(outside / "planted", processes)

    bad_projects = [
        relative,
        str(outside / "loot"),  # absolute: Path("/dir") / "/abs/x" is "/abs/x"
        "..",
        "../x",
        "/etc",
        "x/../../../etc/passwd",
        "a\x00b",
        "paths\n",
        "a" * 64,
        "a" * 4000,
        "UPPER",
        "-x",
    ]
    term = {"X-Oct-Term": str(node.term())}
    answers: list[tuple[str, str, httpx.Response]] = []

    def attack(method: str, path: str, **kwargs: object) -> None:
        resp = node.client.request(method, path, **kwargs)  # type: ignore[arg-type]
        answers.append((method, f"{path} {kwargs.get('params', '')!r}"[:160], resp))

    for bad in bad_projects:
        attack("GET", "/v1/agent/instances/x/logs", params={"project": bad, "tail": "10000"})
        attack("GET", "/v1/agent/instances", params={"project": bad})
        attack("DELETE", "/v1/agent/instances/x", params={"project": bad}, headers=term)
        attack("GET", "/v1/agent/instances/x/backup", params={"project": bad})
        attack("GET", "/v1/agent/instances/x/logs/stream", params={"project": bad, "follow": "true"})
        attack("PUT", "/v1/agent/instances/x/restore", params={"project": bad}, content=b"\x1f\x8b junk")
    # PUT would create files (and start a process): only at places inside tmp_path.
    for bad in [relative, planted, str(outside / "planted"), "..", "../x", "a\x00b", "a" * 64, "UPPER"]:
        attack("PUT", "/v1/agent/instances/x", json=spec(bad, "x"), headers=term)
    # The service part of the path (and of the body) is a name as well.
    for bad_service in ["%2E%2E", "..%2F..%2Fx", "%2Fetc", "x%00y", "a" * 100, "UPPER"]:
        attack("GET", f"/v1/agent/instances/{bad_service}/logs", params={"project": PROJECT})
        attack("DELETE", f"/v1/agent/instances/{bad_service}", params={"project": PROJECT}, headers=term)
        attack("PUT", f"/v1/agent/instances/{bad_service}", json=spec(PROJECT, bad_service), headers=term)
        attack("GET", f"/v1/services/{bad_service}/logs")
        attack("GET", f"/v1/services/{bad_service}/backup")
        attack("GET", f"/v1/services/{bad_service}/logs/stream", params={"follow": "true"})
        attack("PUT", f"/v1/services/{bad_service}/restore", content=b"\x1f\x8b junk")
        attack("GET", f"/v1/agent/instances/{bad_service}/backup", params={"project": PROJECT})
    for bad_service in ["..", "../x", "/etc", "a\x00b"]:
        attack("PUT", "/v1/agent/instances/x", json=spec(PROJECT, bad_service), headers=term)

    problems: list[str] = []
    for method, what, resp in answers:
        if secret in resp.text:
            problems.append(f"{method} {what} read the file: {resp.status_code} {resp.text[:120]}")
        elif not 400 <= resp.status_code < 500:
            problems.append(f"{method} {what} answered {resp.status_code}: {resp.text[:120]}")
        elif not isinstance(body := resp.json(), dict) or not body.get("error"):
            problems.append(
                f"{method} {what} answered {resp.status_code} without an error: {resp.text[:120]}"
            )
    # Nothing outside the node folder was read, deleted, created or started.
    for path, content in loot.items():
        if not path.exists() or path.read_text() != content:
            problems.append(f"{path.name} was {'changed' if path.exists() else 'deleted'}")
    made = sorted(p.name for p in outside.iterdir() if p.name not in ("loot-x.json", "loot-x.log"))
    if made:
        problems.append(f"files were created outside the node folder: {made}")
    assert not problems, "\n".join(problems)
    name_errors = [resp.json()["error"] for _, _, resp in answers if resp.status_code == 400]
    assert any("project" in e and "name" in e for e in name_errors), name_errors[:5]

    listed = node.client.get("/v1/agent/instances").json()["instances"]
    assert [(i["project"], i["service"]) for i in listed] == [(PROJECT, "sleeper")]
    assert node.client.get("/v1/health").json()["ok"] is True
    assert services_by_name(project.status())["sleeper"]["state"] == "running"
    node.client.close()
