"""Helpers shared by the benchmark scripts (not a benchmark itself: it prints nothing when run).

The scripts are run as ``.venv/bin/python bench/<name>.py``, so Python puts ``bench/`` on
``sys.path`` and they import this module as ``_common``. Everything here is about measuring
honestly and cleaning up: bounded HTTP polling to loopback only, finding the oct-ctl processes of
one project folder, and tearing a project down even when oct itself is broken.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from octctl.providers.local.provider import octctl_pids

REPO = Path(__file__).resolve().parents[1]
TEST_IMAGE = "oct-test/busybox:latest"
BUILD_IMAGE_SCRIPT = REPO / "tests" / "images" / "build_busybox_image.sh"

#: No proxy, ever: a proxy from the environment would carry benchmark traffic off this machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_T0 = time.monotonic()
T = TypeVar("T")


class BenchError(RuntimeError):
    """The thing being measured broke (deploy failed, a service never answered): exit non-zero."""


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


def log(message: str) -> None:
    """Progress for humans goes to stderr, so stdout's last line stays the JSON result."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """The figures, as exactly one JSON object on the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=False), flush=True)


def median(samples: Iterable[float]) -> float:
    return round(statistics.median(list(samples)), 3)


def exit_on_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks still clean up what we started."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


# -- HTTP ------------------------------------------------------------------------------------------


def check_loopback(url: str) -> None:
    """Benchmarks may only talk to 127.0.0.0/8; refuse anything else rather than send it."""
    if not re.match(r"^https?://127\.\d{1,3}\.\d{1,3}\.\d{1,3}(:\d+)?(/|$)", url):
        raise BenchError(f"refusing to send traffic to {url!r}: only 127.0.0.0/8 is allowed")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """One small GET; True only for a 200 answer."""
    check_loopback(url)
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            resp.read(4096)
            return bool(resp.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def wait_all_http(urls: list[str], timeout: float, interval: float = 0.05) -> float:
    """Poll until every URL answers 200 (each once is enough); returns monotonic time when done.

    Bounded twice: by ``timeout`` seconds and by a round count, so a hang never loops forever.
    """
    for url in urls:
        check_loopback(url)
    pending = list(urls)
    deadline = time.monotonic() + timeout
    max_rounds = int(timeout / interval) + 10
    for _ in range(max_rounds):
        pending = [url for url in pending if not http_ok(url)]
        if not pending:
            return time.monotonic()
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise BenchError(
        f"{len(pending)}/{len(urls)} endpoints never answered 200 within {timeout:.0f} s: {pending[:5]}"
    )


# -- oct projects ----------------------------------------------------------------------------------


def proc_status_mb(pid: int, *keys: str) -> dict[str, float] | None:
    """Fields of /proc/<pid>/status given in kB (VmRSS, RssAnon, RssFile...) in MB; None if gone."""
    found: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in keys:
                found[key] = int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return found if len(found) == len(keys) else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (0 if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def pids_named(*names: str) -> list[int]:
    """pids whose executable name (comm) is one of ``names``, e.g. the Docker engine's daemons."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() in names:
                    found.append(int(proc.name))
    return found


def cmdline_arg_after(pid: int, flag: str) -> str | None:
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return None
    with contextlib.suppress(ValueError, IndexError):
        return argv[argv.index(flag) + 1]
    return None


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


@contextlib.contextmanager
def temp_project_dir(prefix: str) -> Iterator[Path]:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    # mkdtemp makes it 0700; a root oct-ctl runs process services as an unprivileged user, which
    # must be able to enter the project folder (their working directory) and read what it holds.
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- docker ----------------------------------------------------------------------------------------


def docker_ready() -> None:
    proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise BenchError(f"the Docker engine is not reachable: {proc.stderr.strip()[:300]}")


def ensure_test_image() -> None:
    """Build oct-test/busybox:latest offline if it is missing (the script skips an existing image)."""
    proc = subprocess.run(["bash", str(BUILD_IMAGE_SCRIPT)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise BenchError(f"building {TEST_IMAGE} failed: {proc.stderr.strip()[:500]}")
    log(proc.stdout.strip())


def ensure_image_tag(tag: str, source: str = TEST_IMAGE) -> bool:
    """Give the offline image another name (no registry to pull from here); True if we made the tag."""
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True, timeout=30).returncode == 0:
        return False
    ensure_test_image()
    subprocess.run(["docker", "tag", source, tag], check=True, capture_output=True, timeout=30)
    log(f"tagged {source} as {tag}")
    return True


def remove_image_tag(tag: str) -> None:
    """Undo :func:`ensure_image_tag` (removes the name only; the image stays under its own tag)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["docker", "image", "rm", tag], capture_output=True, timeout=30)
        log(f"removed the tag {tag} this run created")


# -- a bare oct cluster (the Raft benchmarks) ------------------------------------------------------

BARE_CLUSTER_TOML = """[project]
name = "{name}"
services = []

[project.state_backend.local]
path = "./state.json"

[project.provider.local]
nodes = {nodes}
"""


def http_json(
    url: str, timeout: float = 1.0, token: str | None = None, tls: ssl.SSLContext | None = None
) -> Any:
    """GET ``url`` and decode its JSON body; None on any failure (a node may be down on purpose)."""
    check_loopback(url)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        opener = (
            _OPENER
            if tls is None
            else urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls)
            )
        )
        with opener.open(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


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
