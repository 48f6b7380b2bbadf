"""A pattern's wake-up is cancelled once nothing is pending at it (``Result.cancelled``): the absent event
came, or the pattern's earliest deadline moved. Before, such a timer fired for nothing: in the job a call into
Python and a state read and write each, and every pending one written by each checkpoint's synchronous phase.
Decisions and alerts are the same; only the timers that guard nothing are gone.
"""

from __future__ import annotations

import heapq
from typing import Any

from riskctl.config import PROJECT_ROOT
from riskctl.core.decisions import Result
from riskctl.core.engine import Engine
from riskctl.core.rules import load_rules, parse_rule
from riskctl.core.runner import LocalRunner
from riskctl.core.state import InMemoryKeyedState
from riskctl.sim.generator import SimConfig, generate
from riskctl.testing import T0, EventFactory

WITHIN_MS = 300_000


def absence_rule(rule_id: str, absent: str) -> dict[str, Any]:
    """A successful login not followed by ``absent`` (a type) within 5 minutes."""
    return {
        "id": rule_id,
        "action": "REVIEW",
        "sequence": {
            "within": "5m",
            "steps": [
                {"name": "login", "when": 'event.type == "login" and event.success == true'},
                {"name": "none", "when": f'event.type == "{absent}"', "absent": True},
            ],
        },
    }


def job_engine(*rule_ids: str) -> Engine:
    """An engine as the job runs it (no clean-up timers: only the patterns' wake-ups)."""
    rules = [
        parse_rule(absence_rule(rule_id, absent)) for rule_id, absent in ABSENT.items() if rule_id in rule_ids
    ]
    return Engine(rules, state_ttl=86_400_000, cleanup_timers=False)


ABSENT = {"no_2fa": "2fa", "no_order": "order"}


def keeping_every_timer(engine: Engine, events: list[dict[str, Any]]) -> tuple[list[Any], int]:
    """The records and the timers fired of LocalRunner as it was, which never deleted a timer (each fired,
    found nothing due and did nothing): a plain-Python copy, as the compiled runner cannot be subclassed.
    """
    states: dict[str, InMemoryKeyedState] = {}
    heap: list[tuple[int, str]] = []
    pending: set[tuple[int, str]] = set()
    out: list[Any] = []
    fired = 0
    max_ts: int | None = None

    def fire(watermark: int | None) -> None:
        nonlocal fired
        while heap and (watermark is None or heap[0][0] <= watermark):
            ts, user = item = heapq.heappop(heap)
            pending.discard(item)
            state = states.get(user)
            if state is None:
                continue
            fired += 1
            result = engine.on_timer(state, ts)
            out.extend(result.alerts)
            register(result.timers, user)
            if not state.data:
                del states[user]

    def register(timers: list[int], user: str) -> None:
        for ts in timers:
            if (ts, user) not in pending:
                pending.add((ts, user))
                heapq.heappush(heap, (ts, user))

    for event in events:
        user = event["user_id"]
        result = engine.process(states.setdefault(user, InMemoryKeyedState()), event)
        out.append(result.decision)
        out.extend(result.alerts)
        register(result.timers, user)
        if max_ts is None or event["ts"] > max_ts:
            max_ts = event["ts"]
            fire(max_ts - engine.lateness)
    fire(None)
    return out, fired


def test_the_absent_event_cancels_the_deadline() -> None:
    engine = job_engine("no_2fa")
    state = InMemoryKeyedState()
    ev = EventFactory()
    armed = engine.process(state, ev.login(0))
    assert armed.timers == [T0 + WITHIN_MS] and armed.cancelled == []
    settled = engine.process(state, ev.two_fa(10))
    assert settled.cancelled == [T0 + WITHIN_MS] and settled.timers == []
    # the timer, had it fired anyway (e.g. a caller that did not delete it): nothing due, nothing raised
    assert engine.on_timer(state, T0 + WITHIN_MS).alerts == []


def test_without_the_absent_event_the_deadline_fires_as_before() -> None:
    runner = LocalRunner(job_engine("no_2fa"))
    ev = EventFactory()
    records = runner.run([ev.login(0), ev.transfer(20, amount=5)])
    alerts = [r for r in records if not hasattr(r, "action")]
    assert [(a.rule.id, a.reason, a.ts) for a in alerts] == [("no_2fa", "timer", T0 + WITHIN_MS)]
    assert runner.timers_fired == 1


def test_a_settled_absence_leaves_no_timer_in_the_runner() -> None:
    runner = LocalRunner(job_engine("no_2fa"))
    ev = EventFactory()
    list(runner.feed(ev.login(0)))
    assert runner.pending_timers() == 1
    list(runner.feed(ev.two_fa(10)))
    assert runner.pending_timers() == 0
    assert list(runner.finish()) == [] and runner.timers_fired == 0


def test_a_time_another_pattern_still_waits_for_is_kept() -> None:
    # both patterns start at the same login, so both deadlines are the same time: one timer of the key
    engine = job_engine("no_2fa", "no_order")
    runner = LocalRunner(engine)
    ev = EventFactory()
    state = InMemoryKeyedState()
    assert engine.process(state, ev.login(0)).timers == [T0 + WITHIN_MS, T0 + WITHIN_MS]
    assert engine.process(state, ev.two_fa(10)).cancelled == []  # no_order still waits for that time
    assert engine.process(state, ev.order(20)).cancelled == [T0 + WITHIN_MS]  # now nothing does

    records = runner.run([ev.login(0), ev.two_fa(10)])
    alerts = [r for r in records if not hasattr(r, "action")]
    assert [a.rule.id for a in alerts] == ["no_order"]


def test_a_cancelled_time_asked_for_again_fires_once() -> None:
    runner = LocalRunner(job_engine("no_2fa"))
    runner.store.for_key("u1").put("x", 1)  # a key with state: its timers are called
    list(runner.accept(Result(None, [], [105], []), "u1"))
    list(runner.accept(Result(None, [], [105, 106], [105]), "u1"))  # cancelled, then asked for again
    list(runner.accept(Result(None, [], [], [106]), "u1"))
    assert runner.pending_timers() == 1
    list(runner.finish())
    assert runner.timers_fired == 1  # 105 once; 106 cancelled


def test_the_simulators_traffic_gets_the_same_records_with_far_fewer_timers() -> None:
    events, _ = generate(SimConfig(users=300, rate=6, duration_s=3600, attack_fraction=0.3, seed=5, zipf=1.0))
    rules = load_rules(PROJECT_ROOT / "rules")

    for cleanup in (False, True):
        old, fired_before = keeping_every_timer(
            Engine(rules, lateness=5000, state_ttl=3_600_000, cleanup_timers=cleanup), events
        )
        expected = [r.to_dict() for r in old]
        runner = LocalRunner(Engine(rules, lateness=5000, state_ttl=3_600_000, cleanup_timers=cleanup))
        got = [r.to_dict() for e in events for r in runner.feed(e)] + [r.to_dict() for r in runner.finish()]
        assert got == expected
        assert any(r.get("reason") == "timer" for r in expected), "no absence confirmed: nothing compared"
        # the absences settled by the absent event no longer fire
        assert runner.timers_fired < fired_before - 500, (runner.timers_fired, fired_before)
    assert len(events) > 15_000
