"""The chaos harness: real ``oct-ctl`` processes, each in its own network namespace.

Layout (``P`` = a per-process prefix such as ``octc123-``, ``S`` = a free third octet)::

    root namespace: P r 10.231.S.254/24 --veth--> "host" on br0 in namespace P br
    namespace P nI: eth0 10.231.S.I/24  --veth--> "nI"   on br0 in namespace P br

The bridge lives in its own namespace because a bridge in the root namespace stops forwarding once
dockerd sets iptables FORWARD to DROP. The test process reaches every node's API through ``P r``
(locally originated traffic, which no FORWARD rule touches), so clients can still talk to a node
that is cut off from its peers: that is what lets a stale leader be caught answering.

A partition is a pair of blackhole routes (one in each namespace) per cut node pair, so no packet
flows either way, while the clients' address stays reachable; healing flushes those routes. Only
iproute2 is needed. Everything made here is named with the prefix and recorded with the owning pid,
so a later run removes what a crashed one left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from octctl.addresses import DEFAULT_API_PORT
from octctl.node_settings import NodeSettings, Secrets, write_node_files
from octctl.providers.local.provider import pid_alive
from octctl.state.machine import UNSAFE_NO_FSYNC
from octctl.tls import client_context
from tests.wait import WaitTimeout, wait_until

OWNERS = Path("/run/oct-chaos")  # tmpfs, like /run/netns: both are gone after a reboot
NAME_RE = re.compile(r"^(octc\d+-)")
SUBNET_FIRST = "10.231"
CLIENT_HOST = 254


class HarnessError(RuntimeError):
    """The harness could not build or drive the test network (not a finding about oct)."""


def sh(*args: str, check: bool = True, stdin: str | None = None, timeout: float = 30) -> str:
    try:
        proc = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise HarnessError(f"{args[0]} is not installed (the chaos suite needs iproute2): {e}") from e
    if check and proc.returncode != 0:
        raise HarnessError(f"`{' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def require_privileges() -> None:
    """The suite needs root for namespaces; say so plainly instead of failing deep inside ``ip``."""
    if os.geteuid() != 0:
        raise HarnessError("the chaos suite creates network namespaces and must run as root")
    if shutil.which("ip") is None:
        raise HarnessError("`ip` (iproute2) is not installed; `apt-get install iproute2`")


def namespaces() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]


def remove_namespace(name: str) -> None:
    """Kill what still runs inside (our own nodes of a crashed run) first: a namespace with
    processes in it outlives ``ip netns del``."""
    for pid in sh("ip", "netns", "pids", name, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    sh("ip", "netns", "del", name, check=False)


def remove_stale(own_prefix: str) -> list[str]:
    """Remove namespaces and links of runs whose owner is gone (or of an earlier cluster of ours)."""
    removed = []
    stale: set[str] = set()
    for ns in namespaces():
        m = NAME_RE.match(ns)
        if not m:
            continue
        prefix = m.group(1)
        if prefix == own_prefix:
            stale.add(prefix)
            continue
        try:
            owner = int((OWNERS / prefix).read_text().strip())
        except (OSError, ValueError):
            owner = 0
        if owner == 0 or not pid_alive(owner):
            stale.add(prefix)
    for ns in namespaces():
        m = NAME_RE.match(ns)
        if m and m.group(1) in stale:
            remove_namespace(ns)
            removed.append(ns)
    for line in sh("ip", "-o", "link", "show").splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        link = parts[1].strip().split("@")[0]
        m = NAME_RE.match(link)
        if m and m.group(1) in stale:
            sh("ip", "link", "del", link, check=False)
            removed.append(link)
    for prefix in stale:
        with contextlib.suppress(FileNotFoundError):
            (OWNERS / prefix).unlink()
    return removed


def _free_octet(preferred: int) -> int:
    """A third octet no route of the root namespace uses yet (another run may hold one)."""
    routes = sh("ip", "-4", "route", "show")
    for step in range(250):
        octet = (preferred + step) % 250
        if f"{SUBNET_FIRST}.{octet}.0/24" not in routes:
            return octet
    raise HarnessError(f"no free {SUBNET_FIRST}.X.0/24 subnet left in the root namespace")


def octctl_command() -> Path:
    """``oct-ctl`` of the venv running the tests (absolute: ``ip netns exec`` does not search PATH
    the way a shell would)."""
    beside = Path(sys.executable).parent / "oct-ctl"
    if beside.exists():
        return beside.absolute()
    repo_venv = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "oct-ctl"
    if repo_venv.exists():
        return repo_venv
    raise HarnessError(f"oct-ctl not found beside {sys.executable} nor in .venv/bin; run `make venv`")


@dataclass
class ChaosNode:
    name: str
    index: int
    namespace: str
    address: str
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def log_path(self) -> Path:
        return self.data_dir / "oct-ctl.log"

    @property
    def api(self) -> str:
        return f"https://{self.address}:{DEFAULT_API_PORT}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    """N nodes on one bridge; every fault is undone by :meth:`heal_all`, everything by :meth:`close`."""

    work_dir: Path
    size: int = 3
    prefix: str = field(default_factory=lambda: f"octc{os.getpid() % 1000}-")
    nodes: list[ChaosNode] = field(default_factory=list)
    secrets: Secrets = field(default_factory=Secrets.mint)
    cluster_id: str = "chaos"
    unsafe_no_fsync: bool = False  # (the durability test's control run)
    octet: int = 0
    _cuts: set[frozenset[str]] = field(default_factory=set)
    _http: httpx.Client | None = None

    # -- building ------------------------------------------------------------------------------
    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}br"

    @property
    def root_link(self) -> str:
        return f"{self.prefix}r"

    @property
    def client_address(self) -> str:
        return f"{SUBNET_FIRST}.{self.octet}.{CLIENT_HOST}"

    @property
    def tls(self) -> ssl.SSLContext:
        """HTTPS to the nodes, trusting the cluster CA only (as the CLI does)."""
        return client_context(self.secrets.ca_cert)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets.token}"}

    def node(self, name: str) -> ChaosNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def __enter__(self) -> Cluster:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, form_timeout: float = 60.0) -> None:
        require_privileges()
        if not 1 <= self.size <= 9:
            raise HarnessError(f"cluster size must be 1..9, got {self.size}")
        remove_stale(self.prefix)
        OWNERS.mkdir(parents=True, exist_ok=True)
        (OWNERS / self.prefix).write_text(str(os.getpid()))
        self.octet = _free_octet(os.getpid() % 250)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._build_network()
        genesis = f"{self.nodes[0].address}:{DEFAULT_API_PORT}"
        for n in self.nodes:
            settings = NodeSettings(
                node=n.name,
                cluster=self.cluster_id,
                address=n.address,
                cpus=1000,
                memory=1024,
                join=[] if n.index == 1 else [genesis],
                dns_port=53,  # its own namespace: 53 is free
                dns_upstreams=[],  # never forward a query out of the test network
                provider="local",
                provider_root=None,  # no provisioning: the harness alone decides which nodes exist
            )
            write_node_files(n.data_dir, settings, self.secrets)
        self._http = httpx.Client(headers=self.headers, timeout=2.0, trust_env=False, verify=self.tls)
        self.start(self.nodes[0].name)
        try:
            wait_until(
                lambda: self.leader() == self.nodes[0].name,
                timeout=form_timeout,
                interval=0.2,
                message="genesis to lead",
            )
            for n in self.nodes[1:]:
                self.start(n.name)
            wait_until(
                self.formed,
                timeout=form_timeout,
                interval=0.2,
                message=f"all {self.size} nodes to join and agree on a leader",
            )
        except WaitTimeout as e:  # the seed runner reports harness errors instead of crashing
            raise HarnessError(f"{e}; logs in {self.work_dir}") from None

    def _build_network(self) -> None:
        br = self.bridge_ns
        sh("ip", "netns", "add", br)
        sh("ip", "-n", br, "link", "set", "lo", "up")
        sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", br, "link", "set", "br0", "up")
        for i in range(1, self.size + 1):
            ns = f"{self.prefix}n{i}"
            node = ChaosNode(
                name=f"n{i}",
                index=i,
                namespace=ns,
                address=f"{SUBNET_FIRST}.{self.octet}.{i}",
                data_dir=self.work_dir / f"n{i}",
            )
            self.nodes.append(node)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"n{i}", "netns", br)
            sh("ip", "-n", br, "link", "set", f"n{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "link", "add", self.root_link, "type", "veth", "peer", "name", "host", "netns", br)
        sh("ip", "-n", br, "link", "set", "host", "master", "br0", "up")
        sh("ip", "addr", "add", f"{self.client_address}/24", "dev", self.root_link)
        sh("ip", "link", "set", self.root_link, "up")

    def close(self) -> None:
        """Kill every node we started and remove every namespace and link we made; never raises."""
        for n in self.nodes:
            with contextlib.suppress(Exception):
                self._kill(n)
        if self._http is not None:
            self._http.close()
            self._http = None
        for ns in [*(n.namespace for n in self.nodes), self.bridge_ns]:
            with contextlib.suppress(Exception):
                remove_namespace(ns)
        with contextlib.suppress(Exception):
            sh("ip", "link", "del", self.root_link, check=False)
        with contextlib.suppress(FileNotFoundError):
            (OWNERS / self.prefix).unlink()

    # -- processes -----------------------------------------------------------------------------
    def start(self, name: str) -> None:
        n = self.node(name)
        if n.running:
            raise HarnessError(f"{name} is already running (pid {n.proc.pid if n.proc else '?'})")
        with open(n.log_path, "ab") as out:
            n.proc = subprocess.Popen(
                ["ip", "netns", "exec", n.namespace, str(octctl_command()), "--data-dir", str(n.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={
                    **os.environ,
                    "MALLOC_ARENA_MAX": "2",
                    UNSAFE_NO_FSYNC: "1" if self.unsafe_no_fsync else "",
                },
            )
        n.paused = False

    def _kill(self, n: ChaosNode) -> None:
        if n.proc is None:
            return
        if n.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(n.proc.pid, signal.SIGKILL)
            n.proc.wait(timeout=10)
        n.paused = False

    def kill(self, name: str) -> None:
        """``kill -9``: no shutdown, the Raft journal is left as the crash left it."""
        self._kill(self.node(name))

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def pause(self, name: str) -> None:
        n = self.node(name)
        if n.running and n.proc is not None:
            os.kill(n.proc.pid, signal.SIGSTOP)
            n.paused = True

    def resume(self, name: str) -> None:
        n = self.node(name)
        if n.running and n.proc is not None and n.paused:
            os.kill(n.proc.pid, signal.SIGCONT)
        n.paused = False

    # -- network faults ------------------------------------------------------------------------
    def _route(self, action: str, a: ChaosNode, b: ChaosNode) -> None:
        sh("ip", "-n", a.namespace, "route", action, "blackhole", f"{b.address}/32", check=action == "add")

    def cut(self, a: str, b: str) -> None:
        """No packet between ``a`` and ``b`` either way; clients still reach both."""
        pair = frozenset((a, b))
        if a == b or pair in self._cuts:
            return
        self._route("add", self.node(a), self.node(b))
        self._route("add", self.node(b), self.node(a))
        self._cuts.add(pair)

    def isolate(self, name: str) -> None:
        self.partition([[name]])

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Cut every pair of nodes that are not in the same group; unlisted nodes form one more group."""
        group_of = {name: i for i, group in enumerate(groups) for name in group}
        for a in self.nodes:
            for b in self.nodes:
                if a.index < b.index and group_of.get(a.name, -1) != group_of.get(b.name, -1):
                    self.cut(a.name, b.name)

    def heal_network(self) -> None:
        for n in self.nodes:
            sh("ip", "-n", n.namespace, "route", "flush", "type", "blackhole", check=False)
        self._cuts.clear()

    def heal_all(self) -> None:
        """Undo every fault: reconnect, resume paused nodes, start killed ones."""
        self.heal_network()
        for n in self.nodes:
            if n.paused:
                self.resume(n.name)
            if not n.running:
                self.start(n.name)

    # -- observation ---------------------------------------------------------------------------
    def get(self, name: str, path: str, timeout: float = 2.0) -> dict[str, Any] | None:
        """One node's JSON answer, or None when it does not answer 200 in time."""
        assert self._http is not None, "the cluster is not created"
        try:
            r = self._http.get(self.node(name).api + path, timeout=timeout)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        body: dict[str, Any] = r.json()
        return body

    def replicas(self) -> dict[str, dict[str, Any] | None]:
        return {n.name: self.get(n.name, "/v1/cluster/replica") if n.running else None for n in self.nodes}

    def leader(self) -> str | None:
        """The node that says it leads in the highest term, among those answering."""
        best: tuple[int, str] | None = None
        for name, rep in self.replicas().items():
            if rep and rep.get("is_leader") and (best is None or int(rep["term"]) > best[0]):
                best = (int(rep["term"]), name)
        return best[1] if best else None

    def formed(self) -> bool:
        """Every node a registered member that agrees on one leader."""
        reps = self.replicas()
        if any(r is None for r in reps.values()):
            return False
        leaders = {r["leader"] for r in reps.values() if r}
        if len(leaders) != 1 or None in leaders:
            return False
        status = self.get(self.nodes[0].name, "/v1/status")
        return status is not None and {n.name for n in self.nodes} <= {
            n["id"] for n in status.get("nodes", [])
        }

    def state_hashes(self) -> dict[str, str | None]:
        return {name: (r or {}).get("state_hash") for name, r in self.replicas().items()}

    def leader_claims(self) -> dict[int, set[str]]:
        """Term -> nodes that logged ``became leader term=<N>`` (every incarnation, from the logs)."""
        claims: dict[int, set[str]] = {}
        for n in self.nodes:
            for term in leader_terms(n.log_path):
                claims.setdefault(term, set()).add(n.name)
        return claims


LEADER_RE = re.compile(r"became leader term=(\d+)")


def leader_terms(log_path: Path) -> list[int]:
    if not log_path.exists():
        return []
    return [int(m.group(1)) for m in LEADER_RE.finditer(log_path.read_text(errors="replace"))]
