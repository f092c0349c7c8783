"""Volumes: both spellings in oct.toml and every kind of nonsense named at its line; the node that
holds a volume pins its service, which waits (and says for what) while that node is down and
never grows the fleet; the state records a home once and never moves it; specs carry the mounts
without changing the hash of a service that has none."""

from __future__ import annotations

from octctl.config import load_config_text
from octctl.leader.liveness import UNREACHABLE_AFTER
from octctl.scheduler import Demand, NodeCapacity, place
from octctl.server.views import status_view
from octctl.specs import Rollout, instance_specs
from octctl.state.model import apply_command, command, empty_state, volumes_of
from octctl.volumes import new_homes, pins, waiting_reason
from tests.unit.config_texts import HEADER, line_of, problems_of, service_block
from tests.unit.leader_fakes import deploy, project, service, ticks
from tests.unit.test_specs import nodes

PG = 'volumes = ["pgdata:/var/lib/postgresql/data"]\n'
#: A local cluster (HEADER alone is an AWS project).
LOCAL = HEADER + "\n[project.provider.local]\n"


def test_the_short_and_the_long_form_read_alike() -> None:
    long = '\n[[project.services.volumes]]\nname = "pgdata"\npath = "/var/lib/postgresql/data"\nsize = 20\n'
    short = load_config_text(LOCAL + service_block("db", PG), {}).service("db").volumes
    written = load_config_text(LOCAL + service_block("db") + long, {}).service("db").volumes
    assert [(v.name, v.path) for v in short] == [(v.name, v.path) for v in written]
    assert (short[0].size, written[0].size) == (10, 20)
    process = service_block("jobs", 'runtime = "process"\ncommand = "run"\nvolumes = ["queue"]\n')
    (queue,) = load_config_text(LOCAL + process, {}).service("jobs").volumes
    assert (queue.name, queue.path) == ("queue", None)


def test_nonsense_is_named_at_its_line() -> None:
    text = (
        LOCAL
        + service_block("db", 'replicas = 2\nvolumes = ["pgdata:/data", "logs:var/log", "Bad:/x"]\n')
        + '\n[project.services.update]\norder = "start-first"\n'
        + service_block("web", 'volumes = ["pgdata:/srv", "cache"]\n')
        + service_block("jobs", 'runtime = "process"\ncommand = "run"\nvolumes = ["queue:/q"]\n')
    )
    found = {(p.path, p.line): p.message for p in problems_of(text)}
    db, web, jobs = (line_of(text, marker) for marker in ('"pgdata:/data"', '"pgdata:/srv"', '"queue:/q"'))
    assert found == {
        ("project.services[0].replicas", line_of(text, "replicas")): (
            "service 'db' has volumes (pgdata, logs, Bad) and 2 replicas: a volume is one instance's "
            "data, so a service with volumes runs one instance"
        ),
        ("project.services[0].volumes[1].path", db): (
            "volume path 'var/log' must be absolute (the path inside the container)"
        ),
        ("project.services[0].volumes[2].name", db): (
            "volume name 'Bad' is not valid: use 1-63 lowercase letters, digits, '-' or '_', starting "
            "and ending with a letter or digit"
        ),
        ("project.services[0].update.order", line_of(text, "order =")): (
            "service 'db' has volumes (pgdata, logs, Bad): start-first would run its old and new "
            'instance on the same data at once; use order = "stop-first"'
        ),
        ("project.services[1].volumes[0].name", web): (
            "volume 'pgdata' is already db's: a volume belongs to one service (its data lives on the "
            "node that runs it)"
        ),
        ("project.services[1].volumes[1].path", web): (
            "volume 'cache' needs the path the container sees it at: \"cache:/data\""
        ),
        ("project.services[2].volumes[0].path", jobs): (
            "service 'jobs' is a process: it finds volume 'queue' in $OCT_VOLUME_QUEUE, not at a path; "
            'write "queue" alone'
        ),
    }


def test_a_colon_with_no_path_and_a_size_out_of_range_fail_the_schema() -> None:
    text = LOCAL + service_block("db", 'volumes = ["pgdata:"]\n')
    (problem,) = problems_of(text)
    assert problem.path == "project.services[0].volumes[0]"
    assert problem.message == '"pgdata:" names no path after the colon: write "name:/path" or "name"'
    text = LOCAL + service_block("db") + '\n[[project.services.volumes]]\nname = "d"\npath = "/d"\nsize = 0\n'
    (problem,) = problems_of(text)
    assert (problem.path, problem.line) == ("project.services[0].volumes[0].size", line_of(text, "size"))


def test_volumes_on_aws_are_valid_and_sized() -> None:
    """On AWS a volume is an EBS disk of ``size`` GB (tests/aws: it follows its service)."""
    long = '\n[[project.services.volumes]]\nname = "pgdata"\npath = "/data"\nsize = 30\n'
    assert load_config_text(HEADER + service_block("db", PG), {}).service("db").volumes[0].name == "pgdata"
    config = load_config_text(HEADER + service_block("db") + long, {})
    assert [(v.name, v.size) for v in config.service("db").volumes] == [("pgdata", 30)]


def test_a_pinned_demand_goes_to_its_node_or_nowhere() -> None:
    capacities = [NodeCapacity("n1", 1000, 1000), NodeCapacity("n2", 1000, 1000)]
    db = Demand("db", 100, 100, pinned="n2")
    assert place([db], capacities, {"db": "n1"}).placements == {"db": "n2"}  # moved to its data
    assert place([db], capacities, {}).placements == {"db": "n2"}
    down = [NodeCapacity("n1", 1000, 1000), NodeCapacity("n2", 1000, 1000, schedulable=False)]
    plan = place([db], down, {"db": "n2"})
    assert (dict(plan.placements), plan.unplaced) == ({}, ("db",))
    full = [NodeCapacity("n1", 1000, 1000), NodeCapacity("n2", 1000, 1000)]
    plan = place([Demand("big", 100, 950, pinned="n2"), db], full, {"big": "n2"})
    assert plan.placements == {"big": "n2"} and plan.unplaced == ("db",)


def test_homes_are_recorded_once_and_name_the_wait() -> None:
    config = load_config_text(LOCAL + service_block("db", PG) + service_block("web"), {})
    state = empty_state()
    for record in nodes().values():
        apply_command(state, command("node_joined", node=record))
    assert pins(config, {}) == {}
    homes = new_homes(config, {"db": "n2", "web": "n1"}, {})
    assert homes == {"pgdata": {"service": "db", "node": "n2"}}
    apply_command(state, command("volume_homes", homes=homes, at=5.0))
    moved = apply_command(
        state, command("volume_homes", homes={"pgdata": {"service": "db", "node": "n1"}}, at=6)
    )
    assert moved is None and volumes_of(state) == {
        "pgdata": {"service": "db", "node": "n2", "created_at": 5.0}
    }
    assert apply_command(
        state, command("volume_homes", homes={"x": {"service": "db", "node": "n9"}}, at=7)
    ) == {"error": "volume homes on unknown nodes: ['n9']"}
    assert pins(config, volumes_of(state)) == {"db": "n2"}
    assert new_homes(config, {"db": "n2"}, volumes_of(state)) == {}
    db = config.service("db")
    assert waiting_reason(db, volumes_of(state), state["nodes"], {"db": "n2"}) is None
    state["nodes"]["n2"]["status"] = "unreachable"
    assert waiting_reason(db, volumes_of(state), state["nodes"], {}) == (
        "waiting for n2, which holds pgdata (n2 is unreachable)"
    )
    del state["nodes"]["n2"]
    assert "n2 has left the cluster" in (waiting_reason(db, volumes_of(state), state["nodes"], {}) or "")


def test_specs_carry_the_mounts_and_a_service_without_volumes_keeps_its_hash() -> None:
    plain = load_config_text(LOCAL + service_block("db"), {})
    with_volume = load_config_text(LOCAL + service_block("db", PG), {})
    rollout = Rollout(deployment="d1")
    before = instance_specs(plain, {"db": "n1"}, nodes(), rollout)["db"]
    after = instance_specs(with_volume, {"db": "n1"}, nodes(), rollout)["db"]
    assert before.volumes == [] and [(v.name, v.path) for v in after.volumes] == [
        ("pgdata", "/var/lib/postgresql/data")
    ]
    assert before.spec_hash != after.spec_hash
    assert "volumes" not in before.model_dump(exclude_defaults=True)


def test_the_leader_pins_waits_and_does_not_grow_the_fleet_for_a_pinned_service(parts) -> None:  # type: ignore[no-untyped-def]
    reconciler, raft, agents, provider = parts
    # (big takes the leader's node-2, so db's data lands on a follower that can go down)
    deploy(
        raft,
        project(service("big", memory=2048, internal_port=8001), service("db", volumes=["pgdata:/data"])),
    )
    ticks(reconciler, 3)
    home = raft.state["placements"]["db"]
    assert home != "node-2" and volumes_of(raft.state)["pgdata"]["node"] == home
    launched = len(provider.provisioned)
    agents.down.add(f"{raft.state['nodes'][home]['address']}:31888")
    ticks(reconciler, UNREACHABLE_AFTER + 2)
    assert raft.state["nodes"][home]["status"] == "unreachable"
    assert "db" not in raft.state["placements"], "a service must not start empty away from its data"
    assert len(provider.provisioned) == launched, "a new node cannot hold the data: none is asked for"
    status = status_view(raft.state, "node-2", "node-2")
    db = next(s for s in status.services if s.name == "db")
    waiting = f"waiting for {home}, which holds pgdata ({home} is unreachable)"
    assert db.node is None and db.error == waiting
    (volume,) = status.volumes
    assert (volume.name, volume.service, volume.node, volume.state) == ("pgdata", "db", home, "waiting")
    changed = service("db", volumes=["pgdata:/data"], envs={"V": "2"})
    deploy(raft, project(service("big", memory=2048, internal_port=8001), changed), deployment="d2")
    ticks(reconciler, 2)
    assert raft.state["deployment"]["message"] == f"1/2 services running; {waiting}"
    agents.down.clear()
    ticks(reconciler, 3)
    assert raft.state["placements"]["db"] == home
    assert status_view(raft.state, "node-2", "node-2").volumes[0].state == "in use"
