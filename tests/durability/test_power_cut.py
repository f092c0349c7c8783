"""A power cut in the middle of a write burst loses no acknowledged write (needs root and FUSE).

Each node of a real 3-node cluster (the chaos harness: real ``oct-ctl`` processes, each in its own
network namespace) keeps its data folder on its own :mod:`volatile disk <tests.durability.volatile_disk>`,
which holds every write that was not synced in memory. Cutting a node's power kills that disk's
process (its unsynced writes are gone) and the node at once. Eight clients write new keys as fast
as they are answered; two seconds in, power is cut. The nodes are then started again on what their
disks really hold, and every write that was answered 200 must be read back.

The control run turns the journal's syncs off (``unsafe_no_fsync``) and must lose writes: the
proof that the layer really drops what was not synced, and that the syncs are what save the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.chaos.netns import Cluster, HarnessError, require_privileges
from tests.chaos.workload import Client, History, Record, read_back
from tests.durability.volatile_disk import CONTROL
from tests.wait import wait_until

pytestmark = pytest.mark.chaos

CLIENTS = 8
BURST_BEFORE_CUT = 2.0
BURST_AFTER_CUT = 1.0


@pytest.fixture(autouse=True)
def _privileged() -> None:
    try:
        require_privileges()
    except HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    if not Path("/dev/fuse").exists():
        pytest.fail("the power-cut test needs /dev/fuse (and the fuse3 package)", pytrace=False)


@dataclass
class VolatileMount:
    """One node's disk: a volatile disk process serving ``platter`` at ``mount``."""

    platter: Path
    mount: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def attach(self) -> None:
        self.platter.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.durability.volatile_disk", str(self.platter), str(self.mount)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[2],
            )
        wait_until(lambda: os.path.ismount(self.mount), timeout=15, message=f"{self.mount} to be mounted")

    def write_back(self) -> None:
        """What the kernel's writeback would have done by now: every write so far on the platter.
        First the kernel's own dirty pages reach the layer (``sync``): a node with syncs off leaves
        its journal's mmap'd changes there, and without this the cluster's own forming could be
        cut away, leaving a control run that never forms again rather than one that lost writes."""
        os.sync()
        (self.mount / CONTROL.lstrip("/")).write_text("sync")

    def cut(self) -> None:
        """The power cut: the unsynced writes die with the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        subprocess.run(["umount", "-l", str(self.mount)], capture_output=True, check=False)


@dataclass
class PoweredCluster:
    cluster: Cluster
    disks: dict[str, VolatileMount]

    def cut_power(self, names: list[str]) -> None:
        for name in names:  # disk first: nothing the node does after this reaches the platter
            self.disks[name].cut()
            self.cluster.kill(name)

    def power_on(self, names: list[str]) -> None:
        for name in names:
            self.disks[name].attach()
            self.cluster.start(name)


@contextlib.contextmanager
def powered_cluster(tmp_path: Path, *, unsafe_no_fsync: bool) -> Iterator[PoweredCluster]:
    work = tmp_path / "cluster"
    disks = {
        f"n{i}": VolatileMount(tmp_path / "platters" / f"n{i}", work / f"n{i}", tmp_path / f"disk-n{i}.log")
        for i in range(1, 4)
    }
    try:
        for disk in disks.values():
            disk.attach()
        with Cluster(work_dir=work, size=3, unsafe_no_fsync=unsafe_no_fsync) as cluster:
            yield PoweredCluster(cluster, disks)
    finally:
        for disk in disks.values():
            disk.cut()


async def burst(cluster: Cluster, until: float) -> History:
    """``CLIENTS`` clients, each writing a new key as soon as the last one was answered."""
    records: list[Record] = []
    apis = {n.name: n.api for n in cluster.nodes}
    names = sorted(apis)
    limits = httpx.Limits(max_connections=CLIENTS * 2)
    async with httpx.AsyncClient(
        headers=cluster.headers, verify=cluster.tls, trust_env=False, limits=limits
    ) as http:

        async def client(cid: int) -> None:
            c = Client(cid, http, apis, random.Random(cid), 1, records, op_timeout=5.0)
            while time.monotonic() < until:
                c.n += 1
                await c.write(names[(cid + c.n) % len(names)], f"once/{cid}/{c.n}")

        await asyncio.gather(*(client(cid) for cid in range(CLIENTS)))
    return History(records, 0.0)


async def cut_during_burst(powered: PoweredCluster, victims: list[str]) -> History:
    start = time.monotonic()
    writes = asyncio.create_task(burst(powered.cluster, start + BURST_BEFORE_CUT + BURST_AFTER_CUT))
    await asyncio.sleep(BURST_BEFORE_CUT)
    await asyncio.get_running_loop().run_in_executor(None, powered.cut_power, victims)
    return await writes


def lost_writes(powered: PoweredCluster, history: History) -> list[str]:
    cluster = powered.cluster
    wait_until(cluster.formed, timeout=60, interval=0.5, message="the cluster to form again after the cut")
    acknowledged = history.acknowledged_once()
    apis = {n.name: n.api for n in cluster.nodes}
    reads = asyncio.run(read_back(apis, cluster.headers, cluster.tls, sorted(acknowledged)))
    seen = {r.key: r.output for r in reads if r.status in (200, 404)}
    unanswered = sorted(set(acknowledged) - set(seen))
    assert not unanswered, f"the cluster never answered reads of {unanswered[:5]}"
    return sorted(key for key, value in acknowledged.items() if seen[key] != value)


def run_power_cut(tmp_path: Path, victims: list[str], *, unsafe_no_fsync: bool) -> tuple[History, list[str]]:
    with powered_cluster(tmp_path, unsafe_no_fsync=unsafe_no_fsync) as powered:
        for disk in powered.disks.values():
            disk.write_back()  # the cluster's forming is on disk: what the cut may take is the burst
        history = asyncio.run(cut_during_burst(powered, victims))
        powered.power_on(victims)
        return history, lost_writes(powered, history)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "victims", [["n1", "n2"], ["n1", "n2", "n3"]], ids=["leader-and-a-follower", "every-node"]
)
def test_no_acknowledged_write_is_lost_when_power_is_cut(tmp_path: Path, victims: list[str]) -> None:
    history, lost = run_power_cut(tmp_path, victims, unsafe_no_fsync=False)
    acknowledged = history.acknowledged_once()
    assert len(acknowledged) >= 50, f"too few writes were answered to tell anything: {history.counts()}"
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged writes are gone: {lost[:10]}"


@pytest.mark.timeout(240)
def test_without_the_syncs_the_same_cut_loses_acknowledged_writes(tmp_path: Path) -> None:
    history, lost = run_power_cut(tmp_path, ["n1", "n2", "n3"], unsafe_no_fsync=True)
    acknowledged = history.acknowledged_once()
    assert len(acknowledged) >= 50, f"too few writes were answered to tell anything: {history.counts()}"
    assert lost, (
        "every acknowledged write survived a power cut with the journal unsynced: the layer drops nothing"
    )
