"""Before/after CPU cost of the pure engine: two or more source trees, measured alternately in one run.

    .venv/bin/python bench/engine_ab.py BEFORE_TREE AFTER_TREE [AFTER_TREE+native=BUILD ...] [--rounds 5]

A tree is a checkout of this repository (``git worktree add`` or ``git archive REV | tar -x -C DIR``). Each
round runs every tree once, in turn, in a fresh process (``bench/engine_bench.py``'s workload, its ``run()``,
``tune_gc()``, lateness 5 s, two timed passes, the better kept), so a change in the machine's load hits all
trees alike; the box is shared, hence CPU time (``time.process_time``) and ranges over rounds rather than one
figure. Every tree must give the same records (checked): a difference is a behaviour change, not a speed-up.
``TREE+native=BUILD`` runs TREE with ``RISKCTL_NATIVE_CORE=BUILD`` (its compiled core, riskctl/core/native.py;
the run fails if that build is not used).

``--instructions`` counts instead of timing: each tree runs under Valgrind's callgrind (``valgrind`` on the
PATH; Debian's package), once feeding the events and once only generating them, and the difference over the
events is the instructions the engine executed per event (``PYTHONHASHSEED=0``; the same tree gives the
same count to within a few hundredths of a per cent, whatever else the box runs). A shared box's noise (the
same arm 17-26 µs per event within five rounds) hides a change of a few per cent in time; in instructions it
shows in one round. Instructions are not time (a cache miss costs hundreds of cycles, an instruction one or
less), so a change found this way is confirmed in time too. Slow: some 50 times the engine's own time, the
two runs of a tree side by side; 20,000 events by default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import callgrind, tree_child  # noqa: E402

_CHILD = """
import json, sys, time
tree, n, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, tree)
sys.path.insert(0, tree + "/bench")
import engine_bench as eb
from riskctl.core.runner import tune_gc
events = eb.generate(n, 10_000)
tune_gc()
best, counts = None, {}
for _ in range(passes):
    elapsed, _runner, counts = eb.run(events, 5_000)
    best = elapsed if best is None else min(best, elapsed)
print(json.dumps({"us": None if best is None else best / n * 1e6, "counts": counts}))
"""


def _child(spec: str, events: int, passes: int, wrapper: list[str]) -> subprocess.Popen[str]:
    """The child measuring ``spec`` (TREE or TREE+native=BUILD), started under ``wrapper``."""
    tree, args, env = tree_child(spec)
    return subprocess.Popen(
        [*wrapper, *args, "-c", _CHILD, tree, str(events), str(passes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tree,
        env=env,
    )


def _finish(child: subprocess.Popen[str], spec: str) -> tuple[dict[str, Any], str]:
    out, err = child.communicate()
    if child.returncode:
        sys.exit(f"{spec}: the child failed ({child.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), err


def measure(spec: str, events: int, passes: int) -> tuple[float, dict[str, int]]:
    """CPU µs per event of ``spec``'s engine (the best of ``passes``), and the records it gave."""
    got, _ = _finish(_child(spec, events, passes, []), spec)
    return float(got["us"]), dict(got["counts"])


def instructions(spec: str, events: int) -> tuple[float, dict[str, int]]:
    """Instructions per event of ``spec``'s engine (callgrind: one pass less none), and the records."""
    fed, base = _child(spec, events, 1, callgrind.WRAPPER), _child(spec, events, 0, callgrind.WRAPPER)
    done = [_finish(child, spec) for child in (fed, base)]  # the two ran side by side
    counted = []
    for _, err in done:
        count = callgrind.collected(err)
        if count is None:
            sys.exit(f"{spec}: callgrind reported no count:\n{err[-3000:]}")
        counted.append(count)
    return (counted[0] - counted[1]) / events, dict(done[0][0]["counts"])  # the records of the fed run


def _same_records(reference: dict[str, int] | None, counts: dict[str, int], tree: str, first: str) -> None:
    """Every tree must decide as the first did: a difference is a behaviour change, not a speed-up."""
    if reference is not None and counts != reference:
        sys.exit(f"{tree} gives other records than {first}: {counts} != {reference}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", help="source trees, TREE or TREE+native=BUILD")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=None, help="events per child (default 60,000)")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="instructions per event under callgrind, not CPU time (one round; 20,000 events by default)",
    )
    args = ap.parse_args()
    trees: list[str] = args.trees
    if args.instructions:
        count_instructions(trees, 20_000 if args.events is None else args.events)
        return
    events = 60_000 if args.events is None else args.events
    us: dict[str, list[float]] = {t: [] for t in trees}
    reference: dict[str, int] | None = None
    for r in range(args.rounds):
        for tree in trees:
            cost, counts = measure(tree, events, args.passes)
            _same_records(reference, counts, tree, trees[0])
            reference = counts
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


def count_instructions(trees: list[str], events: int) -> None:
    callgrind.require("bench/engine_ab.py")
    per_event: dict[str, float] = {}
    reference: dict[str, int] | None = None
    for tree in trees:
        per_event[tree], counts = instructions(tree, events)
        _same_records(reference, counts, tree, trees[0])
        reference = counts
        print(f"{tree}: {per_event[tree]:,.0f} instructions/event", file=sys.stderr)
    first = per_event[trees[0]]
    print(f"| tree | instructions per event ({events:,} events) | against {trees[0]} |")
    print("|---|---|---|")
    for tree in trees:
        print(f"| {tree} | {per_event[tree]:,.0f} | {per_event[tree] / first - 1:+.1%} |")
    print(f"records (identical in every tree): {json.dumps(reference, sort_keys=True)}")


if __name__ == "__main__":
    main()
