"""The engine: one decision per event, action precedence, shadow/disabled, shared state, rule updates, timers,
TTL, late events, and running over a KeyedState that pickles every value (as Flink state does)."""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskctl.core.engine import META, Engine
from riskctl.core.errors import RuleSetError
from riskctl.core.rules import Rule, RuleSet, load_rules_text, parse_rule
from riskctl.core.runner import LocalRunner
from riskctl.core.state import InMemoryKeyedState, KeyedState
from riskctl.testing import T0, EventFactory, RuleRunner, shuffle_within

COUNT_RULE = """
id: many_logins
version: {version}
action: {action}
status: {status}
features:
  logins_1h: {{kind: count, window: {window}, filter: 'event.type == "login"'}}
when: logins_1h >= {threshold}
"""


def count_rule(
    *,
    version: int = 1,
    action: str = "REVIEW",
    status: str = "active",
    window: str = "1h",
    threshold: int = 3,
    rule_id: str = "many_logins",
) -> Rule:
    text = COUNT_RULE.format(
        version=version, action=action, status=status, window=window, threshold=threshold
    )
    (rule,) = load_rules_text(text.replace("id: many_logins", f"id: {rule_id}"))
    return rule


def simple(rule_id: str, action: str, when: str, status: str = "active", **extra: Any) -> Rule:
    return parse_rule({"id": rule_id, "action": action, "when": when, "status": status, **extra})


class PickledState:
    """A KeyedState that stores every value pickled, like Flink's MapState: unsaved mutations are lost."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, name: str) -> Any | None:
        raw = self.data.get(name)
        return None if raw is None else pickle.loads(raw)

    def put(self, name: str, value: Any) -> None:
        self.data[name] = pickle.dumps(value)

    def remove(self, name: str) -> None:
        self.data.pop(name, None)

    def names(self) -> Iterable[str]:
        return list(self.data)


def decide(engine: Engine, state: KeyedState, events: Iterable[dict[str, Any]]) -> list[str]:
    return [engine.process(state, e).decision.action for e in events]  # type: ignore[union-attr]


def test_action_precedence_and_shadow() -> None:
    rules = [
        simple("review_big", "REVIEW", "event.amount > 100", priority=1),
        simple("reject_huge", "REJECT", "event.amount > 1000", priority=2),
        simple("shadow_all", "REJECT", "event.amount > 0", status="shadow"),
        simple("off", "REJECT", "true", status="disabled"),
        simple("pass_rule", "PASS", "event.amount > 0"),
    ]
    engine = Engine(rules)
    ev = EventFactory()
    state = InMemoryKeyedState()
    small, big, huge = ev.transfer(0, amount=5), ev.transfer(1, amount=500), ev.transfer(2, amount=5000)
    d_small = engine.process(state, small).decision
    d_big = engine.process(state, big).decision
    d_huge = engine.process(state, huge).decision
    assert d_small is not None and d_big is not None and d_huge is not None
    assert d_small.action == "PASS" and [r.id for r in d_small.rules] == ["pass_rule"]
    assert d_big.action == "REVIEW"
    assert d_huge.action == "REJECT"
    assert [r.id for r in d_huge.rules] == ["reject_huge", "review_big", "pass_rule"]  # by priority
    for d in (d_small, d_big, d_huge):
        assert [r.id for r in d.shadow] == ["shadow_all"]
        assert "off" not in [r.id for r in d.rules]


def test_exactly_one_decision_per_event_even_without_rules() -> None:
    engine = Engine([])
    runner = LocalRunner(engine)
    ev = EventFactory()
    records = runner.run([ev.login(i) for i in range(5)])
    assert [r.action for r in records] == ["PASS"] * 5  # type: ignore[union-attr]


def test_rules_sharing_a_feature_definition_share_its_state() -> None:
    a = count_rule(rule_id="a", threshold=2)
    b = count_rule(rule_id="b", threshold=3, action="REJECT")
    engine = Engine([a, b])
    state = InMemoryKeyedState()
    ev = EventFactory()
    assert decide(engine, state, [ev.login(i) for i in range(3)]) == ["PASS", "REVIEW", "REJECT"]
    feature_entries = [n for n in state.names() if n != META]
    assert feature_entries == [a.features["logins_1h"].state_key]


def test_update_keeps_state_of_unchanged_features_and_starts_changed_ones_fresh() -> None:
    engine = Engine([count_rule(threshold=3)])
    state = InMemoryKeyedState()
    ev = EventFactory()
    decide(engine, state, [ev.login(0), ev.login(1)])
    # version 2: same feature, lower threshold; the two logins already counted still count
    engine.upsert_rule(count_rule(version=2, threshold=3, action="REJECT"))
    d = engine.process(state, ev.login(2)).decision
    assert d is not None and d.action == "REJECT" and d.rules[0].version == 2
    assert d.rules[0].evidence == {"features": {"logins_1h": 3}, "fields": {}}
    # version 3: the window changed, so the feature is new and counts from zero
    old_key = count_rule().features["logins_1h"].state_key
    engine.upsert_rule(count_rule(version=3, window="2h", threshold=2))
    d = engine.process(state, ev.login(3)).decision
    assert d is not None and d.action == "PASS"
    assert old_key not in state.names()  # released on this key's first event under the new rules
    assert engine.process(state, ev.login(4)).decision.action == "REVIEW"  # type: ignore[union-attr]


def test_deleted_and_disabled_rules_release_their_state_lazily() -> None:
    engine = Engine([count_rule(), simple("other", "REVIEW", "event.amount > 1")])
    ev = EventFactory()
    s1, s2 = InMemoryKeyedState(), InMemoryKeyedState()
    engine.process(s1, ev.login(0))
    engine.process(s2, EventFactory("u2").login(0))
    key = count_rule().features["logins_1h"].state_key
    assert key in s1.names() and key in s2.names()
    assert engine.delete_rule("many_logins") is True
    assert engine.delete_rule("many_logins") is False
    # nothing is touched until the key shows up again...
    assert key in s1.names()
    engine.process(s1, ev.login(5))
    assert key not in s1.names()
    # ...or one of its timers fires
    engine.on_timer(s2, T0 + 1)
    assert key not in s2.names()
    # disabling has the same effect
    engine.upsert_rule(count_rule())
    engine.process(s1, ev.login(6))
    assert key in s1.names()
    engine.upsert_rule(count_rule(version=2, status="disabled"))
    d = engine.process(s1, ev.login(7)).decision
    assert d is not None and d.rules == [] and key not in s1.names()


def test_a_bad_rule_is_refused_and_the_previous_version_keeps_running() -> None:
    engine = Engine([count_rule(threshold=1)])
    before = engine.ruleset.version
    bad = {"id": "many_logins", "version": 2, "action": "REJECT", "when": "logins_1h >= "}
    with pytest.raises(RuleSetError) as info:
        engine.upsert_rule(bad)
    (err,) = info.value.errors
    assert err.rule_id == "many_logins" and err.field == "when"
    assert engine.ruleset.version == before
    d = engine.process(InMemoryKeyedState(), EventFactory().login(0)).decision
    assert d is not None and d.action == "REVIEW" and d.rules[0].version == 1


def test_decision_carries_the_ruleset_version() -> None:
    engine = Engine([count_rule()])
    v1 = engine.ruleset.version
    d1 = engine.process(InMemoryKeyedState(), EventFactory().login(0)).decision
    engine.upsert_rule(count_rule(version=2, threshold=9))
    d2 = engine.process(InMemoryKeyedState(), EventFactory().login(0)).decision
    assert d1 is not None and d2 is not None
    assert d1.ruleset_version == v1 != d2.ruleset_version == engine.ruleset.version


ABSENCE = """
id: no_2fa
action: REVIEW
sequence:
  within: 5m
  steps:
    - {name: login, when: 'event.type == "login"'}
    - {name: no_2fa, when: 'event.type == "2fa"', absent: true}
"""


def test_absence_reports_its_timer_and_alerts_on_it() -> None:
    engine = Engine(load_rules_text(ABSENCE), state_ttl=None)
    state = PickledState()
    ev = EventFactory()
    res = engine.process(state, ev.login(0))
    deadline = T0 + 300_000
    assert deadline in res.timers
    assert engine.on_timer(state, deadline - 1).alerts == []  # too early: nothing due
    alerts = engine.on_timer(state, deadline).alerts
    assert [(a.reason, a.rule.id, a.event_id, a.user_id) for a in alerts] == [
        ("timer", "no_2fa", "u1-1", "u1")
    ]
    assert engine.on_timer(state, deadline + 1).alerts == []  # reported once


def test_absence_cancelled_by_the_awaited_event() -> None:
    run = RuleRunner(ABSENCE)
    ev = EventFactory()
    result = run.run([ev.login(0), ev.two_fa(60)])
    assert result.alerts == []


def test_state_ttl_clears_a_silent_key() -> None:
    engine = Engine([count_rule()], state_ttl=3_600_000)
    state = InMemoryKeyedState()
    res = engine.process(state, EventFactory().login(0))
    assert res.timers  # a cleanup timer, at the latest last ts + TTL
    assert max(res.timers) <= T0 + 3_600_000
    engine.on_timer(state, T0 + 3_600_000)
    assert list(state.names()) == []


def test_ttl_without_a_timer_also_starts_from_zero() -> None:
    engine = Engine([count_rule(window="7d", threshold=2)], state_ttl=3_600_000)
    state = InMemoryKeyedState()
    ev = EventFactory()
    assert decide(engine, state, [ev.login(0), ev.login(7200)]) == ["PASS", "PASS"]


def test_rule_alert_flag() -> None:
    rule = simple("big", "REVIEW", "event.amount > 10", alert=True)
    res = Engine([rule]).process(InMemoryKeyedState(), EventFactory().transfer(0, amount=11))
    assert [(a.reason, a.rule.id, a.event_id) for a in res.alerts] == [("rule_alert", "big", "u1-1")]


def test_late_event_is_flagged() -> None:
    engine = Engine([], lateness=5000)
    state = InMemoryKeyedState()
    ev = EventFactory()
    engine.process(state, ev.login(10))
    d = engine.process(state, ev.login(8)).decision
    assert d is not None and d.late is True


def test_pickling_state_gives_the_same_records_as_in_memory() -> None:
    from pathlib import Path

    from riskctl.core.rules import load_rules

    rules = load_rules(Path(__file__).resolve().parents[3] / "rules")
    ev = EventFactory()
    events = [
        ev.login(0, success=False, city="Paris", device_id="a"),
        ev.login(1, success=False, city="Paris", device_id="a"),
        ev.login(2, success=False, city="Paris", device_id="a"),
        ev.login(3, success=True, city="Paris", device_id="a"),
        ev.login(4000, city="Oslo", device_id="b"),
        ev.password_change(4100),
        ev.transfer(4200, amount=30_000),
        ev.transfer(4201, amount=30_000),
        ev.register(5000),
        ev.order(5001),
    ]
    out = []
    for make in (InMemoryKeyedState, PickledState):
        engine = Engine(rules, lateness=5000)
        state = make()
        records: list[Any] = []
        for e in events:
            res = engine.process(state, e)
            records.append(res.decision.to_dict())  # type: ignore[union-attr]
            records.extend(a.to_dict() for a in res.alerts)
        records.extend(a.to_dict() for a in engine.on_timer(state, T0 + 10_000_000).alerts)
        out.append(records)
    assert out[0] == out[1]
    actions = [r["action"] for r in out[0] if r["kind"] == "decision"]
    assert actions == ["PASS", "PASS", "PASS", "REJECT", "PASS", "PASS", "REJECT", "REVIEW", "PASS", "REVIEW"]


def test_update_rules_replaces_the_whole_set() -> None:
    engine = Engine([count_rule()])
    new = engine.update_rules(RuleSet([simple("x", "REJECT", "true")]))
    assert [r.id for r in engine.ruleset] == ["x"] and new is engine.ruleset
    d = engine.process(InMemoryKeyedState(), EventFactory().login(0)).decision
    assert d is not None and d.action == "REJECT"


def test_engine_refuses_negative_lateness_and_ttl() -> None:
    with pytest.raises(ValueError, match="lateness"):
        Engine([], lateness=-1)
    with pytest.raises(ValueError, match="state_ttl"):
        Engine([], state_ttl=0)


VELOCITY = """
id: velocity
action: REVIEW
applies_to: [transfer]
features:
  sum_1m: {kind: sum, field: amount, window: 1m, filter: 'event.type == "transfer"'}
when: sum_1m > 100
"""


def _velocity_hits(result: Any) -> dict[str, Any]:
    hits = {d.event_id: d.rules[0].evidence for d in result.decisions.values() if d.rules}
    for a in result.alerts:
        assert a.reason == "late_threshold"
        hits[a.event_id] = a.rule.evidence
    return hits


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 20_000), st.integers(1, 60)), min_size=1, max_size=25),
    st.integers(0, 10_000),
)
def test_shuffled_within_lateness_gives_the_in_order_hits_and_sums(
    steps: list[tuple[int, int]], seed: int
) -> None:
    """Property: for a monotone windowed condition, decisions + late_threshold alerts of any arrival
    order within the lateness name the same events as in order. A hit decided on arrival shows the sum
    known then: above the threshold, never above the in-order sum (later-arriving earlier events add)."""
    ev = EventFactory()
    events, ts = [], T0
    for gap, amount in steps:  # strictly increasing times: with ties "later" has no meaning
        ts += gap
        events.append(ev.transfer(amount=amount, ts=ts))
    in_order = _velocity_hits(RuleRunner(VELOCITY, lateness=5000).run(events))
    shuffled = shuffle_within(events, 5000, seed=seed)
    got = _velocity_hits(RuleRunner(VELOCITY, lateness=5000).run(shuffled))
    assert got.keys() == in_order.keys()
    for event_id, evidence in got.items():
        assert 100 < evidence["features"]["sum_1m"] <= in_order[event_id]["features"]["sum_1m"]
