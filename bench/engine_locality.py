"""How the pure engine's cost per event grows with the number of users whose state it keeps in memory.

    .venv/bin/python bench/engine_locality.py [--users 1000,10000,50000] [--per-user 20] [--rounds 3]

The same workload as ``bench/engine_bench.py`` (its ``generate`` and ``run``: the rules of ``rules/``,
in-memory state, ``tune_gc()``), generated for each number of users with ``--per-user`` events each, and its
event time scaled so that every user sees the same gaps between his events whatever the number of users: the
work per event is then about the same (the records per event are reported to show it), and only the number of
keys whose state is live changes. Each arm (users x lateness 5 s or 0) runs in a fresh process, in turn,
``--rounds`` times (the box is shared: ranges, not one figure); two timed passes per run, the better kept.
CPU time (``time.process_time``). With ``RISKCTL_NATIVE_CORE=<build>`` it measures the compiled core.

For each arm it also counts the objects of a key's state (lists, tuples, dicts with their key tables, and the
ints, floats and strings they hold: what an event may have to bring back into the cache), averaged over the
keys with state at the end of a run.

Writes ``bench/results/engine-locality.md`` and ``.json`` (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LATENESS = (5_000, 0)
#: the event-time spread of engine_bench's 10,000-user workload, which the others are scaled to
BASE_USERS = 10_000


def _engine_bench() -> ModuleType:
    """bench/engine_bench.py, whose workload and run this measures (imported as bench/'s scripts do)."""
    if "engine_bench" not in sys.modules:
        sys.path.insert(0, str(ROOT / "bench"))
        try:
            importlib.import_module("engine_bench")
        finally:
            sys.path.remove(str(ROOT / "bench"))
    return sys.modules["engine_bench"]


def scaled_events(users: int, per_user: int, seed: int = 42) -> list[dict[str, Any]]:
    """engine_bench's events for ``users`` users, ``per_user`` each, at the per-user density of its
    10,000-user workload (event times scaled by 10,000 / users)."""
    eb = _engine_bench()
    events = eb.generate(users * per_user, users, seed)
    scale = BASE_USERS / users
    for e in events:
        e["ts"] = eb.T0 + int((e["ts"] - eb.T0) * scale)
    return events


def state_objects(value: Any) -> int:
    """The objects of one stored value (each counted once): containers, a dict's key table, a non-empty
    list's item array, and the ints (beyond CPython's small ones), floats and strings they hold."""
    seen: set[int] = set()
    stack = [value]
    n = 0
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        if isinstance(x, dict):
            seen.add(id(x))
            n += 2
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            seen.add(id(x))
            n += 2 if x else 1
            stack.extend(x)
        elif isinstance(x, (tuple, set, frozenset)):
            seen.add(id(x))
            n += 1
            stack.extend(x)
        elif isinstance(x, bool) or x is None:
            continue
        elif isinstance(x, int):
            if not -5 <= x <= 256:
                seen.add(id(x))
                n += 1
        elif isinstance(x, (str, float, bytes)):
            seen.add(id(x))
            n += 1
    return n


def measure_here(
    users: int, per_user: int, lateness: int, passes: int = 2, *, tuned_gc: bool = True
) -> dict[str, Any]:
    """One arm in this process: CPU µs per event (best of ``passes``), records, objects per key.

    ``tuned_gc``: apply ``tune_gc()`` first, as the timed runs do (process-wide: a test passes False)."""
    eb = _engine_bench()
    from riskctl.core import native
    from riskctl.core.runner import tune_gc

    events = scaled_events(users, per_user)
    if tuned_gc:
        tune_gc()
    best: float | None = None
    runner: Any = None
    counts: dict[str, int] = {}
    for _ in range(passes):
        elapsed, runner, counts = eb.run(events, lateness)
        best = elapsed if best is None else min(best, elapsed)
    assert best is not None and runner is not None
    keys = 0
    objects = 0
    for key in runner.store.keys():
        state = runner.store.get_existing(key)
        if state is None or not state.data:
            continue
        keys += 1
        objects += sum(state_objects(v) for v in state.data.values())
    return {
        "users": users,
        "lateness_ms": lateness,
        "events": len(events),
        "us": best / len(events) * 1e6,
        "records": sum(counts.values()),
        "counts": counts,
        "keys_with_state": keys,
        "objects_per_key": round(objects / keys, 1) if keys else 0.0,
        "core": native.status,
    }


def measure(users: int, per_user: int, lateness: int) -> dict[str, Any]:
    """One arm in a fresh process (its heap holds nothing of the other arms)."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1] + '/bench'); import engine_locality as el; "
        "print(json.dumps(el.measure_here(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))"
    )
    # a compiled build named but refused (NativeCoreWarning) fails the run rather than measure pure Python
    strict = ["-W", "error::RuntimeWarning"] if os.environ.get("RISKCTL_NATIVE_CORE") else []
    out = subprocess.run(
        [sys.executable, *strict, "-c", code, str(ROOT), str(users), str(per_user), str(lateness)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def report(runs: list[dict[str, Any]], args: argparse.Namespace, started: str, load: str) -> str:
    """The markdown table of ``runs`` (every round of every arm)."""
    arms: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in runs:
        arms.setdefault((r["users"], r["lateness_ms"]), []).append(r)
    core = runs[0]["core"] if runs else "?"
    lines = [
        f"## {started}: `bench/engine_locality.py --users {args.users} --per-user {args.per_user} "
        f"--rounds {args.rounds}`",
        "",
        f"The pure engine ({core} core), the rules of `rules/`, in-memory state, `tune_gc()`; engine_bench's "
        f"workload at the same per-user event density for every number of users ({args.per_user} events "
        f"each), so only the number of live states differs. CPU µs per event, best of two passes per run, "
        f"{args.rounds} runs per arm in fresh processes, arms alternating; load average at the start: "
        f"{load}; Python {platform.python_version()}.",
        "",
        "| users | lateness | µs/event (min / median / max) | events/s (median) | records per event "
        "| objects per key's state |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for (users, lateness), rs in sorted(arms.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        us = sorted(r["us"] for r in rs)
        med = statistics.median(us)
        per_event = rs[0]["records"] / rs[0]["events"]
        lines.append(
            f"| {users:,} | {lateness / 1000:g} s | {us[0]:.2f} / {med:.2f} / {us[-1]:.2f} | "
            f"{1e6 / med:,.0f} | {per_event:.3f} | {rs[0]['objects_per_key']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", default="1000,10000,50000", help="comma-separated numbers of users")
    ap.add_argument("--per-user", type=int, default=20, help="events per user")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    sizes = [int(u) for u in args.users.split(",")]
    if not sizes or min(sizes) < 1 or args.per_user < 1 or args.rounds < 1:
        ap.error("--users, --per-user and --rounds must be positive")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load = f"{os.getloadavg()[0]:.2f}"
    runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for users in sizes:
            for lateness in LATENESS:
                got = measure(users, args.per_user, lateness)
                runs.append(got)
                print(
                    f"round {r + 1} users {users:,} lateness {lateness} ms: {got['us']:.2f} µs/event "
                    f"({got['objects_per_key']} objects per key)",
                    file=sys.stderr,
                )
    text = report(runs, args, started, load)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "engine-locality.md").write_text(text)
        (RESULTS / "engine-locality.json").write_text(
            json.dumps({"started": started, "load": load, "runs": runs}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
