"""A bare local oct cluster (the Raft group and the HTTP API, no service), started the way users
start one (``oct deploy``) and torn down afterwards: what the Raft benchmarks measure.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from _common import BenchError, http_json, log, temp_project_dir
from _projects import check_clash, log_tails, oct_cleanup

BARE_CLUSTER_TOML = """[project]
name = "{name}"
services = []

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = {nodes}
"""


@dataclass
class OctCluster:
    """A local oct cluster that runs no service: only the Raft group and the HTTP API in front of it."""

    config: Path
    project: str
    token: str
    ca_cert: str

    @property
    def tls(self) -> ssl.SSLContext:
        """HTTPS to oct's API: the cluster CA from the state record, and nothing else."""
        from octctl.tls import client_context

        return client_context(self.ca_cert)

    @property
    def root(self) -> Path:
        return self.config.parent / ".oct"

    def api_urls(self) -> dict[str, str]:
        """``{node id: https://address:api_port}``, from the node files (they outlive a killed process)."""
        from octctl.node_settings import read_node_files
        from octctl.providers.local.provider import local_nodes, nodes_dir

        urls = {}
        for node in local_nodes(self.root):
            with contextlib.suppress(OSError, ValueError):
                settings, _ = read_node_files(nodes_dir(self.root) / node)
                urls[node] = f"https://{settings.api_address}"
        return urls

    def leaders(self, timeout: float = 1.0) -> dict[str, str | None]:
        """What each answering node's ``/v1/health`` names as leader (``{node: leader or None}``)."""
        found = {}
        for node, url in self.api_urls().items():
            health = http_json(f"{url}/v1/health", timeout, tls=self.tls)
            if isinstance(health, dict):
                found[node] = health.get("leader")
        return found

    def wait_agreed_leader(self, nodes: int, timeout: float, interval: float = 0.05) -> str:
        """Poll until ``nodes`` nodes answer and all name the same leader; return its node id."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str | None] = {}
        for _ in range(int(timeout / interval) + 10):
            seen = self.leaders()
            named = set(seen.values())
            if len(seen) >= nodes and len(named) == 1 and None not in named:
                return str(named.pop())
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        raise BenchError(f"no leader agreed on by {nodes} nodes within {timeout:.0f} s (saw {seen})")


@contextlib.contextmanager
def bare_oct_cluster(
    prefix: str, project: str, nodes: int = 3, timeout: float = 120.0
) -> Iterator[OctCluster]:
    """Start a local ``nodes``-node cluster in a temp folder with ``oct deploy``; destroy it afterwards.

    Going through ``oct deploy`` (not hand-started processes) measures the cluster users get: the
    genesis node provisions the others as the local provider does. Torn down even on failure.
    """
    import octcli
    from octcli.errors import OctError
    from octcli.providers.local import adopt

    with temp_project_dir(prefix) as folder:
        config = folder / "oct.toml"
        config.write_text(BARE_CLUSTER_TOML.format(name=project, nodes=nodes))
        failure = None
        try:
            log(f"starting a {nodes}-node oct cluster in {folder}")
            try:
                octcli.deploy(config, on_phase=log, timeout=timeout)
            except OctError as e:
                check_clash(folder, str(e))
                raise BenchError(f"oct deploy failed: {e}\n{log_tails(folder)}") from e
            record = adopt(folder / ".oct", project)
            if record is None:
                raise BenchError(f"oct deploy left no node files under {folder / '.oct'}")
            cluster = OctCluster(
                config=config, project=project, token=record.token, ca_cert=record.ca_cert or ""
            )
            try:
                leader = cluster.wait_agreed_leader(nodes, timeout)
            except BenchError as e:
                check_clash(folder)
                raise BenchError(f"{e}\n{log_tails(folder)}") from e
            check_clash(folder)
            log(f"cluster up: nodes {sorted(cluster.api_urls())}, leader {leader}")
            yield cluster
        finally:
            failure = oct_cleanup(config, project)
        if failure is not None:
            raise BenchError(failure)
