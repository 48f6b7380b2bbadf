"""What pickling a user's engine state costs, by part: the whole state, without the patterns' states, without
them and the engine's own entry; and the state with lateness 0 (no late-event buffers). With ``--layouts``,
also the same states rewritten in layouts the patterns could store instead (what they would save at most).

    .venv/bin/python bench/state_pickle.py [--events 100000] [--repeat 3] [--layouts]

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
sys.path.insert(0, str(ROOT))  # this tree's riskctl, not the installed checkout's (an A/B runs two trees)
sys.path.insert(0, str(ROOT / "bench"))

from harness.measures import run_engine  # noqa: E402
from harness.workload import Plan, workload  # noqa: E402

from riskctl.core import patterns  # noqa: E402

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


def _rewrite(states: list[dict[str, Any]], pattern: Any) -> list[dict[str, Any]]:
    """The states with each pattern's state replaced by ``pattern(its state, shared)`` (dropped when that
    gives None); ``shared`` collects what the user's patterns put in it, one more entry when not empty."""
    out = []
    for s in states:
        new: dict[str, Any] = {}
        shared: dict[Any, Any] = {}
        for name, value in s.items():
            if name.startswith("pattern:") and value is not None:
                # (an idle state's compact tuple as the list it stands for)
                value = pattern(patterns._expand(value) if type(value) is tuple else value, shared)
                if value is None:
                    continue
            new[name] = value
        if shared:
            new["_buffer"] = [x for entry in shared.values() for x in entry]
        out.append(new)
    return out


def _entry(entry: Any) -> tuple[int, int, bool, Any]:
    """A buffered entry as a tuple: a place kept as its time alone (state layout 3) has no arrival number."""
    return (entry, -1, False, None) if type(entry) is int else entry


def _flat(st: list[Any], shared: dict[Any, Any]) -> list[Any]:
    """The buffer as one flat list, its times relative to the newest event (small ints)."""
    st = list(st)
    newest = st[patterns._MAX_TS]
    buffered = st[patterns._BUF]
    st[patterns._BUF] = [x for e in map(_entry, buffered) for x in (newest - e[0], *e[1:])]
    return st


def _shared(st: list[Any], shared: dict[Any, Any]) -> list[Any] | None:
    """One buffer for all of the user's patterns (each buffered event once), a byte of flags per event left in
    each pattern, and no state at all for a pattern with nothing pending: a lower bound of such a layout."""
    for ts, _seq, _starts, ev in map(_entry, st[patterns._BUF]):  # by time: a user's events never share one
        if ev is not None or ts not in shared:
            shared[ts] = (ts, ev)
    pending = (patterns._RUNS, patterns._REPORTED, patterns._EMITTED, patterns._OVERFLOW, patterns._TOO_LATE)
    if not any(st[i] for i in pending):
        return None
    st = list(st)
    st[patterns._BUF] = bytes(len(st[patterns._BUF]))
    return st


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--layouts", action="store_true", help="also other layouts of the patterns' states")
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
    if args.layouts:
        parts["layout: each pattern's buffer flat, times relative"] = _rewrite(late, _flat)
        shared = _rewrite(late, _shared)
        parts["layout: one buffer shared by the patterns, idle patterns' states dropped"] = shared
        before, after = (sum(k.startswith("pattern:") for s in group for k in s) for group in (late, shared))
        print(f"pattern states with nothing pending (dropped below): {before - after:,} of {before:,}")
    gc.disable()  # only the timing, as in the decide operator
    print(f"{len(late):,} users after {args.events:,} events; best of {args.repeat}, CPU µs per state")
    print("| state | dumps µs | loads µs | bytes |\n|---|---|---|---|")
    for name, group in parts.items():
        d, loaded, size = cost(group, args.repeat)
        print(f"| {name} | {d:.1f} | {loaded:.1f} | {size:.0f} |")


if __name__ == "__main__":
    main()
