"""How fast the pure scheduler places: 10,000 services onto 1,000 nodes, from nothing.

Why: the leader runs :func:`octctl.scheduler.place` on every pass that changes the project, and a
large cluster must never wait on it (Nomad's C1M placed 3,750 containers a second end to end; the
scheduler alone must do far more: the goal is 20,000 placements a second). Two mixes, drawn with a
fixed seed: ``uniform`` (every service 250 millicores, 256 MB: the C1M shape) and ``mixed`` (100
millicores to 2 vCPUs, 128 MB to 2 GB; every 10th service a group of two replicas, every 50th
binding a host port). Nodes are 16 vCPU / 64 GB, all schedulable. Each mix is placed ``--rounds``
times; the median is reported.

Usage: .venv/bin/python bench/scheduler.py [--services N] [--nodes N] [--rounds N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

from _common import BenchError, emit, log, median

from octctl.scheduler import Demand, NodeCapacity, place

GOAL_PER_S = 20_000
SEED = 7


def demands(mix: str, count: int) -> list[Demand]:
    rng = random.Random(SEED)
    found = []
    for i in range(count):
        if mix == "uniform":
            found.append(Demand(f"s{i}", 250, 256))
            continue
        cpus, memory = rng.choice((100, 250, 500, 1000, 2000)), rng.choice((128, 256, 512, 1024, 2048))
        ports = frozenset({20_000 + i % 7}) if i % 50 == 0 else frozenset()
        group = f"g{i // 2}" if i % 10 in (0, 1) else ""
        found.append(Demand(f"s{i}", cpus, memory, ports, group=group))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    nodes = [NodeCapacity(f"node-{i}", 16000, 65536) for i in range(args.nodes)]
    result: dict[str, Any] = {
        "bench": "scheduler",
        "services": args.services,
        "nodes": args.nodes,
        "goal_per_s": GOAL_PER_S,
        "rounds": args.rounds,
    }
    for mix in ("uniform", "mixed"):
        wanted = demands(mix, args.services)
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            plan = place(wanted, nodes, {})
            times.append(time.perf_counter() - started)
        if plan.unplaced:
            raise BenchError(f"{mix}: {len(plan.unplaced)} services did not fit: the bench needs more nodes")
        rate = args.services / median(times)
        log(f"{mix}: {median(times):.3f} s for {args.services} services, {rate:,.0f} placements/s")
        result[f"{mix}_s"] = round(median(times), 4)
        result[f"{mix}_per_s"] = round(rate)
    result["goal_met"] = all(result[f"{mix}_per_s"] >= GOAL_PER_S for mix in ("uniform", "mixed"))
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
