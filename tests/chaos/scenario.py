"""One chaos seed from start to verdict; shared by the pytest suite and ``make chaos``.

1. Build the cluster (3 nodes, 5 for every fourth seed) in fresh namespaces.
2. Clients write and read for ``duration`` seconds while the seed's faults are injected.
3. Heal everything, wait (bounded) until one leader is known and every replica has the same hash.
4. Check: acknowledged writes are present (read back linearizably), replicas converged, no two nodes
   led in the same term, the history is linearizable.

Every step is bounded in time, so a broken cluster gives a failed seed with its reason, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos import linearizability
from tests.chaos.faults import Event, Fault, inject, schedule
from tests.chaos.netns import Cluster, HarnessError
from tests.chaos.workload import History, Record, read_back, run_clients
from tests.wait import WaitTimeout, wait_until

DURATION = 25.0  # seconds of workload per seed
CONVERGE_TIMEOUT = 60.0


def parse_seeds(raw: str) -> list[int]:
    """``"1,2,10-12"`` -> [1, 2, 10, 11, 12]; a clear error for anything else."""
    seeds: list[int] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            lo = int(first)
            hi = int(last) if dash else lo
        except ValueError:
            raise ValueError(
                f"bad seed {part!r} in {raw!r}: expected numbers or ranges like 1,2,10-20"
            ) from None
        if lo < 0 or hi < lo:
            raise ValueError(f"bad seed range {part!r} in {raw!r}: expected 0 <= first <= last")
        seeds += range(lo, hi + 1)
    if not seeds:
        raise ValueError(f"no seed in {raw!r}: expected numbers or ranges like 1,2,10-20")
    return seeds


def logs_tail(work_dir: Path, lines: int = 25) -> str:
    out = []
    for log in sorted(work_dir.glob("n*/oct-ctl.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log}\n" + "\n".join(text))
    return "\n".join(out)


def cluster_size(seed: int) -> int:
    return 5 if seed % 4 == 0 else 3


def replay_command(seed: int) -> str:
    return f"make chaos SEED={seed}  (or: OCT_CHAOS_SEEDS={seed} .venv/bin/pytest -m chaos tests/chaos)"


@dataclass
class SeedReport:
    seed: int
    nodes: int
    work_dir: Path
    faults: list[Fault] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    leader_terms: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [
            f"seed {self.seed}: {'ok' if self.ok else 'FAILED'} ({self.nodes} nodes, {self.elapsed:.0f}s, "
            + ", ".join(f"{k} {v}" for k, v in self.counts.items())
            + f", leader terms {self.leader_terms})",
            *(f"  fault {e.describe()}" for e in self.events),
            *(f"  FAILURE: {f}" for f in self.failures),
        ]
        if not self.ok:
            lines += [
                f"  node logs and history kept in {self.work_dir}",
                f"  replay: {replay_command(self.seed)}",
            ]
        return "\n".join(lines)


def run_seed(seed: int, work_dir: Path, duration: float = DURATION, keep: bool = False) -> SeedReport:
    """Run one seed; on success the work folder is removed unless ``keep``, on failure it stays."""
    report = SeedReport(seed=seed, nodes=cluster_size(seed), work_dir=work_dir)
    report.faults = schedule(seed, duration)
    started = time.monotonic()
    if work_dir.exists():
        shutil.rmtree(work_dir)
    try:
        with Cluster(work_dir=work_dir, size=report.nodes) as cluster:
            history = asyncio.run(_chaos(cluster, report, duration))
            _converge(cluster, report)
            final = asyncio.run(_final_reads(cluster, history))
            history.records.extend(final)
            _check(cluster, history, final, report)
            _save(work_dir, report, history)
    except HarnessError as e:
        report.failures.append(f"harness: {e}")
    report.elapsed = time.monotonic() - started
    if report.ok and not keep:
        shutil.rmtree(work_dir, ignore_errors=True)
    return report


async def _chaos(cluster: Cluster, report: SeedReport, duration: float) -> History:
    apis = {n.name: n.api for n in cluster.nodes}
    t0 = time.monotonic()
    injector = asyncio.create_task(inject(cluster, report.faults, t0, report.events))
    try:
        history = await run_clients(apis, cluster.headers, cluster.tls, report.seed, duration)
        # A fault still running when the clients stop is undone by the heal that follows.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(injector), timeout=10)
    finally:
        injector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await injector
    return history


def _converge(cluster: Cluster, report: SeedReport) -> None:
    """Heal, then wait for a leader every node agrees on and one state hash on all nodes."""
    cluster.heal_all()

    def converged(reps: dict[str, dict | None]) -> bool:
        hashes = {(r or {}).get("state_hash") for r in reps.values()}
        leaders = {(r or {}).get("leader") for r in reps.values()}
        return len(hashes) == 1 and None not in hashes and len(leaders) == 1 and None not in leaders

    try:
        wait_until(cluster.replicas, until=converged, timeout=CONVERGE_TIMEOUT, interval=0.5)
    except WaitTimeout:
        report.failures.append(
            f"replicas did not converge within {CONVERGE_TIMEOUT:.0f}s after healing: "
            f"state hashes {cluster.state_hashes()}"
        )


async def _final_reads(cluster: Cluster, history: History) -> list[Record]:
    keys = sorted(
        {r.key for r in history.records if r.kind == "write" and r.sent and r.key.startswith("reg/")}
    )
    keys += sorted(history.acknowledged_once())
    return await read_back({n.name: n.api for n in cluster.nodes}, cluster.headers, cluster.tls, keys)


def _check(cluster: Cluster, history: History, final: list[Record], report: SeedReport) -> None:
    report.counts = history.counts()
    failures = report.failures

    if report.counts["writes_ok"] < 10:
        failures.append(
            f"only {report.counts['writes_ok']} writes were acknowledged: the workload made no progress"
        )
    if not report.events:
        failures.append("no fault was injected")

    unexpected = history.unexpected()
    if unexpected:
        sample = "; ".join(f"{r.kind} {r.key} on {r.node}: {r.status} {r.error}" for r in unexpected[:3])
        failures.append(f"{len(unexpected)} answers outside the API contract, e.g. {sample}")

    # 1. Every acknowledged write is still there, with its value.
    got = {r.key: r for r in final}
    lost, unread = [], []
    for key, value in history.acknowledged_once().items():
        rec = got.get(key)
        if rec is None or rec.status not in (200, 404):
            unread.append(key)
        elif rec.output != value:
            lost.append(f"{key}={value!r} (read {rec.output!r})")
    if unread:
        failures.append(f"{len(unread)} acknowledged keys could not be read back after healing: {unread[:5]}")
    if lost:
        failures.append(f"{len(lost)} acknowledged writes lost: {lost[:5]}")

    # 2. All replicas converged: checked by _converge (it appends the failure itself).
    hashes = cluster.state_hashes()
    if len(set(hashes.values())) != 1 or None in hashes.values():
        failures.append(f"replicas differ after the final reads: {hashes}")

    # 3. No two nodes led in the same term.
    claims = cluster.leader_claims()
    report.leader_terms = len(claims)
    if not claims:
        failures.append("no node logged 'became leader term=N': the one-leader-per-term check has no data")
    for term, nodes in sorted(claims.items()):
        if len(nodes) > 1:
            failures.append(f"term {term} had {len(nodes)} leaders: {sorted(nodes)}")

    # 4. No follower cut off entries it had applied (PySyncObj's CRITICAL line; Raft §5.3).
    for log in sorted(report.work_dir.glob("n*/oct-ctl.log")):
        if "truncating already-applied" in log.read_text(errors="replace"):
            failures.append(f"{log.parent.name} truncated already-applied log entries (see {log})")

    # 5. The history is linearizable.
    result = linearizability.check(history.ops())
    for bad in result.failures():
        prefix = ", ".join(_describe(op, history.t0) for op in bad.best_prefix[-4:])
        failures.append(
            f"history of {bad.key} ({bad.ops} ops) is {bad.outcome.value} after {bad.steps} steps;"
            f" longest linearizable prefix ends: {prefix}"
        )


def _describe(op: linearizability.Op, t0: float) -> str:
    end = f"{op.end - t0:.3f}" if op.end is not None else "?"
    what = f"w({op.value})" if op.kind == "write" else f"r()->{op.output}"
    return f"c{op.client} {what} [{op.start - t0:.3f}, {end}]"


def _save(work_dir: Path, report: SeedReport, history: History) -> None:
    """The history and the fault log, beside the node logs, for a post-mortem of a failed seed."""
    data = {
        "seed": report.seed,
        "faults": [e.describe() for e in report.events],
        "records": [
            {**r.as_dict(), "start": r.start - history.t0, "end": r.end and r.end - history.t0}
            for r in history.records
        ],
    }
    (work_dir / "history.json").write_text(json.dumps(data, indent=1))
