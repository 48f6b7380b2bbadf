"""An engine without clean-up timers (the Flink job's: Flink's state TTL frees silent keys) decides exactly as
one with them: the clean-up timer only frees state, a key silent for the TTL starts from zero at its next
event either way, and features and patterns prune themselves on each event.
"""

from __future__ import annotations

from typing import Any

import pytest

from riskctl.config import PROJECT_ROOT
from riskctl.core.decisions import Alert
from riskctl.core.engine import Engine
from riskctl.core.rules import load_rules
from riskctl.core.runner import LocalRunner
from riskctl.core.state import InMemoryKeyedState
from riskctl.sim.generator import SimConfig, generate
from riskctl.testing import T0, EventFactory
from tests.unit.core.test_engine import count_rule

TTL = 5 * 60_000


def _records(runner: LocalRunner, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [r for e in events for r in runner.feed(e)] + list(runner.finish())
    return [r.to_dict() for r in out]


def test_the_simulators_traffic_over_hours_gets_the_same_decisions_and_alerts() -> None:
    # an hour and a half of event time, a 5-minute TTL: keys go silent, come back, and stay active across it
    events, _ = generate(
        SimConfig(users=150, rate=4, duration_s=5400, attack_fraction=0.3, seed=11, zipf=1.0)
    )
    rules = load_rules(PROJECT_ROOT / "rules")
    with_timers = LocalRunner(Engine(rules, lateness=5000, state_ttl=TTL))
    without = LocalRunner(Engine(rules, lateness=5000, state_ttl=TTL, cleanup_timers=False))
    expected = _records(with_timers, events)
    got = _records(without, events)
    assert got == expected
    assert len(events) > 15_000
    decisions = [r for r in expected if "action" in r]
    assert {d["action"] for d in decisions} == {"PASS", "REVIEW", "REJECT"}
    assert any(r for r in expected if "reason" in r), "no alert: the comparison would miss the timer path"
    # the clean-up timers did fire in one run (so the comparison covers them), and only pattern wake-ups in
    # the other
    assert with_timers.timers_fired > without.timers_fired + 1_000, (
        with_timers.timers_fired,
        without.timers_fired,
    )


def test_no_cleanup_timer_is_asked_for_and_a_silent_key_still_starts_from_zero() -> None:
    engine = Engine([count_rule(window="7d", threshold=2)], state_ttl=3_600_000, cleanup_timers=False)
    state = InMemoryKeyedState()
    ev = EventFactory()
    first = engine.process(state, ev.login(0))
    assert first.timers == []
    assert engine.process(state, ev.login(60)).decision.action == "REVIEW"  # type: ignore[union-attr]
    # silent for over the TTL: counted from zero again, as with the timer
    assert engine.process(state, ev.login(60 + 3_601)).decision.action == "PASS"  # type: ignore[union-attr]


def test_a_cleanup_timer_from_before_is_not_rearmed() -> None:
    # e.g. restored from a checkpoint taken with timers: it fires, expires what is due, arms nothing
    with_timers = Engine([count_rule(window="2h", threshold=5)], state_ttl=3_600_000)
    state = InMemoryKeyedState()
    ev = EventFactory()
    armed = with_timers.process(state, ev.login(0)).timers
    with_timers.process(state, ev.login(1_800))
    without = Engine([count_rule(window="2h", threshold=5)], state_ttl=3_600_000, cleanup_timers=False)
    fired = without.on_timer(state, max(armed))
    assert fired.timers == []
    assert isinstance(fired.alerts, list) and not any(isinstance(a, Alert) for a in fired.alerts)
    assert list(state.names())  # the key was active half an hour ago: its state stays
    assert T0 + 1_800_000 < max(armed)


def test_without_timers_a_ttl_is_required() -> None:
    with pytest.raises(ValueError, match="cleanup_timers"):
        Engine([], state_ttl=None, cleanup_timers=False)
