"""Every node of a real cluster answers DNS for the project from its own replica."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from tests.e2e.harness import Project, services_by_name
from tests.wait import wait_until

pytestmark = pytest.mark.e2e


def dns_servers(project: Project) -> list[tuple[str, int]]:
    found = []
    for node_file in sorted((project.dir / ".oct").glob("nodes/*/node.json")):
        settings = json.loads(node_file.read_text())
        found.append((settings["address"], settings["dns_port"]))
    return found


def ask(server: tuple[str, int], name: str, qtype: str = "A", tcp: bool = False) -> DNSRecord:
    return DNSRecord.parse(DNSRecord.question(name, qtype).send(server[0], server[1], tcp=tcp, timeout=3))


def test_every_node_resolves_services_and_follows_changes(make_project) -> None:  # type: ignore[no-untyped-def]
    project = make_project("examples/quickstart")
    project.oct("deploy")
    status = project.status()
    services = services_by_name(status)
    node_at = {n["address"]: n["id"] for n in status["nodes"]}
    servers = dns_servers(project)
    assert len(servers) == 3

    # The services are meshed: each node names itself, whose proxy serves them wherever they run.
    for server in servers:
        for tcp in (False, True):
            reply = ask(server, "web.quickstart.oct", tcp=tcp)
            assert [str(rr.rdata) for rr in reply.rr] == [server[0]], server
        srv = ask(server, "_api._tcp.quickstart.oct", "SRV")
        assert [str(rr.rdata) for rr in srv.rr] == [f"0 0 9101 {node_at[server[0]]}.node.quickstart.oct."]
        assert [str(rr.rdata) for rr in srv.ar] == [server[0]]
        node = ask(server, f"{services['store']['node']}.node.quickstart.oct")
        assert [str(rr.rdata) for rr in node.rr] == [services["store"]["address"]]
        missing = ask(server, "nothing.quickstart.oct")
        assert missing.header.rcode == RCODE.NXDOMAIN and missing.auth[0].rtype == QTYPE.SOA

    # A process service is told where its node's DNS is, and can ask it for the others.
    record = next((project.dir / ".oct").glob("nodes/*/processes/quickstart-web.json"))
    environ = Path(f"/proc/{json.loads(record.read_text())['pid']}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
    host, port = env["OCT_DNS"].split(":")
    assert (host, int(port)) in servers and env["OCT_DOMAIN"] == "quickstart.oct"
    answer = ask((host, int(port)), f"api.{env['OCT_DOMAIN']}")
    assert [str(rr.rdata) for rr in answer.rr] == [host]

    # Remove web: every node stops answering for it once the change replicates.
    text = project.config.read_text()
    project.config.write_text(text[: text.index('[[project.services]]\nname = "web"')])
    project.oct("deploy")
    wait_until(
        lambda: {s for s in servers if ask(s, "web.quickstart.oct").header.rcode != RCODE.NXDOMAIN},
        until=lambda answering: not answering,
        timeout=10,
        message="every node to stop answering for web",
    )
    for server in servers:
        assert [str(rr.rdata) for rr in ask(server, "api.quickstart.oct").rr] == [server[0]]
