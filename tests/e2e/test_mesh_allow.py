"""``allow`` on a real local cluster of containers: a service that allows only ``api`` answers
api's calls through the mesh and refuses another service's, and the refusals are in the caller
node's access log and its metrics. The callers are containers calling the address their spec gives
them (``{{ services.db.ip }}``: their own node's proxy), as any service would."""

from __future__ import annotations

import json
import shlex

import pytest

from tests.conftest import IMAGE
from tests.e2e.harness import Project, services_by_name
from tests.e2e.test_metrics import prometheus_client, value
from tests.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

#: A caller: an HTTP request to db at the address its spec names, with busybox nc (the image's
#: wget crashes); a refused call gets no answer.
CALL = (
    "while true; do out=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 "
    "{{{{ services.db.ip }}}} {{{{ services.db.port }}}}); case $out in *db-answers*) echo {name}-CALLED;; "
    "*) echo {name}-REFUSED;; esac; sleep 0.5; done"
)


def caller(name: str) -> str:
    """A caller service of db, as oct.toml says it (its command as a TOML string)."""
    command = json.dumps(f"sh -c {shlex.quote(CALL.format(name=name))}")
    return f"""
[[project.services]]
name = "{name}"
image = "{IMAGE}"
command = {command}
cpus = 100
memory = 32
depends_on = ["db"]
"""


CONFIG = f"""\
[project]
name = "guarded"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 2

[[project.services]]
name = "db"
image = "{IMAGE}"
command = "sh -c 'mkdir -p /www && echo db-answers > /www/index.html && exec httpd -f -p 8000 -h /www'"
internal_port = 8000
cpus = 100
memory = 32
allow = ["api"]

{caller("api")}{caller("other")}"""


def test_allow_lets_the_named_service_call_and_refuses_another_logged_and_counted(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("guarded", CONFIG)
    project.oct("deploy")

    def logs(service: str) -> str:
        return project.oct("logs", service, "--tail", "40").stdout

    wait_until(lambda: logs("api"), until=lambda out: "api-CALLED" in out, timeout=30, message="api's calls")
    other = wait_until(
        lambda: logs("other"),
        until=lambda out: "other-REFUSED" in out,
        timeout=30,
        message="other's refusals",
    )
    assert "other-CALLED" not in other

    # The refusal is logged by the proxy of other's node (no server: the proxy refused it) ...
    status = project.status()
    node = next(n for n in status["nodes"] if n["id"] == services_by_name(status)["other"]["node"])
    access = project.dir / ".oct" / "nodes" / node["id"] / "ingress" / "access.log"
    wait_until(
        lambda: access.read_text(),
        until=lambda text: any(
            line.startswith("db_8000 ") and "<NOSRV> PR" in line for line in text.splitlines()
        ),
        timeout=10,
        message="a refused call in the access log of other's node",
    )
    # ... and counted in its metrics.
    with prometheus_client(project) as prometheus:
        url = f"https://{node['address']}:{node['api_port']}/v1/metrics"
        wait_until(
            lambda: value(prometheus.get(url).text, "oct_ingress_denied_total", proxy="db_8000"),
            until=lambda denied: denied >= 1,
            timeout=10,
            message="refused calls counted",
        )
