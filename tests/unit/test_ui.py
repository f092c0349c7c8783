"""The dashboard's pure parts: login codes and sessions, the fleet's price, and the pages rendered
from a hand-made state (every section, the services' own words escaped)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from octctl.fleet_cost import billed_types, fleet_cost
from octctl.server.ui_routes import PARTS, board
from octctl.state.events import note
from octctl.state.shape import empty_state
from octctl.ui.board import EVENTS
from octctl.ui.login import LINK_SECONDS, SESSION_SECONDS, Logins
from octctl.ui.render import render


def test_a_login_code_works_once_on_its_node_within_a_minute() -> None:
    logins = Logins("token", "node-1")
    now = 1_000_000.0
    code = logins.link_code(now)
    assert "token" not in code
    assert Logins("token", "node-2").redeem(code, now) is None  # another node
    session = logins.redeem(code, now + LINK_SECONDS - 1)
    assert session is not None and logins.session_ok(session, now + 1)
    assert logins.redeem(code, now + 2) is None  # used
    assert logins.redeem(logins.link_code(now), now + LINK_SECONDS) is None  # expired
    assert not logins.session_ok(session, now + LINK_SECONDS + SESSION_SECONDS)
    assert not Logins("other token", "node-1").session_ok(session, now + 1)
    assert Logins("token", "node-2").session_ok(session, now + 1)  # any node of the cluster


@pytest.mark.parametrize("junk", [None, "", "a.b.c", "1." * 300, "12345.short.mac", "\x00" * 64])
def test_junk_is_refused_without_parsing(junk: str | None) -> None:
    logins = Logins("token", "node-1")
    assert logins.redeem(junk) is None and not logins.session_ok(junk)


def test_a_session_is_not_a_login_code_and_back() -> None:
    logins = Logins("token", "node-1")
    session = logins.redeem(logins.link_code())
    assert session is not None and logins.redeem(session) is None
    assert not logins.session_ok(logins.link_code())


def test_what_the_fleet_costs() -> None:
    assert fleet_cost("local", [None] * 3).monthly_usd == 0
    aws = fleet_cost("aws", ["t4g.small"] * 3)
    # the instances, and each node's 20 GB gp3 root volume and public IPv4 ($5.25)
    assert aws.monthly_usd == ((Decimal("0.0168") * 730 + Decimal("5.25")) * 3).quantize(Decimal("0.01"))
    assert "3 t4g.small node(s)" in aws.note
    unknown = fleet_cost("aws", ["t4g.small", "x9.huge"])
    assert unknown.monthly_usd is None and "x9.huge" in unknown.note


def test_a_fleet_of_several_types_is_priced_node_by_node() -> None:
    nodes = [
        {"id": "a", "status": "ready", "instance_type": "t4g.medium"},
        {"id": "b", "status": "ready", "instance_type": "t4g.small"},
        {"id": "c", "status": "ready"},  # (a record from before nodes named their type)
        {"id": "d", "status": "retiring", "instance_type": "t4g.xlarge"},  # no longer billed
    ]
    types = billed_types(nodes, "t4g.small")  # type: ignore[arg-type]
    assert types == ["t4g.medium", "t4g.small", "t4g.small"]
    cost = fleet_cost("aws", types)
    each = {"t4g.medium": Decimal("0.0336"), "t4g.small": Decimal("0.0168")}
    expected = sum((each[t] * 730 + Decimal("5.25") for t in types if t), Decimal(0))
    assert cost.monthly_usd == expected.quantize(Decimal("0.01"))
    assert "1 t4g.medium node(s)" in cost.note and "2 t4g.small node(s)" in cost.note


def state_with_a_service() -> dict:
    state = empty_state()
    state["cluster"] = "c-ui"
    now = time.time()
    state["nodes"]["node-1"] = {
        "id": "node-1",
        "address": "127.0.0.1",
        "api_port": 1,
        "raft_port": 2,
        "cpus": 1000,
        "memory": 1024,
        "status": "ready",
        "joined_at": now,
        "last_seen": now,
    }
    state["project"] = {
        "project": {
            "name": "shop",
            "state_backend": {"local": {"path": "./state.json"}},
            "provider": {"local": {"nodes": 1}},
            "services": [
                {"name": "web", "runtime": "process", "command": "sleep 1", "cpus": 100, "memory": 32}
            ],
        }
    }
    state["placements"]["web"] = "node-1"
    state["instances"]["node-1"] = {"web": {"state": "running", "restarts": 2, "deployment": "d-1"}}
    for i in range(EVENTS + 5):
        note(state, "audit", "someone", f"call {i}", now)
    note(state, "instance.started", "web@node-1", "<script>alert(1)</script>", now)
    return state


def test_every_section_renders_and_escapes() -> None:
    shown = board(state_with_a_service(), "node-1", "node-1", "local", None)  # type: ignore[arg-type]
    assert len(shown.events) == EVENTS and shown.events[0].kind == "instance.started"  # newest first
    assert shown.restarts == 2
    page = render("page.html.j2", board=shown)
    assert 'data-service="web"' in page and 'data-node="node-1"' in page and "$0.00" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    for part in PARTS:
        fragment = render(f"parts/{part}.html.j2", board=shown)
        assert f'id="{part}"' in fragment and f'hx-get="/ui/part/{part}"' in fragment


def test_oct_status_names_each_nodes_type_when_the_fleet_has_types() -> None:
    from rich.console import Console

    from octcli.terminal import nodes_table
    from octctl.api.models import NodeView, StatusResponse

    def shown(*types: str | None) -> str:
        nodes = [
            NodeView(
                id=f"n-{i}",
                address="10.0.0.1",
                api_port=31888,
                role="leader" if i == 0 else "follower",
                status="ready",
                cpus=1950,
                memory=1664,
                cpus_used=0,
                memory_used=0,
                instance_type=t,
            )
            for i, t in enumerate(types)
        ]
        status = StatusResponse(
            cluster="c",
            project="p",
            node="n-0",
            leader="n-0",
            stale=False,
            deployment=None,
            nodes=nodes,
            services=[],
        )
        console = Console(width=200, record=True)
        console.print(nodes_table(status))
        return console.export_text()

    typed = shown("t4g.medium", "t4g.small")
    assert "type" in typed and "t4g.medium" in typed and "t4g.small" in typed
    assert "type" not in shown(None, None), "a local cluster's nodes have no type: no column"
