"""Property tests: the pattern matcher against a brute-force reference.

The reference enumerates every increasing tuple of positions of the time-sorted events, every split of it
into the positive steps allowed by the quantifiers, keeps the splits satisfying the documented semantics
(conditions, contiguity, gaps, within, absences), then applies the after-match policy in completion order.
With events arriving shuffled within the lateness, what the matcher reports must be exactly the union, over
arrivals, of what the reference finds on the sorted events seen so far (reports are never retracted), each
labelled by how it was first found: a match first found when an event arrived late is labelled late, unless
that event is the match's last.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import combinations
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from riskctl.core.patterns import PatternMatcher, PatternSpec, Step

Event = Mapping[str, Any]
Cond = Callable[[Event, Mapping[str, Sequence[Event]]], bool]
INF = 1 << 60


def as_list(stored: Any) -> Any:
    """A matcher's state in its list layout: a compact idle state ``(newest, seq, wm, *buffer)`` stands for a
    list with no partial match, nothing reported or emitted, no overflow or too-late count, a full replay
    budget (the contract of the compact form, stated here on its own)."""
    if type(stored) is tuple:
        return [[], stored[0], stored[1], 0, 0, stored[2], list(stored[3:]), [], [], None, None]
    return stored


# ------------------------------------------------------------------------------------------ reference


def _sizes(steps: Sequence[Step], total: int) -> Iterator[tuple[int, ...]]:
    """Every tuple of per-step counts allowed by the quantifiers that sums to ``total``."""
    if not steps:
        if total == 0:
            yield ()
        return
    step, rest = steps[0], steps[1:]
    low = step.times
    high = step.times if step.quantifier == "exactly" else total
    for n in range(low, high + 1):
        for tail in _sizes(rest, total - n):
            yield (n, *tail)


def reference(
    spec: PatternSpec, events: Sequence[Event], arrival: Sequence[int], lateness: int, now: int
) -> dict[tuple[Any, ...], str]:
    """Matches of ``spec`` over ``events`` (sorted by time, ties in arrival order), after the policy.

    Returns identity -> "event" or "timer" (how it completes). ``arrival[i]`` is the arrival rank of
    ``events[i]`` (the tie-break of simultaneous completions); ``now`` is what a timer has confirmed.
    """
    pos: list[Step] = []
    neg_before: dict[int, Step] = {}
    pending: Step | None = None
    for s in spec.steps:
        if s.negated:
            pending = s
        else:
            if pending is not None:
                neg_before[len(pos)] = pending
            pending = None
            pos.append(s)
    final = pending
    names = [s.name for s in spec.steps]
    ts = [e["ts"] for e in events]
    n = len(events)
    within = spec.within
    found: list[tuple[tuple[Any, ...], int, int, tuple[Any, ...], str]] = []

    for m in range(1, n + 1):
        for idxs in combinations(range(n), m):
            for sizes in _sizes(pos, m):
                groups: list[tuple[int, ...]] = []
                at = 0
                for size in sizes:
                    groups.append(idxs[at : at + size])
                    at += size
                ctx: dict[str, tuple[Event, ...]] = {name: () for name in names}
                start = idxs[0]
                prev: int | None = None
                ok = True
                for k, (step, group) in enumerate(zip(pos, groups, strict=True)):
                    for j, p in enumerate(group):
                        if prev is None:
                            ok = bool(step.cond(events[p], ctx))
                        else:
                            q = prev
                            view = ctx

                            def candidate(r: int, step: Step = step, q: int = q, view: Any = view) -> bool:
                                d = ts[r] - ts[q]
                                if d < (step.min_gap or 0) or (
                                    step.max_gap is not None and d >= step.max_gap
                                ):
                                    return False
                                return bool(step.cond(events[r], view))

                            ok = ts[p] - ts[start] < within and candidate(p)
                            if ok and step.contiguity == "strict":
                                ok = p == q + 1
                            elif ok:
                                ok = not any(candidate(r) for r in range(q + 1, p))
                            if ok and j == 0 and k in neg_before:
                                neg = neg_before[k]
                                ok = not any(neg.cond(events[r], view) for r in range(q + 1, p))
                        if not ok:
                            break
                        ctx = {**ctx, step.name: ctx[step.name] + (events[p],)}
                        prev = p
                    if not ok:
                        break
                if not ok:
                    continue
                assert prev is not None
                ident_steps = tuple(tuple(events[p]["event_id"] for p in g) for g in groups)
                tie = (tuple(arrival[p] for p in idxs), sizes)
                if final is None:
                    ident = (ident_steps, ts[start], ts[prev])
                    found.append(((prev, 1, 0, arrival[start], tie), start, prev, ident, "event"))
                    continue
                gap = final.max_gap if final.max_gap is not None else within
                deadline = min(ts[start] + within, ts[prev] + gap)
                if any(ts[r] < deadline and final.cond(events[r], ctx) for r in range(prev + 1, n)):
                    continue
                at_pos = next((i for i in range(n) if ts[i] - lateness >= deadline), None)
                if at_pos is None:
                    if deadline > now:
                        continue  # still pending
                    at_pos = n
                ident = (ident_steps, ts[start], deadline)
                found.append(((at_pos, 0, deadline, arrival[start], tie), start, prev, ident, "timer"))

    found.sort(key=lambda f: (f[0][0], f[0][1], f[0][2], ts[f[1]], f[0][3], f[0][4]))
    out: dict[tuple[Any, ...], str] = {}
    frontier = -1
    for _, start, last, ident, kind in found:
        if spec.after_match == "skip_past_last_event":
            if start <= frontier:
                continue
            frontier = last
        out[ident] = kind
    return out


def expected_reports(
    spec: PatternSpec, arrivals: Sequence[Event], lateness: int
) -> list[tuple[tuple[Any, ...], str]]:
    """The union over arrivals of the reference on the sorted prefix, each with how it was first found."""
    seen: dict[tuple[Any, ...], str] = {}
    max_ts = -INF
    for k in range(1, len(arrivals) + 1):
        prefix = sorted(range(k), key=lambda i: (arrivals[i]["ts"], i))
        evs = [arrivals[i] for i in prefix]
        late = arrivals[k - 1]["ts"] < max_ts
        max_ts = max(max_ts, arrivals[k - 1]["ts"])
        for ident, kind in reference(spec, evs, prefix, lateness, -INF).items():
            if ident not in seen:
                # found at a late arrival: an alert, unless the arriving event is the match's last (its own
                # decision is not out yet, so it carries the match as it would have in order)
                by_it = kind == "event" and ident[0][-1][-1] == arrivals[k - 1]["event_id"]
                seen[ident] = "late" if late and not by_it else kind
    order = sorted(range(len(arrivals)), key=lambda i: (arrivals[i]["ts"], i))
    evs = [arrivals[i] for i in order]
    for ident, kind in reference(spec, evs, order, lateness, INF).items():
        if ident not in seen:
            seen[ident] = kind
    return sorted(seen.items())


def run_matcher(
    spec: PatternSpec, arrivals: Sequence[Event], lateness: int
) -> tuple[list[tuple[tuple[Any, ...], str]], Any]:
    matcher = PatternMatcher(spec, lateness=lateness)
    names = [s.name for s in spec.steps if not s.negated]
    stored: Any = None
    reported: list[tuple[tuple[Any, ...], str]] = []

    def collect(result: Any) -> None:
        for m in result.matches:
            ident = (tuple(m.event_ids[name] for name in names), m.start_ts, m.end_ts)
            reported.append((ident, m.completed_by))

    for e in arrivals:
        result = matcher.process(stored, e, e["ts"])
        assert not result.too_late
        assert result.overflow == 0
        collect(result)
        stored = result.new_stored
    result = matcher.on_timer(stored, INF // 2)
    collect(result)
    return sorted(reported), result.new_stored


# ------------------------------------------------------------------------------------------ strategies

TYPES = "abc"
EVENT_TYPES = "aaabbc"  # skewed so that random patterns match often
COND_TYPES = "aab"


def _cond(kind: int, arg: Any, own: str, prev: str | None) -> tuple[Cond, str]:
    if kind == 0 or prev is None and kind in (2, 4):
        return (lambda e, s: e["type"] == arg), f"type == {arg!r}"
    if kind == 1:
        return (lambda e, s: e["type"] != arg), f"type != {arg!r}"
    if kind == 2:
        assert prev is not None
        return (
            lambda e, s: e["type"] == arg and bool(s[prev]) and e["amount"] >= s[prev][-1]["amount"]
        ), f"type == {arg!r} and amount >= {prev}.amount"
    if kind == 3:
        return (
            lambda e, s: e["type"] in ("a", arg) and sum(x["amount"] for x in s[own]) + e["amount"] <= 4
        ), f"type in (a, {arg!r}) and sum({own}.amount) + amount <= 4"
    assert prev is not None
    return (
        lambda e, s: e["type"] == arg and bool(s[prev]) and e["ts"] - s[prev][0]["ts"] < 4
    ), f"type == {arg!r} and ts - first({prev}).ts < 4"


def _step_free(cond: Cond, types: frozenset[str] | None = None) -> Cond:
    """Declare that ``cond`` ignores the steps' events and, with ``types``, holds only for events of those
    types (as compiled rule conditions do)."""
    cond.reads_steps = False  # type: ignore[attr-defined]
    if types is not None:
        cond.event_types = types  # type: ignore[attr-defined]
    return cond


def _is_type(arg: str) -> Cond:
    return lambda e, s: e["type"] == arg


def _as_is(cond: Cond, types: frozenset[str] | None = None) -> Cond:
    return cond


@st.composite
def patterns(draw: st.DrawFn, step_free: bool = False) -> PatternSpec:
    """Random patterns; ``step_free``: every condition reads only the event, and says so (``reads_steps``),
    so the matcher keeps only the place of buffered events no condition holds for."""
    mark: Callable[..., Cond] = _step_free if step_free else _as_is
    k = draw(st.integers(1, 3))
    steps: list[Step] = []
    prev: str | None = None
    for i in range(k):
        name = f"s{i}"
        if i > 0 and draw(st.booleans()) and draw(st.booleans()):
            arg = draw(st.sampled_from(COND_TYPES))
            steps.append(Step(f"n{i}", mark(_is_type(arg), frozenset(arg)), f"type == {arg!r}", negated=True))
        kind = draw(st.integers(0, 1) if step_free else st.integers(0, 4))
        arg = draw(st.sampled_from(COND_TYPES))
        cond, source = _cond(kind, arg, name, prev)
        cond = mark(cond, frozenset(arg) if kind == 0 and draw(st.booleans()) else None)
        max_gap = None if draw(st.booleans()) else draw(st.integers(1, 8))
        min_gap = None if draw(st.integers(0, 3)) else draw(st.integers(1, 3))
        if min_gap is not None and max_gap is not None and min_gap >= max_gap:
            min_gap = None
        steps.append(
            Step(
                name,
                cond,
                source,
                times=draw(st.integers(1, 2)),
                quantifier=draw(st.sampled_from(["exactly", "at_least"])),
                contiguity=draw(st.sampled_from(["relaxed", "strict"])),
                max_gap=max_gap,
                min_gap=min_gap,
            )
        )
        prev = name
    if draw(st.booleans()) and draw(st.booleans()):
        arg = draw(st.sampled_from(COND_TYPES))
        gap = draw(st.none() | st.integers(1, 8))
        steps.append(
            Step(
                "end",
                mark(_is_type(arg), frozenset(arg)),
                f"type == {arg!r}",
                max_gap=gap,
                negated=True,
            )
        )
    return PatternSpec(
        "p",
        tuple(steps),
        within=draw(st.integers(1, 20)),
        after_match=draw(st.sampled_from(["skip_past_last_event", "no_skip"])),
        max_partial=100_000,
    )


@st.composite
def streams(draw: st.DrawFn, max_events: int = 8, max_step: int = 3) -> list[dict[str, Any]]:
    n = draw(st.integers(1, max_events))
    ts = 100
    events = []
    for i in range(n):
        ts += draw(st.integers(0, max_step))
        events.append(
            {
                "event_id": f"e{i}",
                "user_id": "u",
                "type": draw(st.sampled_from(EVENT_TYPES)),
                "amount": draw(st.integers(0, 3)),
                "ts": ts,
            }
        )
    return events


def shuffled(draw: st.DrawFn, events: list[dict[str, Any]], lateness: int) -> list[dict[str, Any]]:
    """Arrival order = sorted by ts + jitter in [0, lateness]: every event is at most ``lateness`` late."""
    jitter = [draw(st.integers(0, lateness)) for _ in events]
    order = sorted(range(len(events)), key=lambda i: (events[i]["ts"] + jitter[i], i))
    return [events[i] for i in order]


def assert_matches_reference(spec: PatternSpec, arrivals: list[dict[str, Any]], lateness: int) -> None:
    """The matcher reports what the reference finds, each as first found, and keeps no state at the end."""
    got, final_state = run_matcher(spec, arrivals, lateness)
    assert got == expected_reports(spec, arrivals, lateness)
    assert final_state is None


# ------------------------------------------------------------------------------------------ properties


@settings(max_examples=300, deadline=None)
@given(spec=patterns(), events=streams())
def test_in_order_without_lateness_matches_reference(spec: PatternSpec, events: list[dict[str, Any]]) -> None:
    assert_matches_reference(spec, events, 0)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), spec=patterns(), events=streams(), lateness=st.integers(1, 12))
def test_shuffled_within_lateness_matches_reference(
    data: st.DataObject, spec: PatternSpec, events: list[dict[str, Any]], lateness: int
) -> None:
    assert_matches_reference(spec, shuffled(data.draw, events, lateness), lateness)


@settings(max_examples=100, deadline=None)
@given(spec=patterns(), events=streams(max_events=6), lateness=st.integers(1, 6))
def test_lateness_buffer_changes_nothing_in_order(
    spec: PatternSpec, events: list[dict[str, Any]], lateness: int
) -> None:
    """In-order arrival reports the same with or without the late-event buffer (apart from absence timing)."""
    with_buffer, _ = run_matcher(spec, events, lateness)
    assert with_buffer == expected_reports(spec, events, lateness)
    if spec.steps[-1].negated is False:
        without, _ = run_matcher(spec, events, 0)
        assert with_buffer == without


@settings(max_examples=300, deadline=None)
@given(data=st.data(), spec=patterns(step_free=True), events=streams(), lateness=st.integers(1, 12))
def test_shuffled_within_lateness_matches_reference_with_step_free_conditions(
    data: st.DataObject, spec: PatternSpec, events: list[dict[str, Any]], lateness: int
) -> None:
    """Step-free conditions let the buffer drop the events no condition holds for (keeping their place)."""
    assert_matches_reference(spec, shuffled(data.draw, events, lateness), lateness)
    matcher = PatternMatcher(spec, lateness=lateness)
    assert matcher._sift  # the path under test


def _a_then_strict_b() -> PatternMatcher:
    """An 'a', then right after it a 'b' (strict): step-free conditions, within 50, lateness 10."""
    a = _step_free(lambda e, s: e["type"] == "a")
    b = _step_free(lambda e, s: e["type"] == "b")
    spec = PatternSpec(
        "p", (Step("s0", a, "type == 'a'"), Step("s1", b, "type == 'b'", contiguity="strict")), 50
    )
    return PatternMatcher(spec, lateness=10)


def test_buffer_keeps_only_the_place_of_events_no_condition_holds_for() -> None:
    matcher = _a_then_strict_b()
    stored: Any = None
    events: list[dict[str, Any]] = [{"event_id": f"e{i}", "type": t, "ts": i} for i, t in enumerate("acb")]
    for e in events:
        stored = matcher.process(stored, e, e["ts"]).new_stored
    buf = as_list(stored)[6]
    # the 'a' and 'b' as (time, arrival, starts, event); the 'c', which arrived in order, as its time alone
    assert [entry if type(entry) is int else (entry[0], entry[3] is not None) for entry in buf] == [
        (0, True),
        1,
        (2, True),
    ]
    # a late 'b' right after the 'a' matches; the 'c' in between (kept as a place) still breaks the later one
    late = matcher.process(stored, {"event_id": "late", "type": "b", "ts": 0}, 0)
    assert [m.event_ids for m in late.matches] == [{"s0": ("e0",), "s1": ("late",)}]
    # the late 'b' is the match's last event: its own decision carries the match, as it would have in order
    assert all(m.completed_by == "event" for m in late.matches)


def test_without_a_strict_step_events_no_condition_holds_for_are_not_buffered_nor_replayed() -> None:
    """Their place matters only to a strict step: a hostile producer's late filler costs no replay."""
    a = _step_free(lambda e, s: e["type"] == "a")
    b = _step_free(lambda e, s: e["type"] == "b")
    spec = PatternSpec("p", (Step("s0", a, "type == 'a'"), Step("s1", b, "type == 'b'")), 50)
    matcher = PatternMatcher(spec, lateness=10)
    stored: Any = None
    for i, t in enumerate("acb"):
        stored = matcher.process(stored, {"event_id": f"e{i}", "type": t, "ts": i}, i).new_stored
    assert [entry[0] for entry in as_list(stored)[6]] == [0, 2]  # not the 'c'
    before = pickle.dumps(stored)
    filler = matcher.process(stored, {"event_id": "late-c", "type": "c", "ts": 1}, 1)
    assert filler.matches == () and filler.overflow == 0 and not filler.too_late
    after = as_list(pickle.loads(pickle.dumps(filler.new_stored)))
    old = as_list(pickle.loads(before))
    assert after[6] == old[6] and after[0] == old[0]  # neither buffered nor replayed
    # a late 'b' still matches in its place (relaxed: the 'c' and the other 'b' in between change nothing)
    late = matcher.process(filler.new_stored, {"event_id": "late-b", "type": "b", "ts": 1}, 1)
    assert [m.event_ids for m in late.matches] == [{"s0": ("e0",), "s1": ("late-b",)}]
    assert late.matches[0].completed_by == "event"  # completed by the late 'b' itself


def test_an_event_older_than_the_newest_stays_late_when_the_buffer_has_emptied() -> None:
    """Without a strict step the newest event is not always buffered: the state keeps its time all the same.

    Dropped once nothing was pending, the state forgot the newest time: an event more than the lateness behind
    the newest was then taken as in order, not as too late.
    """
    a = _step_free(lambda e, s: e["type"] == "a")
    b = _step_free(lambda e, s: e["type"] == "b" and e["amount"] > 100)
    spec = PatternSpec("p", (Step("s0", a, "type == 'a'"), Step("s1", b, "type == 'b' and amount > 100")), 50)
    matcher = PatternMatcher(spec, lateness=10)
    assert not matcher._places  # the path under test
    stored: Any = None
    got = []
    # b0 is buffered (a 'b' step may take it), then pruned by 'c' (no condition holds for it: not buffered)
    for eid, etype, ts, amount in [
        ("b0", "b", 0, 500),
        ("c", "b", 21, 1),
        ("a", "a", 15, 0),
        ("b1", "b", 18, 500),
    ]:
        result = matcher.process(stored, {"event_id": eid, "type": etype, "ts": ts, "amount": amount}, ts)
        assert not result.too_late
        got += [(m.event_ids, m.completed_by) for m in result.matches]
        stored = result.new_stored
    # found by the replay of the late 'b1' (the newest is 'c', at 21), which is the match's last event
    assert got == [({"s0": ("a",), "s1": ("b1",)}, "event")]
    assert matcher.process(stored, {"event_id": "x", "type": "a", "ts": 5, "amount": 0}, 5).too_late
    # once event time has passed the newest event, nothing can be late any more: the state goes
    assert matcher.on_timer(stored, 100).new_stored is None


# ------------------------------------------------------------------------------------------ compact states


def _outcome(result: Any) -> tuple[Any, ...]:
    matches = [(m.event_ids, m.start_ts, m.end_ts, m.completed_by) for m in result.matches]
    return matches, result.wakeup, result.overflow, result.too_late, as_list(result.new_stored)


#: what the call-for-call (lockstep) properties below draw besides the pattern: longer streams, spread out,
#: against small buffers (so that they overflow) and lateness
LOCKSTEP: dict[str, Any] = {
    "data": st.data(),
    "events": streams(max_events=30, max_step=12),
    "lateness": st.integers(1, 12),
    "max_buffer": st.integers(1, 6),
}


@settings(max_examples=300, deadline=None)
@given(spec=st.booleans().flatmap(lambda step_free: patterns(step_free=step_free)), **LOCKSTEP)
def test_a_compact_idle_state_changes_nothing(
    data: st.DataObject, spec: PatternSpec, events: list[dict[str, Any]], lateness: int, max_buffer: int
) -> None:
    """The matcher keeps an idle state as a tuple and feeds it in order without its list: call for call, it
    gives what the list path gives from the same state (matches, deadline, overflow, the state itself), with
    events in and out of order, too late, past a small buffer, pruned, kept as places or not at all (step-free
    conditions), and timers in between."""
    arrivals = shuffled(data.draw, events, lateness)
    compact = PatternMatcher(spec, lateness=lateness, max_buffer=max_buffer)
    listed = PatternMatcher(spec, lateness=lateness, max_buffer=max_buffer)
    a: Any = None
    b: Any = None
    for e in arrivals:
        if data.draw(st.booleans(), label="timer first"):
            at = e["ts"] - data.draw(st.integers(0, lateness), label="timer lag")
            ra, rb = compact.on_timer(a, at), listed.on_timer(as_list(b), at)
            assert _outcome(ra) == _outcome(rb)
            a, b = ra.new_stored, rb.new_stored
        ra = compact.process(a, e, e["ts"])
        rb = listed.process(as_list(b), e, e["ts"])  # (a list: the list path, which may compact at its end)
        assert _outcome(ra) == _outcome(rb)
        a, b = ra.new_stored, rb.new_stored
    ra, rb = compact.on_timer(a, INF // 2), listed.on_timer(as_list(b), INF // 2)
    assert _outcome(ra) == _outcome(rb)
    assert ra.new_stored is None


def test_an_idle_state_is_compact_and_counts_nothing() -> None:
    matcher = _a_then_strict_b()
    stored = matcher.process(None, {"event_id": "e0", "type": "c", "ts": 100}, 100).new_stored
    assert stored == (100, 1, -(1 << 62), 100)  # newest, seq, watermark, the 'c' as a place (its time)
    stored = matcher.process(stored, {"event_id": "e1", "type": "b", "ts": 103}, 103).new_stored
    assert type(stored) is tuple and stored[:2] == (103, 2) and stored[3] == 100 and stored[4][:2] == (103, 1)
    assert PatternMatcher.overflow(stored) == 0 and PatternMatcher.too_late(stored) == 0
    # an 'a' starts a partial match: the list again, which the next idle exit compacts
    started = matcher.process(stored, {"event_id": "e2", "type": "a", "ts": 104}, 104).new_stored
    assert type(started) is list and len(started[0]) == 1
    # too late: counted, so the state stays a list
    late = matcher.process(stored, {"event_id": "e3", "type": "b", "ts": 50}, 50)
    assert late.too_late and type(late.new_stored) is list and PatternMatcher.too_late(late.new_stored) == 1


def _places_as_times(stored: Any) -> Any:
    """``stored`` (list layout) with every buffered place, a tuple or a time, as its time."""
    st_ = as_list(stored)
    if st_ is None:
        return None
    st_ = list(st_)
    st_[6] = [e if type(e) is int else e[0] if e[3] is None and not e[2] else e for e in st_[6]]
    return st_


def _as_layout_2(stored: Any, seq: int) -> Any:
    """``stored`` as layouts 1 and 2 wrote it, when its only place written as a time is the event just fed, of
    arrival number ``seq``: that place as a tuple ``(ts, seq, False, None)``."""

    def entry(e: Any) -> Any:
        return (e, seq, False, None) if type(e) is int else e

    if type(stored) is tuple:
        return (*stored[:3], *(entry(e) for e in stored[3:]))
    if type(stored) is list:
        older = list(stored)
        older[6] = [entry(e) for e in stored[6]]
        return older
    return stored


def _seq(stored: Any) -> int:
    """The arrival number the next event gets."""
    return 0 if stored is None else int(stored[1] if type(stored) is tuple else stored[2])


@settings(max_examples=300, deadline=None)
@given(spec=patterns(step_free=True), **LOCKSTEP)
def test_places_of_an_older_layout_are_read_as_their_times(
    data: st.DataObject, spec: PatternSpec, events: list[dict[str, Any]], lateness: int, max_buffer: int
) -> None:
    """Layout 3 keeps a place (an event that arrived in order and no condition holds for) as its time alone;
    layouts 1 and 2 kept ``(ts, seq, False, None)``. A state restored from them, here every state rewritten
    so after every call, gives call for call what the state of this layout gives: the same matches, deadline,
    overflow and too-late verdict, the same state but for the places' form (with events late, too late, past
    a small buffer, pruned, and timers in between)."""
    arrivals = shuffled(data.draw, events, lateness + 3)
    matcher = PatternMatcher(spec, lateness=lateness, max_buffer=max_buffer)
    a: Any = None
    b: Any = None

    def same(ra: Any, rb: Any) -> None:
        assert _outcome(ra)[:4] == _outcome(rb)[:4]
        assert _places_as_times(ra.new_stored) == _places_as_times(rb.new_stored)

    for e in arrivals:
        if data.draw(st.booleans(), label="timer first"):
            at = e["ts"] - data.draw(st.integers(0, lateness), label="timer lag")
            ra, rb = matcher.on_timer(a, at), matcher.on_timer(b, at)
            same(ra, rb)
            a, b = ra.new_stored, rb.new_stored  # (a timer buffers nothing)
        seq = _seq(b)
        ra, rb = matcher.process(a, e, e["ts"]), matcher.process(b, e, e["ts"])
        same(ra, rb)
        a, b = ra.new_stored, _as_layout_2(rb.new_stored, seq)
    ra, rb = matcher.on_timer(a, INF // 2), matcher.on_timer(b, INF // 2)
    same(ra, rb)
    assert ra.new_stored is None and rb.new_stored is None
