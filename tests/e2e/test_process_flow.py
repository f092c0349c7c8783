"""The quickstart project (process runtime) on a real 3-node local cluster, from deploy to destroy."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from pathlib import Path

import pytest

from octctl.config import load_config
from octctl.providers.local.provider import claims_dir
from tests.e2e.harness import Project, api_client, http_get, octctl_pids, services_by_name
from tests.wait import wait_until

pytestmark = pytest.mark.e2e


def process_record(project: Project, service: str) -> dict:
    records = list((project.dir / ".oct").glob(f"nodes/*/processes/quickstart-{service}.json"))
    assert len(records) == 1, f"expected one record for {service}, found {records}"
    return json.loads(records[0].read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def claims_of(project: Project) -> list[Path]:
    """The machine-wide address claims naming a node folder of ``project`` (other runs' come and go)."""
    found = []
    for claim in claims_dir().iterdir():
        with contextlib.suppress(OSError):
            if claim.read_text().startswith(str(project.dir.resolve() / ".oct") + "/"):
                found.append(claim)
    return found


def ingress_pids(project: Project) -> list[int]:
    """The HAProxy master of each node, from the pid files the nodes' ingress wrote."""
    files = (project.dir / ".oct").glob("nodes/*/ingress/haproxy.pid")
    return [int(path.read_text().split()[0]) for path in files]


def start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_quickstart_deploy_update_remove_destroy(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")

    out = project.oct("deploy")
    assert "web" in out.stdout
    # A first deploy starts every service, and says so.
    lines = [line.split() for line in out.stdout.splitlines()]
    assert all(["+", name, "started"] in lines for name in ("store", "api", "web")), out.stdout

    status = project.status()
    assert status["project"] == "quickstart"
    assert status["deployment"]["state"] == "succeeded"
    assert len(status["nodes"]) == 3
    assert [n["role"] for n in status["nodes"]].count("leader") == 1
    assert all(n["status"] == "ready" for n in status["nodes"])
    services = services_by_name(status)
    assert set(services) == {"store", "api", "web"}
    assert all(s["state"] == "running" and s["runtime"] == "process" for s in services.values())
    assert len({s["node"] for s in services.values()}) == 3, "three services should spread over three nodes"
    assert sum(n["cpus_used"] for n in status["nodes"]) == 300

    page = http_get(services["web"]["endpoint"])
    assert "Hello from oct" in page
    # web reached api, which reached store, each on the node the scheduler chose.
    assert f"api on {services['api']['node']}" in page and f"store on {services['store']['node']}" in page

    # Every node's proxy serves the internal services at their ports (the mesh), wherever they run.
    for node in status["nodes"]:
        answer = json.loads(http_get(f"http://{node['address']}:9102/"))
        assert answer["service"] == "store" and answer["node"] == services["store"]["node"]

    # `oct logs` fetches a service's output from the node that runs it; api listens on its
    # instance port there (its own port, 9101, is the proxies').
    logs = project.oct("logs", "api").stdout
    assert re.search(rf"api listening on {re.escape(services['api']['address'])}:2\d{{4}}\b", logs), logs

    pids = {name: process_record(project, name)["pid"] for name in services}
    assert all(alive(pid) for pid in pids.values())
    # depends_on order: store started before api, api before web.
    assert start_ticks(pids["store"]) <= start_ticks(pids["api"]) <= start_ticks(pids["web"])

    # Any node answers: a follower reads from its replica and forwards writes to the leader.
    follower = next(n for n in status["nodes"] if n["role"] == "follower")
    client = api_client(project.dir, f"{follower['address']}:{follower['api_port']}")
    with client:
        seen = client.get("/v1/status").json()
        assert seen["node"] == follower["id"] and seen["stale"] is True
        assert seen["deployment"]["id"] == status["deployment"]["id"]
        config = load_config(project.config).model_dump(mode="json")
        forwarded = client.post("/v1/deploy", json={"config": config, "source_dir": str(project.dir)})
        assert forwarded.status_code == 202
        assert forwarded.json() == {
            "deployment": status["deployment"]["id"],
            "changed": False,
            "changes": {"store": "unchanged", "api": "unchanged", "web": "unchanged"},
        }

    # An unchanged redeploy touches nothing, and reports every service unchanged.
    again = json.loads(project.oct("deploy", "--json").stdout)
    assert again["changes"] == {"store": "unchanged", "api": "unchanged", "web": "unchanged"}
    assert again["deployment"]["id"] == status["deployment"]["id"]
    assert {name: process_record(project, name)["pid"] for name in services} == pids

    # One env value changed: only that service is replaced, and the report says which.
    project.edit('GREETING = "Hello"', 'GREETING = "Bonjour"')
    changed = json.loads(project.oct("deploy", "--json").stdout)
    assert changed["changes"] == {"store": "unchanged", "api": "unchanged", "web": "replaced"}
    assert changed["deployment"]["state"] == "succeeded"
    assert {s["name"]: s["state"] for s in changed["services"]} == dict.fromkeys(services, "running")
    after = {name: process_record(project, name)["pid"] for name in services}
    assert after["store"] == pids["store"] and after["api"] == pids["api"]
    assert after["web"] != pids["web"] and not alive(pids["web"])
    assert "Bonjour from oct" in http_get(services["web"]["endpoint"])

    # A service removed from oct.toml is removed from its node.
    text = project.config.read_text()
    project.config.write_text(text[: text.index('[[project.services]]\nname = "web"')])
    removed = project.oct("deploy")
    assert ["-", "web", "removed"] in [line.split() for line in removed.stdout.splitlines()], removed.stdout
    assert ["=", "api", "unchanged"] in [line.split() for line in removed.stdout.splitlines()]
    status = project.status()
    assert set(services_by_name(status)) == {"store", "api"}
    assert not alive(after["web"])
    assert alive(after["api"]) and alive(after["store"])

    # Without --yes and without a terminal to ask on, destroy refuses and touches nothing.
    refused = project.oct("destroy", check=False)
    assert refused.returncode == 2 and "refusing to destroy without confirmation" in refused.stderr
    assert all(alive(pid) for name, pid in after.items() if name != "web")

    claimed = claims_of(project)
    assert len(claimed) == 3, "one address claim per node"
    project.oct("destroy", "--yes")
    assert octctl_pids(project.dir) == []
    assert not any(alive(pid) for pid in after.values())
    assert not (project.dir / ".oct").exists()
    assert not (project.dir / "state.json").exists()
    assert not (project.dir / "state.json.lock").exists()
    assert claims_of(project) == [], "the project's address claims are released"
    # Destroy is idempotent (and with nothing left, does not ask).
    assert project.oct("destroy").returncode == 0


def test_a_killed_node_comes_back_with_its_services(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")
    project.oct("deploy")
    status = project.status()
    follower = next(n for n in status["nodes"] if n["role"] == "follower")
    pid = int((project.dir / ".oct" / "nodes" / follower["id"] / "oct-ctl.pid").read_text())
    os.kill(pid, signal.SIGKILL)

    # The next deploy (same file) restarts the dead node from its files; its services run again,
    # either re-applied there or moved to a live node.
    project.oct("deploy")

    def recovered(status: dict) -> bool:
        nodes = {n["id"]: n for n in status["nodes"]}
        return nodes[follower["id"]]["status"] == "ready" and all(
            s["state"] == "running" for s in status["services"]
        )

    status = wait_until(
        project.status,
        until=recovered,
        timeout=60,
        interval=0.3,
        message=lambda: f"the node and every service to run again\n{project.node_logs()}",
    )
    nodes = {n["id"]: n for n in status["nodes"]}
    services = services_by_name(status)
    assert len(nodes) == 3
    assert "Hello from oct" in http_get(services["web"]["endpoint"])


def kill_every_node(project: Project) -> None:
    """kill -9 every oct-ctl of the project, as a power cut would, and wait until they are gone."""
    for pid in octctl_pids(project.dir):
        os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: octctl_pids(project.dir),
        until=lambda pids: not pids,
        timeout=10,
        message="every oct-ctl to be gone",
    )


def test_destroy_after_every_node_crashed_still_removes_everything(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")
    project.oct("deploy")
    children = [
        json.loads(p.read_text())["pid"] for p in (project.dir / ".oct").glob("nodes/*/processes/*.json")
    ]
    assert len(children) == 3 and all(alive(pid) for pid in children)
    proxies = ingress_pids(project)
    assert len(proxies) == 3 and all(alive(pid) for pid in proxies)  # web is served on every node
    kill_every_node(project)

    assert project.oct("status", check=False).returncode == 3  # nobody answers
    project.oct("destroy", "--yes")
    assert octctl_pids(project.dir) == []
    assert not any(alive(pid) for pid in children), "services of crashed nodes must not outlive destroy"
    assert not any(alive(pid) for pid in proxies), "nor their nodes' ingress"
    assert not (project.dir / ".oct").exists() and not (project.dir / "state.json").exists()


def test_the_cluster_state_survives_every_node_being_killed(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")
    project.oct("deploy")
    before = project.status()
    kill_every_node(project)

    # The same file again: the nodes restart from their Raft journals and find the deployment they
    # had acknowledged, so it is not a new deployment, and every service runs again.
    project.oct("deploy")
    after = wait_until(
        project.status,
        until=lambda status: all(s["state"] == "running" for s in status["services"]),
        timeout=60,
        interval=0.3,
        message=lambda: f"every service to run again\n{project.node_logs()}",
    )
    assert after["cluster"] == before["cluster"]
    assert after["deployment"]["id"] == before["deployment"]["id"]
    # Same nodes (a node slow to come back may have had its services moved meanwhile: also fine).
    assert {n["id"] for n in after["nodes"]} == {n["id"] for n in before["nodes"]}
    assert {s["name"] for s in after["services"]} == {"store", "api", "web"}
    assert "Hello from oct" in http_get(services_by_name(after)["web"]["endpoint"])


def test_every_node_answers_for_a_public_service(make_project) -> None:  # type: ignore[no-untyped-def]
    """web (external_port 9100) runs on one node; the ingress serves 9100 on all three, forwarding to
    the instance port its node listens on."""
    project = make_project("examples/quickstart")
    project.oct("deploy")
    status = project.status()
    web_node = services_by_name(status)["web"]["node"]
    others = [n["address"] for n in status["nodes"] if n["id"] != web_node]
    assert len(others) == 2
    for address in [n["address"] for n in status["nodes"]]:
        assert "Hello from oct" in http_get(f"http://{address}:9100/")
    # The instance itself listens on its instance port: 9100 is the ingress's, on every node.
    environ = Path(f"/proc/{process_record(project, 'web')['pid']}/environ").read_bytes().split(b"\0")
    port = int(next(v for v in environ if v.startswith(b"PORT=")).removeprefix(b"PORT="))
    assert 20000 <= port < 30000
    project.oct("destroy", "--yes")
    assert not any(alive(pid) for pid in ingress_pids(project))
