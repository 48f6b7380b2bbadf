"""Step aggregates kept incrementally per partial match, and the work bound of a sequence rule per event.

The matcher keeps ``sum``/``avg``/``min``/``max``/``distinct`` over a step folded per partial match (one step
per event taken, riskctl.core.patterns) instead of each condition reading the whole step on every event.
These tests hold it to the implementation it replaced (kept below: builtin ``sum``/``min``/``max`` and a set
over the step's values), to the last bit of a float, over random values and random event orders within the
lateness (late events replay the buffer); and pin the new bound on the work of one event.
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskctl.core.errors import RuleSetError
from riskctl.core.expr import compile_step_condition
from riskctl.core.expr.functions import FOLDS, bounded
from riskctl.core.pattern_spec import AGGREGATES_KEY
from riskctl.core.patterns import PatternMatcher, PatternSpec, Step
from riskctl.core.rule_document import MAX_SEQUENCE_COST, _sequence_cost
from riskctl.core.rules import load_rules_text

NUMBERS = frozenset({int, float})

# ------------------------------------------------------------------------ the implementation replaced


def old_values(events: Sequence[Mapping[str, Any]], field: str) -> list[Any]:
    return [ev.get(field) for ev in events]


def old_sum(xs: list[Any]) -> Any:
    try:
        return bounded(sum(xs))
    except OverflowError:
        return None


def old_avg(xs: list[Any]) -> Any:
    if not xs:
        return None
    try:
        return bounded(sum(xs) / len(xs))
    except OverflowError:
        return None


def old_distinct(values: list[Any]) -> int:
    seen = set()
    for v in values:
        if v is not None:
            try:
                seen.add(("bool", v) if type(v) is bool else v)  # true is not 1, false not 0
            except TypeError:
                continue
    return len(seen)


OLD: dict[str, Callable[[list[Any]], Any]] = {
    "sum": lambda vs: old_sum([v for v in vs if type(v) in NUMBERS]),
    "avg": lambda vs: old_avg([v for v in vs if type(v) in NUMBERS]),
    "min": lambda vs: (lambda xs: min(xs) if xs else None)([v for v in vs if type(v) in NUMBERS]),
    "max": lambda vs: (lambda xs: max(xs) if xs else None)([v for v in vs if type(v) in NUMBERS]),
    "distinct": old_distinct,
}


def same(a: Any, b: Any) -> bool:
    """Equal to the last bit, and of the same type (1 is not 1.0 here); NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b and math.copysign(1, a) == math.copysign(1, b) or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


# ------------------------------------------------------------------------ the folds, value by value

_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(10**320), max_value=10**320),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    st.floats(),
    st.sampled_from([0.1, 0.2, 0.3, 1e16, -1e16, 1.0, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -0.0, 1e308]),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_values, max_size=40))
def test_each_fold_equals_the_old_aggregate_on_every_prefix(values: list[Any]) -> None:
    for name, (_, initial, step, read) in FOLDS.items():
        acc = initial
        for i, v in enumerate(values):
            acc = step(acc, v)
            assert same(read(acc), OLD[name](values[: i + 1])), (name, values[: i + 1])
        assert same(read(initial), OLD[name]([])), name


def test_float_sums_are_builtin_sum_to_the_last_bit() -> None:
    # a running float sum is order dependent: the fold must take the values in the step's order, as sum()
    rng = random.Random(7)
    for _ in range(300):
        xs: list[Any] = [
            rng.choice([rng.uniform(-1e6, 1e6), rng.random() * 1e-9, rng.randrange(-(2**60), 2**60)])
            for _ in range(rng.randrange(1, 60))
        ]
        acc = FOLDS["sum"][1]
        for x in xs:
            acc = FOLDS["sum"][2](acc, x)
        assert same(FOLDS["sum"][3](acc), old_sum(xs))
    assert FOLDS["sum"][3]((0.1 + 0.2 + 0.3, 3)) != 0.6  # last bits do differ by order: 0.6000000000000001


# ------------------------------------------------------------------------ the matcher, late events included

STEPS = ("a", "b", "c")
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
    "==": lambda x, y: x == y,
}
Clause = tuple[str, str, str, str, Any]  # (aggregate, step, field, op, constant)


def text_of(etype: str, own: str, clauses: Sequence[Clause]) -> str:
    tests = " and ".join(f"{agg}({step}.{fld}) {op} {const!r}" for agg, step, fld, op, const in clauses)
    return f"event.type == '{etype}' and (count({own}) == 0 or ({tests}))"


def old_condition(etype: str, own: str, clauses: Sequence[Clause]) -> Any:
    """``text_of(...)`` evaluated with the replaced implementation: each aggregate reads its whole step."""

    def cond(e: Mapping[str, Any], steps: Mapping[str, Sequence[Any]]) -> bool:
        if e.get("type") != etype:
            return False
        if not steps.get(own):
            return True
        for agg, step, fld, op, const in clauses:
            x = OLD[agg](old_values(steps.get(step) or (), fld))
            if x is None or not OPS[op](x, const):
                return False
        return True

    return cond


PLAN: tuple[tuple[str, str, tuple[Clause, ...]], ...] = (
    ("a", "a", (("sum", "a", "v", "<=", 0.6), ("avg", "a", "v", ">", 0.1), ("distinct", "a", "k", "<=", 3))),
    ("b", "b", (("min", "a", "v", "<", 0.25), ("max", "b", "v", "<=", 0.3), ("sum", "b", "v", "!=", 0.3))),
    ("c", "c", (("sum", "a", "v", ">=", 0.3), ("avg", "b", "v", "<=", 0.2), ("distinct", "b", "k", "==", 2))),
)
OPS["!="] = lambda x, y: x != y


def spec_of(conditions: Sequence[Any], after_match: str) -> PatternSpec:
    steps = (
        Step("a", conditions[0], PLAN[0][0], times=2, quantifier="at_least"),
        Step("b", conditions[1], PLAN[1][0], times=1, quantifier="at_least"),
        Step("c", conditions[2], PLAN[2][0]),
    )
    return PatternSpec("p", steps, within=40, after_match=after_match, max_partial=64)  # type: ignore[arg-type]


def run(matcher: PatternMatcher, events: Sequence[dict[str, Any]]) -> tuple[list[Any], Any]:
    stored: Any = None
    out = []
    for e in events:
        result = matcher.process(stored, e, e["ts"])
        stored = result.new_stored
        out.append([(m.event_ids, m.start_ts, m.end_ts, m.completed_by) for m in result.matches])
    return out, stored


V = [0.1, 0.2, 0.3, 0.1, 0.2, 0.05, 0, 1, 2**53 + 1, -0.0, None, "x", 0.15, 0.25]
K = ["u", "v", "w", 1, 1.0, None, "u"]


def random_events(rng: random.Random, n: int, disorder: int) -> list[dict[str, Any]]:
    events = []
    for i in range(n):
        e = {
            "event_id": f"e{i}",
            "type": rng.choice("aaabbc"),
            "ts": i * 2,
            "v": rng.choice(V),
            "k": rng.choice(K),
        }
        events.append(e)
    for i in range(len(events)):  # out of order, within the lateness
        j = min(len(events) - 1, i + rng.randrange(disorder + 1))
        events[i], events[j] = events[j], events[i]
    return events


@pytest.mark.parametrize("after_match", ["skip_past_last_event", "no_skip"])
@pytest.mark.parametrize("seed", range(40))
def test_kept_aggregates_decide_as_the_old_ones_with_late_events(seed: int, after_match: str) -> None:
    rng = random.Random(seed)
    events = random_events(rng, rng.randrange(10, 70), disorder=rng.choice([0, 2, 6]))
    new = PatternMatcher(
        spec_of(
            [compile_step_condition(text_of(*p), steps=STEPS).as_step_condition() for p in PLAN], after_match
        ),
        lateness=30,
    )
    old = PatternMatcher(spec_of([old_condition(*p) for p in PLAN], after_match), lateness=30)
    got, stored = run(new, events)
    want, _ = run(old, events)
    assert got == want
    if stored is not None:  # the kept folds are there, and cover their steps
        kept = [run_[8].get(AGGREGATES_KEY) for run_ in stored[0]]
        for run_, agg in zip(stored[0], kept, strict=True):
            for (_, step, _), (n, _) in (agg or {}).items():
                assert n == len(run_[8][step])


def strip(stored: Any) -> Any:
    """The state as the previous version wrote it: no kept aggregates."""
    stored = pickle.loads(pickle.dumps(stored))
    if stored is not None:
        for i, r in enumerate(stored[0]):
            ctx = {k: v for k, v in r[8].items() if k != AGGREGATES_KEY}
            stored[0][i] = (*r[:8], ctx, r[9])
    return stored


def stale(stored: Any) -> Any:
    """The state as a rollback to the previous version writes it back: kept aggregates not updated since."""
    stored = pickle.loads(pickle.dumps(stored))
    if stored is not None:
        for i, r in enumerate(stored[0]):
            ctx = dict(r[8])
            kept = ctx.get(AGGREGATES_KEY)
            if kept:
                ctx[AGGREGATES_KEY] = {k: (n - 1, acc) for k, (n, acc) in kept.items()}
            stored[0][i] = (*r[:8], ctx, r[9])
    return stored


@pytest.mark.parametrize("convert", [strip, stale])
@pytest.mark.parametrize("seed", range(20))
def test_states_without_or_with_stale_kept_aggregates_decide_the_same(
    seed: int, convert: Callable[[Any], Any]
) -> None:
    rng = random.Random(1000 + seed)
    events = random_events(rng, 60, disorder=3)
    conds = [compile_step_condition(text_of(*p), steps=STEPS).as_step_condition() for p in PLAN]
    matcher = PatternMatcher(spec_of(conds, "no_skip"), lateness=30)
    want, _ = run(matcher, events)
    cut = rng.randrange(5, 55)
    first, stored = run(matcher, events[:cut])
    rest = []
    for e in events[cut:]:
        result = matcher.process(convert(stored), e, e["ts"])
        stored = result.new_stored
        rest.append([(m.event_ids, m.start_ts, m.end_ts, m.completed_by) for m in result.matches])
    assert first + rest == want


# ------------------------------------------------------------------------ the work of one event


class Counting(dict):  # type: ignore[type-arg]
    """An event that counts the fields read of it."""

    reads = 0

    def get(self, key: Any, default: Any = None) -> Any:
        Counting.reads += 1
        return super().get(key, default)


def test_an_aggregate_over_a_full_step_no_longer_reads_the_step_per_event() -> None:
    # the docs' heaviest shape: partial matches wait after a step of 1,000 events, every event tests sum()
    a = compile_step_condition(
        "event.type == 'x' and (count(a) > 0 or event.first == true)", steps=["a", "b"]
    )
    b = compile_step_condition("sum(a.amount) > 1e12 and event.type == 'y'", steps=["a", "b"])
    spec = PatternSpec(
        "p",
        (Step("a", a.as_step_condition(), "a", times=1000), Step("b", b.as_step_condition(), "b")),
        within=10**9,
        max_partial=50,
    )
    matcher = PatternMatcher(spec)
    stored = None
    for i in range(1050):
        e = Counting(type="x", amount=1.5, ts=i, event_id=i, first=i < 50)
        stored = matcher.process(stored, e, i).new_stored
    assert len(stored[0]) == 50 and all(r[3] == 1000 for r in stored[0])
    Counting.reads = 0
    matcher.process(stored, Counting(type="y", amount=1.0, ts=2000, event_id="y"), 2000)
    # 50 partial matches x a few fields of the event; the old implementation read 50 x 1,000 amounts
    assert Counting.reads <= 10 * 50


def rule(max_partial: int, steps: str) -> str:
    return f"id: r\naction: REVIEW\nsequence:\n  within: 7d\n  max_partial: {max_partial}\n  steps:\n{steps}"


FULL_STEP = (
    "    - name: a\n      when: event.type == 'x' and (count(a) > 0 or event.first == true)\n"
    "      times: 1000\n    - name: b\n      when: sum(a.amount) > 1e12 and event.type == 'y'\n"
)
ELEMENTS = (
    "    - name: a\n      when: event.type == 'x'\n    - name: b\n      when: "
    + " and ".join(["event.amount > 1"] * 98)
    + " and event.amount > 1e15\n"
)


def test_the_bound_per_event_is_pinned() -> None:
    (r,) = load_rules_text(rule(1, FULL_STEP))
    assert r.sequence is not None
    raw = [{"when": s.source} for s in r.sequence.steps]
    # elements of the conditions (an aggregate is one) + the events a partial match holds (times per step)
    assert _sequence_cost(raw, list(r.sequence.steps), 1) == 14 + 1000 + 10 + 1
    # about 12 ms of CPU for the heaviest rule it accepts (bench/hostile_rules.py --sequences; docs/rules.md)
    assert MAX_SEQUENCE_COST == 250_000
    load_rules_text(rule(MAX_SEQUENCE_COST // 1025, FULL_STEP))  # 243 partial matches
    with pytest.raises(RuleSetError, match="evaluations per event"):
        load_rules_text(rule(MAX_SEQUENCE_COST // 1025 + 1, FULL_STEP))
    (r,) = load_rules_text(rule(1, ELEMENTS))
    assert r.sequence is not None
    assert _sequence_cost([{"when": s.source} for s in r.sequence.steps], list(r.sequence.steps), 1) <= 406
