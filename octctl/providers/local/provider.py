"""The local provider: every node is an ``oct-ctl`` process on its own 127.0.0.N address.

Linux routes all of 127.0.0.0/8 to loopback, so each node binds the same API and Raft ports on its
own address, exactly like separate machines would. Node state lives under ``.oct/nodes/<node>``
beside oct.toml, which is also how ``oct destroy`` finds every process after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from octctl import procfs
from octctl.addresses import DEFAULT_API_PORT, DEFAULT_RAFT_PORT
from octctl.node_settings import NodeSettings, Secrets, write_node_files
from octctl.procfs import pid_alive
from octctl.providers.base import NodeRequest, Provider
from octctl.providers.local.container_network import bring_up, take_down
from octctl.providers.local.settings import LocalSettings

FIRST_HOST = 2  # 127.0.0.1 is left to whatever else the machine runs
LAST_HOST = 254
PID_FILE = "oct-ctl.pid"
LOG_FILE = "oct-ctl.log"

log = logging.getLogger(__name__)


def nodes_dir(root: Path) -> Path:
    return root / "nodes"


def _port_free(address: str, port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def claims_dir() -> Path:
    """Machine-wide record of which 127.0.0.N belongs to which local node, across all projects.

    Binding a port only proves it is free *now*; a node that is down (and will be restarted) or
    still starting would lose its address to another project. A claim file, created atomically,
    keeps the address reserved for as long as the node's folder exists.
    """
    return Path(os.environ.get("OCT_LOCAL_CLAIMS") or Path.home() / ".oct" / "local-addresses")


def _claim_is_live(claim: Path) -> bool:
    try:
        owner = Path(claim.read_text().strip())
    except OSError:
        return False
    return owner.is_dir()


def release_claims(root: Path) -> list[str]:
    """Remove the claims of every node under ``root`` (a project's ``.oct`` folder); return their addresses.

    For ``oct destroy``, once the folder is gone: a claim whose folder is gone is free already (see
    :func:`free_address`), but the file would stay behind in the machine-wide folder until another
    node happened to want that address. Claims of other projects are left alone.
    """
    claims = claims_dir()
    try:
        entries = list(claims.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    base = root.resolve()
    released = []
    for claim in entries:
        try:
            owner = Path(claim.read_text().strip())
        except OSError:
            continue
        if owner.is_absolute() and (owner == base or base in owner.parents):
            with contextlib.suppress(FileNotFoundError):
                claim.unlink()
            released.append(claim.name)
    return sorted(released)


def free_address(
    root: Path, api_port: int = DEFAULT_API_PORT, raft_port: int = DEFAULT_RAFT_PORT, after: int = 0
) -> str:
    """Claim the next 127.0.0.N (above ``after`` if one is free there) that no local node owns and
    where both ports can be bound.

    The node's folder (mode 0700: it will hold secrets and the Raft journal) is created here, as
    part of the claim.
    """
    claims = claims_dir()
    claims.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    first = max(FIRST_HOST, after + 1)
    for n in [*range(first, LAST_HOST + 1), *range(FIRST_HOST, first)]:
        address = f"127.0.0.{n}"
        claim = claims / address
        if claim.exists():
            if _claim_is_live(claim):
                continue
            with contextlib.suppress(FileNotFoundError):
                claim.unlink()  # its node folder is gone: a destroyed or deleted project
        if not (_port_free(address, api_port) and _port_free(address, raft_port) and local_dns_port(address)):
            continue
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue  # another oct took it between our check and now
        data_dir = nodes_dir(root) / node_name(address)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with os.fdopen(fd, "w") as f:
            f.write(str(data_dir.resolve()))
        return address
    raise RuntimeError("no free 127.0.0.N address left for another local node")


FALLBACK_DNS_PORT = 31853


def local_dns_port(address: str) -> int | None:
    """Port 53 where we may bind it (what resolvers expect), else an unprivileged one; None if neither
    is free on ``address`` (say, a resolver of the machine holds 53 on every address)."""
    candidates = (53, FALLBACK_DNS_PORT) if os.geteuid() == 0 else (FALLBACK_DNS_PORT,)
    for port in candidates:
        if _port_free(address, port) and _port_free(address, port, socket.SOCK_DGRAM):
            return port
    return None


def local_node_settings(
    root: Path, address: str, cluster: str, cpus: int, memory: int, join: list[str]
) -> NodeSettings:
    """The settings of a local node; the CLI (genesis) and the leader (followers) use the same."""
    return NodeSettings(
        node=node_name(address),
        cluster=cluster,
        address=address,
        cpus=cpus,
        memory=memory,
        join=join,
        dns_port=local_dns_port(address) or FALLBACK_DNS_PORT,
        provider=LocalSettings(root=str(root)),
        volumes_dir=str(volumes_dir(root)),
    )


def volumes_dir(root: Path) -> Path:
    """Where a local cluster keeps process volumes: beside ``.oct`` (which ``oct destroy``
    removes, and which services may not enter), shared by its nodes as the Docker engine is."""
    return root.parent / ".oct-volumes"


def node_name(address: str) -> str:
    return "node-" + address.rsplit(".", 1)[-1]


def node_address(node: str) -> str:
    """The inverse of :func:`node_name`."""
    return "127.0.0." + node.removeprefix("node-")


def start_node(root: Path, settings: NodeSettings, secrets: Secrets) -> int:
    """Write the node's files and start a detached ``oct-ctl`` for it; return its pid.

    The child gets its own session so it outlives the CLI or leader that started it, as a VM
    outlives the API call that launched it.
    """
    data_dir = nodes_dir(root) / settings.node
    write_node_files(data_dir, settings, secrets)
    # oct-ctl writes and rotates LOG_FILE itself (--log-file), its stdout and stderr included; the
    # redirection only catches what a child says before it gets there (a failed import).
    log_path = data_dir / LOG_FILE
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "octctl", "--data-dir", str(data_dir), "--log-file", str(log_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            # Few malloc arenas: the daemon is mostly idle threads, and each arena costs resident memory.
            env={**os.environ, "MALLOC_ARENA_MAX": "2"},
        )
    finally:
        log.close()
    (data_dir / PID_FILE).write_text(str(proc.pid))
    # Reap the child when it exits, so a retired node does not linger as a zombie of its starter.
    threading.Thread(target=proc.wait, name=f"reap-{settings.node}", daemon=True).start()
    return proc.pid


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, wait for a graceful exit, then SIGKILL."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def octctl_pids(under: Path) -> list[int]:
    """pids of ``oct-ctl`` processes whose data dir lies under ``under``, whatever their pid files say.

    Found from ``/proc``, so strays whose pid file was lost are found too (tests and benchmarks
    check with it that nothing is left behind).
    """
    needle = str(under)
    found = []
    for pid in procfs.pids():
        argv = procfs.cmdline(pid) or []
        if "octctl" in argv and any(needle in arg for arg in argv):
            found.append(pid)
    return sorted(found)


def node_pid(root: Path, node: str) -> int | None:
    try:
        return int((nodes_dir(root) / node / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def stop_node(root: Path, node: str) -> None:
    pid = node_pid(root, node)
    if pid is not None:
        stop_pid(pid)


def local_nodes(root: Path) -> list[str]:
    if not nodes_dir(root).exists():
        return []
    return sorted(p.name for p in nodes_dir(root).iterdir() if p.is_dir())


def node_process_alive(root: Path, node: str) -> bool:
    """Whether the pid in the node's pid file is still that node.

    After a reboot the recorded pid may belong to an unrelated process; trusting it would leave the
    node dead (never restarted) and, worse, make teardown kill someone else's program.
    """
    pid = node_pid(root, node)
    if pid is None or not pid_alive(pid):
        return False
    argv = procfs.cmdline(pid)
    if argv is None:
        return True
    data_dir = str(nodes_dir(root) / node)
    return any("octctl" in part or "oct-ctl" in part for part in argv) and data_dir in argv


class LocalProvider(Provider):
    def __init__(self, root: Path, cluster: str | None = None) -> None:
        self.root = root
        self.cluster = cluster

    def container_address(self, address: str) -> str | None:
        return bring_up(address)

    def release_container_address(self, address: str) -> None:
        take_down(address)

    def reserve(self, request: NodeRequest) -> str:
        """Claiming an address is the reservation: the id names the address (``node-N``).

        A project's nodes take ascending addresses, so genesis keeps the lowest id of its cluster
        (a free lower address, left by another project, is not taken while a higher one is free)."""
        highest = max((int(node_address(n).rsplit(".", 1)[-1]) for n in local_nodes(self.root)), default=0)
        return node_name(free_address(self.root, after=highest))

    def provision(self, node: str, request: NodeRequest) -> None:
        if node_process_alive(self.root, node):
            return
        settings = local_node_settings(
            self.root, node_address(node), request.cluster, request.cpus, request.memory, list(request.join)
        )
        start_node(self.root, settings, request.secrets)

    def retire(self, node: str) -> None:
        """Also what a dead node left running: on a real machine those die with the VM, here they
        would linger, hold their ports and keep serving stale answers."""
        from octctl.providers.local.leftovers import (
            CleanupError,
            kill_process_instances,
            remove_containers,
            stop_ingresses,
        )

        stop_node(self.root, node)
        kill_process_instances(nodes_dir(self.root) / node)
        stop_ingresses(nodes_dir(self.root) / node)
        take_down(node_address(node))
        if self.cluster is not None:
            try:
                remove_containers(cluster=self.cluster, node=node)
            except CleanupError as e:
                log.warning("retiring %s: %s", node, e)
        shutil.rmtree(nodes_dir(self.root) / node, ignore_errors=True)
