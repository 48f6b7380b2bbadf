"""Lateness means one thing: an event more than `lateness` behind its key's newest event (or behind a timer
the key has seen) is *too late*. Features do not record it, patterns ignore it, it raises no late re-check
alert, and it is still decided, with the feature values of what is stored (itself excluded), marked
``too_late``. An event within the lateness counts everywhere. See docs/engine.md, "Out-of-order events"."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskctl.core.decisions import Alert, Decision
from riskctl.core.engine import Engine
from riskctl.core.features import FeatureSpec, compile_feature
from riskctl.core.rules import load_rules_text
from riskctl.core.runner import LocalRunner
from riskctl.core.state import InMemoryKeyedState

T0 = 1_700_000_000_000
L = 5_000

RULES = """
id: big_sum
action: REVIEW
applies_to: [transfer]
features:
  total: {kind: sum, field: amount, window: 1h, filter: "event.type == 'transfer'"}
when: total >= 150
---
id: three_transfers
action: REJECT
sequence:
  within: 1m
  steps:
    - {name: t, when: "event.type == 'transfer'", times: 3}
"""


def transfer(eid: str, at_ms: int, amount: float = 50) -> dict[str, Any]:
    return {"event_id": eid, "user_id": "u", "type": "transfer", "ts": T0 + at_ms, "amount": amount}


def run(events: list[dict[str, Any]]) -> tuple[dict[str, Decision], list[Alert]]:
    runner = LocalRunner(Engine(load_rules_text(RULES), lateness=L))
    records = runner.run(events)
    decisions = {r.event_id: r for r in records if isinstance(r, Decision)}
    return decisions, [r for r in records if isinstance(r, Alert)]


def test_a_too_late_event_counts_neither_in_a_sum_nor_in_a_sequence() -> None:
    # x0 is 6 s behind x1 (lateness 5 s): in event-time order x0 x1 x2 would make a sum of 150 and a sequence
    decisions, alerts = run([transfer("x1", 10_000), transfer("x0", 4_000), transfer("x2", 11_000)])
    assert decisions["x0"].too_late and decisions["x0"].late
    assert decisions["x0"].to_dict()["too_late"] is True
    assert decisions["x2"].rules == []  # sum 100 (x0 not counted), no sequence of 3
    assert decisions["x2"].action == "PASS"
    assert alerts == []


def test_an_event_within_the_lateness_counts_in_both() -> None:
    # x0 is 4 s behind: it counts in the sum and in the sequence
    decisions, alerts = run([transfer("x1", 10_000), transfer("x0", 6_000), transfer("x2", 11_000)])
    assert decisions["x0"].late and not decisions["x0"].too_late
    fired = {h.id: h for h in decisions["x2"].rules}
    assert fired["big_sum"].evidence["features"] == {"total": 150}
    assert fired["three_transfers"].evidence["match"]["steps"] == {"t": ["x0", "x1", "x2"]}
    assert decisions["x2"].action == "REJECT"


def test_exactly_lateness_behind_is_not_too_late() -> None:
    decisions, _ = run([transfer("x1", 10_000), transfer("x0", 5_000), transfer("x2", 11_000)])
    assert not decisions["x0"].too_late
    assert decisions["x2"].action == "REJECT"


def test_a_too_late_event_raises_no_late_threshold_alert() -> None:
    # x1 alone (100) is under the threshold; x0 (100) would push it over: only if x0 is within the lateness
    late_ok = run([transfer("x1", 10_000, 100), transfer("x0", 6_000, 100)])[1]
    assert [a.reason for a in late_ok] == ["late_threshold"]
    too_late = run([transfer("x1", 110_000, 100), transfer("x0", 5_000, 100)])[1]
    assert too_late == []


def test_a_too_late_event_is_decided_with_what_is_stored_and_changes_no_state() -> None:
    engine = Engine(load_rules_text(RULES), lateness=L)
    state = InMemoryKeyedState()
    engine.process(state, transfer("a", 0, 100))
    engine.process(state, transfer("b", 60_000, 10))
    before = pickle.dumps(state.data)
    result = engine.process(state, transfer("c", 50_000, 100))  # 10 s behind b
    d = result.decision
    assert d is not None and d.too_late
    # its own value: the sum over (ts - 1h, ts] of what is stored (a), without itself: 100, not 200
    assert d.rules == []
    assert pickle.dumps(state.data) == before
    assert result.alerts == [] and engine.too_late == 1


def test_too_late_values_exclude_the_event_itself() -> None:
    rules = load_rules_text(RULES.replace("when: total >= 150", "when: total >= 0"))
    engine = Engine(rules, lateness=L)
    state = InMemoryKeyedState()
    engine.process(state, transfer("a", 0, 100))
    engine.process(state, transfer("b", 60_000, 10))
    d = engine.process(state, transfer("c", 50_000, 100)).decision
    assert d is not None and d.too_late
    assert d.rules[0].evidence["features"] == {"total": 100}


def test_behind_a_timer_the_key_has_seen_is_too_late_for_features_too() -> None:
    engine = Engine(load_rules_text(RULES), lateness=L)
    state = InMemoryKeyedState()
    engine.process(state, transfer("a", 10_000))
    engine.on_timer(state, T0 + 9_000)  # event time reached 9 s for this key (e.g. another key's watermark)
    d = engine.process(state, transfer("b", 8_000)).decision  # within 5 s of a, but behind the timer
    assert d is not None and d.too_late


def test_older_meta_without_the_timer_slot_still_works() -> None:
    engine = Engine(load_rules_text(RULES), lateness=L)
    state = InMemoryKeyedState()
    engine.process(state, transfer("a", 10_000))
    state.data["_engine"] = state.data["_engine"][:7]  # the layout before the timer slot
    d = engine.process(state, transfer("b", 6_000)).decision
    assert d is not None and d.late and not d.too_late
    engine.on_timer(state, T0 + 9_000)
    d = engine.process(state, transfer("c", 8_000)).decision
    assert d is not None and d.too_late


def test_every_feature_kind_peeks_without_recording() -> None:
    specs = [
        FeatureSpec("count", window=60_000),
        FeatureSpec("sum", field="amount", window=60_000),
        FeatureSpec("distinct_count", field="amount", window=60_000),
        FeatureSpec("last_n", field="amount", n=2, stat="sum"),
        FeatureSpec("first_seen", field="amount", window=60_000),
        FeatureSpec("time_since"),
    ]
    expected = [1, 50, 1, None, False, 1_000]  # one stored event (amount 50 at ts 0), peeked at ts 1 s
    empty = [0, 0, 0, None, True, None]  # nothing stored
    for spec, want, none in zip(specs, expected, empty, strict=True):
        feature = compile_feature(spec, lateness=L)
        _, stored = feature.evaluate(None, {"amount": 50}, 0)
        frozen = pickle.dumps(stored)
        assert feature.peek(stored, {"amount": 50}, 1_000) == want, spec.kind
        assert pickle.dumps(stored) == frozen
        assert feature.peek(None, {"amount": 50}, 1_000) == none, spec.kind


# ---------------------------------------------------------------------------------------- property
@settings(max_examples=60, deadline=None)
@given(
    delays=st.lists(
        st.tuples(st.integers(0, 20_000), st.integers(1, 9)),
        min_size=1,
        max_size=30,
    )
)
def test_features_and_patterns_count_exactly_the_events_that_are_not_too_late(
    delays: list[tuple[int, int]],
) -> None:
    """Reference model: an event is too late iff ts < (newest ts so far) - L; the sum a decision shows is the
    sum of the amounts of the not-too-late events so far with ts in (ts - window, ts], itself included unless
    it is too late; a sequence of 3 transfers fires only on not-too-late events."""
    rules = load_rules_text(RULES.replace("when: total >= 150", "when: total >= 0"))
    engine = Engine(rules, lateness=L)
    state = InMemoryKeyedState()
    window = 3_600_000
    newest: int | None = None
    kept: list[tuple[int, int]] = []
    late_ids: set[str] = set()
    matched: set[str] = set()
    t = 100_000
    for i, (back, amount) in enumerate(delays):
        t += 700
        ts = T0 + t - back  # arrival order with random delays of up to 20 s
        too_late = newest is not None and ts < newest - L
        result = engine.process(state, transfer(f"e{i}", ts - T0, amount))
        d = result.decision
        assert d is not None and d.too_late == too_late
        if not too_late:
            kept.append((ts, amount))
            newest = ts if newest is None else max(newest, ts)
        want = sum(a for s, a in kept if ts - window < s <= ts)
        hit = {h.id: h for h in d.rules + d.shadow}
        assert hit["big_sum"].evidence["features"] == {"total": want}
        if too_late:
            late_ids.add(d.event_id)
            assert "three_transfers" not in hit
        elif "three_transfers" in hit:
            matched.update(hit["three_transfers"].evidence["match"]["steps"]["t"])
        for alert in result.alerts:
            matched.update(alert.rule.evidence["match"]["steps"]["t"])
    assert not matched & late_ids  # no sequence ever took a too-late event


def test_the_late_recheck_computes_a_shared_feature_once_per_recent_event(monkeypatch: Any) -> None:
    # A late event re-checks each recent newer event against the condition rules. Each rule computed its
    # features again: N rules sharing a distinct_count at the read bound (~4.5 ms) paid N times it for each of
    # the up to 32 recent events. Now once per feature and recent event, with the same alerts.
    from riskctl.core.features import WindowedFeature

    shared = "features:\n  ips: {kind: distinct_count, field: ip, window: 1h}\n"
    text = "\n---\n".join(f"id: r{i}\naction: REVIEW\n{shared}when: ips >= {2 + i % 2}" for i in range(5))
    calls: list[int] = []
    real = WindowedFeature.value_at

    def counted(self: WindowedFeature, stored: Any, ts: int) -> Any:
        calls.append(ts)
        return real(self, stored, ts)

    monkeypatch.setattr(WindowedFeature, "value_at", counted)
    engine = Engine(load_rules_text(text), lateness=L)
    state = InMemoryKeyedState()
    for i in range(3):  # three recent events at 10 s, one ip: no rule fires
        engine.process(
            state, {"event_id": f"n{i}", "user_id": "u", "type": "login", "ts": T0 + 10_000, "ip": "a"}
        )
    result = engine.process(
        state, {"event_id": "l", "user_id": "u", "type": "login", "ts": T0 + 9_000, "ip": "b"}
    )
    assert len(calls) == 3  # once per recent event (5 rules read the feature: 15 calls before)
    # r0, r2, r4 (ips >= 2) fire late on each of the three recent events; r1, r3 (ips >= 3) do not
    assert sorted((a.rule.id, a.event_id) for a in result.alerts) == sorted(
        (f"r{i}", f"n{k}") for i in (0, 2, 4) for k in range(3)
    )


def test_a_late_events_recheck_reads_at_most_late_recheck_reads_nearest_later_events_first(
    monkeypatch: Any,
) -> None:
    # A rule whose features read MAX_FEATURE_READS values an event (accepted: 4.5 ms) was re-checked at each
    # of the up to 32 later events a late event has: 140-170 ms for one late event. The re-check now stops at
    # LATE_RECHECK_READS (twice one rule's bound): the nearest later events are re-checked, the rest counted.
    from riskctl.core.engine import LATE_RECHECK_READS, RECENT_CAP
    from riskctl.core.feature_spec import MAX_FEATURE_READS
    from riskctl.core.features import WindowedFeature

    # 100 buckets x 1,000 values: MAX_FEATURE_READS exactly
    text = (
        "id: heavy\naction: REVIEW\nfeatures:\n  ips: {kind: distinct_count, field: ip, window: 100s, "
        "granularity: 1s, max_values: 1000}\nwhen: ips >= 3\n"
    )
    rules = load_rules_text(text)
    assert rules[0].features["ips"].reads == MAX_FEATURE_READS
    calls: list[int] = []
    real = WindowedFeature.value_at

    def counted(self: WindowedFeature, stored: Any, ts: int) -> Any:
        calls.append(ts)
        return real(self, stored, ts)

    engine = Engine(rules, lateness=L)
    state = InMemoryKeyedState()
    for i in range(RECENT_CAP):  # 32 later events, one ip: the rule holds for none
        engine.process(
            state, {"event_id": f"n{i}", "user_id": "u", "type": "login", "ts": T0 + 4_000 + i, "ip": "a"}
        )
    monkeypatch.setattr(WindowedFeature, "value_at", counted)
    result = engine.process(
        state, {"event_id": "l1", "user_id": "u", "type": "login", "ts": T0 + 3_000, "ip": "b"}
    )
    per_value = MAX_FEATURE_READS + 64  # its buckets' values and the raw events a windowed kind keeps
    reached = LATE_RECHECK_READS // per_value
    assert reached == 1 and sorted(calls) == [T0 + 4_000] * reached  # the nearest first
    assert engine.rechecks_skipped == RECENT_CAP - reached
    assert result.alerts == []  # two ips: still under 3
    # a second late event with a third ip: the nearest later event newly holds, and is alerted
    result = engine.process(
        state, {"event_id": "l2", "user_id": "u", "type": "login", "ts": T0 + 3_500, "ip": "c"}
    )
    assert [(a.rule.id, a.event_id, a.reason) for a in result.alerts] == [("heavy", "n0", "late_threshold")]


def test_a_rule_out_of_late_recheck_reads_does_not_stop_the_cheaper_rules(monkeypatch: Any) -> None:
    # The re-check stopped at the first rule that did not fit its reads, so a cheap rule was not re-checked
    # at the later events beyond: its late_threshold alert was lost to another rule's cost. Now only the rule
    # that does not fit is skipped (and counted), at each later event where it does not.
    from riskctl.core.engine import LATE_RECHECK_READS, RECENT_CAP
    from riskctl.core.feature_spec import MAX_FEATURE_READS

    heavy = (
        "id: heavy\naction: REVIEW\nfeatures:\n  ips: {kind: distinct_count, field: ip, window: 100s, "
        "granularity: 1s, max_values: 1000}\nwhen: ips >= 3\n"
    )
    # the 32 later events and the late one: 33 logins in the hour, so only at the newest, once the late
    # event is known
    cheap = "id: cheap\naction: REVIEW\nfeatures:\n  n: {kind: count, window: 1h}\nwhen: n >= 33\n"
    engine = Engine(load_rules_text(heavy + "---\n" + cheap), lateness=L)
    state = InMemoryKeyedState()
    for i in range(RECENT_CAP):
        result = engine.process(
            state, {"event_id": f"n{i}", "user_id": "u", "type": "login", "ts": T0 + 4_000 + i, "ip": "a"}
        )
        assert result.decision.rules == []
    result = engine.process(
        state, {"event_id": "l1", "user_id": "u", "type": "login", "ts": T0 + 3_000, "ip": "b"}
    )
    assert [(a.rule.id, a.event_id) for a in result.alerts] == [("cheap", f"n{RECENT_CAP - 1}")]
    reached = LATE_RECHECK_READS // (MAX_FEATURE_READS + 64)  # the heavy rule's re-checks that fit
    assert engine.rechecks_skipped == RECENT_CAP - reached


def test_a_late_event_completing_a_match_as_its_last_fires_on_its_own_decision() -> None:
    """Whatever newer event made it late. A pattern replays only when an event is older than the newest one
    *it* was fed, and it is fed only the event types it reads: a late transfer completing the sequence was
    rejected after a newer page view, but passed with a late alert after a newer transfer (one the pattern
    reads). A producer could turn the REJECT into a PASS by sending such an event first."""
    first = [transfer("t1", 0), transfer("t2", 1_000)]
    for newer in (
        {"event_id": "v", "user_id": "u", "type": "page_view", "ts": T0 + 3_000},
        transfer("t4", 3_000, amount=0.5),
    ):
        decisions, alerts = run([*first, newer, transfer("t3", 2_000)])
        assert decisions["t3"].late
        assert decisions["t3"].action == "REJECT", newer["type"]
        assert "three_transfers" in [r.id for r in decisions["t3"].rules]
        assert [a.reason for a in alerts if a.rule.id == "three_transfers"] == []


def _decide_by_clock(events: list[tuple[dict[str, Any], int | None]], **engine: Any) -> list[Decision]:
    """Each event decided with the clock it arrived by (``Engine.process``'s ``clock``), one user's state."""
    eng = Engine(load_rules_text(RULES), lateness=L, **engine)
    state = InMemoryKeyedState()
    out = []
    for event, clock in events:
        decision = eng.process(state, event, clock).decision
        assert decision is not None
        out.append(decision)
    return out


def test_an_event_stamped_ahead_of_the_clock_is_taken_at_the_clock_and_blinds_nobody() -> None:
    """One event stamped 299 s ahead of the clock it arrived by: taken at the clock, so the user's next
    transfers, stamped at the real time, are in order and count. Without a clock its ts became the user's
    newest time, every next transfer was too late, and neither the sum nor the sequence saw them."""
    clock = T0 + 60_000
    forged = {"event_id": "f", "user_id": "u", "type": "page_view", "ts": clock + 299_000}
    after = [transfer(f"t{i}", 60_000 + 1_000 * (i + 1)) for i in range(3)]
    arrivals = [(forged, clock)] + [(t, t["ts"] + 50) for t in after]
    first, *rest = _decide_by_clock(arrivals)
    assert (first.ts, first.ahead_ms, first.to_dict()["ahead_ms"]) == (clock + 299_000, 299_000, 299_000)
    assert [(d.late, d.too_late, d.ahead_ms) for d in rest] == [(False, False, 0)] * 3
    assert [d.action for d in rest] == ["PASS", "PASS", "REJECT"]  # 150 by the third, three transfers
    assert sorted(r.id for r in rest[2].rules) == ["big_sum", "three_transfers"]
    blind = _decide_by_clock([(e, None) for e, _ in arrivals])[1:]  # what every event got before
    assert [(d.too_late, d.action) for d in blind] == [(True, "PASS")] * 3


def test_an_event_at_or_behind_the_clock_is_taken_at_its_own_ts() -> None:
    on_time = [transfer("a", 1_000), transfer("b", 2_000), transfer("c", 2_500)]
    clocked = _decide_by_clock([(e, e["ts"] + c) for e, c in zip(on_time, (0, 10, 60_000), strict=True)])
    plain = _decide_by_clock([(e, None) for e in on_time])
    assert [d.to_dict() for d in clocked] == [d.to_dict() for d in plain]
    assert all(d.ahead_ms == 0 for d in clocked)


def test_an_event_ahead_of_the_clock_delivered_again_later_is_still_a_duplicate() -> None:
    """The duplicate check reads the event as it was sent: a second delivery, which arrives by a later clock
    and so is taken at another time, is the first one's duplicate all the same."""
    clock = T0 + 60_000
    forged = {"event_id": "f", "user_id": "u", "type": "transfer", "amount": 200, "ts": clock + 100_000}
    first, again = _decide_by_clock(
        [(forged, clock), (forged, clock + 3_000)], dedup_window=60_000, dedup_all=True
    )
    assert (first.action, first.duplicate, again.action, again.duplicate) == ("REVIEW", False, "REVIEW", True)
    assert again.ahead_ms == 97_000 and again.to_dict()["ts"] == clock + 100_000


@settings(max_examples=60, deadline=None)
@given(
    skews=st.lists(
        st.tuples(st.integers(-20_000, 20_000), st.integers(1, 9)),
        min_size=1,
        max_size=30,
    )
)
def test_with_a_clock_each_event_counts_at_the_earlier_of_its_ts_and_its_arrival(
    skews: list[tuple[int, int]],
) -> None:
    """Reference model with a clock: events arrive 700 ms apart, each stamped up to 20 s behind or ahead of
    its arrival; an event counts at min(ts, arrival) (its time), is too late iff that time is more than L
    behind the newest time so far, and the sum a decision shows is over the times of the events kept so far;
    its decision keeps its own ts and says how far ahead of its arrival it was."""
    rules = load_rules_text(RULES.replace("when: total >= 150", "when: total >= 0"))
    engine = Engine(rules, lateness=L)
    state = InMemoryKeyedState()
    window = 3_600_000
    newest: int | None = None
    kept: list[tuple[int, int]] = []
    arrival = T0 + 100_000
    for i, (skew, amount) in enumerate(skews):
        arrival += 700
        ts = arrival + skew
        at = min(ts, arrival)
        too_late = newest is not None and at < newest - L
        d = engine.process(state, transfer(f"e{i}", ts - T0, amount), arrival).decision
        assert d is not None and (d.ts, d.ahead_ms, d.too_late) == (ts, max(skew, 0), too_late)
        if not too_late:
            kept.append((at, amount))
            newest = at if newest is None else max(newest, at)
        want = sum(a for s, a in kept if at - window < s <= at)
        assert {h.id: h for h in d.rules}["big_sum"].evidence["features"] == {"total": want}


def test_too_late_action_holds_every_too_late_event_and_nothing_else() -> None:
    """A client that stamps its transfers more than the lateness behind its own newest event keeps them out
    of every sum (too late): with too_late_action REVIEW each of them is held all the same, while the events
    in order keep their rules' action; PASS (the default) leaves them to their condition rules."""
    events = [transfer("now", 60_000, 10), *(transfer(f"back{i}", 50_000 + i, 60) for i in range(3))]
    events.append(transfer("next", 61_000, 10))

    def actions(**engine: Any) -> list[tuple[str, bool, str]]:
        runner = LocalRunner(Engine(load_rules_text(RULES), lateness=L, **engine))
        return [(d.event_id, d.too_late, d.action) for d in runner.run(events) if isinstance(d, Decision)]

    assert actions() == [("now", False, "PASS"), *((f"back{i}", True, "PASS") for i in range(3)),
                         ("next", False, "PASS")]  # fmt: skip
    assert actions(too_late_action="REVIEW") == [("now", False, "PASS"),
                                                 *((f"back{i}", True, "REVIEW") for i in range(3)),
                                                 ("next", False, "PASS")]  # fmt: skip
    assert [a for _, _, a in actions(too_late_action="REJECT")][1:4] == ["REJECT"] * 3
    with pytest.raises(ValueError, match="too_late_action must be one of PASS, REVIEW, REJECT, got 'review'"):
        Engine(too_late_action="review")
