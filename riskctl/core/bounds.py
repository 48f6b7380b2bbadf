"""The worst-case bytes of one user's state for a rule set, derived from the engine's limits.

:func:`state_bound` builds, for the plan an :class:`~riskctl.core.engine.Engine` compiles, the largest state
each part can hold (every list at its bound, every stored string at its worst) and encodes it as the
in-memory store and the Flink job do (:func:`riskctl.core.state.encode_state`). The parts:

* windowed feature: ``raw_cap`` raw (ts, value) pairs and ``(window + lateness) / granularity + 2`` buckets
  (a ``distinct_count`` bucket holds up to ``max_values`` values);
* ``last_n``: ``n`` (ts, value); ``first_seen``: ``max_values`` values with two timestamps each;
  ``time_since``: 4 timestamps;
* pattern: ``max_buffer + 1`` buffered events, ``max_partial`` partial matches each holding the events of
  its steps (``times`` per step; ``MAX_TIMES``, 1,000, for an ``at_least`` step, where the matcher stops
  a loop) and the step aggregates its conditions read, kept folded (two numbers per ``sum``/``avg``, one
  per ``min``/``max``, and per ``distinct`` a set of as many distinct values as the step holds events),
  ``4 * max_buffer`` reported-match records, ``max_buffer + 1`` emitted-match records;
* the engine's own list: ``RECENT_CAP`` recent events with the ids of the rules they fired, one wake-up per
  pattern, the user id.

Stored events are projected (:mod:`riskctl.core.stored`): each holds the rule set's stored fields, every
value at its worst (a string of ``MAX_STORED_STRING`` 4-byte characters, or a small container of the same
size). Numbers are taken as 64-bit: the bound assumes integers below 2**63 in magnitude (the door's number
limits; a kept sum is taken as 1,000 times that); a bigger integer in a summed field takes more. No bound
exists (``ValueError``) when a step reads whole events (projection keeps every field).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from riskctl.core.dedup import ENTRY, SEEN_CAP
from riskctl.core.engine import META, RECENT_CAP, SEEN, Engine
from riskctl.core.events import MAX_ID_LENGTH
from riskctl.core.expr import FEATURES_FIELD
from riskctl.core.features import (
    TIME_SINCE_KEEP,
    FirstSeenFeature,
    LastNFeature,
    TimeSinceFeature,
    WindowedFeature,
)
from riskctl.core.pattern_spec import AGGREGATES_KEY, MAX_TIMES
from riskctl.core.patterns import PatternMatcher
from riskctl.core.rules import RuleSet
from riskctl.core.state import encode_state
from riskctl.core.stored import MAX_STORED_ITEMS, MAX_STORED_STRING

_BIG_INT = (1 << 63) - 1  # the largest number a part stores (15 bytes encoded; a float takes 9)


@dataclass(frozen=True)
class StateBound:
    """``total`` bytes (the whole state of one user, encoded), and each state name's share."""

    total: int
    parts: dict[str, int]


class _Worst:
    """Fresh worst-case values: distinct objects, so the encoding shares nothing real state would not (marshal
    writes an object met twice as a reference to it)."""

    def __init__(self) -> None:
        self._n = 0

    def string(self, chars: int = MAX_STORED_STRING) -> str:
        self._n += 1
        return chr(0x10000 + self._n % 0xFFFF) + "\U0010ffff" * (chars - 1)

    def value(self) -> Any:
        # A projected value: a capped string, or a small container of at most MAX_STORED_ITEMS scalars
        # holding at most MAX_STORED_STRING characters in all: the string plus room for the container.
        return [self.string(), *(_BIG_INT for _ in range(MAX_STORED_ITEMS - 1))]

    def key(self, name: str) -> str:
        return "".join(list(name))  # a new object, as json decoding gives each event its own keys


def _event(worst: _Worst, fields: frozenset[str], stamp: tuple[str, ...]) -> dict[str, Any]:
    ev: dict[str, Any] = {worst.key(f): worst.value() for f in sorted(fields)}
    if stamp:
        ev[FEATURES_FIELD] = dict.fromkeys(stamp, _BIG_INT)
    return ev


def _feature(worst: _Worst, feature: Any) -> Any:
    if isinstance(feature, WindowedFeature):
        raw, nb = feature.raw_cap, feature.retention // feature.granularity + 2
        kind = feature.spec.kind
        if kind == "distinct_count":
            rv: Any = [worst.string() for _ in range(raw)]
            ba: list[Any] = [[worst.string() for _ in range(feature.max_values)] for _ in range(nb)]
        else:
            rv = None if kind == "count" else [_BIG_INT] * raw
            ba = [_BIG_INT] * nb
        bb = [_BIG_INT] * nb if kind == "avg" else None
        return [_BIG_INT, _BIG_INT, [_BIG_INT] * raw, rv, [_BIG_INT] * nb, ba, bb]
    if isinstance(feature, LastNFeature):
        return [[_BIG_INT] * feature.n, None if feature.stat == "avg_interval" else [_BIG_INT] * feature.n]
    if isinstance(feature, FirstSeenFeature):
        return [_BIG_INT, {worst.string(): (_BIG_INT, _BIG_INT) for _ in range(feature.max_values)}]
    if isinstance(feature, TimeSinceFeature):
        return [_BIG_INT] * TIME_SINCE_KEEP
    msg = f"no bound known for feature {type(feature).__name__}"
    raise ValueError(msg)


def _pattern(
    worst: _Worst, matcher: PatternMatcher, fields: frozenset[str], stamp: tuple[str, ...]
) -> list[Any]:
    spec = matcher.spec
    positive = [s for s in spec.steps if not s.negated]
    # An at_least step holds at most MAX_TIMES events per partial match (the matcher stops its loop there).
    held = {s.name: MAX_TIMES if s.quantifier == "at_least" else s.times for s in positive}
    per_run = sum(held.values())
    folds = [f for step_folds in matcher._aggregates or () for f in step_folds]
    max_buffer = matcher.max_buffer
    runs = []
    for _ in range(spec.max_partial):
        ctx: dict[str, Any] = {
            name: tuple(_event(worst, fields, stamp) for _ in range(n)) for name, n in held.items()
        }
        if folds:
            ctx[AGGREGATES_KEY] = {
                (worst.key(key[0]), worst.key(key[1]), tuple(worst.key(p) for p in key[2])): (
                    _BIG_INT,
                    _kept(worst, key[0], held[step]),
                )
                for key, step, _, _ in folds
            }
        seqs = (_BIG_INT,) * per_run
        runs.append((_BIG_INT, _BIG_INT, _BIG_INT, _BIG_INT, _BIG_INT, _BIG_INT, True, True, ctx, seqs))
    buf = [(_BIG_INT, _BIG_INT, True, _event(worst, fields, stamp)) for _ in range(max_buffer + 1)]
    ident = (_BIG_INT,) * (per_run + len(positive))
    reported = [(_BIG_INT, _BIG_INT, ident) for _ in range(4 * max_buffer)]
    emitted = [(_BIG_INT, _BIG_INT, _BIG_INT, _BIG_INT) for _ in range(max_buffer + 1)]
    return [
        runs,
        _BIG_INT,
        _BIG_INT,
        _BIG_INT,
        _BIG_INT,
        _BIG_INT,
        buf,
        reported,
        emitted,
        (_BIG_INT, _BIG_INT),
    ]


def _kept(worst: _Worst, kind: str, n: int) -> Any:
    """The worst accumulator of a step aggregate kept over ``n`` events (expr.functions.FOLDS)."""
    if kind == "sum":  # (total, numbers folded): the total of n 64-bit numbers
        return (_BIG_INT * MAX_TIMES, _BIG_INT)
    if kind == "distinct":  # the distinct values of the step's events
        return frozenset(worst.string() for _ in range(n))
    return _BIG_INT  # min, max: one number


def _worst_state(engine: Engine) -> Iterator[tuple[str, Any]]:
    plan = engine._plan  # the compiled plan: the bound follows what the engine really runs
    fields = plan.stored_fields
    if fields is None:
        msg = "a sequence step reads whole events (e.g. first(s) == last(s)): every field is kept"
        raise ValueError(msg)
    worst = _Worst()
    for key, feature in plan.features:
        yield key, _feature(worst, feature)
    for pp in plan.patterns:
        yield pp.key, _pattern(worst, pp.matcher, fields, tuple(name for name, _ in pp.stamp))
    rule_ids = [r.rule.id for r in plan.rules]
    recent = [[_BIG_INT, _event(worst, fields, ()), list(rule_ids)] for _ in range(RECENT_CAP)]
    wakeups = [[_BIG_INT, pp.key] for pp in plan.patterns]
    user = worst.string(MAX_ID_LENGTH)
    yield META, [_BIG_INT, _BIG_INT, plan.version, _BIG_INT, wakeups, recent, user, _BIG_INT]
    yield SEEN, bytes(ENTRY * SEEN_CAP)  # the events remembered for deduplication (riskctl/core/dedup.py)


def _own_ints(value: Any, done: dict[int, Any]) -> Any:
    """``value`` with each number a distinct object, its containers shared as they were (``done``: id ->
    copy). Marshal writes an object met twice as a 5-byte reference to it: the worst case's containers are
    shared as real state's can be, but its numbers are one object, where a real state's times and sums are
    mostly each its own (15 bytes past 60 bits)."""
    if type(value) is int:
        return value + 0  # a new object past the small ints
    copy = done.get(id(value))
    if copy is not None:
        return copy
    if type(value) is list:
        copy = [_own_ints(v, done) for v in value]
    elif type(value) is tuple:
        copy = tuple(_own_ints(v, done) for v in value)
    elif type(value) is dict:
        copy = {k: _own_ints(v, done) for k, v in value.items()}
    else:
        return value
    done[id(value)] = copy
    return copy


def state_bound(ruleset: RuleSet, *, lateness: int) -> StateBound:
    """The worst-case bytes of one user's state under ``ruleset``, encoded (see the module docstring)."""
    engine = Engine(ruleset, lateness=lateness)
    worst = dict(_worst_state(engine))  # held while copying: the ids in ``done`` stay theirs
    done: dict[int, Any] = {}
    state = {name: _own_ints(value, done) for name, value in worst.items()}
    parts = {name: len(encode_state(value)) for name, value in state.items()}
    return StateBound(len(encode_state(state)), parts)
