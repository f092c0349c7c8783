"""Genesis and teardown for the local provider, where every node is an oct-ctl process on 127.0.0.N.

The CLI starts exactly one node (genesis); that node becomes leader and provisions the rest of
``[project.provider.local]`` itself. Everything the CLI needs to find the cluster again -- after a
reboot, a crash, or a lost state file -- is on disk under ``<project>/.oct/nodes``, so recovery and
teardown work from the files, not from whatever process happens to be running.
"""

from __future__ import annotations

import contextlib
import os
import secrets as _secrets
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from octcli.client import OctClient
from octcli.errors import OctError, Timeout, Unreachable
from octcli.provider import ClusterProvider, DestroySummary, Save
from octcli.state import ClusterRecord
from octctl.node_settings import NodeSettings, Secrets, read_node_files
from octctl.providers.local.container_network import take_down
from octctl.providers.local.leftovers import CleanupError, kill_process_instances, stop_ingresses
from octctl.providers.local.leftovers import remove_containers as _remove_containers
from octctl.providers.local.provider import (
    LOG_FILE,
    claims_dir,
    free_address,
    local_node_settings,
    local_nodes,
    node_pid,
    node_process_alive,
    nodes_dir,
    pid_alive,
    release_claims,
    start_node,
    stop_pid,
)
from octctl.providers.local.volumes import kept_volumes, remove_volumes

if TYPE_CHECKING:
    from octcli.state import StateStore
    from octctl.api.models import VolumeView
    from octctl.config import Config

__all__ = ["LocalCluster", "adopt", "ensure_cluster", "local_root", "teardown", "wait_for_leader"]

Phase = Callable[[str], None]
LEADER_WAIT = 30.0
LOG_TAIL_LINES = 20


def local_root(config_path: Path) -> Path:
    """The project's .oct folder: beside oct.toml, so one folder is one cluster."""
    return config_path.resolve().parent / ".oct"


def ensure_cluster(
    config: Config,
    config_path: Path,
    record: ClusterRecord | None,
    *,
    on_phase: Phase | None = None,
    save: Callable[[ClusterRecord], None] | None = None,
    leader_wait: float = LEADER_WAIT,
) -> ClusterRecord:
    """A cluster for this project with a leader, reusing, restarting or creating one as needed.

    ``save`` is called with the record as soon as it exists -- before the first node is even up -- so
    a crash during genesis leaves a record that ``oct destroy`` can clean up after.
    """
    say = on_phase or (lambda _msg: None)
    project = config.project.name
    root = Path(record.root) if record is not None else local_root(config_path)
    if record is None:
        # A lost or never-saved state file must not orphan running nodes: rebuild it from their files.
        record = adopt(root, project)
        if record is not None and save is not None:
            save(record)
    if record is not None and local_nodes(root):
        record = record.model_copy(update={"nodes": _merge(record.nodes, _file_addresses(root))})
        # Any node whose process is gone (crash, reboot) comes back from its own files.
        restarted = restart_dead_nodes(root)
        if restarted:
            say(f"restarting {len(restarted)} stopped node(s) of cluster {record.cluster}")
        wait_for_leader(record, root, restarted, on_phase=say, timeout=leader_wait)
        return record
    # No nodes left where the record points (or no record): a new cluster, beside today's oct.toml.
    return _genesis(config, local_root(config_path), on_phase=say, save=save, leader_wait=leader_wait)


def _genesis(
    config: Config,
    root: Path,
    *,
    on_phase: Phase,
    save: Callable[[ClusterRecord], None] | None,
    leader_wait: float,
) -> ClusterRecord:
    local = config.project.provider.local if config.project.provider is not None else None
    if local is None:
        raise OctError("the local provider needs [project.provider.local] in oct.toml")
    root.mkdir(parents=True, exist_ok=True)
    # The folder holds tokens; keep it out of the user's git history by default.
    gitignore = root / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("# created by oct: node data and secrets, never commit\n*\n")
    cluster = "c-" + _secrets.token_hex(4)
    secrets = Secrets.mint(cluster)
    address = free_address(root)
    settings = local_node_settings(root, address, cluster, local.cpus, local.memory, join=[])
    record = ClusterRecord(
        cluster=cluster,
        project=config.project.name,
        provider=LocalCluster.kind,
        token=secrets.token,
        nodes=[settings.api_address],
        root=str(root),
        ca_cert=secrets.ca_cert,
    )
    if save is not None:
        save(record)
    on_phase(f"starting cluster {cluster}: {settings.node} on {address}")
    pid = start_node(root, settings, secrets)
    wait_for_leader(record, root, {settings.node: pid}, on_phase=on_phase, timeout=leader_wait)
    return record


def adopt(root: Path, project: str) -> ClusterRecord | None:
    """A record rebuilt from the node files under ``root`` (genesis node first), or None if there are none."""
    found: list[tuple[NodeSettings, Secrets]] = []
    for node in local_nodes(root):
        try:
            found.append(read_node_files(nodes_dir(root) / node))
        except (OSError, ValueError):
            continue  # a half-written node directory; teardown still removes it
    if not found:
        return None
    found.sort(key=lambda pair: (bool(pair[0].join), pair[0].node))
    settings, secrets = found[0]
    return ClusterRecord(
        cluster=settings.cluster,
        project=project,
        provider=LocalCluster.kind,
        token=secrets.token,
        nodes=[s.api_address for s, _ in found],
        root=str(root),
        ca_cert=secrets.ca_cert,
    )


def restart_dead_nodes(root: Path) -> dict[str, int]:
    """Start again, from its own files, every node whose process is gone; return ``{node: new pid}``."""
    started: dict[str, int] = {}
    for node in local_nodes(root):
        data_dir = nodes_dir(root) / node
        if node_process_alive(root, node):
            continue
        try:
            settings, secrets = read_node_files(data_dir)
        except (OSError, ValueError):
            continue
        started[node] = start_node(root, settings, secrets)
    return started


def wait_for_leader(
    record: ClusterRecord,
    root: Path,
    started: dict[str, int],
    *,
    on_phase: Phase | None = None,
    timeout: float = LEADER_WAIT,
) -> None:
    """Return once one of our nodes reports a leader; fail fast, with its log, if a node we started exits."""
    if on_phase is not None:
        on_phase(f"waiting for cluster {record.cluster} to elect a leader")
    deadline = time.monotonic() + timeout
    with OctClient(record.nodes, record.token, record.ca_cert, timeout=2.0, retry_for=0) as client:
        while True:
            for node in record.nodes:
                with contextlib.suppress(OctError):
                    if client.status(node).leader:
                        return
            for node, pid in started.items():
                if not pid_alive(pid):
                    raise OctError(
                        f"oct-ctl node {node} exited during start-up; last lines of "
                        f"{nodes_dir(root) / node / LOG_FILE}:\n{log_tail(root, node)}"
                    )
            if time.monotonic() >= deadline:
                logs = "\n".join(
                    f"last lines of {nodes_dir(root) / n / LOG_FILE}:\n{log_tail(root, n)}"
                    for n in (started or local_nodes(root))
                )
                raise Timeout(f"cluster {record.cluster} elected no leader within {timeout:.0f} s\n{logs}")
            time.sleep(0.2)


def _file_addresses(root: Path) -> list[str]:
    addresses = []
    for node in local_nodes(root):
        with contextlib.suppress(OSError, ValueError):
            settings, _ = read_node_files(nodes_dir(root) / node)
            addresses.append(settings.api_address)
    return addresses


def _merge(first: Iterable[str], then: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*first, *then]))


def log_tail(root: Path, node: str, lines: int = LOG_TAIL_LINES) -> str:
    path = nodes_dir(root) / node / LOG_FILE
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return "  (no log)"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"  {line}" for line in tail) if tail else "  (log is empty)"


# -- processes -------------------------------------------------------------------------------------


# -- teardown --------------------------------------------------------------------------------------


def teardown(root: Path, project: str, *, cluster: str | None = None, on_phase: Phase | None = None) -> None:
    """Remove every trace of the project's local cluster, whether or not any part of it still runs.

    That includes the machine-wide address claims of its nodes (see
    :func:`octctl.providers.local.provider.claims_dir`), once their folders are gone.

    Nodes go first: a live agent would restart the instances we are about to kill, and a live
    leader would provision replacements for nodes it sees vanish (so we sweep until none is left).
    """
    say = on_phase or (lambda _msg: None)
    resolved = root.resolve()  # as the claims name the node folders; it cannot be resolved once gone
    for _ in range(5):
        alive = [node for node in local_nodes(root) if node_process_alive(root, node)]
        if not alive:
            break
        say(f"stopping {len(alive)} node(s)")
        with ThreadPoolExecutor(max_workers=min(8, len(alive))) as pool:
            pids = [pid for node in alive if (pid := node_pid(root, node)) is not None]
            list(pool.map(stop_pid, pids))
    remove_containers(project, cluster=cluster, on_phase=say)
    kill_process_instances(root, on_phase=say)
    stop_ingresses(root, on_phase=say)
    if root.exists():
        say(f"removing {root}")
        shutil.rmtree(root, ignore_errors=True)
        if root.exists():
            raise OctError(f"could not remove {root}; remove it by hand")
    released = release_claims(resolved)
    for address in released:  # a node killed before it could take its container address down
        take_down(address)
    if released:
        say(f"releasing the addresses {', '.join(released)} ({claims_dir()})")


def remove_containers(project: str, *, cluster: str | None = None, on_phase: Phase | None = None) -> None:
    """The project's containers and networks (only ``cluster``'s when given), as an OctError on failure."""
    try:
        _remove_containers(project, cluster=cluster, on_phase=on_phase)
    except CleanupError as e:
        raise OctError(str(e)) from None


class LocalCluster(ClusterProvider):
    """The local provider for the CLI: the cluster is the node folders under the project's .oct."""

    kind = "local"

    def ensure(
        self, config: Config, record: ClusterRecord | None, *, on_phase: Phase, save: Save
    ) -> ClusterRecord:
        return ensure_cluster(config, self.file, record, on_phase=on_phase, save=save)

    def unreachable(self, error: Unreachable) -> Unreachable:
        return Unreachable(
            f"{error}\nthe cluster's nodes are not running: "
            "`oct deploy` restarts them, `oct destroy` removes them"
        )

    def recover(self, config: Config, record: ClusterRecord | None) -> ClusterRecord | None:
        return record or adopt(self._root(record), config.project.name)

    def absent(self, config: Config, record: ClusterRecord | None, *, on_phase: Phase) -> bool:
        """No record and no node folder: only strays of a .oct deleted by hand can be left."""
        root = self._root(record)
        if record is not None or local_nodes(root):
            return False
        remove_containers(config.project.name, on_phase=on_phase)  # no-op without Docker
        for address in release_claims(root):
            take_down(address)
        return True

    def summary(self, config: Config, store: StateStore, record: ClusterRecord | None) -> DestroySummary:
        root = self._root(record)
        nodes = list(record.nodes) if record is not None else []
        count = len(local_nodes(root)) or len(nodes)
        removes = [
            f"{count} oct-ctl node process{'' if count == 1 else 'es'} and the services they run "
            "(the project's containers and process instances)",
            f"{root} (node data, Raft journals, secrets)",
            "the project's address claims and state lock",
            f"the state record {store.where}",
        ]
        return DestroySummary(
            project=config.project.name,
            provider=self.kind,
            cluster=record.cluster if record is not None else None,
            nodes=nodes,
            state=store.where,
            removes=removes,
        )

    def teardown(self, config: Config, record: ClusterRecord | None, *, on_phase: Phase, save: Save) -> None:
        project = config.project.name
        teardown(self._root(record), project, cluster=record.cluster if record else None, on_phase=on_phase)
        if record is not None and record.project != project:  # oct.toml renamed the project since
            remove_containers(record.project, on_phase=on_phase)

    def volumes(self, config: Config, record: ClusterRecord | None) -> list[VolumeView]:
        from octctl.api.models import VolumeView

        return [
            VolumeView(name=v.name, service=v.service, node=v.node or None, state="kept", where=v.where)
            for v in kept_volumes(self._root(record), config.project.name)
        ]

    def remove_volumes(self, config: Config, record: ClusterRecord | None, *, on_phase: Phase) -> None:
        try:
            remove_volumes(self._root(record), config.project.name, on_phase)
        except Exception as e:  # the engine refused (a volume in use by something else), or a folder
            raise OctError(f"could not remove the volumes of {config.project.name}: {e}") from None

    def _root(self, record: ClusterRecord | None) -> Path:
        return Path(record.root) if record is not None else local_root(self.file)
