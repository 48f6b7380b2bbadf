"""Where the decide operator's Python time goes, per event, without Flink: the job's budget in parts.

    .venv/bin/python bench/decide_budget.py [--events 150000] [--rounds 3] [--no-write]
    .venv/bin/python bench/decide_budget.py --instructions [TREE[+native=BUILD] ...] [--events 10000]

Runs the job's own ``RiskFunction.decide_record`` over the side-by-side bench's workload (the simulator's
events, 100,000 users, ``harness.workload``), record by record, as the decide operator's fast path does in
thread mode (the key given, the outputs as tuples):
the key's state in a :class:`~riskctl.flink.risk_function.FlinkKeyedState` (the 80,000-user cache) over a
ValueState that keeps what it is given, as the Java ValueState the job writes (each write pickled as a
``bytes`` object, ``pickle_writes``);
the cyclic GC frozen and off, as ``RiskFunction.open`` leaves it. The first half of the events warms the
state and the cache; the second half is timed (CPU time of this process). Arms, each a fresh function:

* ``job``: the rules of ``rules/``, state pickled: the Python side of the decide thread;
* ``no-pickling``: the same, the cache and the ValueState holding the dict itself, changed in place (what
  encoding and decoding the state cost, less what the fresh copy each event decodes saves in memory walks);
* ``no-patterns``: no pickling, and without the sequence rules (what matching the patterns costs);
* ``no-rules``: no pickling, no rules (the door, parsing, the decision's JSON, the output rows, the cache).

What it leaves out is the Java side of the decide thread (PyFlink's conversions, the JNI calls, RocksDB, the
chained Calcs and Kafka writers): the decide thread's CPU in ``bench/bench.py`` minus the ``job`` arm.
``job`` and ``no-pickling`` must emit the same records (checked): a difference means the cache or the engine
changed a value after it was written. Arms alternate within each round (the box is shared); the report gives
each arm's range over the rounds. Results: ``bench/results/decide_budget.md`` and ``.json``.

``--instructions`` counts the ``job`` arm instead of timing it (``harness.callgrind``): each tree (a checkout
of this repository, ``TREE+native=BUILD`` with its compiled core, the pure-Python core without; by default
this one, with the build ``RISKCTL_NATIVE_CORE`` names, if any) runs the arm over N and over 2N events under
callgrind, side by side, and the difference per event is what the decide function executed for each of the N
more (the state encoded and written, the cache's look-ups, the door, the engine). The trees must emit the same
records (compared by digest; a difference is reported). Slow: a minute or two per tree for 10,000 events.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import RESULTS, callgrind, tree_child  # noqa: E402
from harness.workload import workload  # noqa: E402

from riskctl.core import native  # noqa: E402
from riskctl.core.engine import Engine  # noqa: E402
from riskctl.core.rules import RuleSet, load_rules  # noqa: E402
from riskctl.flink.risk_function import FlinkKeyedState, RiskFunction  # noqa: E402

ARMS = ("job", "no-pickling", "no-patterns", "no-rules")
LATENESS_MS = 5_000  # the job's default (job.lateness_ms)
STATE_TTL_MS = 86_400_000
CACHE_KEYS = 80_000  # the job's default (job.state_cache_keys)
USERS = 100_000


class JavaValueState:
    """A ValueState of the current key that keeps each value as it is given, as the Java ValueState the job's
    thread mode hands its bytes to (``riskctl.flink.fast_path.java_value_state``). Bytes are copied in and
    out, as pemja copies them into a Java ``byte[]`` and back into new bytes: the object written is not kept
    (the ``no-pickling`` arm's dicts are)."""

    def __init__(self) -> None:
        self.store: dict[str, Any] = {}
        self.key: str | None = None

    def value(self) -> Any:
        value = self.store.get(self.key)  # type: ignore[arg-type]
        return bytes(value) if type(value) is bytearray else value

    def update(self, value: Any) -> None:
        self.store[self.key] = bytearray(value) if type(value) is bytes else value  # type: ignore[index]

    def clear(self) -> None:
        self.store.pop(self.key, None)  # type: ignore[arg-type]


def _same(value: Any) -> Any:
    return value


def objects_keyed_state(backing: JavaValueState, cache_size: int) -> FlinkKeyedState:
    """The job's state cache keeping the dict itself: no encoding, the objects changed in place."""
    return FlinkKeyedState(backing, cache_size, codec=(_same, _same))


class _Timers:
    def __init__(self) -> None:
        self.registered = 0
        self.deleted = 0

    def register_event_time_timer(self, ts: int) -> None:
        self.registered += 1

    def register_processing_time_timer(self, ts: int) -> None:
        self.registered += 1

    def delete_event_time_timer(self, ts: int) -> None:
        self.deleted += 1

    def current_processing_time(self) -> int:
        return int(time.time() * 1000)


class _Ctx:
    """The operator's context of the current key."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.timers = _Timers()

    def get_current_key(self) -> str | None:
        return self.key

    def timer_service(self) -> _Timers:
        return self.timers

    def get_broadcast_state(self, desc: Any) -> dict[str, str]:
        return {}


def records(lines: Iterable[bytes]) -> list[tuple[tuple[bytes, str, int, int], str]]:
    """(the operator's input row, its key) of each workload line: the key as the job's Java side takes it."""
    out = []
    for offset, raw in enumerate(lines):
        user = json.loads(raw).get("user_id")
        out.append(((raw, "events", 0, offset), user if isinstance(user, str) else ""))
    return out


def rules_of(arm: str) -> RuleSet:
    """The rules an arm runs."""
    rules = load_rules(ROOT / "rules")
    if arm == "no-rules":
        return RuleSet()
    if arm == "no-patterns":
        return RuleSet(r for r in rules if r.sequence is None)
    return rules


def runner(arm: str) -> tuple[Callable[[list[Any]], list[tuple[Any, ...]]], _Ctx]:
    """A fresh decide function of ``arm`` and the call that feeds it records (returning what it emitted)."""
    fn = RiskFunction(lateness_ms=LATENESS_MS, state_ttl_ms=STATE_TTL_MS, rules_wait_ms=0)
    fn.engine = Engine(rules_of(arm), lateness=LATENESS_MS, state_ttl=STATE_TTL_MS, cleanup_timers=False)
    backing = JavaValueState()
    fn.state = (
        FlinkKeyedState(backing, CACHE_KEYS, pickle_writes=True)  # as the job writes the Java ValueState
        if arm == "job"
        else objects_keyed_state(backing, CACHE_KEYS)
    )
    fn.started = fn.have_rules = True
    fn.next_report_ms = 1 << 62  # no Flink counters here
    ctx = _Ctx()

    def feed(batch: list[Any]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        # As the job's fast path calls it (riskctl.flink.fast_path): the key given, the outputs as tuples, no
        # pyflink Row built per output (PyFlink's own path, process_element, builds them).
        decide = fn.decide_record
        for record, key in batch:
            ctx.key = backing.key = key
            out += decide(key, record, ctx)
        return out

    return feed, ctx


def measure(arm: str, recs: list[Any]) -> tuple[float, list[tuple[Any, ...]]]:
    """CPU µs per event of ``arm`` over the second half of ``recs`` (the first half warms), and its output."""
    feed, _ = runner(arm)
    half = len(recs) // 2
    gc.collect()
    gc.freeze()
    gc.disable()  # as RiskFunction.open leaves the TaskManager's interpreter
    try:
        feed(recs[:half])
        start = time.process_time()
        out = feed(recs[half:])
        elapsed = time.process_time() - start
    finally:
        gc.enable()
        gc.unfreeze()
    return elapsed / (len(recs) - half) * 1e6, out


def budget(recs: list[Any], rounds: int, arms: tuple[str, ...] = ARMS) -> dict[str, list[float]]:
    """µs per event of every arm in every round (arms alternate within a round); checks job == no-pickling."""
    figures: dict[str, list[float]] = {arm: [] for arm in arms}
    for _ in range(rounds):
        outputs = {}
        for arm in arms:
            us, out = measure(arm, recs)
            figures[arm].append(us)
            outputs[arm] = out
        if "job" in outputs and "no-pickling" in outputs:
            if outputs["job"] != outputs["no-pickling"]:
                msg = "the job arm and the no-pickling arm emitted different records"
                raise SystemExit(msg)
    return figures


def _core() -> str:
    """Which ``riskctl.core`` runs here: compiled only when ``RISKCTL_NATIVE_CORE`` names a fresh build."""
    return native.describe() if native.ENV in os.environ else "pure Python (RISKCTL_NATIVE_CORE not set)"


def report(figures: dict[str, list[float]], events: int, command: str) -> tuple[str, dict[str, Any]]:
    med = {arm: statistics.median(v) for arm, v in figures.items()}
    rounds = len(next(iter(figures.values())))
    parts = {}
    if {"job", "no-pickling", "no-patterns", "no-rules"} <= med.keys():
        parts = {
            "encoding the state (each commit) and decoding it (each event)": med["job"] - med["no-pickling"],
            "sequence patterns (matching)": med["no-pickling"] - med["no-patterns"],
            "features and condition rules": med["no-patterns"] - med["no-rules"],
            "door, parsing, decision JSON, output rows, state cache": med["no-rules"],
        }
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [
        f"## {stamp}: `{command}`",
        "",
        f"{events:,} events of the bench's workload (the first half warms, the second is timed), CPU µs per "
        f"event, {rounds} rounds, arms alternating; Python {platform.python_version()}, core {_core()}, "
        f"state cache of {CACHE_KEYS:,} users.",
        "",
        "| arm | µs/event (median) | range |",
        "|---|---:|---|",
    ]
    for arm, values in figures.items():
        lines.append(f"| {arm} | {med[arm]:.1f} | {min(values):.1f}-{max(values):.1f} |")
    if parts:
        lines += ["", "| part (from the medians) | µs/event |", "|---|---:|"]
        lines += [f"| {name} | {value:.1f} |" for name, value in parts.items()]
    doc = {
        "when": stamp,
        "command": command,
        "events": events,
        "us_per_event": figures,
        "median": {k: round(v, 2) for k, v in med.items()},
        "parts": {k: round(v, 2) for k, v in parts.items()},
    }
    return "\n".join(lines) + "\n", doc


#: run in a tree by ``--instructions``: reads the first ``total`` events of the workload (made first if the
#: tree has none), feeds the first ``n`` of them to the job arm, and with ``digest`` prints what it emitted
#: (its count and digest: not in a counted run, where hashing the records would be counted per event too).
#: ``measure`` and ``records`` are in every tree this tool runs in.
_CHILD = """
import hashlib, json, sys
tree, n, total, digest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "digest"
sys.path.insert(0, tree)
sys.path.insert(0, tree + "/bench")
import decide_budget as db
recs = db.records(db.workload(db.USERS, total))[:n]
out = db.measure("job", recs)[1]
if digest:
    print(json.dumps({"records": len(out), "digest": hashlib.sha256(repr(out).encode()).hexdigest()}))
"""


def count_instructions(spec: str, events: int) -> tuple[float, dict[str, Any]]:
    """Instructions per event of the job arm in ``spec`` (2N events less N, per event), and what the run
    over 2N emitted (count and digest)."""
    tree, args, env = tree_child(spec)
    total = str(2 * events)
    # First outside callgrind: the workload made if the tree's bench/.work has none (both counted runs then
    # only read it), and what the run over 2N emits.
    first = subprocess.run(
        [*args, "-c", _CHILD, tree, total, total, "digest"], cwd=tree, env=env, capture_output=True, text=True
    )
    if first.returncode:
        sys.exit(f"{spec}: the run over {total} events failed ({first.returncode}):\n{first.stderr[-3000:]}")
    emitted: dict[str, Any] = json.loads(first.stdout.strip().splitlines()[-1])
    children = [
        callgrind.start([*args, "-c", _CHILD, tree, str(n), total, "-"], env, tree)
        for n in (events, 2 * events)
    ]
    counts = []
    for child in children:  # the two ran side by side
        _, err = child.communicate()
        count = callgrind.collected(err)
        if child.returncode or count is None:
            sys.exit(f"{spec}: the counted run failed ({child.returncode}):\n{err[-3000:]}")
        counts.append(count)
    return (counts[1] - counts[0]) / events, emitted


def instructions_report(specs: list[str], events: int) -> str:
    """The table of every tree's count against the first's, and whether they emitted the same records."""
    callgrind.require("bench/decide_budget.py")
    per_event: dict[str, float] = {}
    emitted: dict[str, dict[str, Any]] = {}
    for spec in specs:
        per_event[spec], emitted[spec] = count_instructions(spec, events)
        print(f"{spec}: {per_event[spec]:,.0f} instructions/event", file=sys.stderr)
    first = per_event[specs[0]]
    lines = [
        f"| tree | instructions per event (the job arm, {events:,} events more) | against the first |",
        "|---|---:|---:|",
    ]
    lines += [f"| {spec} | {per_event[spec]:,.0f} | {per_event[spec] / first - 1:+.1%} |" for spec in specs]
    reference = emitted[specs[0]]
    differ = [spec for spec in specs if emitted[spec] != reference]
    lines.append(
        f"records: {reference['records']:,} emitted over the timed half of {2 * events:,} events, "
        + ("the same in every tree" if not differ else f"DIFFERENT in {', '.join(differ)}")
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=None, help="150,000 (10,000 with --instructions)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, among {', '.join(ARMS)}")
    parser.add_argument("--no-write", action="store_true", help="print only, write nothing to bench/results")
    parser.add_argument(
        "--instructions",
        nargs="*",
        metavar="TREE[+native=BUILD]",
        help="count the job arm's instructions per event under callgrind instead (this tree by default; "
        "--events 10,000 by default), nothing written",
    )
    args = parser.parse_args(argv)
    if args.instructions is not None:
        events = 10_000 if args.events is None else args.events
        build = os.environ.get(native.ENV)
        this_tree = f"{ROOT}+native={build}" if build else str(ROOT)
        print(instructions_report(args.instructions or [this_tree], events), end="")
        return 0
    if args.events is None:
        args.events = 150_000
    recs = records(workload(USERS, args.events))
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        parser.error(f"--arms: unknown {unknown}; choose among {', '.join(ARMS)}")
    figures = budget(recs, args.rounds, arms)
    command = "bench/decide_budget.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text, doc = report(figures, args.events, command.strip())
    print(text)
    if not args.no_write:
        md = RESULTS / "decide_budget.md"
        header = "# The decide operator's Python side, in parts (bench/decide_budget.py)\n\n"
        old = md.read_text(encoding="utf-8").removeprefix(header) if md.exists() else ""
        md.write_text(header + text + ("\n" + old if old else ""), encoding="utf-8")
        js = RESULTS / "decide_budget.json"
        runs = json.loads(js.read_text(encoding="utf-8"))["runs"] if js.exists() else []
        js.write_text(json.dumps({"runs": [doc, *runs]}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
