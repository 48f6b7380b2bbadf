"""Property tests of riskctl.core.features against brute-force references over random event streams.

Streams arrive out of order: each event is up to `lateness` older than the newest one so far, and some are
far older (too late). The windowed reference keeps every event and filters the exact window; the one
documented approximation (a folded event counts from its bucket's start) is applied through the folding
frontier read from the stored state, so with a large `raw_cap` the reference is plain exact and with a small
one it checks the bucketed contract exactly.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from riskctl.core.features import FeatureSpec, compile_feature

T0 = 1_700_000_000_000
SETTINGS = settings(max_examples=50, deadline=None)


def is_pay(event: Any) -> bool:
    return event["type"] == "pay"


@st.composite
def streams(draw: st.DrawFn, max_len: int = 50) -> tuple[int, int, list[tuple[int, dict[str, Any]]]]:
    """(window, lateness, [(ts, event)]) in arrival order."""
    window = draw(st.sampled_from([1000, 3000, 10_000]))
    lateness = draw(st.sampled_from([0, 500, 4000]))
    n = draw(st.integers(1, max_len))
    base = T0
    events = []
    for i in range(n):
        base += draw(st.integers(0, 1500))
        late = draw(st.integers(0, lateness))
        if draw(st.integers(0, 19)) == 0:
            late = draw(st.integers(0, 3 * (window + lateness)))  # too late: older than everything kept
        event = {
            "event_id": f"e{i}",
            "type": draw(st.sampled_from(["pay", "pay", "login"])),
            "amount": draw(st.one_of(st.integers(-50, 500), st.none())),
            "device_id": draw(st.sampled_from(["a", "b", "c", "d", "e"])),
        }
        events.append((base - late, event))
    return window, lateness, events


def aggregate(kind: str, values: list[Any]) -> Any:
    if kind == "count":
        return len(values)
    if kind == "sum":
        return sum(values)
    if kind == "distinct_count":
        return len(set(values))
    if not values:
        return None
    if kind == "avg":
        return sum(values) / len(values)
    return min(values) if kind == "min" else max(values)


@settings(max_examples=120, deadline=None)  # the main contract: more examples
@given(
    stream=streams(),
    kind=st.sampled_from(["count", "sum", "avg", "min", "max", "distinct_count"]),
    granularity=st.sampled_from([None, 100, 700]),
    raw_cap=st.sampled_from([1, 3, 10_000]),
    filtered=st.booleans(),
)
def test_windowed_matches_brute_force(
    stream: tuple[int, int, list[tuple[int, dict[str, Any]]]],
    kind: str,
    granularity: int | None,
    raw_cap: int,
    filtered: bool,
) -> None:
    window, lateness, events = stream
    field = {"count": None, "distinct_count": "device_id"}.get(kind, "amount")
    flt = {"filter": is_pay, "filter_text": "type == 'pay'"} if filtered else {}
    spec = FeatureSpec(kind, field=field, window=window, granularity=granularity, **flt)
    g = spec.effective_granularity
    feature = compile_feature(spec, lateness=lateness, raw_cap=raw_cap)
    horizon = window + lateness
    recorded: list[tuple[int, Any]] = []
    newest: int | None = None
    stored = None
    for ts, event in events:
        if stored is None:  # an emptied state forgets everything, the newest ts included
            recorded, newest = [], None
        frontier = stored[1] if stored is not None else None

        def eff(t: int, frontier: int | None = frontier) -> int:
            return t if frontier is None or t >= frontier else t // g * g

        value_in = event.get(field) if field else True
        rec = (not filtered or is_pay(event)) and value_in is not None
        kept = [(t, v) for t, v in recorded if newest is None or eff(t) > newest - horizon]
        if rec:
            kept.append((ts, value_in))
        expect = aggregate(kind, [v for t, v in kept if ts - window < eff(t) <= ts])
        value, stored = feature.evaluate(stored, event, ts)
        if kind == "avg" and expect is not None:
            assert abs(value - expect) < 1e-9 * max(1.0, abs(expect))
        else:
            assert value == expect, (ts - T0, kept, frontier)
        if rec:
            recorded.append((ts, value_in))
            newest = ts if newest is None else max(newest, ts)
    if stored is not None:
        assert len(stored[2]) <= raw_cap
        assert len(stored[4]) <= horizon // g + 2
        assert feature.expire(stored, feature.next_cleanup(stored)) is None  # type: ignore[arg-type]


@SETTINGS
@given(
    stream=streams(),
    stat=st.sampled_from(["avg_interval", "avg", "sum", "min", "max"]),
    n=st.integers(2, 6),
    data=st.data(),
)
def test_last_n_matches_model(
    stream: tuple[int, int, list[tuple[int, dict[str, Any]]]], stat: str, n: int, data: st.DataObject
) -> None:
    window, lateness, events = stream
    min_events = data.draw(st.integers(2 if stat == "avg_interval" else 1, n))
    field = None if stat == "avg_interval" else "amount"
    spec = FeatureSpec("last_n", n=n, stat=stat, field=field, window=window, min_events=min_events)
    feature = compile_feature(spec, lateness=lateness)
    kept: list[tuple[int, int, Any]] = []  # (ts, arrival, value): the n newest by ts, minus the expired
    stored = None
    for i, (ts, event) in enumerate(events):
        v = event["amount"]
        rec = field is None or v is not None
        if rec:
            kept = sorted([*kept, (ts, i, v)])[-n:]
        sel = [e for e in kept if ts - window < e[0] <= ts][-n:]
        if len(sel) < min_events:
            expect = None
        elif stat == "avg_interval":
            expect = (sel[-1][0] - sel[0][0]) / (len(sel) - 1)
        else:
            expect = aggregate(stat, [e[2] for e in sel])
        value, stored = feature.evaluate(stored, event, ts)
        assert value == expect or abs(value - expect) < 1e-9 * max(1.0, abs(expect))
        if rec:
            newest = max(e[0] for e in kept)
            kept = [e for e in kept if e[0] > newest - window - lateness]


@SETTINGS
@given(stream=streams(), filtered=st.booleans())
def test_first_seen_matches_brute_force(
    stream: tuple[int, int, list[tuple[int, dict[str, Any]]]], filtered: bool
) -> None:
    window, lateness, events = stream
    flt = {"filter": is_pay, "filter_text": "type == 'pay'"} if filtered else {}
    feature = compile_feature(
        FeatureSpec("first_seen", field="device_id", window=window, **flt), lateness=lateness
    )
    history: list[tuple[int, str]] = []
    stored = None
    for ts, event in events:
        dev = event["device_id"]
        seen_at = [t for t, d in history if d == dev]
        value, stored = feature.evaluate(stored, event, ts)
        if seen_at and min(seen_at) <= ts - window and max(seen_at) > ts:
            assert value is False  # documented: first seen long before, seen again after: not new
        else:
            assert value is (not any(ts - window < t <= ts for t in seen_at))
        if not filtered or is_pay(event):
            history.append((ts, dev))


@SETTINGS
@given(stream=streams(), filtered=st.booleans())
def test_time_since_matches_model(
    stream: tuple[int, int, list[tuple[int, dict[str, Any]]]], filtered: bool
) -> None:
    window, lateness, events = stream
    flt = {"filter": is_pay, "filter_text": "type == 'pay'"} if filtered else {}
    feature = compile_feature(FeatureSpec("time_since", window=window, **flt), lateness=lateness)
    kept: list[int] = []  # the 4 newest recorded ts, minus the expired
    everything: list[int] = []
    stored = None
    for ts, event in events:
        before = [t for t in kept if t <= ts]
        expect = ts - max(before) if before and max(before) > ts - window else None
        value, stored = feature.evaluate(stored, event, ts)
        assert value == expect
        exact = [t for t in everything if ts - window < t <= ts]
        within_lateness = not everything or ts >= max(everything) - lateness
        if within_lateness and len([t for t in everything if t > ts]) < 4:  # documented: exact here
            assert value == (ts - max(exact) if exact else None)
        if not filtered or is_pay(event):
            everything.append(ts)
            kept = sorted([*kept, ts])[-4:]
            kept = [t for t in kept if t > kept[-1] - window - lateness]
