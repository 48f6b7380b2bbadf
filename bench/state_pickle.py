"""What pickling a user's engine state costs, by part: the whole state, without the patterns' states, without
them and the engine's own entry; and the state with lateness 0 (no late-event buffers).

    .venv/bin/python bench/state_pickle.py [--events 100000] [--repeat 3]

The states are those the pure engine leaves after the side-by-side bench's first events
(``harness.workload``, the rules of ``rules/``, lateness 5 s): what the job pickles (``FlinkKeyedState``,
protocol 5) and unpickles for a user at each of its events. CPU time per state, the cyclic GC off (as in the
decide operator); the best of ``--repeat`` passes over all states. Printed, not written: the figures are
quoted in ``bench/flink_profile/README.md``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import pickle
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from harness.measures import run_engine  # noqa: E402
from harness.workload import Plan, workload  # noqa: E402

dumps = functools.partial(pickle.dumps, protocol=5)


def states(records: list[bytes], lateness: int) -> list[dict[str, Any]]:
    runner, _ = run_engine(records, lateness)
    found = (runner.store.get_existing(k) for k in list(runner.store.keys()))
    return [s.data for s in found if s is not None]


def cost(group: list[dict[str, Any]], repeat: int) -> tuple[float, float, float]:
    """Best dumps and loads µs per state, and the mean pickled bytes."""
    best_d = best_l = float("inf")
    raw: list[bytes] = []
    for _ in range(repeat):
        t = time.process_time()
        raw = [dumps(s) for s in group]
        best_d = min(best_d, time.process_time() - t)
        t = time.process_time()
        for b in raw:
            pickle.loads(b)
        best_l = min(best_l, time.process_time() - t)
    n = len(group)
    return best_d / n * 1e6, best_l / n * 1e6, sum(map(len, raw)) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    plan = Plan.of(False)
    records = workload(plan.users, args.events)[: args.events]
    late = states(records, 5000)
    parts = {
        "the whole state (lateness 5 s)": late,
        "without the patterns' states": [
            {k: v for k, v in s.items() if not k.startswith("pattern:")} for s in late
        ],
        "without them and the engine's entry": [
            {k: v for k, v in s.items() if not k.startswith("pattern:") and k != "_engine"} for s in late
        ],
        "the whole state, lateness 0": states(records, 0),
    }
    gc.disable()  # only the timing, as in the decide operator
    print(f"{len(late):,} users after {args.events:,} events; best of {args.repeat}, CPU µs per state")
    print("| state | dumps µs | loads µs | bytes |\n|---|---|---|---|")
    for name, group in parts.items():
        d, loaded, size = cost(group, args.repeat)
        print(f"| {name} | {d:.1f} | {loaded:.1f} | {size:.0f} |")


if __name__ == "__main__":
    main()
