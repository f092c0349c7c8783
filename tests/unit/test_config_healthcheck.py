"""``[project.services.healthcheck]``: defaults, each kind of nonsense named at its line, and the
probe each instance's spec carries (its port is the one the instance listens on)."""

from __future__ import annotations

import hashlib
import json

from octctl.config import load_config_text
from octctl.specs import Rollout, instance_specs, spec_hash
from tests.unit.config_texts import HEADER, line_of, only_problem, problems_of, service_block
from tests.unit.test_specs import nodes

WEB = "internal_port = 80\nexternal_port = 8080\n"


def check_block(body: str) -> str:
    return "\n[project.services.healthcheck]\n" + body


def test_defaults_are_documented_ones() -> None:
    config = load_config_text(HEADER + service_block("web", WEB) + check_block('http = "/up"\n'), {})
    check = config.service("web").healthcheck
    assert check is not None and check.kind == "http"
    assert (check.interval, check.timeout, check.retries, check.start_period) == (2.0, 1.0, 3, 10.0)
    assert config.service("web").healthcheck is not None
    assert load_config_text(HEADER + service_block("web", WEB), {}).service("web").healthcheck is None


def test_exactly_one_kind_is_required() -> None:
    for body in ('tcp = true\nhttp = "/up"\n', "interval = 3\n"):
        text = HEADER + service_block("web", WEB) + check_block(body)
        problem = only_problem(text)
        assert (problem.path, problem.line) == (
            "project.services[0].healthcheck",
            line_of(text, "[project.services.healthcheck]"),
        )
        assert "exactly one of http" in problem.message


def test_nonsense_values_are_named_at_their_lines() -> None:
    text = (
        HEADER
        + service_block("web", WEB)
        + check_block('http = "up"\ninterval = 0.05\nretries = 0\nstart_period = -1\n')
        + service_block("db", "internal_port = 5432\n")
        + check_block("tcp = false\n")
    )
    found = {(p.path, p.line): p.message for p in problems_of(text)}
    assert found == {
        ("project.services[0].healthcheck.http", line_of(text, 'http = "up"')): (
            'expected a path starting with "/" and holding no spaces (like "/up"), got "up"'
        ),
        ("project.services[0].healthcheck.interval", line_of(text, "interval")): (
            "expected a number of at least 0.1, got 0.05"
        ),
        ("project.services[0].healthcheck.retries", line_of(text, "retries")): (
            "expected an integer of at least 1, got 0"
        ),
        ("project.services[0].healthcheck.start_period", line_of(text, "start_period")): (
            "expected a number of at least 0.0, got -1"
        ),
        ("project.services[1].healthcheck.tcp", line_of(text, "tcp = false")): (
            "tcp = false checks nothing: write tcp = true, or use http or command"
        ),
    }


def test_timeout_must_be_shorter_than_interval() -> None:
    text = HEADER + service_block("web", WEB) + check_block('http = "/up"\ninterval = 1\ntimeout = 1\n')
    problem = only_problem(text)
    assert problem.path == "project.services[0].healthcheck.timeout"
    assert problem.line == line_of(text, "timeout")
    assert problem.message.startswith("timeout (1 s) must be shorter than interval (1 s)")


def test_http_and_tcp_checks_need_a_port_to_reach() -> None:
    text = (
        HEADER
        + service_block("web", "external_port = 8080\n")  # docker without internal_port publishes nothing
        + check_block("tcp = true\n")
        + service_block("job", 'runtime = "process"\ncommand = "python3 job.py"\n')
        + check_block('http = "/up"\n')
        + service_block("ok", "")
        + check_block('command = "true"\n')
    )
    found = {p.path: (p.line, p.message) for p in problems_of(text)}
    assert set(found) == {"project.services[0].healthcheck.tcp", "project.services[1].healthcheck.http"}
    assert found["project.services[0].healthcheck.tcp"][0] == line_of(text, "tcp = true")
    assert "publishes a port only with internal_port" in found["project.services[0].healthcheck.tcp"][1]
    assert "give it an internal_port or an external_port" in found["project.services[1].healthcheck.http"][1]


def test_a_command_must_split_into_arguments() -> None:
    text = HEADER + service_block("web", "") + check_block('command = "sh -c \'oops"\n')
    problem = only_problem(text)
    assert problem.path == "project.services[0].healthcheck.command"
    assert problem.line == line_of(text, "command =")
    assert "No closing quotation" in problem.message


PROJECT = """
[project]
name = "shop"
[project.state_backend.local]
path = "state.json"
[[project.services]]
name = "app"
image = "shop:1"
internal_port = 8000
external_port = 80
cpus = 250
memory = 256
[[project.services]]
name = "db"
image = "postgres:16"
internal_port = 5432
cpus = 250
memory = 256
[project.services.healthcheck]
command = "pg_isready -U 'post gres'"
[[project.services]]
name = "worker"
runtime = "process"
command = "python3 worker.py"
internal_port = 9000
cpus = 100
memory = 64
[project.services.healthcheck]
tcp = true
retries = 5
"""

APP_CHECK = '[project.services.healthcheck]\nhttp = "/up"\ninterval = 0.5\ntimeout = 0.25\n'


def rendered(text: str) -> dict:
    config = load_config_text(text, {})
    placements = {"app": "n2", "db": "n1", "worker": "n1"}
    ports = {"app": 20007, "db": 20000, "worker": 20001}  # (db and worker are meshed: proxied too)
    return instance_specs(config, placements, nodes(), Rollout("d1", "c1", "/src"), ports)


def test_each_probe_goes_where_its_instance_listens() -> None:
    db_block = '[[project.services]]\nname = "db"'
    specs = rendered(PROJECT.replace(db_block, APP_CHECK + db_block, 1))
    app, db, worker = specs["app"].healthcheck, specs["db"].healthcheck, specs["worker"].healthcheck
    assert app is not None and db is not None and worker is not None
    # A public service's instance listens on its instance port, on its node's address.
    assert (app.kind, app.host, app.port, app.path, app.interval, app.timeout) == (
        "http",
        "127.0.0.3",
        20007,
        "/up",
        0.5,
        0.25,
    )
    assert (db.kind, db.command, db.port) == ("command", ["pg_isready", "-U", "post gres"], None)
    # So does a meshed one (its internal port is the proxies', on every node).
    assert (worker.kind, worker.host, worker.port, worker.retries) == ("tcp", "127.0.0.2", 20001, 5)
    assert specs["worker"].env["PORT"] == "20001"


def test_the_check_is_part_of_the_hash_and_no_check_leaves_old_hashes_alone() -> None:
    before = rendered(PROJECT)
    after = rendered(PROJECT.replace("retries = 5", "retries = 4"))
    assert before["worker"].spec_hash != after["worker"].spec_hash
    assert before["db"].spec_hash == after["db"].spec_hash
    app = before["app"]
    assert app.healthcheck is None
    # The hash of a spec without a check is what it was before specs had one (no instance replaced).
    content = app.model_dump(
        mode="json",
        exclude={
            "deployment",
            "spec_hash",
            "healthcheck",
            "volumes",
            "instance_port",
            "beside",
            "keep_previous",
        },
    )
    old = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    assert spec_hash(app) == app.spec_hash == old
