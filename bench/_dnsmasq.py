"""dnsmasq, the anchor of bench/dns.py: started on a 127.0.0.N of its own with the same records,
port and TTL as oct's DNS, run as it would be deployed, and stopped with the children it forks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from _common import BenchError, log
from _dns_records import Query, Records, Server, ask

DNSMASQ_START_TIMEOUT = 10.0
#: dnsmasq takes a 127.0.0.N from the top down; oct's local nodes take theirs from 127.0.0.2 up.
DNSMASQ_HOSTS = range(254, 199, -1)


def claimed_addresses() -> set[str]:
    """127.0.0.N that oct's local provider has reserved for nodes (machine-wide claim files)."""
    from octctl.providers.local.provider import claims_dir

    with contextlib.suppress(OSError):
        return {p.name for p in claims_dir().iterdir()}
    return set()


def free_loopback(port: int) -> str:
    """A 127.0.0.N that no oct node claims and where ``port`` binds over UDP and TCP."""
    claimed = claimed_addresses()
    for n in DNSMASQ_HOSTS:
        address = f"127.0.0.{n}"
        if address in claimed:
            continue
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((address, port))
        except OSError:
            continue
        return address
    raise BenchError(f"no free 127.0.0.N (N in {DNSMASQ_HOSTS.stop + 1}..{DNSMASQ_HOSTS.start}) for dnsmasq")


def start_dnsmasq(
    binary: str, folder: Path, records: Records, port: int, ttl: int, zone: str
) -> tuple[subprocess.Popen[bytes], Server]:
    hosts = folder / "dnsmasq.hosts"
    hosts.write_text("".join(f"{address} {name}\n" for name, address in records.a.items()))
    address = free_loopback(port)
    argv = [
        binary,
        # Not --no-daemon: that is dnsmasq's debug mode, which answers TCP in the main process one
        # connection at a time (2 qps under dnsperf -m tcp); -k runs it as deployed, forking for TCP.
        "--keep-in-foreground",
        "--user=root",  # as nobody it could not read the hosts file in our private (0700) folder
        "--conf-file=/dev/null",  # none of the machine's /etc/dnsmasq.conf
        "--pid-file=",  # no pid file
        "--no-resolv",
        "--no-hosts",
        f"--addn-hosts={hosts}",
        f"--listen-address={address}",
        f"--port={port}",
        "--bind-interfaces",
        "--cache-size=10000",
        f"--local=/{zone}/",  # the zone is ours: NXDOMAIN for unknown names, as oct answers
        f"--local-ttl={ttl}",  # oct's TTL (dnsmasq answers hosts-file names with TTL 0 otherwise)
        f"--log-facility={folder / 'dnsmasq.log'}",
        *(f"--srv-host={name},{target},{p},0,0" for name, (p, target) in records.srv.items()),
    ]
    log(f"dnsmasq on {address}:{port}: {' '.join(argv[1:])}")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, with the children it forks for TCP
    )
    server = Server("dnsmasq", address, port, proc.pid)
    return proc, server


def wait_dnsmasq(proc: subprocess.Popen[bytes], server: Server, records: Records) -> None:
    deadline = time.monotonic() + DNSMASQ_START_TIMEOUT
    probe = Query(next(iter(records.a)), "A")
    for _ in range(int(DNSMASQ_START_TIMEOUT / 0.1) + 5):
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise BenchError(f"dnsmasq exited ({proc.returncode}) at start: {err.strip()[:500]}")
        with contextlib.suppress(Exception):
            if ask(server.address, server.port, probe)["rcode"] == "NOERROR":
                return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise BenchError(
        f"dnsmasq did not answer on {server.address}:{server.port} within {DNSMASQ_START_TIMEOUT} s"
    )


def stop_dnsmasq(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM dnsmasq's own process group (it and its TCP children), SIGKILL if it lingers."""
    if proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the group of the session it leads: nobody else is in it
        try:
            proc.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # TCP children that outlived it, if any
