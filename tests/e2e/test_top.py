"""What instances use, on a real 2-node cluster with a busy process service and a busy container:
``oct top`` shows their CPU and memory and the nodes' totals, and every node's metrics count
their CPU time and memory (read as Prometheus would, with the scrape token)."""

from __future__ import annotations

import re

import httpx
import pytest
import yaml

from octctl.tls import client_context
from tests.e2e.harness import Project
from tests.e2e.test_metrics import value
from tests.wait import wait_until

pytestmark = pytest.mark.e2e

#: Spins one core and holds 48 MiB (every page touched, so it is resident).
BURN = "python3 -c \"x = bytearray(48 * 2**20); x[::4096] = b'1' * len(x[::4096]); exec('while 1: pass')\""
CONFIG = f"""\
[project]
name = "top"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 2

[[project.services]]
name = "burner"
runtime = "process"
command = '''{BURN}'''
cpus = 500
memory = 128

[[project.services]]
name = "spinner"
image = "oct-test/busybox:latest"
command = "sh -c 'while :; do :; done'"
cpus = 500
memory = 64
"""


def row(text: str, name: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.split()[:1] == [name]]
    return line.split()


def test_top_and_metrics_show_what_instances_use(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("top", CONFIG)
    project.oct("deploy")
    shown = project.oct("top", "--once", "--interval", "1").stdout
    burner, spinner = row(shown, "burner"), row(shown, "spinner")
    assert burner[2] == "running" and spinner[2] == "running"
    assert float(burner[3].rstrip("%")) > 5 and float(spinner[3].rstrip("%")) > 5  # busy: a share of a core
    assert float(burner[4]) >= 48 and burner[5] == "MiB"  # its bytearray, touched
    nodes = {row(shown, n["id"])[0]: row(shown, n["id"]) for n in project.status()["nodes"]}
    assert all(float(cells[3].rstrip("%")) > 5 for cells in nodes.values())  # one busy instance each
    assert sum(float(cells[6]) for cells in nodes.values()) >= 48  # id role status cpu N cores M MiB

    (scrape,) = yaml.safe_load(project.oct("scrape-config").stdout)["scrape_configs"]
    prometheus = httpx.Client(
        verify=client_context(scrape["tls_config"]["ca"]),
        headers={"Authorization": f"Bearer {scrape['authorization']['credentials']}"},
        timeout=10,
        trust_env=False,
    )
    placed = {i["name"]: i["node"] for s in project.status()["services"] for i in s["instances"]}
    address = {n["id"]: f"{n['address']}:{n['api_port']}" for n in project.status()["nodes"]}

    def scrape_of(instance: str) -> str:
        return prometheus.get(f"https://{address[placed[instance]]}/v1/metrics").text

    with prometheus:
        for instance, runtime in (("burner", "process"), ("spinner", "docker")):
            labels = {"instance": instance, "runtime": runtime}
            first = value(scrape_of(instance), "oct_instance_cpu_seconds_total", **labels)
            wait_until(
                lambda i=instance, r=runtime: value(
                    scrape_of(i), "oct_instance_cpu_seconds_total", instance=i, runtime=r
                ),
                until=lambda later, f=first: later > f + 0.2,
                timeout=30,
            )
            memory = value(scrape_of(instance), "oct_instance_memory_bytes", **labels)
            assert memory > (48 * 2**20 if instance == "burner" else 0)
        assert re.search(r"^# TYPE oct_instance_memory_bytes gauge$", scrape_of("burner"), re.M)
