"""Before/after CPU cost of the pure engine: two or more source trees, measured alternately in one run.

    .venv/bin/python bench/engine_ab.py BEFORE_TREE AFTER_TREE [AFTER_TREE+native=BUILD ...] [--rounds 5]

A tree is a checkout of this repository (``git worktree add`` or ``git archive REV | tar -x -C DIR``). Each
round runs every tree once, in turn, in a fresh process (``bench/engine_bench.py``'s workload, its ``run()``,
``tune_gc()``, lateness 5 s, two timed passes, the better kept), so a change in the machine's load hits all
trees alike; the box is shared, hence CPU time (``time.process_time``) and ranges over rounds rather than one
figure. Every tree must give the same records (checked): a difference is a behaviour change, not a speed-up.
``TREE+native=BUILD`` runs TREE with ``RISKCTL_NATIVE_CORE=BUILD`` (its compiled core, riskctl/core/native.py;
the run fails if that build is not used).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = """
import json, sys, time
tree, n, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, tree)
sys.path.insert(0, tree + "/bench")
import engine_bench as eb
from riskctl.core.runner import tune_gc
events = eb.generate(n, 10_000)
tune_gc()
best = None
for _ in range(passes):
    elapsed, _runner, counts = eb.run(events, 5_000)
    best = elapsed if best is None else min(best, elapsed)
print(json.dumps({"us": best / n * 1e6, "counts": counts}))
"""


def measure(spec: str, events: int, passes: int) -> tuple[float, dict[str, int]]:
    tree, _, build = spec.partition("+native=")
    env = {k: v for k, v in os.environ.items() if k != "RISKCTL_NATIVE_CORE"}
    args = [sys.executable]
    if build:
        env["RISKCTL_NATIVE_CORE"] = str(Path(build).resolve())
        args += ["-W", "error::RuntimeWarning"]  # a refused build (NativeCoreWarning) fails the run
    out = subprocess.run(
        [*args, "-c", _CHILD, str(Path(tree).resolve()), str(events), str(passes)],
        check=True,
        capture_output=True,
        text=True,
        cwd=tree,
        env=env,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return float(got["us"]), dict(got["counts"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", help="source trees, TREE or TREE+native=BUILD")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()
    trees: list[str] = args.trees
    us: dict[str, list[float]] = {t: [] for t in trees}
    reference: dict[str, int] | None = None
    for r in range(args.rounds):
        for tree in trees:
            cost, counts = measure(tree, args.events, args.passes)
            if reference is None:
                reference = counts
            elif counts != reference:
                sys.exit(f"{tree} gives other records than {trees[0]}: {counts} != {reference}")
            us[tree].append(cost)
            print(f"round {r + 1} {tree}: {cost:.1f} µs/event ({1e6 / cost:,.0f} events/s)", file=sys.stderr)
    print("| tree | µs/event CPU (min / median / max) | events/s (best / median / worst) |")
    print("|---|---|---|")
    for tree in trees:
        v = sorted(us[tree])
        med = statistics.median(v)
        print(
            f"| {tree} | {v[0]:.1f} / {med:.1f} / {v[-1]:.1f} | "
            f"{1e6 / v[0]:,.0f} / {1e6 / med:,.0f} / {1e6 / v[-1]:,.0f} |"
        )
    print(f"records (identical in every tree): {json.dumps(reference, sort_keys=True)}")


if __name__ == "__main__":
    main()
