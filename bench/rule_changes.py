"""What applying rules one at a time costs the engine, as the job applies a bulk of rule changes from CDC.

    .venv/bin/python bench/rule_changes.py [--rules 1000,2000] [--tree DIR ...] [--tree-rules N,...]
        [--out FILE]

Each rule is a condition rule over a feature of its own (a per-merchant sum), added to the running engine
with ``Engine.upsert_rule``, one by one, as ``process_broadcast_element`` does for each CDC row: the time to
add all N, and the time of the last change (the one that pays for the N-1 rules already in force). The
cyclic collector is off, as in the job. ``--tree`` runs the same measure on other checkouts (a ``git
worktree`` of an earlier commit, say), each in its own process, for a before/after in one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MEASURE = r"""
import gc, json, sys, time
gc.disable()
from riskctl.core.engine import Engine
from riskctl.core.rules import RuleSet, parse_rule

def doc(i):
    return {"id": f"merchant_{i:05d}", "action": "REVIEW", "priority": i % 100,
            "features": {"s": {"kind": "sum", "field": "amount", "window": "5m",
                               "filter": f'event.type == "transfer" and event.merchant == "m{i}"'}},
            "when": f"s > {1000 + i}"}

out = {}
for n in json.loads(sys.argv[1]):
    engine = Engine(RuleSet(), lateness=5000, state_ttl=86_400_000, cleanup_timers=False)
    docs = [doc(i) for i in range(n)]
    start = time.process_time()
    for d in docs[:-1]:
        engine.upsert_rule(d)
    before_last = time.process_time()
    engine.upsert_rule(docs[-1])
    end = time.process_time()
    out[n] = {"total_s": end - start, "last_ms": (end - before_last) * 1000}
print(json.dumps(out))
"""


def measure(tree: Path, counts: list[int]) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("RISKCTL_NATIVE_CORE", None)
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(counts)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, dict[str, float]] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="500,1000,2000,5000", help="rule counts, comma-separated")
    parser.add_argument("--tree", action="append", default=[], help="another checkout to measure too")
    parser.add_argument("--tree-rules", help="rule counts for the --tree checkouts (default: --rules)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "rule-changes.md"))
    args = parser.parse_args()
    counts = [int(n) for n in args.rules.split(",")]
    tree_counts = [int(n) for n in (args.tree_rules or args.rules).split(",")]
    trees = [(ROOT, counts), *((Path(t).resolve(), tree_counts) for t in args.tree)]
    lines = [
        "# Applying rule changes one at a time (pure engine, Python core)",
        "",
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
        f"{os.getloadavg()[0]:.1f}: `{' '.join(['bench/rule_changes.py', *sys.argv[1:]])}`",
        "",
        "| tree | commit | rules | all of them, one by one (s CPU) | the last change (ms CPU) |",
        "|---|---|---:|---:|---:|",
    ]
    for tree, tree_n in trees:
        commit = subprocess.run(
            ["git", "-C", str(tree), "log", "-1", "--format=%h"], capture_output=True, text=True, check=False
        ).stdout.strip()
        t0 = time.monotonic()
        for n, figures in measure(tree, tree_n).items():
            lines.append(
                f"| {tree} | {commit} | {int(n):,} | {figures['total_s']:.2f} | {figures['last_ms']:.1f} |"
            )
        print(f"{tree}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
