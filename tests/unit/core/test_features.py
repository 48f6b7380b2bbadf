"""Unit tests of riskctl.core.features: specs, every kind, window edges, lateness, expiry, bounded state."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterable
from typing import Any

import pytest

from riskctl.core.errors import RuleError
from riskctl.core.features import (
    DAY,
    HOUR,
    MINUTE,
    SECOND,
    Feature,
    FeatureSpec,
    FirstSeenFeature,
    LastNFeature,
    TimeSinceFeature,
    WindowedFeature,
    compile_feature,
    default_granularity,
    stored_bytes,
)

T0 = 1_700_000_000_000  # a realistic epoch-ms origin, so pickled sizes are those of production


def run(
    feature: Feature, events: Iterable[tuple[int, dict[str, Any]]], stored: Any = None
) -> tuple[list, Any]:
    """Evaluate events in the given order; return the values and the final stored value."""
    values = []
    for ts, event in events:
        value, stored = feature.evaluate(stored, event, ts)
        values.append(value)
    return values, stored


def fails_filter(event: Any) -> bool:
    return event.get("type") == "login" and event.get("success") is False


FAILS = {"filter": fails_filter, "filter_text": "type == 'login' and not success"}


# -- FeatureSpec validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"kind": "cnt", "window": 1000}, "kind", "unknown feature kind"),
        ({"kind": "sum", "window": 1000}, "field", "needs the event field"),
        ({"kind": "count", "window": 0}, "window", "positive"),
        ({"kind": "count", "window": -5}, "window", "positive"),
        ({"kind": "count", "window": True}, "window", "positive"),
        ({"kind": "count", "window": 1.5}, "window", "positive"),
        ({"kind": "count"}, "window", "needs a window"),
        ({"kind": "count", "window": 401 * DAY}, "window", "longer than"),
        ({"kind": "sum", "field": "", "window": 1000}, "field", "non-empty"),
        ({"kind": "last_n", "stat": "avg_interval"}, "n", "needs n"),
        ({"kind": "last_n", "stat": "avg_interval", "n": 1001}, "n", "needs n"),
        ({"kind": "last_n", "stat": "avg_interval", "n": 1}, "n", "n >= 2"),
        ({"kind": "last_n", "stat": "mean", "n": 5, "field": "amount"}, "stat", "needs a stat"),
        ({"kind": "last_n", "stat": "sum", "n": 5}, "field", "needs the event field"),
        ({"kind": "last_n", "stat": "avg_interval", "n": 5, "field": "amount"}, "field", "event times only"),
        (
            {"kind": "last_n", "stat": "sum", "n": 5, "field": "a", "min_events": 6},
            "min_events",
            "from 1 to n",
        ),
        ({"kind": "last_n", "stat": "avg_interval", "n": 5, "min_events": 1}, "min_events", "from 2 to n"),
        ({"kind": "count", "window": 1000, "n": 3}, "n", "does not apply"),
        ({"kind": "first_seen", "field": "city", "granularity": 10}, "granularity", "does not apply"),
        ({"kind": "count", "window": 1000, "granularity": 2000}, "granularity", "longer than the window"),
        ({"kind": "count", "window": 1000, "granularity": 0}, "granularity", "positive"),
        ({"kind": "first_seen", "field": "city", "max_values": 0}, "max_values", "from 1 to"),
        ({"kind": "time_since", "field": "city"}, "field", "event times only"),
        ({"kind": "count", "window": 1000, "filter": fails_filter}, "filter", "go together"),
        ({"kind": "count", "window": 1000, "filter_text": "x"}, "filter", "go together"),
        ({"kind": "count", "window": 1000, "filter": "x", "filter_text": "x"}, "filter", "callable"),
        ({"kind": "first_seen"}, "field", "needs the event field"),
    ],
)
def test_spec_validation_errors(kwargs: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(RuleError) as info:
        FeatureSpec(**kwargs)
    assert info.value.field == field
    assert fragment in info.value.reason
    assert isinstance(info.value, ValueError)


def test_unknown_kind_suggests_the_closest() -> None:
    with pytest.raises(RuleError) as info:
        FeatureSpec("distinct", field="device_id", window=1000)
    assert info.value.suggestion == "distinct_count"
    assert "did you mean 'distinct_count'" in str(info.value)


def test_a_granularity_cutting_the_window_into_more_than_max_buckets_is_refused() -> None:
    # granularity: 1 with window: 400d was accepted, and a windowed feature sums its window's buckets at every
    # event: a distinct_count cost 2.2 ms per event after 30,000 events of one key, and grew with them
    with pytest.raises(RuleError) as info:
        FeatureSpec("distinct_count", field="ip", window=400 * DAY, granularity=1)
    assert info.value.field == "granularity"
    assert "more than 1,000 buckets" in info.value.reason
    assert f"at least {400 * DAY // 1000} ms" in info.value.reason
    FeatureSpec("count", window=1000 * SECOND, granularity=SECOND)  # exactly 1,000 buckets: accepted
    with pytest.raises(RuleError):
        FeatureSpec("count", window=1000 * SECOND + 1, granularity=SECOND)


def test_a_distinct_count_whose_buckets_times_max_values_exceed_the_read_budget_is_refused() -> None:
    # a distinct_count joins the values of every bucket of its window at every event: max_values: 10000 with
    # 1,000 buckets was accepted, about 10 million values per event once full (0.45 s; /tmp measurement in the
    # commit); MAX_FEATURE_READS bounds buckets x max_values at 100,000
    with pytest.raises(RuleError) as info:
        FeatureSpec(
            "distinct_count", field="ip", window=400 * DAY, granularity=400 * DAY // 1000, max_values=10_000
        )
    assert info.value.field == "max_values"
    assert "10,000,000 values" in info.value.reason and "100,000 allowed" in info.value.reason
    assert "max_values at most 100" in info.value.reason
    with pytest.raises(RuleError) as info:  # the default granularity: 60 buckets of an hour
        FeatureSpec("distinct_count", field="ip", window=HOUR, max_values=10_000)
    assert info.value.field == "max_values"
    assert "max_values at most 1,666, or a granularity of at least 360000 ms" in info.value.reason
    # the suggested values are accepted, and so is the bound itself
    assert FeatureSpec("distinct_count", field="ip", window=HOUR, max_values=1_666).reads == 99_960
    assert (
        FeatureSpec("distinct_count", field="ip", window=HOUR, granularity=360_000, max_values=10_000).reads
        == 100_000
    )
    assert (
        FeatureSpec("distinct_count", field="ip", window=1000 * SECOND, granularity=SECOND).reads == 100_000
    )
    assert FeatureSpec("first_seen", field="ip", max_values=10_000).reads == 20_000  # not multiplied


def test_the_features_of_one_rule_share_the_read_budget() -> None:
    # 32 features each at the bound read 32 times it at every event: the rule's features share it, each
    # distinct definition counted once (the engine computes it once)
    from riskctl.core.errors import RuleSetError
    from riskctl.core.rule_document import parse_rule

    def rule(n: int, same: bool = False) -> dict[str, Any]:
        feats = {
            f"f{i}": {
                "kind": "distinct_count",
                "field": "ip" if same else f"ip{i}",
                "window": "1h",
                "max_values": 1_000,
            }
            for i in range(n)
        }
        return {
            "id": "r",
            "action": "REVIEW",
            "features": feats,
            "when": " or ".join(f"{name} > 1" for name in feats),
        }

    parse_rule(rule(1))  # 60,000
    parse_rule(rule(4, same=True))  # one definition, 60,000
    with pytest.raises(RuleSetError) as info:
        parse_rule(rule(2))  # 120,000
    (err,) = info.value.errors
    assert err.field == "features"
    assert "120,000 stored values per event in all, over the 100,000 allowed" in err.reason
    assert "f0 60,000, f1 60,000" in err.reason


def test_spec_is_frozen() -> None:
    spec = FeatureSpec("count", window=1000)
    with pytest.raises(AttributeError):
        spec.window = 5  # type: ignore[misc]


def test_state_key_is_derived_from_the_definition() -> None:
    base = FeatureSpec("count", window=HOUR, **FAILS)
    same_text_other_callable = FeatureSpec(
        "count", window=HOUR, filter=lambda e: True, filter_text=FAILS["filter_text"]
    )
    assert base.state_key == same_text_other_callable.state_key
    assert base == same_text_other_callable
    assert base.state_key.startswith("count.")
    assert len(base.state_key) <= 20
    assert base.state_key == FeatureSpec("count", window=HOUR, granularity=MINUTE, **FAILS).state_key
    others = [
        FeatureSpec("count", window=2 * HOUR, **FAILS),
        FeatureSpec("count", window=HOUR),
        FeatureSpec("count", window=HOUR, filter=fails_filter, filter_text="type == 'login'"),
        FeatureSpec("count", window=HOUR, granularity=10 * SECOND, **FAILS),
        FeatureSpec("count", field="amount", window=HOUR, **FAILS),
        FeatureSpec("sum", field="amount", window=HOUR, **FAILS),
    ]
    keys = {base.state_key, *(s.state_key for s in others)}
    assert len(keys) == 1 + len(others)
    assert FeatureSpec("first_seen", field="city").state_key == (
        FeatureSpec("first_seen", field="city", window=90 * DAY, max_values=100).state_key
    )


@pytest.mark.parametrize(
    ("window", "granularity"),
    [(1, 1), (60, 1), (61, 2), (SECOND, 20), (10 * SECOND, 200), (5 * MINUTE, 5 * SECOND), (HOUR, MINUTE),
     (DAY, 30 * MINUTE), (30 * DAY, 12 * HOUR), (90 * DAY, 2 * DAY)],
)  # fmt: skip
def test_default_granularity(window: int, granularity: int) -> None:
    assert default_granularity(window) == granularity
    assert window / 60 <= granularity <= max(1, window / 24)


def test_compile_feature_picks_the_runtime() -> None:
    assert isinstance(compile_feature(FeatureSpec("avg", field="a", window=10)), WindowedFeature)
    assert isinstance(compile_feature(FeatureSpec("last_n", n=3, stat="avg_interval")), LastNFeature)
    assert isinstance(compile_feature(FeatureSpec("first_seen", field="city")), FirstSeenFeature)
    assert isinstance(compile_feature(FeatureSpec("time_since")), TimeSinceFeature)
    with pytest.raises(ValueError, match="lateness"):
        compile_feature(FeatureSpec("time_since"), lateness=-1)
    with pytest.raises(ValueError, match="raw_cap"):
        compile_feature(FeatureSpec("count", window=10), raw_cap=0)


# -- windowed aggregates ------------------------------------------------------------------------------------


def test_window_is_half_open_exactly_at_the_edge() -> None:
    f = compile_feature(FeatureSpec("count", window=10 * SECOND))
    _, st = run(f, [(T0, {})])
    # the first event is exactly 10 s old at T0 + 10 s: out; 1 ms younger: in
    assert f.evaluate(copy.deepcopy(st), {}, T0 + 10 * SECOND - 1)[0] == 2
    assert f.evaluate(copy.deepcopy(st), {}, T0 + 10 * SECOND)[0] == 1
    assert f.evaluate(copy.deepcopy(st), {}, T0 + 10 * SECOND + 1)[0] == 1


def test_window_edge_holds_after_folding_for_bucket_aligned_events() -> None:
    f = compile_feature(FeatureSpec("count", window=10 * SECOND, granularity=SECOND), raw_cap=2)
    _, st = run(f, [(T0 + i * SECOND, {}) for i in range(5)])  # T0 is a whole second
    assert st[2] == [T0 + 3 * SECOND, T0 + 4 * SECOND]  # two raw, three folded one per bucket
    assert f.evaluate(copy.deepcopy(st), {}, T0 + 10 * SECOND - 1)[0] == 6
    assert f.evaluate(copy.deepcopy(st), {}, T0 + 10 * SECOND)[0] == 5


def test_folded_event_leaves_the_window_at_its_bucket_start() -> None:
    f = compile_feature(FeatureSpec("count", window=10 * SECOND, granularity=SECOND), raw_cap=1)
    _, st = run(f, [(T0 + 700, {}), (T0 + 5 * SECOND, {})])  # the first is folded into bucket [T0, T0+1s)
    assert st[1] == T0 + SECOND  # folding frontier
    assert f.evaluate(copy.deepcopy(st), {}, T0 + 10 * SECOND - 1)[0] == 3
    # exact would still count it until T0 + 10.7 s: it leaves up to granularity - 1 ms early
    assert f.evaluate(copy.deepcopy(st), {}, T0 + 10 * SECOND)[0] == 2


def test_empty_and_single_event_windows() -> None:
    kinds = {"count": 0, "sum": 0, "avg": None, "min": None, "max": None, "distinct_count": 0}
    for kind, empty in kinds.items():
        field = None if kind == "count" else "amount"
        f = compile_feature(FeatureSpec(kind, field=field, window=MINUTE, **FAILS))
        value, st = f.evaluate(None, {"type": "order", "amount": 7}, T0)
        assert (value, st) == (empty, None), kind
        value, st = f.evaluate(None, {"type": "login", "success": False, "amount": 7}, T0)
        assert value == (1 if kind in ("count", "distinct_count") else 7), kind
        assert isinstance(value, float) if kind == "avg" else True
        # the single event is gone a window later; the state is still there until pruned or expired
        value, st = f.evaluate(st, {"type": "order"}, T0 + MINUTE)
        assert value == empty, kind


def test_every_windowed_kind() -> None:
    amounts = [(0, 30, "a"), (1000, 10, "b"), (2000, 50, "a"), (3000, 20, "c"), (4000, 40, "b")]
    events = [(T0 + t, {"amount": amt, "device_id": dev}) for t, amt, dev in amounts]
    expect = {
        ("count", None): [1, 2, 3, 3, 3],
        ("sum", "amount"): [30, 40, 90, 80, 110],
        ("avg", "amount"): [30.0, 20.0, 30.0, 80 / 3, 110 / 3],
        ("min", "amount"): [30, 10, 10, 10, 20],
        ("max", "amount"): [30, 30, 50, 50, 50],
        ("distinct_count", "device_id"): [1, 2, 2, 3, 3],
    }
    for (kind, field), values in expect.items():
        f = compile_feature(FeatureSpec(kind, field=field, window=2500))
        got, _ = run(f, events)
        assert got == pytest.approx(values), kind


def test_value_at_reads_without_recording() -> None:
    f = compile_feature(FeatureSpec("sum", field="amount", window=10 * SECOND), lateness=5 * SECOND)
    assert isinstance(f, WindowedFeature)
    assert f.value_at(None, T0) == 0
    _, st = run(
        f, [(T0, {"amount": 1}), (T0 + 4 * SECOND, {"amount": 10}), (T0 + 8 * SECOND, {"amount": 100})]
    )
    before = copy.deepcopy(st)
    assert f.value_at(st, T0 + 4 * SECOND) == 11
    assert f.value_at(st, T0 + 10 * SECOND) == 110
    assert f.value_at(st, T0 + 8 * SECOND) == f.evaluate(copy.deepcopy(st), {}, T0 + 8 * SECOND)[0] == 111
    assert st == before


def test_filter_decides_what_is_recorded_not_who_gets_a_value() -> None:
    f = compile_feature(FeatureSpec("count", window=HOUR, **FAILS))
    fail = {"type": "login", "success": False}
    ok = {"type": "login", "success": True}
    values, st = run(f, [(T0, fail), (T0 + 1, ok), (T0 + 2, fail), (T0 + 3, {"type": "order"}), (T0 + 4, ok)])
    assert values == [1, 1, 2, 2, 2]
    assert st[2] == [T0, T0 + 2]


def test_missing_or_unusable_field_is_not_recorded() -> None:
    f = compile_feature(FeatureSpec("sum", field="amount", window=HOUR))
    events = [
        {"amount": 5},
        {},
        {"amount": None},
        {"amount": "abc"},
        {"amount": float("nan")},
        {"amount": True},
    ]
    values, st = run(f, [(T0 + i, e) for i, e in enumerate(events)])
    assert values == [5] * 6
    assert st[3] == [5]
    counted = compile_feature(FeatureSpec("count", field="device_id", window=HOUR))
    values, _ = run(counted, [(T0, {"device_id": "d"}), (T0 + 1, {}), (T0 + 2, {"device_id": "e"})])
    assert values == [1, 1, 2]


def test_late_event_lands_in_order_and_sees_only_its_past() -> None:
    f = compile_feature(FeatureSpec("sum", field="amount", window=10 * SECOND), lateness=5 * SECOND)
    values, st = run(
        f,
        [
            (T0, {"amount": 1}),
            (T0 + 8 * SECOND, {"amount": 100}),
            (T0 + 4 * SECOND, {"amount": 10}),  # late: sees T0 and itself, not the later T0 + 8 s
            (T0 + 12 * SECOND, {"amount": 1000}),  # sees the late one (T0 + 4 s), not T0
        ],
    )
    assert values == [1, 101, 11, 1110]
    # T0 is kept: window + lateness (15 s) behind the newest, a late event at T0 + 7 s may still need it
    assert st[2] == [T0, T0 + 4 * SECOND, T0 + 8 * SECOND, T0 + 12 * SECOND]


def test_late_event_lands_in_its_folded_bucket() -> None:
    spec = FeatureSpec("sum", field="amount", window=10 * SECOND, granularity=SECOND)
    f = compile_feature(spec, lateness=10 * SECOND, raw_cap=2)
    _, st = run(f, [(T0 + i * SECOND + 100, {"amount": 1}) for i in range(6)])
    assert st[1] == T0 + 4 * SECOND and st[4] == [(T0 + i * SECOND) // SECOND for i in range(4)]
    value, st = f.evaluate(st, {"amount": 1000}, T0 + 2 * SECOND + 900)  # late, into bucket T0 + 2 s
    assert st[4][2] == (T0 + 2 * SECOND) // SECOND and st[5][2] == 1001
    # its own value: buckets T0 .. T0+2s, all counted from their starts (<= its ts)
    assert value == 1003
    # a late event into a bucket that does not exist any more creates it, in order
    _, st = run(f, [(T0 + 9 * SECOND, {"amount": 1})], st)
    value, st = f.evaluate(st, {"amount": 7}, T0 - 3 * SECOND)
    assert value == 7 and st[4][0] == (T0 - 3 * SECOND) // SECOND


def test_event_older_than_everything_kept_gets_a_value_but_is_not_kept() -> None:
    f = compile_feature(FeatureSpec("sum", field="amount", window=10 * SECOND), lateness=SECOND)
    _, st = run(f, [(T0, {"amount": 1}), (T0 + 20 * SECOND, {"amount": 2})])
    assert st[2] == [T0 + 20 * SECOND]
    value, st = f.evaluate(st, {"amount": 50}, T0 + 5 * SECOND)  # 15 s late with 1 s allowed
    assert value == 50  # itself, plus what is left in its window (nothing: T0 was dropped)
    assert st[2] == [T0 + 20 * SECOND]
    value, st = f.evaluate(st, {"amount": 5}, T0 + 9 * SECOND)  # exactly window + lateness late: dropped
    assert value == 5 and st[2] == [T0 + 20 * SECOND]
    value, st = f.evaluate(st, {"amount": 5}, T0 + 9 * SECOND + 1)  # 1 ms younger: kept
    assert value == 5 and st[2] == [T0 + 9 * SECOND + 1, T0 + 20 * SECOND]


def test_expire_and_next_cleanup_free_everything_after_the_horizon() -> None:
    spec = FeatureSpec("avg", field="amount", window=MINUTE)
    horizon = MINUTE + 10 * SECOND
    f = compile_feature(spec, lateness=10 * SECOND)
    _, st = run(f, [(T0, {"amount": 1}), (T0 + 30 * SECOND, {"amount": 2})])
    assert f.next_cleanup(st) == T0 + 30 * SECOND + horizon
    assert f.next_cleanup(None) is None
    kept = f.expire(st, T0 + 30 * SECOND + horizon - 1)
    assert kept is not None and kept[2] == [T0 + 30 * SECOND] and kept[3] == [2]
    assert f.expire(kept, T0 + 30 * SECOND + horizon) is None
    assert f.expire(None, T0) is None
    # folded: 10 events per 1 s bucket with room for 4 raw ones, so even the newest bucket is folded
    folded = compile_feature(spec, lateness=10 * SECOND, raw_cap=4)
    _, st = run(folded, [(T0 + i * 100, {"amount": i}) for i in range(50)])
    newest = T0 + 49 * 100
    assert st[2] == [] and st[4] == [(T0 + i * SECOND) // SECOND for i in range(5)]
    assert folded.next_cleanup(st) == newest + horizon
    kept = folded.expire(st, T0 + 4 * SECOND + horizon - 1)  # the newest bucket starts at T0 + 4 s
    assert kept is not None and kept[4] == [(T0 + 4 * SECOND) // SECOND] and kept[5] == [445]
    assert folded.expire(kept, T0 + 4 * SECOND + horizon) is None
    # an idle user comes back after the TTL: features start from zero
    value, st = f.evaluate(None, {"amount": 3}, newest + DAY)
    assert value == 3.0


def test_evaluate_prunes_as_time_advances() -> None:
    f = compile_feature(FeatureSpec("count", window=MINUTE))
    _, st = run(f, [(T0 + i * SECOND, {}) for i in range(30)])
    _, st = run(f, [(T0 + 10 * MINUTE, {})], st)
    assert st[2] == [T0 + 10 * MINUTE]


@pytest.mark.parametrize("kind", ["count", "sum", "avg", "min", "max", "distinct_count"])
def test_state_stays_bounded_under_a_high_event_rate(kind: str) -> None:
    window = 5 * MINUTE
    spec = FeatureSpec(kind, field=None if kind == "count" else "amount", window=window)
    f = compile_feature(spec, lateness=5 * SECOND)
    g = spec.effective_granularity
    st = None
    sizes = []
    ts = T0
    for i in range(60_000):  # 100 events/s for 10 minutes
        ts = T0 + i * 10
        value, st = f.evaluate(st, {"amount": i % 7}, ts)
        if i % 5000 == 4999:
            sizes.append(stored_bytes(st))
    assert len(st[2]) <= 64
    assert len(st[4]) <= (window + 5 * SECOND) // g + 2
    assert max(sizes) < 4000
    assert max(sizes[7:]) - min(sizes[7:]) < 100  # flat once window + lateness is full
    if kind == "count":
        # folded events leave up to one bucket early: between the counts of (ts - W + g, ts] and (ts - W, ts]
        assert (window - g) // 10 <= value <= window // 10


def test_distinct_count_bucket_cap_is_enforced() -> None:
    spec = FeatureSpec("distinct_count", field="ip", window=MINUTE, granularity=MINUTE // 2, max_values=3)
    f = compile_feature(spec, raw_cap=1)
    values, st = run(f, [(T0 + i, {"ip": f"10.0.0.{i}"}) for i in range(10)])
    # the first fold takes the whole 30 s bucket, later events go straight into it; it keeps 3 values
    assert values == [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]
    assert st[2] == []
    assert all(len(vals) <= 3 for vals in st[5])


def test_stored_state_is_plain_data_that_survives_pickling() -> None:
    f = compile_feature(FeatureSpec("distinct_count", field="city", window=MINUTE), raw_cap=3)
    events = [(T0 + i * 700, {"city": f"c{i % 5}"}) for i in range(40)]
    expected, _ = run(f, events)
    st = None
    got = []
    for ts, event in events:
        value, st = f.evaluate(st, event, ts)
        st = pickle.loads(pickle.dumps(st))  # what the Flink MapState does between events
        got.append(value)
    assert got == expected


# -- last_n -------------------------------------------------------------------------------------------------


def test_last_n_avg_interval_bot_cadence() -> None:
    f = compile_feature(FeatureSpec("last_n", n=10, stat="avg_interval"))
    values, st = run(f, [(T0 + i * 500, {"type": "order"}) for i in range(12)])
    assert values[:9] == [None] * 9  # fewer than 10 operations: no cadence yet
    assert values[9:] == [500.0, 500.0, 500.0]
    assert len(st[0]) == 10 and st[1] is None
    value, _ = f.evaluate(st, {}, T0 + 14_500)  # one slow step: the last 10 span T0 + 1.5 s .. T0 + 14.5 s
    assert value == pytest.approx(13_000 / 9)


def test_last_n_min_events_and_partial_windows() -> None:
    f = compile_feature(FeatureSpec("last_n", n=10, stat="avg_interval", min_events=2))
    values, _ = run(f, [(T0, {}), (T0 + 300, {}), (T0 + 900, {})])
    assert values == [None, 300.0, 450.0]


def test_last_n_field_stats() -> None:
    for stat, expect in {
        "sum": [5, 8, 10, 6],
        "avg": [5, 4, 10 / 3, 2],
        "min": [5, 3, 2, 1],
        "max": [5, 5, 5, 3],
    }.items():
        f = compile_feature(FeatureSpec("last_n", n=3, stat=stat, field="amount", min_events=1))
        values, _ = run(f, [(T0 + i, {"amount": a}) for i, a in enumerate([5, 3, 2, 1])])
        assert values == pytest.approx(expect), stat


def test_last_n_filter_horizon_and_expiry() -> None:
    spec = FeatureSpec("last_n", n=3, stat="sum", field="amount", window=HOUR, min_events=1, **FAILS)
    f = compile_feature(spec)
    fail = {"type": "login", "success": False, "amount": 1}
    values, st = run(f, [(T0, fail), (T0 + 1, {"type": "order", "amount": 50}), (T0 + HOUR, fail)])
    assert values == [1, 1, 1]  # the order is not recorded; the first fail is exactly an hour old at T0 + 1 h
    assert f.next_cleanup(st) == T0 + 2 * HOUR
    assert f.expire(st, T0 + 2 * HOUR - 1) is not None
    assert f.expire(st, T0 + 2 * HOUR) is None
    assert f.evaluate(None, {"type": "order"}, T0) == (None, None)


def test_last_n_late_event() -> None:
    f = compile_feature(FeatureSpec("last_n", n=3, stat="avg_interval", min_events=2), lateness=MINUTE)
    values, st = run(f, [(T0, {}), (T0 + 1000, {}), (T0 + 4000, {}), (T0 + 2000, {})])
    assert values == [None, 1000.0, 2000.0, 1000.0]  # the late one sees T0, T0 + 1 s and itself
    assert st[0] == [T0 + 1000, T0 + 2000, T0 + 4000]


# -- first_seen ---------------------------------------------------------------------------------------------


def test_first_seen_new_city_then_known_city() -> None:
    f = compile_feature(FeatureSpec("first_seen", field="city", window=90 * DAY))
    values, st = run(
        f,
        [
            (T0, {"city": "Paris"}),
            (T0 + HOUR, {"city": "Paris"}),
            (T0 + 2 * HOUR, {"city": "Lyon"}),
            (T0 + 3 * HOUR, {}),
            (T0 + 90 * DAY + 2 * HOUR - 1, {"city": "Lyon"}),  # 1 ms inside the horizon
            (T0 + 180 * DAY + 2 * HOUR - 1, {"city": "Lyon"}),  # exactly 90 days after the last sighting
        ],
    )
    assert values == [True, False, True, None, False, True]
    assert set(st[1]) == {"Paris", "Lyon"}


def test_first_seen_filter_late_events_and_cap() -> None:
    spec = FeatureSpec("first_seen", field="device_id", window=DAY, max_values=2, filter=fails_filter,
                       filter_text="failed logins")  # fmt: skip
    f = compile_feature(spec, lateness=HOUR)
    fail = {"type": "login", "success": False}
    values, st = run(
        f,
        [
            (T0, {**fail, "device_id": "a"}),
            (T0 + 10, {"type": "order", "device_id": "b"}),  # gets a value, not recorded
            (T0 + 20, {**fail, "device_id": "b"}),
            (T0 + 15, {**fail, "device_id": "b"}),  # late: b was only seen after it -> new
            (T0 + 30, {**fail, "device_id": "c"}),  # third value: evicts the least recently seen, a
            (T0 + 40, {**fail, "device_id": "a"}),
        ],
    )
    assert values == [True, True, True, True, True, True]
    assert st[1] == {"c": (T0 + 30, T0 + 30), "a": (T0 + 40, T0 + 40)}
    assert f.next_cleanup(st) == T0 + 40 + DAY + HOUR
    assert f.expire(st, T0 + 40 + DAY + HOUR - 1) == [T0 + 40, {"a": (T0 + 40, T0 + 40)}]
    assert f.expire(st, T0 + 40 + DAY + HOUR) is None


def test_first_seen_late_event_between_two_sightings() -> None:
    f = compile_feature(FeatureSpec("first_seen", field="city", window=HOUR), lateness=HOUR)
    _, st = run(f, [(T0, {"city": "X"}), (T0 + 2 * HOUR, {"city": "X"})])
    value, st = f.evaluate(st, {"city": "X"}, T0 + 30 * MINUTE)
    assert value is False  # first sighting 30 min before it, within the hour
    value, st = f.evaluate(st, {"city": "X"}, T0 + 90 * MINUTE + 1)
    assert value is False  # seen at T0 + 30 min (1 h + 1 ms before: out) ... but also after: counted as seen


# -- time_since ---------------------------------------------------------------------------------------------


def test_time_since_previous_matching_event() -> None:
    spec = FeatureSpec("time_since", window=HOUR, filter=lambda e: e["type"] == "register", filter_text="reg")
    f = compile_feature(spec)
    values, st = run(
        f,
        [
            (T0, {"type": "order"}),
            (T0 + 1000, {"type": "register"}),
            (T0 + 3500, {"type": "order"}),
            (T0 + 3500, {"type": "register"}),
            (T0 + 3500, {"type": "order"}),  # same ms as the register before it: 0
            (T0 + 3500 + HOUR, {"type": "order"}),  # exactly the horizon: too old
            (T0 + 3499 + HOUR, {"type": "order"}),
        ],
    )
    assert values == [None, None, 2500, 2500, 0, None, HOUR - 1]
    assert st == [T0 + 1000, T0 + 3500]
    assert f.next_cleanup(st) == T0 + 3500 + HOUR
    assert f.expire(list(st), T0 + 3500 + HOUR) is None
    assert f.expire(list(st), T0 + 1000 + HOUR) == [T0 + 3500]


def test_time_since_late_event_and_kept_timestamps() -> None:
    f = compile_feature(FeatureSpec("time_since", window=DAY), lateness=MINUTE)
    values, st = run(f, [(T0 + i * 1000, {}) for i in (0, 10, 20)] + [(T0 + 15_000, {})])
    assert values == [None, 10_000, 10_000, 5000]  # the late one measures from T0 + 10 s
    _, st = run(f, [(T0 + i * 1000, {}) for i in (30, 40, 50)], st)
    assert len(st) == 4 and st[0] == T0 + 20_000


# -- sizes --------------------------------------------------------------------------------------------------


def test_bytes_per_key_for_typical_features() -> None:
    day = [
        (T0 + i * 37 * MINUTE, {"type": "transfer", "amount": 1200 + i, "city": "Paris"}) for i in range(40)
    ]
    sizes = {}
    specs = {
        "sum 5m": FeatureSpec("sum", field="amount", window=5 * MINUTE),
        "count 1h": FeatureSpec("count", window=HOUR),
        "last_n 10": FeatureSpec("last_n", n=10, stat="avg_interval"),
        "first_seen city": FeatureSpec("first_seen", field="city"),
        "time_since": FeatureSpec("time_since"),
    }
    for name, spec in specs.items():
        _, st = run(compile_feature(spec), day)
        sizes[name] = stored_bytes(st)
    assert sizes["sum 5m"] < 80
    assert sizes["count 1h"] < 80
    assert sizes["last_n 10"] < 120
    assert sizes["first_seen city"] < 80
    assert sizes["time_since"] < 80


# -- a boolean is never a number (found in review) ----------------------------------------------------------

_HOSTILE = [True, False, 1, 1.0, 0, float("nan"), "1", None]


@pytest.mark.parametrize("kind", ["sum", "avg", "min", "max"])
def test_numeric_kinds_do_not_record_a_boolean(kind: str) -> None:
    # `true` is not 1 (nor `false` 0): an event whose field is a boolean, NaN or a string is not recorded, as
    # a missing field; docs/rules.md says so
    f = compile_feature(FeatureSpec(kind, field="amount", window=MINUTE))
    values, _ = run(
        f, [(T0 + i, {"amount": v}) for i, v in enumerate([True, False, float("nan"), "5", 3, True])]
    )
    empty = 0 if kind == "sum" else None
    assert values == [empty, empty, empty, empty, 3, 3]
    last_n = compile_feature(FeatureSpec("last_n", n=2, stat=kind, field="amount", window=MINUTE))
    values, _ = run(last_n, [(T0 + i, {"amount": v}) for i, v in enumerate([True, 3, False, 4, True])])
    assert values[-1] == {"sum": 7, "avg": 3.5, "min": 3, "max": 4}[kind]


def test_distinct_count_counts_a_boolean_apart_from_1_and_0() -> None:
    f = compile_feature(FeatureSpec("distinct_count", field="x", window=MINUTE))
    values, st = run(f, [(T0 + i, {"x": v}) for i, v in enumerate(_HOSTILE)])
    # true, false, 1 (= 1.0), 0, "1"; NaN and null are not recorded
    assert values == [1, 2, 3, 3, 4, 4, 5, 5]
    assert run(f, [(T0 + 100, {"x": 1})], stored=pickle.loads(pickle.dumps(st)))[0] == [5]


def test_first_seen_a_boolean_is_not_1_nor_0() -> None:
    f = compile_feature(FeatureSpec("first_seen", field="x", window=DAY))
    values, st = run(f, [(T0 + i, {"x": v}) for i, v in enumerate(_HOSTILE)])
    assert values == [True, True, True, False, True, None, True, None]
    assert f.peek(st, {"x": True}, T0 + 100) is False
    assert f.peek(pickle.loads(pickle.dumps(st)), {"x": 0.0}, T0 + 100) is False
