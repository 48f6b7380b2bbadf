"""Sequence patterns per key over event time (a small Flink CEP in pure Python).

A :class:`PatternSpec` is an immutable, validated list of :class:`Step` s; a :class:`PatternMatcher` runs
it for one key at a time over state that is plain Python data (lists, tuples, dicts, ints, the event
mappings), so the engine can keep it in a :class:`~riskctl.core.state.KeyedState` (pickled into RocksDB
under Flink)::

    fails = Step("fails", is_failed_login, "event.type == 'login' and not event.success",
                 times=3, contiguity="strict")
    ok = Step("ok", is_good_login, "event.type == 'login' and event.success", contiguity="strict")
    matcher = PatternMatcher(PatternSpec("brute_force", (fails, ok), within=10_000))
    result = matcher.process(state.get(key), event, event["ts"])   # -> PatternResult

Semantics (all on event-time order; ties keep arrival order):

- **Matching.** Every event whose first-step condition holds starts a partial match. A step's condition is
  called as ``cond(event, steps)``; ``steps`` maps *every* step name to the tuple of events that step has
  matched so far in this partial match (empty for steps not reached yet, and for the step being tried until it
  takes its first event), so a looping step sees its own earlier events, e.g. ``sum(fails.amount)``.
- **Quantifiers.** ``quantifier="exactly"`` takes exactly ``times`` events; ``"at_least"`` takes ``times`` or
  more, and every length is a separate match (like Flink's ``timesOrMore``): with ``a{1,} b`` and events
  ``a1 a2 b`` the matches are ``a1 a2 b``, ``a1 b`` (started at a1, stopped looping after a1) and ``a2 b``.
  When a step may both loop and hand over to the next step, the two continuations are followed separately.
- **Contiguity** applies to every event a step takes, against the event matched just before it (from the same
  step or the previous one). ``strict``: it must be the very next event of the key. ``relaxed`` (the default):
  events that are not *candidates* are skipped, and the first candidate is taken ("skip till next match",
  Flink's ``followedBy``); a candidate is an event whose gap from the previous matched event is allowed and
  whose condition holds. The first event of a match has no previous event (for the first step, contiguity and
  gaps apply from its second event on).
- **Boundaries** are half-open, like Flink's: a match takes events with ``ts - start_ts < within``; a
  step's ``max_gap`` allows ``ts - previous_ts < max_gap`` and its ``min_gap`` allows
  ``ts - previous_ts >= min_gap``. An event exactly ``within`` after the start is outside the pattern.
- **Absence in the middle** (a negated step between two positive ones): an event satisfying the negated
  condition between the last event of the step before and the first event of the step after kills the partial
  match. **Absence at the end** (a final negated step): once the positive steps are matched, the match is
  confirmed at the *deadline* ``min(start_ts + within, last_ts + max_gap of the negated step)`` if no event
  before the deadline satisfied the negated condition; :attr:`PatternResult.wakeup` is the earliest pending
  deadline, and the match is reported (``completed_by="timer"``) by :meth:`PatternMatcher.on_timer` at or
  after it, or by :meth:`PatternMatcher.process` once an event shows the deadline is past the allowed
  lateness. Its ``end_ts`` is the deadline.
- **After-match policy.** ``skip_past_last_event`` (the default, like Flink's): when a match is reported,
  every partial match that started at or before the match's last event is discarded (for an absence match the
  last event is its last positive event), so one burst is reported once. Matches completing together are
  ordered by start, then by their events; with this policy only the first is reported. ``no_skip`` reports
  every match.
- **Late events.** With ``lateness > 0`` the matcher keeps a bounded, time-ordered buffer of the key's recent
  events. An event older than the newest one seen (but not more than ``lateness`` older) makes the matcher
  replay that buffer in event-time order, exactly as if events had arrived in order; matches found that were
  not reported before are reported with ``completed_by="late"``, except one whose last event is the late event
  itself, reported ``"event"`` as in order (that event's decision is not out yet; a match confirmed by its
  deadline stays ``"late"``). Matches already reported are never retracted
  nor reported twice. An event more than ``lateness`` older than the newest, or older than the time of an
  :meth:`~PatternMatcher.on_timer` call, is *too late*: it is ignored and counted (``too_late``). With
  ``lateness == 0`` (the default) no buffer is kept. (The engine applies the same test per key before any
  feature or pattern sees an event, and feeds no too-late event: see docs/engine.md.) An event no condition
  holds for matters only by its place, to a ``strict`` step it would break: it is buffered as a place when
  the pattern has such a step, and otherwise neither buffered nor, arriving late, replayed (when the
  conditions do not read the steps' events, so that their verdict is known once per event).
- **Bounds.** At most ``max_partial`` partial matches per key: overflow drops the oldest and is counted in
  the state (:meth:`PatternMatcher.overflow`) and in :attr:`PatternResult.overflow`. The late-event buffer
  keeps only events a late event could still match with (those of the last ``lateness`` ms, and those since
  the oldest possible start within ``within`` before that), at most ``max_buffer``; dropping beyond it is
  counted the same way. The state is ``None`` once nothing is pending (with ``lateness``: and no event can
  arrive late any more, an on_timer call having passed the newest event's time).
- **Work per event.** An ``at_least`` step takes at most ``MAX_TIMES`` (1,000) events per partial match, the
  number the validator's estimate charges for it (each take copies the events held): the partial match stops
  looping there, counted as overflow, and may still hand over to the next step (so matches of more than 1,000
  events of one step are not found; later-started partial matches still loop on). The replay of a late event
  counts its work as it goes, in the validator's unit (before each replayed event: each partial match's
  condition elements it may evaluate, plus the events it holds, again per ``distinct`` kept over its step,
  whose set a take copies), and is *given up* past ``MAX_SEQUENCE_COST`` (250,000): the state stays as it was
  before the late event (its partial matches and reported matches; the late event is in the buffer, but in no
  partial match, so it completes nothing), and one overflow is counted. So one event costs at most about what
  the validator lets an in-order event cost, late or not; the count is of work units, never time, so the job,
  a replay and the tests give up at the same place. The trade-off: a key whose replays are that heavy
  (hundreds of partial matches over hundreds of buffered events; one user's own flood) has its late events
  matched by no sequence, and its overflow shows it.
- **Late replays per key.** Bounding each replay does not bound how often a producer makes one: stamped a
  few seconds behind a user's newest event, every event of that user replays his buffer (20-30 times the
  work of an event in order, bench/results/late-event-cost.md). A replay also charges one unit per buffered
  event it goes over, and a key's replays draw on a budget kept in its state: ``LATE_REPLAY_RATE`` (512)
  units per event of the key, in order or late, up to ``LATE_REPLAY_BURST`` (``MAX_SEQUENCE_COST``; a new
  key starts full). While the key has less than its last replay cost (an estimate of the next one, which
  shrinks in proportion as the buffer does), a late event is buffered but not replayed (one overflow), and
  the next replay the key can pay for matches it in its place (reported late); a replay that outgrows what
  the key has is given up as above. Ordinary disorder never waits (a user at 40
  events/s with half of them up to 4 s late: no replay waited, the same records); a producer stamping one
  user's events late gets about 6 times an in-order event's work per event, not 20-30.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

from riskctl.core.errors import ExpressionError, RuleError
from riskctl.core.expr.parser import expression_cost
from riskctl.core.pattern_spec import (
    AFTER_MATCH_POLICIES,
    AGGREGATES_KEY,
    CONTIGUITIES,
    MAX_SEQUENCE_COST,
    MAX_STEPS,
    MAX_TIMES,
    QUANTIFIERS,
    Condition,
    Event,
    PatternSpec,
    Step,
    StepsView,
    check_ms,
)

__all__ = [
    "AFTER_MATCH_POLICIES",
    "CONTIGUITIES",
    "LATE_REPLAY_BURST",
    "LATE_REPLAY_RATE",
    "MAX_SEQUENCE_COST",
    "MAX_STEPS",
    "MAX_TIMES",
    "QUANTIFIERS",
    "Condition",
    "Event",
    "Match",
    "PatternMatcher",
    "PatternResult",
    "PatternSpec",
    "Step",
    "StepsView",
]

CompletedBy = Literal["event", "late", "timer"]


_NEG_INF = -(1 << 62)
# MAX_TIMES as a literal: the compiled core (mypyc) reads a Final literal as a constant, not a global.
_HELD_CAP: Final = 1000
assert _HELD_CAP == MAX_TIMES

# Layout of the stored state (a list, so the hot path can update it in place before handing it back).
# ``_CREDIT``: the key's budget of late replays, ``None`` (full) or (units left, _SEQ then, last replay's
# work); states written before it have 10 entries and get it at their first late event.
# (Final literals: the compiled core indexes with constants, not with a global looked up each time.)
# A state with nothing but its newest time, arrival count, watermark and buffer (no partial match, nothing
# reported or emitted, a full replay budget, no overflow or too-late count: what most keys hold between their
# events, with a lateness) is stored as the tuple ``(newest, seq, wm, *buffer)`` instead: a third fewer
# objects in the patterns' states, about 10% less work pickling and unpickling a user's state, 1.6 µs less
# per event in the job's decide thread (bench/results/engine-issue14.md; state layout 2). The matcher turns it
# back into the list (``_expand``) wherever more than an in-order event that starts nothing happens.
_RUNS: Final = 0
_MAX_TS: Final = 1
_SEQ: Final = 2
_OVERFLOW: Final = 3
_TOO_LATE: Final = 4
_WM: Final = 5
_BUF: Final = 6
_REPORTED: Final = 7
_EMITTED: Final = 8
_SEED: Final = 9
_CREDIT: Final = 10

#: What a key's late replays may cost together, in the work unit of ``MAX_SEQUENCE_COST``: each event of the
#: key (in order or late) adds ``LATE_REPLAY_RATE`` units, up to ``LATE_REPLAY_BURST`` kept (a new key starts
#: full). A replay is not started while the key has less than its previous replay cost, scaled down as the
#: buffer shrinks (the late event waits in the buffer for the next replay the key can pay for), and is given
#: up past what the key has. So however
#: a producer stamps one user's events, that user's replays cost at most ``LATE_REPLAY_RATE`` units per event
#: of his on average, beyond one burst.
LATE_REPLAY_RATE: Final = 512
LATE_REPLAY_BURST: Final = MAX_SEQUENCE_COST

# Layout of one partial match ("run"), a tuple:
#   (start_ts, start_seq, step, count, last_ts, last_seq, loop_ok, next_ok, steps, seqs)
# ``step``/``count``: the positive step being matched and how many events it has; ``loop_ok``: this step may
# still take another event; ``next_ok``: the next step may take its first event (for the last step followed
# by a negated one: the absence is still pending); ``steps``: step name -> tuple of matched events (what the
# conditions see), plus, when the conditions aggregate a step (sum/avg/min/max/distinct), AGGREGATES_KEY ->
# {(kind, step, path): (events of the step folded, acc)}, updated by each take (a read is then O(1), not a
# pass over the step); ``seqs``: arrival numbers of the matched events, the match's identity within the key.
# States written before the aggregates were kept have no such entry: their conditions fold the step on each
# read (the same fold, so the same values), and their next take adds the entries; an entry is used only if it
# covers its step's events, so a state written back by an older version (which copies the entry unchanged
# while taking events) is never misread either.
# A buffer entry: (ts, seq, starts, event), ``starts`` being the first step's verdict on it; or, for an event
# that arrived in order and that no condition holds for (kept only for its place, which breaks a strict step),
# its time alone, an int: no tuple to make, free and pickle per place (state layout 3). A place needs no
# arrival number: a replay feeds it to no step, and an event arriving late is placed after the events of its
# time (it is the newest arrival). Where the first buffered entry's (time, arrival) bounds what was reported
# (``_prune_buffer``), the first tuple after a leading int place stands in for that place: an in-order
# place has a greater (time, arrival) than every entry pruned before it and a smaller one than every entry
# kept after it, so both compare alike with every match's start. A place arriving late is stored as a tuple,
# ``(ts, seq, False, None)``, as layouts 1 and 2 stored every place (and read the same).


@dataclass(frozen=True, slots=True)
class Match:
    """A complete match: ``event_ids`` maps each positive step to the ids of its events, in order.

    ``end_ts`` is the last event's time, or the deadline for an absence match. ``completed_by`` is ``"event"``
    (the current event completed it as its last: in order, or late and found by the replay), ``"late"`` (found
    when an out-of-order event arrived, its last event an earlier arrival) or
    ``"timer"`` (an absence confirmed because its deadline passed).
    """

    pattern_id: str
    event_ids: Mapping[str, tuple[Any, ...]]
    start_ts: int
    end_ts: int
    completed_by: CompletedBy
    #: each positive step's events as the matcher kept them (projected, with stamped features): what an
    #: explanation of the match shows
    events: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict, compare=False)


class PatternResult(NamedTuple):
    """What :meth:`PatternMatcher.process` and :meth:`PatternMatcher.on_timer` return.

    ``new_stored`` is what to put back (``None``: remove the entry); ``wakeup`` is the event time at which the
    engine must call ``on_timer`` (the earliest pending absence deadline), or ``None``. ``overflow`` counts
    the partial matches (or buffered events) dropped by this call for exceeding the bounds; ``too_late`` is
    true when the event was ignored for being older than the allowed lateness.
    """

    new_stored: Any
    matches: tuple[Match, ...]
    wakeup: int | None
    overflow: int = 0
    too_late: bool = False


#: What :meth:`PatternMatcher.feed` and :meth:`PatternMatcher.feed_timer` return: a :class:`PatternResult`'s
#: fields as a plain tuple. The engine calls them, not ``process`` and ``on_timer``: the compiled core passes
#: a tuple of a declared shape between its functions as a C struct, with no object to make, unpack and free
#: (a NamedTuple is an object, made through ``tuple.__new__`` and unpacked item by item), for every pattern
#: of every event.
Outcome = tuple[Any, tuple[Match, ...], int | None, int, bool]

# A completed match before it becomes a Match:
#   (start_ts, start_seq, seqs, steps, end_ts, last_ts, last_seq)
_Ctx = dict[str, Any]  # step name -> tuple of events, and AGGREGATES_KEY -> the kept aggregates
_Done = tuple[int, int, tuple[int, ...], _Ctx, int, int, int]
_Run = tuple[int, int, int, int, int, int, bool, bool, _Ctx, tuple[int, ...]]
_Fold = tuple[tuple[str, str, tuple[str, ...]], str, Any, Callable[[Any, Any], Any]]
_Key = tuple[int, int]


class PatternMatcher:
    """The runtime of one :class:`PatternSpec`; holds no per-key data (that is the ``stored`` argument).

    ``lateness`` (ms) is how far out of event-time order an event may arrive and still be matched in its place
    (the engine's allowed lateness); ``max_buffer`` bounds the events kept for that per key.
    """

    __slots__ = (
        "_aggregates",
        "_base",
        "_capped",
        "_copy_cost",
        "_loop_cost",
        "_next_cost",
        "_cond0",
        "_others",
        "_others_types",
        "_types0",
        "_sift",
        "_final_gap",
        "_final_neg",
        "_last",
        "_lateness",
        "_max_buffer",
        "_max_partial",
        "_names",
        "_places",
        "_project",
        "_skip",
        "_steps",
        "_within",
        "spec",
    )

    def __init__(
        self,
        spec: PatternSpec,
        *,
        lateness: int = 0,
        max_buffer: int = 1000,
        project: Callable[[Event], Event] | None = None,
    ) -> None:
        check_ms(lateness, "lateness", "lateness", zero_ok=True)
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            msg = f"max_buffer must be an int >= 1, got {max_buffer!r}"
            raise RuleError(msg, rule_id=spec.id, field="max_buffer")
        self.spec = spec
        self._lateness = lateness
        self._max_buffer = max_buffer
        # What the state keeps of an event (the engine's projection: the fields the rules read, strings
        # capped); applied only to events that are stored or advance a match, and before any condition
        # that may compare them with stored ones, so live and replayed evaluations see the same values.
        self._project = project
        self._within = spec.within
        self._max_partial = spec.max_partial
        self._skip = spec.after_match == "skip_past_last_event"
        # Positive steps: (name, cond, times, at_least, strict, min_gap, max_gap, negated cond before it).
        compiled: list[tuple[str, Condition, int, bool, bool, int, int | None, Condition | None]] = []
        neg_before: Condition | None = None
        for step in spec.steps:
            if step.negated:
                neg_before = step.cond
                continue
            compiled.append(
                (
                    step.name,
                    step.cond,
                    step.times,
                    step.quantifier == "at_least",
                    step.contiguity == "strict",
                    step.min_gap or 0,
                    step.max_gap,
                    neg_before,
                )
            )
            neg_before = None
        self._steps = tuple(compiled)
        self._names = tuple(c[0] for c in compiled)
        self._last = len(compiled) - 1
        final = spec.steps[-1]
        self._final_neg: Condition | None = final.cond if final.negated else None
        # What a partial match at positive step k may evaluate for one event, in condition elements (the
        # validator's unit): the step's own condition while it may loop, the next step's (and the absence
        # before it, or the final absence) while it may hand over. The replay of a late event charges them.
        elements = [_elements(st.source) for st in spec.steps]
        loop_cost: list[int] = []
        next_cost: list[int] = []
        for j, st in enumerate(spec.steps):
            if st.negated:
                continue
            loop_cost.append(elements[j])
            rest = 0
            for st2, el in zip(spec.steps[j + 1 :], elements[j + 1 :], strict=True):
                rest += el
                if not st2.negated:
                    break
            next_cost.append(rest)
        self._loop_cost = tuple(loop_cost)
        self._next_cost = tuple(next_cost)
        # at_least loops stopped at MAX_TIMES events by the call in progress (see _take): counted as overflow.
        self._capped = 0
        # last_ts + final_gap >= start_ts + within when the negated step has no max_gap of its own.
        self._final_gap = final.max_gap if final.negated and final.max_gap is not None else spec.within
        self._base: _Ctx = {s.name: () for s in spec.steps}
        # The step aggregates the conditions read, (key, step, initial, fold), kept per partial match; and
        # for each positive step, those over it (what a take into it updates).
        folds: dict[Any, _Fold] = {}
        for st in spec.steps:
            for agg in getattr(st.cond, "aggregates", None) or ():
                folds.setdefault(agg[0], agg)
        self._aggregates: tuple[tuple[_Fold, ...], ...] | None = (
            tuple(tuple(f for f in folds.values() if f[1] == c[0]) for c in compiled) if folds else None
        )
        # A take into step k copies the events the partial match holds, and the set of each distinct() kept
        # over step k (at most as many values as the step holds events): per event held, 1 + those.
        self._copy_cost = tuple(
            1 + sum(1 for f in folds.values() if f[1] == c[0] and f[0][0] == "distinct") for c in compiled
        )
        self._cond0 = compiled[0][1]
        # The late-event buffer keeps every event's place (time, arrival number), but the event itself only
        # if some condition holds for it: for the others, a replay needs no condition (all are false). That
        # is decidable once per event only when no condition reads the steps' events (a condition declares
        # it with ``reads_steps = False``, as the compiled rule conditions do): then its verdict does not
        # depend on the partial match.
        self._sift = all(getattr(st.cond, "reads_steps", True) is False for st in spec.steps)
        # Such an event only matters by its place, for strict contiguity (it breaks a strict step): without a
        # strict step it is not buffered at all, and arriving late it changes no match (no replay).
        self._places = not self._sift or any(c[4] for c in compiled)
        others: dict[str, tuple[Condition, frozenset[str] | None]] = {}
        for st in spec.steps[1:]:
            if st.source != spec.steps[0].source:
                others.setdefault(st.source, (st.cond, _types_of(st.cond)))
        self._others = tuple(others.values())
        # The event types any of them may hold for (None: any): other types need no call of ``_relevant``.
        other_types: set[str] | None = set()
        for _, types in self._others:
            if types is None or other_types is None:
                other_types = None
            else:
                other_types.update(types)
        self._others_types = None if other_types is None else frozenset(other_types)
        # A condition declaring ``event_types`` holds only for events of those types: not called for others.
        self._types0 = _types_of(self._cond0)

    # ------------------------------------------------------------------------------------------ public API

    def process(self, stored: Any, event: Event, ts: int) -> PatternResult:
        """Feed one event of the key (``ts`` its event time); see the module docstring for the semantics."""
        return PatternResult(*self.feed(stored, event, ts, event.get("type")))

    def on_timer(self, stored: Any, ts: int) -> PatternResult:
        """Event time has reached ``ts`` (the engine's watermark passed it): confirm absences due by then.

        Also frees what can no longer match; events older than ``ts`` arriving later are too late.
        """
        return PatternResult(*self.feed_timer(stored, ts))

    def feed(self, stored: Any, event: Event, ts: int, etype: Any) -> Outcome:
        """:meth:`process`, its result as a plain tuple (see :data:`Outcome`); ``etype`` is the event's
        ``type``, which the caller has read already (a method call by name per read, for a ``Mapping``)."""
        lateness = self._lateness
        types0 = self._types0
        starts = (types0 is None or etype in types0) and bool(self._cond0(event, self._base))
        if stored is None:
            if not starts:
                if not lateness:
                    # the common case: nothing pending, and this event starts nothing
                    return (None, (), None, 0, False)
                idle = self._idle(_FRESH, event, ts, etype)
                if idle is not None:
                    return (idle, (), None, 0, False)
            st: list[Any] = [[], ts, 0, 0, 0, _NEG_INF, [], [], [], None, None]
        elif type(stored) is tuple:
            if not starts:
                idle = self._idle(stored, event, ts, etype)
                if idle is not None:
                    return (idle, (), None, 0, False)
            st = _expand(stored)
        else:
            st = stored
        if stored is not None:
            # (typed locals: the compiled core compares and indexes them natively)
            newest: int = st[_MAX_TS]
            wm: int = st[_WM]
            if ts < newest or ts < wm:
                return self._out_of_order(st, event, ts, starts, etype)
        ts_obj: object = ts  # one object wherever it is stored (see _idle)
        st[_MAX_TS] = ts_obj
        seq: int = st[_SEQ]
        st[_SEQ] = seq + 1
        runs: list[_Run] = st[_RUNS]
        prune = False
        project = self._project
        if lateness:
            buf: list[Any] = st[_BUF]
            if starts or not self._sift or self._relevant_typed(event, etype):
                if project is not None:
                    event = project(event)
                    project = None
                buf.append((ts_obj, seq, starts, event))
            elif self._places:
                buf.append(ts_obj)  # no condition holds for it: its place is enough
            if buf:
                # Pruning is lazy (once the head is ``lateness`` past due): a few more events are harmless.
                prune = _head_due(buf[0], ts, lateness, self._within) or len(buf) > self._max_buffer
        if not runs and not starts:
            # (what _result gives here: the state stays, the newest time being this event's; no deadline)
            dropped = self._prune_buffer(st) if prune else 0
            return (_compact(st), (), None, dropped, False)
        matches: list[Match] = []

        def sink(done: _Done, timer: bool) -> None:
            self._sink_in_order(st, matches, done, "timer" if timer else "event")

        if project is not None:
            event = project(event)
        known: int = st[_WM]
        know = max(ts - lateness, known)
        runs, _ = self._in_order(runs, event, ts, seq, starts, know, None, sink)
        dropped = self._bound_runs(st, runs)
        if prune:
            dropped += self._prune_buffer(st)
        return self._result(st, matches, dropped)

    def _idle(self, t: tuple[Any, ...], event: Event, ts: int, etype: Any) -> tuple[Any, ...] | None:
        """The compact state (see ``_compact``) after an event that starts nothing, fed to the compact state
        ``t`` (``_FRESH`` for none), exactly as the list path leaves it; None where that path must run (an
        event out of order, a buffer past ``max_buffer``)."""
        newest: int = t[0]
        wm: int = t[2]
        if ts < newest or ts < wm:
            return None  # out of order: the list path replays
        # The times as the objects they are stored as: each int the compiled core puts into a tuple is a new
        # object (the times are past 2^30), so ``ts`` becomes one once and the watermark stays the one it was.
        ts_obj: object = ts
        wm_obj: object = t[2]
        seq: int = t[1]
        entry: Any = None
        if not self._sift or self._relevant_typed(event, etype):
            project = self._project
            entry = (ts_obj, seq, False, event if project is None else project(event))
        elif self._places:
            entry = ts_obj  # a place (see process)
        n = len(t) - 3 + (entry is not None)  # the buffer with this event
        if n > self._max_buffer:
            return None  # the list path drops the oldest and counts it
        if not n:
            return (ts_obj, seq + 1, wm_obj)
        # The list path's lazy prune (see process), and what _prune_buffer then cuts: never this event (at or
        # after ``know``), never more than max_buffer kept (so nothing dropped), and nothing reported, emitted
        # or budgeted to update.
        lateness = self._lateness
        due = _head_due(t[3] if len(t) > 3 else entry, ts, lateness, self._within)
        cut = _first_needed(t, 3, ts, wm, lateness, self._within) if due else 3
        kept = t[cut:]
        if entry is None:
            return (ts_obj, seq + 1, wm_obj, *kept)
        return (ts_obj, seq + 1, wm_obj, *kept, entry)

    def _relevant_typed(self, event: Event, etype: Any) -> bool:
        """``_relevant``, first ruling out by its type (``etype``) an event no other step can hold for."""
        others = self._others_types
        return (others is None or etype in others) and self._relevant(event, etype)

    def _relevant(self, event: Event, etype: Any) -> bool:
        """Some step other than the first could take ``event`` (of type ``etype``) or be killed by it (only
        when ``_sift``)."""
        base = self._base
        for cond, types in self._others:
            if (types is None or etype in types) and cond(event, base):
                return True
        return False

    def feed_timer(self, stored: Any, ts: int) -> Outcome:
        """:meth:`on_timer`, its result as a plain tuple (see :data:`Outcome`)."""
        if stored is None:
            return (None, (), None, 0, False)
        st = _expand(stored) if type(stored) is tuple else stored
        if ts > st[_WM]:
            st[_WM] = ts
        know = max(st[_MAX_TS] - self._lateness, st[_WM])
        matches: list[Match] = []

        def sink(done: _Done, timer: bool) -> None:
            self._sink_in_order(st, matches, done, "timer")

        runs = st[_RUNS]
        if runs:
            if self._final_neg is not None:
                runs, _ = self._complete(runs, know, None, sink)
            st[_RUNS] = self._expire(runs, know)
        dropped = self._prune_buffer(st) if self._lateness else 0
        return self._result(st, matches, dropped)

    @property
    def max_buffer(self) -> int:
        """The most events buffered per key for late events."""
        return self._max_buffer

    @staticmethod
    def overflow(stored: Any) -> int:
        """Partial matches and buffered events dropped for this key so far (0 for an empty state)."""
        return 0 if stored is None or type(stored) is tuple else int(stored[_OVERFLOW])

    @staticmethod
    def too_late(stored: Any) -> int:
        """Events of this key ignored so far for arriving later than the allowed lateness."""
        return 0 if stored is None or type(stored) is tuple else int(stored[_TOO_LATE])

    # ------------------------------------------------------------------------------------------ internals

    def _result(self, st: list[Any], matches: list[Match], dropped: int) -> Outcome:
        runs: list[_Run] = st[_RUNS]
        # Nothing pending: the state goes, unless an event could still arrive late (older than the newest,
        # not older than a timer): without the newest time, such an event would be taken as in order, not
        # replayed in its place nor found too late (and the replay budget would start full again). A buffer
        # that always held the newest event's place kept it; events no condition holds for are not always
        # buffered now, so the newest time is what decides.
        if not runs:
            if not st[_BUF] and (not self._lateness or st[_WM] > st[_MAX_TS]):
                return (None, tuple(matches), None, dropped, False)
            return (_compact(st), tuple(matches), None, dropped, False)
        wakeup = self._wakeup(runs) if self._final_neg is not None else None
        return (st, tuple(matches), wakeup, dropped, False)

    def _too_late(self, st: list[Any]) -> Outcome:
        st[_TOO_LATE] += 1
        return (st, (), self._wakeup(st[_RUNS]), 0, True)

    def _wakeup(self, runs: list[_Run]) -> int | None:
        if self._final_neg is None or not runs:
            return None
        last, within, gap = self._last, self._within, self._final_gap
        best: int | None = None
        for run in runs:
            if run[2] == last and run[7]:
                deadline = min(run[0] + within, run[4] + gap)
                if best is None or deadline < best:
                    best = deadline
        return best

    def _bound_runs(self, st: list[Any], runs: list[_Run]) -> int:
        excess = len(runs) - self._max_partial
        if excess > 0:
            del runs[:excess]  # runs are kept in start order: the oldest go first
            st[_OVERFLOW] += excess
        else:
            excess = 0
        st[_RUNS] = runs
        if self._capped:
            excess += self._capped
            st[_OVERFLOW] += self._capped
            self._capped = 0
        return excess

    def _match(self, done: _Done, completed_by: CompletedBy) -> Match:
        steps = done[3]
        ids = {name: tuple(e.get("event_id") for e in steps[name]) for name in self._names}
        events = {name: tuple(steps[name]) for name in self._names}
        return Match(self.spec.id, ids, done[0], done[4], completed_by, events)

    def _done_order(self, done: _Done) -> tuple[int, int, tuple[int, ...], tuple[int, ...]]:
        """Simultaneous completions: earliest start, then by events, then fewest events in early steps."""
        return done[0], done[1], done[2], tuple(len(done[3][name]) for name in self._names)

    def _identity(self, done: _Done) -> tuple[int, ...]:
        """The match within its key: its events' arrival numbers, then how many each step took."""
        return done[2] + tuple(len(done[3][name]) for name in self._names)

    def _sink_in_order(self, st: list[Any], out: list[Match], done: _Done, completed_by: CompletedBy) -> None:
        out.append(self._match(done, completed_by))
        if self._lateness:
            st[_REPORTED].append((done[0], done[1], self._identity(done)))
            self._cap_reported(st)
            if self._skip:
                st[_EMITTED].append((done[0], done[1], done[5], done[6]))

    def _in_order(
        self,
        runs: list[_Run],
        event: Event,
        ts: int,
        seq: int,
        starts: bool,
        know: int,
        frontier: _Key | None,
        sink: Callable[[_Done, bool], None],
    ) -> tuple[list[_Run], _Key | None]:
        """One event in event-time order: confirm due absences, advance the runs, apply the policy."""
        if runs and self._final_neg is not None:
            runs, frontier = self._complete(runs, know, frontier, sink)
        if starts and frontier is not None and (ts, seq) <= frontier:
            starts = False
        runs, done = self._advance(runs, event, ts, seq, starts)
        if done:
            if len(done) > 1:
                done.sort(key=self._done_order)
            if self._skip:
                sink(done[0], False)
                # Every partial match started at or before this event: all are discarded.
                return [], (ts, seq)
            for d in done:
                sink(d, False)
        return runs, frontier

    def _advance(
        self, runs: list[_Run], event: Event, ts: int, seq: int, starts: bool
    ) -> tuple[list[_Run], list[_Done]]:
        steps, last, within = self._steps, self._last, self._within
        out: list[_Run] = []
        done: list[_Done] = []
        for run in runs:
            s_ts, s_seq, k, c, l_ts, l_seq, loop_ok, next_ok, ctx, seqs = run
            alive = ts - s_ts < within
            gap = ts - l_ts
            was_loop, was_next = loop_ok, next_ok
            if loop_ok:
                step = steps[k]
                gmax = step[6]
                if (
                    alive
                    and gap >= step[5]
                    and (gmax is None or gap < gmax)
                    and event is not None
                    and step[1](event, ctx)
                ):
                    self._take(out, done, s_ts, s_seq, k, c + 1, event, ts, seq, ctx, seqs)
                    loop_ok = False
                elif step[4] or not alive or (gmax is not None and gap >= gmax):
                    loop_ok = False
            if next_ok:
                if k == last:
                    neg = self._final_neg
                    assert neg is not None
                    if (
                        ts < min(s_ts + within, l_ts + self._final_gap)
                        and event is not None
                        and neg(event, ctx)
                    ):
                        next_ok = False
                else:
                    # The candidate test of the looping step above, for the next step; written out in both
                    # places rather than called, because it runs for every partial match on every event.
                    step = steps[k + 1]
                    gmax = step[6]
                    if (
                        alive
                        and gap >= step[5]
                        and (gmax is None or gap < gmax)
                        and event is not None
                        and step[1](event, ctx)
                    ):
                        self._take(out, done, s_ts, s_seq, k + 1, 1, event, ts, seq, ctx, seqs)
                        next_ok = False
                    elif (
                        step[4]
                        or not alive
                        or (gmax is not None and gap >= gmax)
                        or (step[7] is not None and event is not None and step[7](event, ctx))
                    ):
                        next_ok = False
            if loop_ok or next_ok:
                if loop_ok == was_loop and next_ok == was_next:
                    out.append(run)
                else:
                    out.append((s_ts, s_seq, k, c, l_ts, l_seq, loop_ok, next_ok, ctx, seqs))
        if starts:
            self._take(out, done, ts, seq, 0, 1, event, ts, seq, self._base, ())
        return out, done

    def _take(
        self,
        out: list[_Run],
        done: list[_Done],
        s_ts: int,
        s_seq: int,
        k: int,
        c: int,
        event: Event,
        ts: int,
        seq: int,
        ctx: _Ctx,
        seqs: tuple[int, ...],
    ) -> None:
        if c > _HELD_CAP:
            # Only an at_least step gets here (``times`` is at most MAX_TIMES): a partial match holds at most
            # MAX_TIMES events of a step, what the validator's estimate charges (each take copies them). Its
            # loop stops (counted as overflow, like max_partial's); handing over to the next step goes on.
            self._capped += 1
            return
        name, _, times, at_least = self._steps[k][:4]
        nctx = ctx.copy()
        events = ctx[name]
        nctx[name] = events + (event,)
        aggregates = self._aggregates
        if aggregates is not None:
            kept = ctx.get(AGGREGATES_KEY)
            if kept is None:
                # A new partial match (or one of a state from before the aggregates were kept): fold them all.
                kept = {}
                for folds in aggregates:
                    for key, step_name, initial, fold in folds:
                        acc = initial
                        taken = nctx[step_name]
                        for ev in taken:
                            acc = fold(acc, ev)
                        kept[key] = (len(taken), acc)
                nctx[AGGREGATES_KEY] = kept
            elif aggregates[k]:
                # Fold the event into those over this step (a copy: other partial matches share ``ctx``).
                kept = kept.copy()
                n = len(events)
                for key, _, initial, fold in aggregates[k]:
                    entry = kept.get(key)
                    if entry is not None and entry[0] == n:
                        kept[key] = (n + 1, fold(entry[1], event))
                    else:  # not folded along (a state written back by an older version): fold them all
                        acc = initial
                        for ev in nctx[name]:
                            acc = fold(acc, ev)
                        kept[key] = (n + 1, acc)
                nctx[AGGREGATES_KEY] = kept
        nseqs = seqs + (seq,)
        loop_ok = c < times or at_least
        complete = c >= times
        if k == self._last:
            next_ok = complete and self._final_neg is not None
            if complete and self._final_neg is None:
                done.append((s_ts, s_seq, nseqs, nctx, ts, ts, seq))
        else:
            next_ok = complete
        if loop_ok or next_ok:
            out.append((s_ts, s_seq, k, c, ts, seq, loop_ok, next_ok, nctx, nseqs))

    def _complete(
        self,
        runs: list[_Run],
        know: int,
        frontier: _Key | None,
        sink: Callable[[_Done, bool], None],
    ) -> tuple[list[_Run], _Key | None]:
        """Confirm the absences whose deadline is at or before ``know`` (nothing older can arrive now)."""
        last, within, gap = self._last, self._within, self._final_gap
        due: list[tuple[int, _Done]] = []
        keep: list[_Run] = []
        for run in runs:
            if run[2] == last and run[7]:
                deadline = min(run[0] + within, run[4] + gap)
                if deadline <= know:
                    due.append((deadline, (run[0], run[1], run[9], run[8], deadline, run[4], run[5])))
                    if run[6]:
                        keep.append(_with_flags(run, True, False))
                    continue
            keep.append(run)
        if not due:
            return runs, frontier
        if len(due) > 1:
            due.sort(key=lambda d: (d[0], *self._done_order(d[1])))
        for _, d in due:
            if self._skip:
                if frontier is not None and (d[0], d[1]) <= frontier:
                    continue
                frontier = (d[5], d[6])
                keep = [r for r in keep if (r[0], r[1]) > frontier]
            sink(d, True)
        return keep, frontier

    def _expire(self, runs: list[_Run], know: int) -> list[_Run]:
        """Drop the continuations no event at or after ``know`` could take."""
        steps, last, within = self._steps, self._last, self._within
        out: list[_Run] = []
        for run in runs:
            s_ts, _, k, _, l_ts, _, loop_ok, next_ok = run[:8]
            dead = s_ts + within <= know
            if loop_ok:
                gmax = steps[k][6]
                loop_ok = not dead and (gmax is None or l_ts + gmax > know)
            if next_ok and k != last:
                gmax = steps[k + 1][6]
                next_ok = not dead and (gmax is None or l_ts + gmax > know)
            if loop_ok or next_ok:
                same = loop_ok == run[6] and next_ok == run[7]
                out.append(run if same else _with_flags(run, loop_ok, next_ok))
        return out

    # ------------------------------------------------------------------------------------------ late events

    def _out_of_order(self, st: list[Any], event: Event, ts: int, starts: bool, etype: Any) -> Outcome:
        lateness = self._lateness
        if ts < max(st[_MAX_TS] - lateness, st[_WM]):
            return self._too_late(st)
        seq = st[_SEQ]
        st[_SEQ] = seq + 1
        buf = st[_BUF]
        if starts or not self._sift or self._relevant_typed(event, etype):
            project = self._project
            entry: tuple[int, int, bool, Event | None] = (
                ts,
                seq,
                starts,
                event if project is None else project(event),
            )
        elif self._places:
            entry = (ts, seq, False, None)
        else:
            # No condition holds for it and no step is strict: it takes, breaks and kills nothing.
            return (st, (), self._wakeup(st[_RUNS]), 0, False)
        # (after every buffered event of its time: it is the newest arrival)
        buf.insert(bisect_right(buf, ts, key=_entry_ts), entry)
        if len(st) == _CREDIT:
            st.append(None)  # a state written before the replay budget: a full one
        matches, dropped = self._replay(st, seq)
        dropped += self._prune_buffer(st)
        return self._result(st, matches, dropped)

    def _replay(self, st: list[Any], late_seq: int) -> tuple[list[Match], int]:
        """Re-run the buffer in event-time order from scratch; report what was not reported yet, as late,
        except a match whose last event is the late event itself (arrival number ``late_seq``): that one is
        reported ``"event"``, as in order, since that event's own decision is not out yet.

        The replay's work is counted as it goes, in the validator's unit (before each event: the condition
        elements each partial match may evaluate, and the events it holds, which a take copies, again for
        each distinct() kept over its step); past
        MAX_SEQUENCE_COST the replay is given up (see "Bounds" in the module docstring).
        """
        lateness = self._lateness
        # What the key may spend (LATE_REPLAY_RATE per event since its last replay, up to the burst), and
        # what its last replay cost: while it has less than that, this replay is not started.
        credit = st[_CREDIT]
        seq_now = st[_SEQ]
        if credit is None:
            available, last = LATE_REPLAY_BURST, 0
        else:
            available = min(LATE_REPLAY_BURST, credit[0] + LATE_REPLAY_RATE * (seq_now - credit[1]))
            last = credit[2]
        limit = min(MAX_SEQUENCE_COST, available)
        if last > limit:
            st[_CREDIT] = (available, seq_now, last)
            st[_OVERFLOW] += 1
            return [], 1
        new_reported: list[Any] = st[_REPORTED]
        reported_before = len(new_reported)
        # The set of the matches reported (up to 4 x max_buffer, each as long as its events) is work too:
        # hashing an arrival number costs about a tenth of a condition element (measured: 4 vs 54 ns).
        work = 0
        for r in new_reported:
            work += len(r[2])
        work //= 8
        # Going over the buffer is work too, whether or not an event of it feeds a partial match: one unit
        # each (about what stepping over one costs).
        buf = st[_BUF]
        work += len(buf)
        if work > limit:
            st[_CREDIT] = (max(0, available - work), seq_now, min(work, MAX_SEQUENCE_COST))
            st[_OVERFLOW] += 1
            return [], 1
        reported = {r[2] for r in new_reported}
        emitted: list[Any] = []
        matches: list[Match] = []
        skip = self._skip

        def sink(done: _Done, timer: bool) -> None:
            if skip:
                emitted.append((done[0], done[1], done[5], done[6]))
            ident = self._identity(done)
            if ident in reported:
                return
            reported.add(ident)
            new_reported.append((done[0], done[1], ident))
            # completed by the late event (not by a deadline): the event's decision can still carry it, as it
            # would have in order; a match whose last event was decided before is an alert
            matches.append(self._match(done, "event" if not timer and done[6] == late_seq else "late"))

        runs: list[_Run] = []
        frontier: _Key | None = st[_SEED]
        dropped = 0
        max_partial = self._max_partial
        loop_cost, next_cost, copy_cost = self._loop_cost, self._next_cost, self._copy_cost
        self._capped = 0
        ts: int
        seq: int
        starts: bool
        event: Any
        for entry in buf:
            if type(entry) is int:  # a place (its arrival number is never read: no step takes it)
                ts, seq, starts, event = entry, -1, False, None
            else:
                ts, seq, starts, event = entry
            if runs or starts:
                work += 1
                for run in runs:
                    work += len(run[9]) * copy_cost[run[2]]
                    if run[6]:
                        work += loop_cost[run[2]]
                    if run[7]:
                        work += next_cost[run[2]]
                if work > limit:
                    # Given up: nothing of it is kept (the partial matches and the reporting stay as they
                    # were before the late event, which is in the buffer but in no partial match), counted as
                    # one overflow; the work done is spent. Deterministic: the same events give up at the
                    # same place.
                    del new_reported[reported_before:]
                    self._capped = 0
                    st[_CREDIT] = (max(0, available - work), seq_now, min(work, MAX_SEQUENCE_COST))
                    st[_OVERFLOW] += 1
                    return [], 1
                runs, frontier = self._in_order(runs, event, ts, seq, starts, ts - lateness, frontier, sink)
                if len(runs) > max_partial:
                    excess = len(runs) - max_partial
                    del runs[:excess]
                    dropped += excess
        know = max(st[_MAX_TS] - lateness, st[_WM])
        if runs and self._final_neg is not None:
            runs, frontier = self._complete(runs, know, frontier, sink)
        st[_RUNS] = runs
        st[_CREDIT] = (max(0, available - work), seq_now, min(work, MAX_SEQUENCE_COST))
        dropped += self._capped
        self._capped = 0
        st[_OVERFLOW] += dropped
        if skip:
            st[_EMITTED] = emitted
        self._cap_reported(st)
        return matches, dropped

    def _prune_buffer(self, st: list[Any]) -> int:
        """Drop buffered events no late event can match with any more; keep at most ``max_buffer``."""
        buf: list[Any] = st[_BUF]
        cut = _first_needed(buf, 0, st[_MAX_TS], st[_WM], self._lateness, self._within)
        n = len(buf)
        dropped = 0
        if n - cut > self._max_buffer:
            dropped = n - cut - self._max_buffer
            cut = n - self._max_buffer
            st[_OVERFLOW] += dropped
        if not cut:
            return 0
        del buf[:cut]
        if len(st) > _CREDIT:
            credit = st[_CREDIT]
            if credit is not None and credit[2]:
                # The last replay's cost gates the next one; a replay goes over the buffer, so the estimate
                # shrinks with it (in proportion; to nothing with an empty buffer). Else one heavy replay made
                # the key wait up to MAX_SEQUENCE_COST / LATE_REPLAY_RATE (~489) events for its next one, even
                # after the events that made it heavy had left the buffer.
                st[_CREDIT] = (credit[0], credit[1], credit[2] * (n - cut) // n)
        emitted = st[_EMITTED]
        reported = st[_REPORTED]
        if not emitted and not reported:
            return dropped
        first = _first_key(buf)
        if emitted:
            # Matches that started before the buffer can no longer be replayed: remember how far the last of
            # them reaches, so a replay still discards what it discarded (skip_past_last_event).
            i = 0
            seed = st[_SEED]
            while i < len(emitted) and (first is None or (emitted[i][0], emitted[i][1]) < first):
                end = (emitted[i][2], emitted[i][3])
                if seed is None or end > seed:
                    seed = end
                i += 1
            if i:
                del emitted[:i]
                st[_SEED] = seed
        if reported:
            if first is None:
                reported.clear()
            else:
                st[_REPORTED] = [r for r in reported if (r[0], r[1]) >= first]
        return dropped

    def _cap_reported(self, st: list[Any]) -> None:
        # Bounded like everything else: forgetting the oldest could at worst report one of them again.
        reported = st[_REPORTED]
        excess = len(reported) - 4 * self._max_buffer
        if excess > 0:
            del reported[:excess]


def _first_needed(entries: Any, i: int, newest: int, wm: int, lateness: int, within: int) -> int:
    """The index, from ``i``, of the first buffered entry (``(ts, seq, starts, event)`` or a place's time, in
    time order) a late event may still need, with ``newest`` the newest time and ``wm`` the watermark: the
    entries before it go.

    A late event is at or after ``know``: it can start a match (needing the events after it) or join one
    started at most ``within`` before it. Non-starting events before the first such start are useless.
    """
    know = newest - lateness
    if wm > know:
        know = wm
    oldest_start = know - within
    n = len(entries)
    while i < n:
        entry = entries[i]
        if type(entry) is int:  # a place: never a start
            if entry < know:
                i += 1
                continue
            break
        head: tuple[int, int, bool, Any] = entry
        if head[0] < oldest_start or (head[0] < know and not head[2]):
            i += 1
        else:
            break
    return i


def _head_due(head: Any, ts: int, lateness: int, within: int) -> bool:
    """Whether the buffer's first entry ``head`` is due for the lazy prune at the newest time ``ts``: once it
    is ``lateness`` past what ``_first_needed`` keeps (a start: ``within`` more)."""
    if type(head) is int:  # a place
        return head < ts - 2 * lateness
    entry: tuple[int, int, bool, Any] = head
    return entry[0] < ts - 2 * lateness - (within if entry[2] else 0)


def _first_key(buf: list[Any]) -> _Key | None:
    """The (time, arrival) that bounds what was reported (see the buffer's layout): the first entry's, past
    leading int places (which compare alike); None when no tuple is buffered."""
    for entry in buf:
        if type(entry) is not int:
            return entry[0], entry[1]
    return None


#: the compact state standing for none (no event yet): nothing is out of order against it
_FRESH: Final = (_NEG_INF, 0, _NEG_INF)


def _compact(st: list[Any]) -> Any:
    """``st`` as a compact tuple ``(newest, seq, wm, *buffer)`` when that is all it holds, else ``st``."""
    if (
        st[_RUNS]
        or st[_OVERFLOW]
        or st[_TOO_LATE]
        or st[_REPORTED]
        or st[_EMITTED]
        or st[_SEED] is not None
        or (len(st) > _CREDIT and st[_CREDIT] is not None)
    ):
        return st
    return (st[_MAX_TS], st[_SEQ], st[_WM], *st[_BUF])


def _expand(t: tuple[Any, ...]) -> list[Any]:
    """The state list a compact tuple stands for (a full replay budget: ``_CREDIT`` None)."""
    return [[], t[0], t[1], 0, 0, t[2], list(t[3:]), [], [], None, None]


def _elements(source: str) -> int:
    """The elements of a step condition's text (the validator's unit); 1 for a text not in rule syntax."""
    try:
        return max(1, expression_cost(source)[0])
    except ExpressionError:
        return 1


def _types_of(cond: Condition) -> frozenset[str] | None:
    """The event types ``cond`` declares it can hold for (``event_types``), or None (any, or undeclared)."""
    types = getattr(cond, "event_types", None)
    return types if isinstance(types, frozenset) else None


def _entry_ts(entry: Any) -> int:
    """A buffered entry's time (an int place is one)."""
    if type(entry) is int:
        return entry
    ts: int = entry[0]
    return ts


def _with_flags(run: _Run, loop_ok: bool, next_ok: bool) -> _Run:
    s_ts, s_seq, k, c, l_ts, l_seq, _, _, ctx, seqs = run
    return (s_ts, s_seq, k, c, l_ts, l_seq, loop_ok, next_ok, ctx, seqs)
