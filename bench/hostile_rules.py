"""How long ``riskctl rules validate`` takes on each hostile rule file (issue 11, item 5).

Runs the real command (``python -m riskctl.cli.main rules validate FILE``, a fresh process each time: the
figure includes the interpreter's start-up and imports) on every file of ``tests/unit/core/hostile_rules/``
and on files generated at the limits (largest text, most values), plus the rules in ``rules/`` as a baseline.
Reports the median and the maximum wall time of ``--repeat`` runs, the exit status, and whether a traceback
appeared; writes ``results/hostile_rules.md``.

    .venv/bin/python bench/hostile_rules.py [--repeat 5] [--timeout 60]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "unit" / "core" / "hostile_rules"
RESULTS = ROOT / "bench" / "results" / "hostile_rules.md"


def generated(folder: Path) -> list[Path]:
    """Files at the loader's limits, too large to keep in the repository."""
    sys.path.insert(0, str(ROOT))
    from riskctl.core.rules import MAX_RULE_TEXT, MAX_YAML_NODES

    head = "id: big\naction: REVIEW\nwhen: 'true'\n"
    files = {
        "gen_max_text.yaml": head + "description: " + "x" * (MAX_RULE_TEXT - len(head) - 20) + "\n",
        "gen_over_text.yaml": head + "description: " + "x" * MAX_RULE_TEXT + "\n",
        "gen_max_values.yaml": head + "tags: [" + ",".join(["a"] * (MAX_YAML_NODES - 10)) + "]\n",
        "gen_over_values.yaml": head + "tags: [" + ",".join(["a"] * MAX_YAML_NODES) + "]\n",
        "gen_deep_json_1M.json": '{"id": "d", "tags": ' + "[" * 500_000 + "]" * 500_000 + "}",
    }
    out = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text)
        out.append(path)
    return out


def run(path: Path, timeout: float) -> tuple[float, int, bool]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "riskctl.cli.main", "rules", "validate", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return timeout, -1, False
    return time.perf_counter() - start, proc.returncode, "Traceback" in proc.stdout + proc.stderr


def in_process(path: Path, repeat: int) -> float:
    """Median seconds of ``load_rules(path)`` in this process (the loader alone, no start-up)."""
    from riskctl.core.errors import RuleSetError
    from riskctl.core.rules import load_rules

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            load_rules(path)
        except RuleSetError:
            pass
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------ sequences: time per event

#: The heaviest sequence shapes the validator accepts, each with the events that make one user's event cost
#: the most: (name, rule, prefix events (built once, not timed), timed events). ``{P}`` is max_partial.
SEQUENCE_CASES: list[tuple[str, str, list[tuple[str, int]], list[tuple[str, int]]]] = [
    (
        # the docs' shape: P runs wait after a step of 1,000 events; every event makes each test sum() of it
        "sum_over_a_full_step",
        "    - name: a\n      when: event.type == 'x' and (count(a) > 0 or event.first == true)\n"
        "      times: 1000\n    - name: b\n      when: sum(a.amount) > 1e12 and event.type == 'y'\n",
        [("first", 900), ("x", 1000)],
        [("y", 5)],
    ),
    (
        # P runs each looping over up to 1,000 events, each testing sum() of its own step on every event
        "sum_over_own_loop",
        "    - name: s\n      when: event.type == 's'\n    - name: b\n"
        "      when: event.type == 'x' and sum(b.amount) > -1\n      times: 1000\n"
        "    - name: c\n      when: event.type == 'z'\n",
        [("s", 900), ("x", 990)],
        [("x", 5)],
    ),
    (
        # many condition elements, no aggregate: P runs test a 390-element condition on every event
        "elements_only",
        "    - name: a\n      when: event.type == 'x'\n    - name: b\n      when: "
        + " and ".join(["event.amount > 1"] * 98)
        + " and event.amount > 1e15\n",
        [("x", 2500)],
        [("x", 5)],
    ),
    (
        # the same with arithmetic (no closure is fused with its neighbours): 6 sums of 20 fields, all false
        "arith_elements",
        "    - name: a\n      when: event.type == 'x'\n    - name: b\n      when: "
        + " or ".join(["(" + " + ".join(["event.amount"] * 20) + ") > 1e15"] * 6)
        + "\n",
        [("x", 2500)],
        [("x", 5)],
    ),
    (
        # the most runs the limit allows, each looping over a step of up to 1,000 events: every event is taken
        # by every run (a copy of the events it holds), and no aggregate at all
        "many_runs_looping",
        "    - name: s\n      when: event.type == 's'\n    - name: b\n      when: event.type == 'x'\n"
        "      times: 1000\n    - name: c\n      when: event.type == 'z'\n",
        [("s", 10_000), ("x", 990)],
        [("x", 5)],
    ),
    (
        # an at_least loop held past the 1,000 events the estimate charges: every partial match takes every
        # event of 6,000 (before the cap, each take copied all the events the partial match held); the strict
        # last step ends each partial match's other continuation, so they do not multiply
        "at_least_long_loop",
        "    - name: s\n      when: event.type == 's'\n    - name: b\n      when: event.type == 'x'\n"
        "      at_least: 1\n    - name: c\n      when: event.type == 'z'\n      contiguity: strict\n",
        [("s", 10_000), ("x", 6000)],
        [("x", 5)],
    ),
    (
        # the same where the cap costs most: partial matches holding 995-999 events, the 1,001st stops them
        "at_least_at_cap",
        "    - name: s\n      when: event.type == 's'\n    - name: b\n      when: event.type == 'x'\n"
        "      at_least: 1\n    - name: c\n      when: event.type == 'z'\n      contiguity: strict\n",
        [("s", 10_000), ("x", 995)],
        [("x", 6)],
    ),
    (
        # a distinct() kept over a step copies its set of values on each take (O(values), not O(1)): forty of
        # them over a step of up to 1,000 events, each event bringing new values (fields f0-f39)
        "distinct_sets",
        "    - name: s\n      when: event.type == 's'\n    - name: b\n      when: \"event.type == 'x' and "
        + " and ".join(f"distinct(b.f{j}) >= 0" for j in range(40))
        + "\"\n      times: 1000\n    - name: c\n      when: event.type == 'z'\n",
        [("s", 900), ("xd", 990)],
        [("xd", 5)],
    ),
    (
        # no_skip: every 'y' completes every partial match (of 400+ events), so the reported matches a late
        # event's replay must not report again reach their cap (4 x max_buffer records of ~440 numbers)
        "no_skip_reported",
        "    - name: a\n      when: event.type == 'x' and (count(a) > 0 or event.first == true)\n"
        "      times: 400\n    - name: b\n      when: event.type == 'y'\n      at_least: 1\n"
        "  after_match: no_skip\n",
        [("first", 400), ("x", 400), ("y", 40)],
        [("y", 5)],
    ),
]


def sequence_rule(name: str, steps: str) -> tuple[str, int]:
    """The rule text of a case at the largest max_partial the validator accepts (found by bisection)."""
    from riskctl.core.errors import RuleSetError
    from riskctl.core.rules import load_rules_text

    def text(p: int) -> str:
        return f"id: {name}\naction: REVIEW\nsequence:\n  within: 7d\n  max_partial: {p}\n  steps:\n{steps}"

    def ok(p: int) -> bool:
        try:
            load_rules_text(text(p))
        except RuleSetError:
            return False
        return True

    lo, hi = 1, 10_000
    if not ok(lo):
        raise SystemExit(f"{name}: refused even with max_partial 1")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return text(lo), lo


def sequence_events(spec: list[tuple[str, int]], start: int, ts0: int) -> list[dict[str, Any]]:
    from riskctl.core.events import normalize_event

    out = []
    for etype, n in spec:
        for _ in range(n):
            i = start + len(out)
            e: dict[str, Any] = {"event_id": f"e{i}", "user_id": "attacker", "type": etype, "ts": ts0 + i}
            e["amount"] = 1.5 + i % 7
            if etype in ("first", "firstd"):
                e["type"], e["first"] = "x", True
            if etype in ("xd", "firstd"):
                e["type"] = "x"
                e.update((f"f{j}", i) for j in range(40))
            out.append(normalize_event(e))
    return out


def sequence_worst_case(
    repeat: int, only: list[str] | None, late: bool = False
) -> list[tuple[str, int, list[float]]]:
    """CPU seconds (time.process_time) of each timed event of each case (``repeat`` copies of its state)."""
    import gc
    import pickle

    sys.path.insert(0, str(ROOT))
    from riskctl.core.engine import Engine
    from riskctl.core.rules import load_rules_text
    from riskctl.core.state import InMemoryKeyedState

    rows = []
    for name, steps, prefix, timed in SEQUENCE_CASES:
        if only and name not in only:
            continue
        text, p = sequence_rule(name, steps)
        # late: lateness 60 s, and the timed event is 1 ms older than the newest (it replays the buffer)
        engine = Engine(load_rules_text(text), lateness=60_000 if late else 0)
        state = InMemoryKeyedState()
        build = time.process_time()
        # the runs started are at most max_partial: more starts would only be dropped
        prefix = [(prefix[0][0], min(prefix[0][1], p)), *prefix[1:]]
        before = sequence_events(prefix, 0, 1_700_000_000_000)
        for e in before:
            engine.process(state, e)
        build = time.process_time() - build
        snapshot = pickle.dumps(state.data, protocol=5)
        after = sequence_events(timed, len(before), 1_700_000_000_000)
        if late:
            after = [dict(after[0], ts=before[-1]["ts"] - 1)]
        times: list[float] = []
        for _ in range(repeat):
            copy = InMemoryKeyedState(pickle.loads(snapshot))
            gc.disable()  # as in the job's TaskManagers (riskctl.flink.risk_function): no collector pauses
            for e in after:
                start = time.process_time()
                engine.process(copy, e)
                times.append(time.process_time() - start)
            gc.enable()
            del copy
        print(
            f"{name:<22} max_partial {p:>6}  per event: min {min(times) * 1000:8.2f} ms  "
            f"median {statistics.median(times) * 1000:8.2f} ms  "
            f"max {max(times) * 1000:8.2f} ms  (state {len(snapshot):,} B pickled; prefix {build:.1f} s)",
            flush=True,
        )
        rows.append((name, p, times))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--sequences",
        nargs="*",
        metavar="CASE",
        help="instead: CPU time of one event of the heaviest accepted sequence rules (all cases, or these)",
    )
    parser.add_argument("--late", action="store_true", help="with --sequences: time one late event instead")
    args = parser.parse_args()
    if args.sequences is not None:
        sequence_worst_case(args.repeat, args.sequences, args.late)
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = [ROOT / "rules", *sorted(CORPUS.iterdir()), *generated(Path(tmp))]
        rows = []
        for path in paths:
            times, code, trace = [], 0, False
            for _ in range(args.repeat):
                seconds, code, tb = run(path, args.timeout)
                times.append(seconds)
                trace = trace or tb
            name = "rules/ (8 valid rules, baseline)" if path.name == "rules" else path.name
            size = sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size
            inner = in_process(path, args.repeat)
            rows.append((name, size, statistics.median(times), max(times), inner, code, trace))
            print(
                f"{name:<40} {size:>9} B  median {statistics.median(times):.3f} s  max {max(times):.3f} s  "
                f"load_rules {inner * 1000:.1f} ms  exit {code}  traceback {'YES' if trace else 'no'}",
                flush=True,
            )
    lines = [
        "# `riskctl rules validate` on hostile rule files",
        "",
        f"`.venv/bin/python bench/hostile_rules.py --repeat {args.repeat}`: wall time of the whole command",
        "(a fresh Python process each run: start-up and imports are most of it), and the median of",
        "`load_rules(file)` in one process (the loader alone); exit 1 = refused. On a shared 2-core machine.",
        "",
        "| file | bytes | command median s | command max s | load_rules ms | exit | traceback |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {n} | {b} | {m:.3f} | {x:.3f} | {i * 1000:.1f} | {c} | {'YES' if t else 'no'} |"
        for n, b, m, x, i, c, t in rows
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
