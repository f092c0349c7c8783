"""etcd 3.4, the anchor of bench/raft_write.py: a 3-member group on loopback with client and peer
TLS from a CA minted for the run (oct's own issuer), fsync on (its default) or off, its leader
found through the JSON gateway, and every member stopped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from _common import BenchError, check_loopback

ETCD_MEMBERS = 3
ETCD_FLAGS = ("--log-level", "warn", "--logger", "zap")
#: fsync off (a 3.4.23 flag that ``etcd --help`` does not list): the no-fsync comparison, beside
#: oct's ``OCT_UNSAFE_NO_FSYNC=1``. Without it etcd syncs its WAL before acknowledging, as oct does.
NO_FSYNC_FLAGS = ("--unsafe-no-fsync",)
START_TIMEOUT = 60.0  # for all members to answer healthy


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out on 127.0.0.1 right now (held together, so they are distinct)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def etcd_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and one certificate for 127.0.0.1 (serverAuth and clientAuth), written for etcd:
    ``(ca, cert, key)``. oct's own issuer makes them, so both sides use the same kind of key."""
    from octctl.tls import issue_node_certificate, new_ca

    ca_key, ca_cert = new_ca("etcd-bench")
    key, cert = issue_node_certificate(ca_key, ca_cert, "etcd", ["127.0.0.1"])
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    for path, text in zip(paths, (ca_cert, cert, key), strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return paths


@contextlib.contextmanager
def etcd_cluster(
    folder: Path, extra_flags: tuple[str, ...] = ()
) -> Iterator[tuple[list[tuple[str, int]], ssl.SSLContext]]:
    """A 3-member etcd on 127.0.0.1 with client and peer TLS; yields ``([(client URL, pid)], client
    TLS context)``; every member is stopped after."""
    if shutil.which("etcd") is None:
        raise BenchError("etcd is not installed: run `make bench-deps` (apt package etcd-server)")
    ca, cert, key = etcd_tls_files(folder / "tls")
    tls_flags = (
        *("--cert-file", str(cert), "--key-file", str(key)),  # server TLS, like oct's API
        *("--peer-cert-file", str(cert), "--peer-key-file", str(key)),
        *("--peer-trusted-ca-file", str(ca), "--peer-client-cert-auth"),
    )
    context = ssl.create_default_context(cafile=str(ca))
    ports = free_ports(2 * ETCD_MEMBERS)
    names = [f"m{i}" for i in range(ETCD_MEMBERS)]
    peers = [f"https://127.0.0.1:{ports[2 * i + 1]}" for i in range(ETCD_MEMBERS)]
    clients = [f"https://127.0.0.1:{ports[2 * i]}" for i in range(ETCD_MEMBERS)]
    initial = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, peer, client in zip(names, peers, clients, strict=True):
            log_file = open(folder / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
            with log_file:
                procs.append(
                    subprocess.Popen(
                        [
                            *("etcd", "--name", name, "--data-dir", str(folder / name)),
                            *("--listen-client-urls", client, "--advertise-client-urls", client),
                            *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
                            *("--initial-cluster", initial, "--initial-cluster-state", "new"),
                            *("--initial-cluster-token", "octbench", *ETCD_FLAGS, *extra_flags, *tls_flags),
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        wait_etcd_healthy(folder, clients, procs, context)
        yield [(url, proc.pid) for url, proc in zip(clients, procs, strict=True)], context
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def wait_etcd_healthy(
    folder: Path, clients: list[str], procs: list[subprocess.Popen[bytes]], tls: ssl.SSLContext
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(trust_env=False, timeout=1.0, verify=tls) as http:
        for _ in range(int(START_TIMEOUT / 0.1) + 10):
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    tail = (folder / f"m{i}.log").read_text(errors="replace").splitlines()[-10:]
                    raise BenchError(f"etcd member m{i} exited ({proc.returncode}):\n" + "\n".join(tail))
            healthy = 0
            for url in clients:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    healthy += http.get(f"{url}/health").json().get("health") == "true"
            if healthy == len(clients):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    raise BenchError(f"etcd was not healthy within {START_TIMEOUT:.0f} s")


def etcd_leader(clients: list[str], tls: ssl.SSLContext) -> str:
    """The client URL of the member that leads (its member_id equals the leader it reports)."""
    with httpx.Client(trust_env=False, timeout=2.0, verify=tls) as http:
        for url in clients:
            check_loopback(url)
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                status = http.post(f"{url}/v3/maintenance/status", json={}).json()
                if status["header"]["member_id"] == status["leader"]:
                    return url
    raise BenchError("no etcd member says it is the leader")
