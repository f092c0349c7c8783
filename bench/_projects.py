"""oct projects under measurement: telling a spoiled sample (an address clash with another
cluster on this machine) from a broken oct, the nodes' logs, and tearing a project down even when
oct itself is broken.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from _common import BenchError, log

from octctl.providers.local.provider import octctl_pids

T = TypeVar("T")


class AddressClash(BenchError):
    """A node of ours lost its 127.0.0.N (or a service port on it) to someone else's cluster.

    oct picks a node's address by test-binding the API and Raft ports, and the node binds them
    for real ~1 s later, so two projects started at once can pick the same address; nor does it
    check the services' ports, which another project's leftover instance may still hold. Flaws of
    oct worth fixing, but not what these benchmarks measure: the sample is retried in a new folder.
    """


#: How a lost node address (or a service port on it, held by another project's leftover) shows.
CLASH = re.compile(r"address already in use|port is already allocated", re.IGNORECASE)
CLASH_RETRIES = 2


def check_clash(project_dir: Path, error: str = "") -> None:
    """Raise :class:`AddressClash` if the error or any node's log shows a lost address or port."""
    if CLASH.search(error):
        raise AddressClash(error.splitlines()[0])
    for node, path in node_logs(project_dir).items():
        with contextlib.suppress(OSError):
            if m := CLASH.search(path.read_text(errors="replace")):
                raise AddressClash(f"node {node} could not bind an address: {m.group(0)}")


def retry_on_clash(fn: Callable[[], T], label: str, clashes: list[str]) -> T:
    """Run one sample; rerun it (bounded) when it was spoiled by an address clash."""
    for attempt in range(CLASH_RETRIES + 1):
        try:
            return fn()
        except AddressClash as e:
            clashes.append(label)
            if attempt == CLASH_RETRIES:
                raise
            log(f"{label}: spoiled by an address clash with another cluster ({e}); retrying")
    raise AssertionError("unreachable")


def node_logs(project_dir: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in sorted((project_dir / ".oct").glob("nodes/*/oct-ctl.log"))}


def log_tails(project_dir: Path, lines: int = 25) -> str:
    out = []
    for node, path in node_logs(project_dir).items():
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {node}\n" + "\n".join(tail))
    return "\n".join(out)


def keep_logs(project_dir: Path, dest: Path | None, label: str) -> None:
    """Copy the nodes' logs out before ``destroy`` deletes them (for finding where time goes)."""
    if dest is None:
        return
    target = dest / label
    target.mkdir(parents=True, exist_ok=True)
    for node, path in node_logs(project_dir).items():
        with contextlib.suppress(OSError):
            shutil.copy2(path, target / f"{node}.log")
    log(f"kept node logs in {target}")


def remove_cluster_containers(project: str, cluster: str) -> None:
    """Last resort after a failed destroy: remove the containers oct labelled with *this* cluster.

    Filtering on the cluster id too matters: others may run a project of the same name (the
    quickstart) on this engine at the same time, and their containers are not ours to remove.
    """
    filters = ["--filter", f"label=oct.project={project}", "--filter", f"label=oct.cluster={cluster}"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        ids = subprocess.run(
            ["docker", "ps", "-aq", *filters], capture_output=True, text=True, timeout=30
        ).stdout.split()
        if ids:
            log(f"removing {len(ids)} leftover container(s) of cluster {cluster}")
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=60)


def cluster_id(project_dir: Path, project: str) -> str | None:
    """The project's cluster id, from its node files (read before destroy deletes them)."""
    from octcli.providers.local import adopt

    try:
        record = adopt(project_dir / ".oct", project)
    except Exception:
        return None
    return record.cluster if record is not None else None


def oct_cleanup(config: Path, project: str) -> str | None:
    """``octcli.destroy``, then kill/remove whatever it left behind; never raises.

    Returns why ``destroy`` failed, or None when it worked (a benchmark reports that as broken).
    """
    import octcli

    project_dir = config.parent
    cluster = cluster_id(project_dir, project)
    failure = None
    try:
        octcli.destroy(config, timeout=120, approve=True, on_phase=log, on_warning=log)
    except Exception as e:
        failure = f"oct destroy failed ({type(e).__name__}: {e})"
        log(f"{failure}; cleaning up by hand")
    for pid in octctl_pids(project_dir):
        log(f"killing leftover oct-ctl pid {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if (project_dir / ".oct").exists():
        from octctl.providers.local.leftovers import kill_process_instances

        with contextlib.suppress(Exception):
            kill_process_instances(project_dir / ".oct", on_phase=log)
    if cluster is not None:
        remove_cluster_containers(project, cluster)
    return failure
