"""What the sequences' late-event buffers cost the pure engine, pattern by pattern.

    .venv/bin/python bench/lateness_split.py [--events 100000] [--rounds 3]

``bench/engine_bench.py``'s workload and rules, lateness 5 s, ``tune_gc()``. Each line runs in a fresh
process with one sequence rule's matcher given lateness 0 (no buffer: it neither keeps events for a replay
nor replays; the features, the late re-check and the other sequences keep the lateness), then all of them at
once: the CPU µs per event each saves, best of two passes, min / median / max over the rounds. Not a
configuration anyone runs (a late event would be missed by that rule): a measure of where the time goes.
Pure Python only: the compiled core's engine builds its matchers without the patched constructor (a run
with ``RISKCTL_NATIVE_CORE`` showed every line alike), so the variable is removed for the children.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/bench")
import engine_bench as eb
from riskctl.core import native, patterns
from riskctl.core.runner import tune_gc
target, n = sys.argv[2], int(sys.argv[3])
orig = patterns.PatternMatcher.__init__
def init(self, spec, *a, **k):
    orig(self, spec, *a, **k)
    if target in (spec.id, "(all)"):
        self._lateness = 0
patterns.PatternMatcher.__init__ = init
events = eb.generate(n, 10_000)
tune_gc()
best = min(eb.run(events, 5_000)[0] for _ in range(2))
print(json.dumps({"us": best / n * 1e6, "core": native.status}))
"""


def measure(target: str, events: int) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "RISKCTL_NATIVE_CORE"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT), target, str(events)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return float(doc["us"]), str(doc["core"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from riskctl.core.rules import load_rules

    sequences = [r.id for r in load_rules(ROOT / "rules") if r.sequence is not None]
    targets = ["(none)", *sequences, "(all)"]
    us: dict[str, list[float]] = {t: [] for t in targets}
    core = ""
    for r in range(args.rounds):
        for t in targets:
            value, core = measure(t, args.events)
            us[t].append(value)
            print(f"round {r + 1} {t}: {value:.2f} µs/event", file=sys.stderr)
    base = statistics.median(us["(none)"])
    print(f"`bench/lateness_split.py --events {args.events} --rounds {args.rounds}` ({core} core)\n")
    print("| buffer removed from | µs/event (min / median / max) | saved (median) |")
    print("|---|---|---|")
    for t in targets:
        v = us[t]
        med = statistics.median(v)
        print(f"| {t} | {min(v):.2f} / {med:.2f} / {max(v):.2f} | {base - med:.2f} |")


if __name__ == "__main__":
    main()
