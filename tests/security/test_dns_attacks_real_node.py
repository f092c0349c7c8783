"""The DNS attacks against a real ``oct-ctl`` node, and the node's log that they would flood.

A node started by the local provider, with a ``FakeUpstream`` as its resolver, is attacked as in
``test_dns_attacks.py`` while its descriptors are watched in ``/proc/<pid>/fd`` and its log file
is read: a remote client gets REFUSED, forwarded answers are truncated over UDP, a flood of
forwards keeps descriptors bounded, malformed packets leave no traceback. The node's log rotates
(as oct-ctl sets it up, and in the node itself) and keeps what a crash prints after rotating.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import RCODE, DNSRecord

from octctl.node_settings import Secrets
from octctl.providers.local.provider import (
    free_address,
    local_node_settings,
    node_pid,
    octctl_pids,
    pid_alive,
    start_node,
    stop_node,
)
from tests.security.dns_attacks import (
    FD_SLACK,
    LOG_LINES_PER_KIND,
    MAX_FORWARDS,
    fd_count,
    flood,
    malformed_attack,
    query,
    tcp_exchange,
    udp_exchange,
)
from tests.security.fake_upstream import UPSTREAM_RECORDS, FakeUpstream
from tests.wait import wait_until, wait_until_async

pytestmark = [pytest.mark.security]


# -- the node's log is rotated ---------------------------------------------------------------------


def test_the_node_log_rotates_and_keeps_late_crash_output(tmp_path: Path) -> None:
    """The daemon's logging set up as oct-ctl does it, in a child process writing 10x its limit."""
    log_file = tmp_path / "oct-ctl.log"
    script = textwrap.dedent(
        """
        import logging, sys
        from pathlib import Path
        from octctl.daemon import setup_logging

        setup_logging("INFO", Path(sys.argv[1]), max_bytes=4096, backups=2)
        log = logging.getLogger("octctl.dns.server")
        for i in range(400):
            log.warning("line %04d %s", i, "x" * 60)
        print("printed after the rotations", flush=True)
        sys.exit("oct-ctl: a crash message after the rotations")
        """
    )
    with log_file.open("ab") as out:  # as the local provider starts a node: stdout and stderr to the log
        proc = subprocess.run(
            [sys.executable, "-c", script, str(log_file)], stdout=out, stderr=subprocess.STDOUT, timeout=60
        )
    assert proc.returncode == 1
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["oct-ctl.log", "oct-ctl.log.1", "oct-ctl.log.2"], files
    for name in files:  # the current file may also hold what was printed after its last log line
        limit = 4096 + (200 if name == "oct-ctl.log" else 0)
        assert (tmp_path / name).stat().st_size <= limit, f"{name}: {(tmp_path / name).stat().st_size} bytes"
    current = log_file.read_text()
    assert "line 0399" in current, "the newest lines are in oct-ctl.log"
    assert "printed after the rotations" in current and "a crash message after the rotations" in current


# -- the same attacks against a real oct-ctl -------------------------------------------------------


class RealNode:
    def __init__(self, root: Path, address: str, dns_port: int, pid: int, log: Path) -> None:
        self.root, self.address, self.dns_port, self.pid, self.log = root, address, dns_port, pid, log


def stranger_address() -> str | None:
    """An address of this host outside loopback and Docker's bridges: what a remote client looks like."""
    try:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, timeout=10
        ).stdout
    except OSError:
        return None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and not (parts[1] == "docker0" or parts[1].startswith(("br-", "veth"))):
            return parts[3].split("/")[0]
    return None


@pytest.fixture(scope="module")
def real_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def real_node(tmp_path_factory: pytest.TempPathFactory, real_upstream: FakeUpstream) -> Iterator[RealNode]:
    root = tmp_path_factory.mktemp("dns-attacks") / ".oct"
    address = free_address(root)
    settings = local_node_settings(root, address, "c-dnsattack", 2000, 2048, []).model_copy(
        update={"dns_upstreams": ["{}:{}".format(*real_upstream.address)]}
    )
    start_node(root, settings, Secrets.mint())
    pid = node_pid(root, settings.node)
    assert pid is not None
    node = RealNode(root, address, settings.dns_port, pid, root / "nodes" / settings.node / "oct-ctl.log")
    try:

        def answering() -> bool:
            assert pid_alive(pid), f"oct-ctl exited:\n{node.log.read_text(errors='replace')[-3000:]}"
            probe = DNSRecord.question("probe.oct").send(address, settings.dns_port, timeout=0.5)
            return DNSRecord.parse(probe).header.rcode == RCODE.NXDOMAIN

        wait_until(
            answering, timeout=30, interval=0.2, ignore=(OSError,), message="the node's DNS server to answer"
        )
        yield node
    finally:
        stop_node(root, settings.node)
        for stray in octctl_pids(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(stray, signal.SIGKILL)


async def test_real_node_refuses_outside_names_to_a_remote_client(
    real_node: RealNode, real_upstream: FakeUpstream
) -> None:
    stranger = stranger_address()
    if stranger is None:
        pytest.skip("this host has no address outside loopback and Docker's bridges to attack from")
    real_upstream.silent = False
    before = real_upstream.received
    outside = query("www.example.com")
    reply = await udp_exchange(real_node.address, real_node.dns_port, outside, source=stranger)
    assert reply is not None and DNSRecord.parse(reply).header.rcode == RCODE.REFUSED
    assert real_upstream.received == before, "the node forwarded a remote client's question"
    zone = await udp_exchange(real_node.address, real_node.dns_port, query("probe.oct"), source=stranger)
    assert zone is not None and DNSRecord.parse(zone).header.rcode == RCODE.NXDOMAIN


async def test_real_node_truncates_forwarded_answers_over_udp(
    real_node: RealNode, real_upstream: FakeUpstream
) -> None:
    real_upstream.silent = False
    data = await udp_exchange(real_node.address, real_node.dns_port, query("big.example.com", "TXT"))
    assert data is not None and len(data) <= 512, f"{len(data or b'')} bytes answered a 33-byte query"
    assert DNSRecord.parse(data).header.tc == 1
    whole = await tcp_exchange(real_node.address, real_node.dns_port, query("big.example.com", "TXT"))
    assert len(DNSRecord.parse(whole).rr) == UPSTREAM_RECORDS


async def test_real_node_keeps_descriptors_bounded_under_a_flood_of_forwards(
    real_node: RealNode, real_upstream: FakeUpstream
) -> None:
    real_upstream.silent = True
    try:
        baseline = fd_count(real_node.pid)
        peak = await flood(real_node.address, real_node.dns_port, 2000, lambda: fd_count(real_node.pid))
        assert peak - baseline <= MAX_FORWARDS + FD_SLACK, f"the node opened {peak - baseline} descriptors"
        started = time.monotonic()
        answer = await udp_exchange(real_node.address, real_node.dns_port, query("probe.oct"), timeout=1)
        assert answer is not None and time.monotonic() - started < 0.5
        await wait_until_async(
            lambda: fd_count(real_node.pid),
            until=lambda count: count <= baseline + 8,
            timeout=10,
            interval=0.2,
            message=f"the node's descriptors to fall back to {baseline} + 8",
        )
    finally:
        real_upstream.silent = False


async def test_real_node_logs_malformed_packets_without_tracebacks(real_node: RealNode) -> None:
    offset = real_node.log.stat().st_size
    problems = await malformed_attack(real_node.address, real_node.dns_port)
    # Every packet has been dealt with (see malformed_attack): its log lines are in the file.
    answer = await udp_exchange(real_node.address, real_node.dns_port, query("probe.oct"), timeout=1)
    assert answer is not None and DNSRecord.parse(answer).header.rcode == RCODE.NXDOMAIN
    with real_node.log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    assert "Traceback" not in text, text[:3000]
    dns_lines = [line for line in text.splitlines() if "octctl.dns" in line or "asyncio" in line]
    assert len(dns_lines) <= LOG_LINES_PER_KIND + 1, "\n".join(dns_lines[:40])
    assert problems == {}


def test_real_node_rotates_its_own_log(real_node: RealNode) -> None:
    """The local provider has oct-ctl write (and rotate) its log, stderr included."""
    cmdline = Path(f"/proc/{real_node.pid}/cmdline").read_bytes().split(b"\0")
    assert b"--log-file" in cmdline and str(real_node.log).encode() in cmdline
    assert os.readlink(f"/proc/{real_node.pid}/fd/2") == str(real_node.log)
