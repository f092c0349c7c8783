"""``make chaos SEEDS=100``: run many chaos seeds one after another and print a summary.

    python -m tests.chaos.run --seeds 100          # seeds 1..100
    python -m tests.chaos.run --seed 17 --keep     # replay one seed, keep its logs either way

Exit status 1 when any seed failed; each failed seed's logs and history stay in ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.chaos.netns import HarnessError, require_privileges
from tests.chaos.scenario import DURATION, SeedReport, parse_seeds, replay_command, run_seed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, default=10, help="how many seeds to run, from --first on")
    which.add_argument("--seed", help="exact seeds: 17 or 1,5,10-20 (for replaying)")
    parser.add_argument("--first", type=int, default=1, help="first seed of --seeds")
    parser.add_argument("--duration", type=float, default=DURATION, help="seconds of workload per seed")
    parser.add_argument("--out", type=Path, default=Path("/tmp/oct-chaos-runs"), help="work folders")
    parser.add_argument("--keep", action="store_true", help="keep the work folder of passing seeds too")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if not 5 <= args.duration <= 600:
        parser.error(f"--duration must be 5..600 seconds, got {args.duration}")
    try:
        args.seed_list = (
            parse_seeds(args.seed) if args.seed else list(range(args.first, args.first + args.seeds))
        )
    except ValueError as e:
        parser.error(f"--seed: {e}")
    return args


def table(reports: list[SeedReport]) -> str:
    names = ("seed", "nodes", "faults", "ops", "acked", "indet", "terms", "time")
    head = " ".join(f"{n:>6}" for n in names) + "  result"
    rows = [head, "-" * len(head)]
    for r in reports:
        c = r.counts
        rows.append(
            f"{r.seed:>6} {r.nodes:>6} {len(r.events):>6} {c.get('ops', 0):>6} {c.get('writes_ok', 0):>6}"
            f" {c.get('writes_indeterminate', 0):>6} {r.leader_terms:>6} {r.elapsed:>5.0f}s  "
            + ("ok" if r.ok else "FAILED: " + r.failures[0][:80])
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_privileges()
    except HarnessError as e:
        print(f"chaos: {e}", file=sys.stderr)
        return 2
    reports: list[SeedReport] = []
    started = time.monotonic()
    try:
        for i, seed in enumerate(args.seed_list, 1):
            print(f"== seed {seed} ({i}/{len(args.seed_list)})", flush=True)
            report = run_seed(seed, args.out / f"seed-{seed}", duration=args.duration, keep=args.keep)
            reports.append(report)
            print(report.summary(), flush=True)
    except KeyboardInterrupt:
        print("interrupted; the summary covers the seeds that finished", file=sys.stderr)
    failed = [r for r in reports if not r.ok]
    print()
    print(table(reports))
    print(f"\n{len(reports) - len(failed)}/{len(reports)} seeds passed in {time.monotonic() - started:.0f}s")
    for r in failed:
        print(f"FAILED seed {r.seed}: logs in {r.work_dir}; replay: {replay_command(r.seed)}")
    return 1 if failed or not reports else 0


if __name__ == "__main__":
    sys.exit(main())
