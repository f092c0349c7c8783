"""Time to plan an AWS project of 100 and of 1,000 services: the cheapest fleet and where every
service goes (``oct plan``'s work, ``octcli.plan.build``), after the file is read and checked.

Why: the plan replays the leader's placement for every instance type it may pick, so its cost
grows with services times types; a large project must still plan in about a second (the goal).
Services are drawn with a fixed seed from sizes people use (100 millicores to 2 vCPUs, 128 MB
to 4 GB); every 10th has two replicas, which must land on distinct nodes. Each size is planned
``--rounds`` times; the median is reported, with the fleet it chose. The same services are then
packed onto a fleet of mixed types (``octctl/providers/aws/mixed_fleet.py``, the default node
reserve), timed the same way, and its monthly cost is set against the one-type fleet's.

Usage: .venv/bin/python bench/placement.py [--rounds N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from typing import Any

from _common import emit, log, median

from octcli.plan import build
from octctl.config import load_config_text
from octctl.providers.aws.mixed_fleet import cheapest_mixed_fleet
from octctl.providers.aws.pricing import DEFAULT_RESERVE, cheapest_fleet
from octctl.specs import demands

SIZES = (100, 1000)
GOAL_S = 1.0
SEED = 42


def project(services: int) -> str:
    rng = random.Random(SEED)
    text = '[project]\nname = "big"\n\n[project.state_backend.local]\npath = "state.json"\n\n'
    text += "[project.provider.aws]\nmax_nodes = 1000\n"
    for i in range(services):
        text += (
            f'\n[[project.services]]\nname = "s{i}"\nimage = "busybox:1.36"\n'
            f"cpus = {rng.choice((100, 250, 500, 1000, 2000))}\n"
            f"memory = {rng.choice((128, 256, 512, 1024, 2048, 4096))}\n"
            + ("replicas = 2\n" if i % 10 == 0 else "")
        )
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, Any] = {"bench": "placement", "goal_s": GOAL_S, "rounds": args.rounds}
    for size in SIZES:
        config = load_config_text(project(size), {})
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            plan = build(config)
            times.append(time.perf_counter() - started)
        fleet = f"{len(plan.nodes)} x {plan.nodes[0].instance_type}"
        log(f"{size} services: {median(times):.3f} s (median of {args.rounds}), {fleet}, ${plan.monthly_usd}")
        result[f"services_{size}_s"] = round(median(times), 4)
        result[f"services_{size}_fleet"] = fleet
        mixed_times, needs = [], demands(config)
        for _ in range(args.rounds):
            started = time.perf_counter()
            mixed = cheapest_mixed_fleet(needs, reserve=DEFAULT_RESERVE, max_nodes=1000)
            mixed_times.append(time.perf_counter() - started)
        kinds = Counter(t.name for t in mixed.types)
        log(
            f"{size} services, mixed types: {median(mixed_times):.3f} s, "
            + ", ".join(f"{n} x {name}" for name, n in sorted(kinds.items()))
            + f", ${mixed.total_monthly:.2f} a month (with volumes and addresses)"
        )
        result[f"mixed_{size}_s"] = round(median(mixed_times), 4)
        result[f"mixed_{size}_fleet"] = dict(sorted(kinds.items()))
        result[f"mixed_{size}_monthly_usd"] = float(mixed.total_monthly)
        single = cheapest_fleet(needs, reserve=DEFAULT_RESERVE, max_nodes=1000)
        result[f"one_type_{size}_monthly_usd"] = float(single.total_monthly)
        result[f"mixed_vs_one_type_{size}"] = round(float(mixed.total_monthly / single.total_monthly), 3)
    result["goal_met"] = all(
        result[f"services_{size}_s"] <= GOAL_S and result[f"mixed_{size}_s"] <= GOAL_S for size in SIZES
    )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
