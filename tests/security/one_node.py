"""A one-node local project with one sleeping process service: the target of the API attack tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.harness import Project, node_files_client


def one_sleeper(project: str) -> str:
    """oct.toml of project ``project``: one node, one process service that sleeps."""
    return f"""
[project]
name = "{project}"

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = 1

[[project.services]]
name = "sleeper"
runtime = "process"
command = "python3 -c 'import time; time.sleep(600)'"
cpus = 100
memory = 32
"""


@dataclass
class Node:
    folder: Path
    client: httpx.Client

    def term(self) -> int:
        return int(self.client.get("/v1/cluster/replica").json()["term"])

    def fence_file(self) -> str:
        path = self.folder / "term.json"
        return path.read_text() if path.exists() else ""


def the_node(project: Project) -> Node:
    """The project's only node, with an API client that carries the cluster token and, like the
    leader, a node certificate from the cluster CA (the agent routes need one)."""
    (folder,) = sorted((project.dir / ".oct").glob("nodes/*"))
    return Node(folder, node_files_client(folder))
