"""``replicas``: validated at its line; instances named so each says whose it is; spread over
distinct nodes by the scheduler when there are enough, doubled up when there are not."""

from __future__ import annotations

import pytest

from octctl.config import load_config_text
from octctl.instances import instance_names, service_of
from octctl.names import InvalidName, check_instance
from octctl.scheduler import NodeCapacity, place
from octctl.specs import demand, demands
from tests.unit.config_texts import HEADER, line_of, only_problem, service_block


@pytest.mark.parametrize(
    ("value", "expected"), [("0", "at least 1"), ("101", "at most 100"), ('"3"', "integer")]
)
def test_replicas_out_of_range_is_named_at_its_line(value: str, expected: str) -> None:
    text = HEADER + service_block("web", f"replicas = {value}\n")
    problem = only_problem(text)
    assert (problem.path, problem.line) == ("project.services[0].replicas", line_of(text, "replicas ="))
    assert expected in problem.message


def test_instances_are_named_after_their_service() -> None:
    config = load_config_text(HEADER + service_block("web", "replicas = 3\n") + service_block("db"), {})
    web, db = config.project.services
    assert instance_names(web) == ["web", "web.2", "web.3"] and instance_names(db) == ["db"]
    assert {service_of(name) for name in instance_names(web)} == {"web"}
    assert check_instance("web.3") == "web.3"
    for bad in ["web.0", "web.", "web.2.2", "../web", "web.1000"]:
        with pytest.raises(InvalidName):
            check_instance(bad)


def nodes(count: int) -> list[NodeCapacity]:
    return [NodeCapacity(f"node-{i}", 4000, 4096) for i in range(1, count + 1)]


def test_replicas_go_to_distinct_nodes_when_there_are_enough_and_double_up_when_not() -> None:
    config = load_config_text(HEADER + service_block("web", "replicas = 3\n") + service_block("db"), {})
    demands = [demand(s, i) for s in config.project.services for i in instance_names(s)]
    spread = place(demands, nodes(3), {})
    assert len({spread.placements[i] for i in ("web", "web.2", "web.3")}) == 3
    crowded = place(demands, nodes(2), {})
    assert sorted(crowded.placements) == ["db", "web", "web.2", "web.3"] and crowded.unplaced == ()
    # Kept where they run: a new node does not move a running instance.
    again = place(demands, nodes(4), crowded.placements)
    assert again.moved == ()


def test_replicas_of_a_node_bound_port_never_share_a_node_and_meshed_ones_may() -> None:
    db = service_block("db", "internal_port = 5432\nreplicas = 3\n")
    bound = load_config_text(HEADER + db + service_block("db2", "internal_port = 5432\n"), {})
    plan = place(demands(bound), nodes(3), {})
    assert len(plan.placements) == 3 and len(plan.unplaced) == 1, "the port is bound on the node's address"
    meshed = load_config_text(HEADER + db, {})
    plan = place(demands(meshed), nodes(2), {})
    assert len(plan.placements) == 3 and plan.unplaced == (), "instance ports: two may share a node"


def test_update_policy_defaults_and_a_start_first_order_accepted() -> None:
    config = load_config_text(HEADER + service_block("web", "replicas = 2\n"), {})
    update = config.project.services[0].update
    assert (update.order, update.max_parallel, update.healthy_deadline, update.auto_rollback) == (
        "stop-first",
        1,
        300,
        True,
    )
    text = (
        HEADER
        + service_block("web", "replicas = 2\n")
        + '\n[project.services.update]\norder = "start-first"\n'
    )
    assert load_config_text(text, {}).project.services[0].update.order == "start-first"
    wrong = only_problem(HEADER + service_block("web") + '\n[project.services.update]\norder = "sideways"\n')
    assert wrong.path == "project.services[0].update.order" and "start-first" in wrong.message
    bad = only_problem(HEADER + service_block("web") + "\n[project.services.update]\nmax_parallel = 0\n")
    assert bad.path == "project.services[0].update.max_parallel"
