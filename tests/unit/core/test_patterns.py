"""Unit tests of riskctl.core.patterns: the acceptance scenarios' shapes and every construct, with lambdas."""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

import pytest

from riskctl.core.errors import RuleError
from riskctl.core.patterns import Match, PatternMatcher, PatternResult, PatternSpec, Step

S = 1000
MIN = 60 * S


def ev(eid: str, ts: int, type_: str = "x", **fields: Any) -> dict[str, Any]:
    return {"event_id": eid, "user_id": "u1", "type": type_, "ts": ts, **fields}


def feed(matcher: PatternMatcher, events: Iterable[dict[str, Any]], stored: Any = None) -> tuple[Any, list]:
    """Process events in arrival order; return the final state and (event id, matches) per event."""
    out = []
    for e in events:
        result = matcher.process(stored, e, e["ts"])
        stored = result.new_stored
        out.append((e["event_id"], result.matches))
    return stored, out


def all_matches(per_event: list) -> list[Match]:
    return [m for _, ms in per_event for m in ms]


def failed(e: Any, s: Any) -> bool:
    return e["type"] == "login" and not e["success"]


def succeeded(e: Any, s: Any) -> bool:
    return e["type"] == "login" and bool(e["success"])


def brute_force(within: int = 10 * S, **kw: Any) -> PatternSpec:
    return PatternSpec(
        "brute_force",
        (
            Step(
                "fails", failed, "event.type == 'login' and not event.success", times=3, contiguity="strict"
            ),
            Step("ok", succeeded, "event.type == 'login' and event.success", contiguity="strict"),
        ),
        within=within,
        **kw,
    )


def login(eid: str, ts: int, success: bool) -> dict[str, Any]:
    return ev(eid, ts, "login", success=success)


# ------------------------------------------------------------------------------------------ scenarios


def test_scenario_1_three_fails_then_success_matches_on_the_success() -> None:
    m = PatternMatcher(brute_force())
    events = [
        login("f1", 0, False),
        login("f2", 2 * S, False),
        login("f3", 4 * S, False),
        login("ok", 6 * S, True),
    ]
    stored, per_event = feed(m, events)
    assert [bool(ms) for _, ms in per_event] == [False, False, False, True]
    (match,) = per_event[-1][1]
    assert match == Match("brute_force", {"fails": ("f1", "f2", "f3"), "ok": ("ok",)}, 0, 6 * S, "event")
    assert stored is None  # skip_past_last_event discarded everything, nothing pending


def test_scenario_2_too_slow_does_not_match() -> None:
    m = PatternMatcher(brute_force())
    events = [
        login("f1", 0, False),
        login("f2", 4 * S, False),
        login("f3", 8 * S, False),
        login("ok", 11 * S, True),
    ]
    assert all_matches(feed(m, events)[1]) == []


def test_scenario_3_broken_run_does_not_match() -> None:
    m = PatternMatcher(brute_force())
    events = [
        login("f1", 0, False),
        login("f2", 1 * S, False),
        login("ok1", 2 * S, True),
        login("f3", 3 * S, False),
        login("ok2", 4 * S, True),
    ]
    assert all_matches(feed(m, events)[1]) == []


def test_relaxed_fails_skip_other_event_types() -> None:
    spec = PatternSpec(
        "bf",
        (Step("fails", failed, "fail", times=3), Step("ok", succeeded, "ok", contiguity="strict")),
        within=10 * S,
    )
    events = [login("f1", 0, False), ev("o", 1, "order"), login("f2", 2, False), login("f3", 3, False)]
    events.append(login("ok", 4, True))
    (match,) = all_matches(feed(PatternMatcher(spec), events)[1])
    assert match.event_ids == {"fails": ("f1", "f2", "f3"), "ok": ("ok",)}


def takeover(within: int = 30 * MIN) -> PatternSpec:
    return PatternSpec(
        "account_takeover",
        (
            Step(
                "login", lambda e, s: e["type"] == "login" and bool(e.get("new_city")), "login and new city"
            ),
            Step("pw", lambda e, s: e["type"] == "password_change", "password change"),
            Step("tx", lambda e, s: e["type"] == "transfer" and e["amount"] >= 10_000, "transfer >= 10000"),
        ),
        within=within,
    )


def test_scenario_4_takeover_chain_matches_on_the_transfer() -> None:
    events = [
        ev("l", 0, "login", new_city=True, success=True),
        ev("o", 1 * MIN, "order", amount=5),
        ev("p", 2 * MIN, "password_change"),
        ev("t0", 3 * MIN, "transfer", amount=50),
        ev("t", 10 * MIN, "transfer", amount=10_000),
    ]
    _, per_event = feed(PatternMatcher(takeover()), events)
    assert [eid for eid, ms in per_event if ms] == ["t"]
    assert per_event[-1][1][0].event_ids == {"login": ("l",), "pw": ("p",), "tx": ("t",)}


def test_scenario_5_known_city_does_not_match() -> None:
    events = [
        ev("l", 0, "login", new_city=False, success=True),
        ev("p", 2 * MIN, "password_change"),
        ev("t", 10 * MIN, "transfer", amount=20_000),
    ]
    assert all_matches(feed(PatternMatcher(takeover()), events)[1]) == []


def test_takeover_chain_outside_30_minutes_does_not_match() -> None:
    events = [
        ev("l", 0, "login", new_city=True),
        ev("p", 2 * MIN, "password_change"),
        ev("t", 30 * MIN, "transfer", amount=20_000),  # exactly `within` after the start: outside
    ]
    assert all_matches(feed(PatternMatcher(takeover()), events)[1]) == []


def register_then_order(**step_kw: Any) -> PatternSpec:
    return PatternSpec(
        "fast_order",
        (
            Step("register", lambda e, s: e["type"] == "register", "event.type == 'register'"),
            Step("order", lambda e, s: e["type"] == "order", "event.type == 'order'", **step_kw),
        ),
        within=1 * MIN,
    )


@pytest.mark.parametrize(("gap", "expected"), [(2 * S, True), (2999, True), (3 * S, False), (5 * S, False)])
def test_scenario_9_order_less_than_3s_after_register(gap: int, expected: bool) -> None:
    m = PatternMatcher(register_then_order(max_gap=3 * S))
    matches = all_matches(feed(m, [ev("r", 100, "register"), ev("o", 100 + gap, "order")])[1])
    assert bool(matches) is expected


def test_scenario_9_as_a_condition_on_the_earlier_step() -> None:
    spec = PatternSpec(
        "fast_order",
        (
            Step("register", lambda e, s: e["type"] == "register", "event.type == 'register'"),
            Step(
                "order",
                lambda e, s: e["type"] == "order" and e["ts"] - s["register"][-1]["ts"] < 3 * S,
                "event.type == 'order' and event.ts - register.ts < 3s",
            ),
        ),
        within=1 * MIN,
    )
    m = PatternMatcher(spec)
    assert all_matches(feed(m, [ev("r", 0, "register"), ev("o", 2 * S, "order")])[1])
    assert not all_matches(feed(m, [ev("r", 0, "register"), ev("o", 5 * S, "order")])[1])


def new_device_without_2fa() -> PatternSpec:
    return PatternSpec(
        "no_2fa",
        (
            Step(
                "login", lambda e, s: e["type"] == "login" and bool(e.get("new_device")), "new device login"
            ),
            Step("tfa", lambda e, s: e["type"] == "2fa" and bool(e.get("success")), "2fa ok", negated=True),
        ),
        within=5 * MIN,
    )


def test_scenario_10_absence_at_the_end_fires_on_the_timer_at_the_exact_time() -> None:
    m = PatternMatcher(new_device_without_2fa())
    r = m.process(None, ev("l", 1000, "login", new_device=True), 1000)
    assert r.matches == () and r.wakeup == 1000 + 5 * MIN
    r = m.process(r.new_stored, ev("o", 2000, "order"), 2000)
    assert r.wakeup == 1000 + 5 * MIN
    early = m.on_timer(r.new_stored, 1000 + 5 * MIN - 1)
    assert early.matches == () and early.wakeup == 1000 + 5 * MIN
    fired = m.on_timer(early.new_stored, 1000 + 5 * MIN)
    assert fired.matches == (Match("no_2fa", {"login": ("l",)}, 1000, 1000 + 5 * MIN, "timer"),)
    assert fired.new_stored is None and fired.wakeup is None


def test_scenario_10_successful_2fa_within_5_minutes_cancels_the_alert() -> None:
    m = PatternMatcher(new_device_without_2fa())
    stored, _ = feed(m, [ev("l", 0, "login", new_device=True), ev("f", 1 * MIN, "2fa", success=False)])
    r = m.process(stored, ev("ok", 5 * MIN - 1, "2fa", success=True), 5 * MIN - 1)
    assert r.wakeup is None and r.new_stored is None
    assert m.on_timer(r.new_stored, 10 * MIN).matches == ()


def test_absence_2fa_exactly_at_the_deadline_is_too_late_to_cancel() -> None:
    m = PatternMatcher(new_device_without_2fa())
    stored, _ = feed(m, [ev("l", 0, "login", new_device=True)])
    # In order, an event at the deadline shows the deadline passed: the absence is confirmed before it.
    r = m.process(stored, ev("ok", 5 * MIN, "2fa", success=True), 5 * MIN)
    assert [(x.completed_by, x.end_ts) for x in r.matches] == [("timer", 5 * MIN)]


def test_absence_window_from_the_last_positive_step() -> None:
    spec = PatternSpec(
        "a_not_b",
        (
            Step("a", lambda e, s: e["type"] == "a", "a", times=2),
            Step("b", lambda e, s: e["type"] == "b", "b", negated=True, max_gap=10),
        ),
        within=1000,
    )
    m = PatternMatcher(spec)
    stored, _ = feed(m, [ev("a1", 0, "a"), ev("a2", 50, "a")])
    r = m.on_timer(stored, 59)
    assert r.matches == () and r.wakeup == 60
    assert [x.event_ids for x in m.on_timer(r.new_stored, 60).matches] == [{"a": ("a1", "a2")}]


def test_absence_in_the_middle_kills_the_partial_match() -> None:
    spec = PatternSpec(
        "a_no_b_c",
        (
            Step("a", lambda e, s: e["type"] == "a", "a"),
            Step("b", lambda e, s: e["type"] == "b", "b", negated=True),
            Step("c", lambda e, s: e["type"] == "c", "c"),
        ),
        within=100,
    )
    m = PatternMatcher(spec)
    assert all_matches(feed(m, [ev("a", 0, "a"), ev("x", 1, "x"), ev("c", 2, "c")])[1])
    assert not all_matches(feed(m, [ev("a", 0, "a"), ev("b", 1, "b"), ev("c", 2, "c")])[1])
    # a B before the A does not count; a new A after the B starts afresh
    got = all_matches(
        feed(m, [ev("b", 0, "b"), ev("a", 1, "a"), ev("b2", 2, "b"), ev("a2", 3, "a"), ev("c", 4, "c")])[1]
    )
    assert [x.event_ids for x in got] == [{"a": ("a2",), "c": ("c",)}]


# ------------------------------------------------------------------------------------------ constructs


def loop_spec(quantifier: str, times: int = 2, after_match: str = "no_skip") -> PatternSpec:
    return PatternSpec(
        "loop",
        (
            Step("a", lambda e, s: e["type"] == "a", "a", times=times, quantifier=quantifier),  # type: ignore[arg-type]
            Step("b", lambda e, s: e["type"] == "b", "b"),
        ),
        within=100,
        after_match=after_match,  # type: ignore[arg-type]
    )


def ids(matches: Iterable[Match]) -> list[tuple[tuple[str, ...], ...]]:
    return sorted(tuple(m.event_ids.values()) for m in matches)


def test_quantifier_exactly() -> None:
    events = [ev("a1", 0, "a"), ev("a2", 1, "a"), ev("a3", 2, "a"), ev("b", 3, "b")]
    got = all_matches(feed(PatternMatcher(loop_spec("exactly")), events)[1])
    # skip till next match: a1 takes a2 (not a3); a2 takes a3
    assert ids(got) == [(("a1", "a2"), ("b",)), (("a2", "a3"), ("b",))]


def test_quantifier_at_least_reports_every_length() -> None:
    events = [ev("a1", 0, "a"), ev("a2", 1, "a"), ev("a3", 2, "a"), ev("b", 3, "b")]
    got = all_matches(feed(PatternMatcher(loop_spec("at_least")), events)[1])
    assert ids(got) == [
        (("a1", "a2"), ("b",)),
        (("a1", "a2", "a3"), ("b",)),
        (("a2", "a3"), ("b",)),
    ]


def test_at_least_with_skip_past_last_event_reports_one_of_simultaneous_matches() -> None:
    events = [ev("a1", 0, "a"), ev("a2", 1, "a"), ev("a3", 2, "a"), ev("b", 3, "b"), ev("b2", 4, "b")]
    got = all_matches(
        feed(PatternMatcher(loop_spec("at_least", after_match="skip_past_last_event")), events)[1]
    )
    # simultaneous completions: earliest start, then by events (a1 a2 a3 sorts before a1 a2 b)
    assert ids(got) == [(("a1", "a2", "a3"), ("b",))]


def test_looping_step_sees_its_own_events_for_accumulations() -> None:
    seen: list[int] = []

    def small_total(e: Any, s: Any) -> bool:
        seen.append(len(s["spend"]))
        return e["type"] == "pay" and sum(x["amount"] for x in s["spend"]) + e["amount"] <= 100

    spec = PatternSpec(
        "acc",
        (
            Step("spend", small_total, "sum(spend.amount) + event.amount <= 100", times=3),
            Step(
                "big",
                lambda e, s: e["amount"] > sum(x["amount"] for x in s["spend"]),
                "amount > sum(spend.amount)",
            ),
        ),
        within=100,
    )
    events = [ev("p1", 0, "pay", amount=30), ev("p2", 1, "pay", amount=30), ev("p3", 2, "pay", amount=50)]
    events += [ev("p4", 3, "pay", amount=40), ev("big", 4, "cash", amount=200)]
    got = all_matches(feed(PatternMatcher(spec), events)[1])
    # p1+p2+p3 = 110 is over: p1 skips p3 and takes p4 (30+30+40)
    assert ids(got) == [(("p1", "p2", "p4"), ("big",))]
    assert max(seen) == 2


def test_conditions_see_earlier_steps_with_their_ts() -> None:
    got_views: list[dict[str, Any]] = []

    def record(e: Any, s: Any) -> bool:
        got_views.append({k: [x["event_id"] for x in v] for k, v in s.items()})
        return e["type"] == "b"

    spec = PatternSpec(
        "v", (Step("a", lambda e, s: e["type"] == "a", "a"), Step("b", record, "b")), within=10
    )
    feed(PatternMatcher(spec), [ev("a1", 0, "a"), ev("b1", 1, "b")])
    assert got_views == [{"a": ["a1"], "b": []}]


def test_per_step_max_gap_and_min_gap() -> None:
    spec = PatternSpec(
        "gaps",
        (
            Step("a", lambda e, s: e["type"] == "a", "a"),
            Step("b", lambda e, s: e["type"] == "b", "b", min_gap=2, max_gap=5),
        ),
        within=100,
        after_match="no_skip",
    )
    m = PatternMatcher(spec)
    # b at +1 is too early (skipped, not a candidate), b at +2 matches; +5 is too late
    assert ids(all_matches(feed(m, [ev("a", 0, "a"), ev("b1", 1, "b"), ev("b2", 2, "b")])[1])) == [
        (("a",), ("b2",))
    ]
    assert ids(all_matches(feed(m, [ev("a", 0, "a"), ev("b", 4, "b")])[1])) == [(("a",), ("b",))]
    assert all_matches(feed(m, [ev("a", 0, "a"), ev("b", 5, "b")])[1]) == []


@pytest.mark.parametrize(("last_ts", "expected"), [(9, True), (10, False)])
def test_within_is_exclusive_at_the_boundary(last_ts: int, expected: bool) -> None:
    m = PatternMatcher(loop_spec("exactly", times=1))
    got = all_matches(feed(m, [ev("a", 0, "a"), ev("b", last_ts * 10, "b")])[1])
    assert bool(got) is expected


def test_after_match_policies() -> None:
    events = [ev("a1", 0, "a"), ev("a2", 1, "a"), ev("b1", 2, "b"), ev("a3", 3, "a"), ev("b2", 4, "b")]
    single = {"times": 1}
    skip = PatternMatcher(loop_spec("exactly", **single, after_match="skip_past_last_event"))
    assert ids(all_matches(feed(skip, events)[1])) == [(("a1",), ("b1",)), (("a3",), ("b2",))]
    no_skip = PatternMatcher(loop_spec("exactly", **single, after_match="no_skip"))
    assert ids(all_matches(feed(no_skip, events)[1])) == [
        (("a1",), ("b1",)),
        (("a2",), ("b1",)),
        (("a3",), ("b2",)),
    ]


def test_max_partial_overflow_drops_the_oldest_and_is_counted() -> None:
    spec = PatternSpec(
        "many",
        (Step("a", lambda e, s: e["type"] == "a", "a"), Step("b", lambda e, s: e["type"] == "b", "b")),
        within=1000,
        after_match="no_skip",
        max_partial=3,
    )
    m = PatternMatcher(spec)
    stored = None
    dropped = 0
    for i in range(5):
        r = m.process(stored, ev(f"a{i}", i, "a"), i)
        stored, dropped = r.new_stored, dropped + r.overflow
    assert dropped == 2 and PatternMatcher.overflow(stored) == 2
    r = m.process(stored, ev("b", 10, "b"), 10)
    assert ids(r.matches) == [(("a2",), ("b",)), (("a3",), ("b",)), (("a4",), ("b",))]


# ------------------------------------------------------------------------------------------ late events


def test_scenario_14_shuffled_brute_force_reports_late_completion() -> None:
    m = PatternMatcher(brute_force(), lateness=10 * S)
    events = [
        login("ok", 6 * S, True),
        login("f1", 0, False),
        login("f3", 4 * S, False),
        login("f2", 2 * S, False),
    ]
    _, per_event = feed(m, events)
    assert [eid for eid, ms in per_event if ms] == ["f2"]
    (match,) = per_event[-1][1]
    assert match == Match("brute_force", {"fails": ("f1", "f2", "f3"), "ok": ("ok",)}, 0, 6 * S, "late")


def test_late_event_does_not_report_a_match_twice() -> None:
    spec = loop_spec("exactly", times=1, after_match="no_skip")
    m = PatternMatcher(spec, lateness=10)
    events = [ev("a1", 0, "a"), ev("b1", 5, "b"), ev("a0", 1, "a"), ev("x", 3, "x")]
    got = all_matches(feed(m, events)[1])
    assert [(tuple(x.event_ids.values()), x.completed_by) for x in got] == [
        ((("a1",), ("b1",)), "event"),
        ((("a0",), ("b1",)), "late"),
    ]


def test_event_beyond_the_lateness_is_ignored_and_counted() -> None:
    m = PatternMatcher(loop_spec("exactly", times=1), lateness=10)
    stored, _ = feed(m, [ev("a", 100, "a"), ev("x", 200, "x")])
    r = m.process(stored, ev("b", 150, "b"), 150)
    assert r.too_late and r.matches == () and PatternMatcher.too_late(r.new_stored) == 1


def test_late_event_after_a_timer_is_too_late() -> None:
    m = PatternMatcher(new_device_without_2fa(), lateness=10 * MIN)
    stored, _ = feed(m, [ev("l", 0, "login", new_device=True), ev("o", 6 * MIN, "order")])
    fired = m.on_timer(stored, 5 * MIN)
    assert [x.completed_by for x in fired.matches] == ["timer"]
    r = m.process(fired.new_stored, ev("ok", 4 * MIN, "2fa", success=True), 4 * MIN)
    assert r.too_late and r.matches == ()


def test_in_order_event_with_the_same_ts_is_not_late() -> None:
    m = PatternMatcher(loop_spec("exactly", times=1), lateness=10)
    got = all_matches(feed(m, [ev("a", 5, "a"), ev("b", 5, "b")])[1])
    assert [x.completed_by for x in got] == ["event"]


# ------------------------------------------------------------------------------------------ state


def test_state_returns_to_none_once_everything_expired() -> None:
    m = PatternMatcher(takeover(), lateness=2 * S)
    stored, _ = feed(m, [ev("l", 0, "login", new_city=True), ev("p", 1 * MIN, "password_change")])
    assert stored is not None
    assert m.on_timer(stored, 29 * MIN).new_stored is not None
    assert m.on_timer(stored, 31 * MIN).new_stored is None


def test_state_without_lateness_is_none_when_nothing_starts() -> None:
    m = PatternMatcher(brute_force())
    r = m.process(None, ev("o", 0, "order"), 0)
    assert r == PatternResult(None, (), None)


def test_lateness_buffer_is_bounded() -> None:
    m = PatternMatcher(brute_force(), lateness=10 * MIN, max_buffer=50)
    stored, _ = feed(m, [ev(f"o{i}", i, "order") for i in range(200)])
    assert len(pickle.dumps(stored)) < 50 * 200
    assert PatternMatcher.overflow(stored) > 0


def test_state_is_plain_data_and_pickles() -> None:
    m = PatternMatcher(takeover(), lateness=1000)
    stored, _ = feed(m, [ev("l", 0, "login", new_city=True), ev("p", 1, "password_change")])
    back = pickle.loads(pickle.dumps(stored))
    r = m.process(back, ev("t", 2, "transfer", amount=10_000), 2)
    assert ids(r.matches) == [(("l",), ("p",), ("t",))]


# ------------------------------------------------------------------------------------------ validation


def always(e: Any, s: Any) -> bool:
    return True


@pytest.mark.parametrize(
    ("steps", "kw", "field"),
    [
        ((), {}, "steps"),
        ((Step("a", always, "t"), Step("a", always, "t")), {}, "steps.a"),
        ((Step("a", always, "t", negated=True), Step("b", always, "t")), {}, "steps.a.negated"),
        (
            (
                Step("a", always, "t"),
                Step("b", always, "t", negated=True),
                Step("c", always, "t", negated=True),
            ),
            {},
            "steps.c.negated",
        ),
        (
            (Step("a", always, "t"), Step("b", always, "t", negated=True, max_gap=5), Step("c", always, "t")),
            {},
            "steps.b.max_gap",
        ),
        ((Step("a", always, "t"),), {"within": 0}, "within"),
        ((Step("a", always, "t"),), {"after_match": "skip_past_last"}, "after_match"),
        ((Step("a", always, "t"),), {"max_partial": 0}, "max_partial"),
    ],
)
def test_spec_validation(steps: tuple[Step, ...], kw: dict[str, Any], field: str) -> None:
    kw = {"within": 10, **kw}
    with pytest.raises(RuleError) as info:
        PatternSpec("r1", steps, **kw)
    assert info.value.rule_id == "r1" and info.value.field == field


def test_after_match_typo_gets_a_suggestion() -> None:
    with pytest.raises(RuleError) as info:
        PatternSpec("r1", (Step("a", always, "t"),), within=10, after_match="no_skp")  # type: ignore[arg-type]
    assert info.value.suggestion == "no_skip"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"times": 0}, "steps.a.times"),
        ({"quantifier": "atleast"}, "steps.a.quantifier"),
        ({"contiguity": "strictly"}, "steps.a.contiguity"),
        ({"max_gap": 0}, "steps.a.max_gap"),
        ({"min_gap": 5, "max_gap": 5}, "steps.a.min_gap"),
        ({"negated": True, "times": 2}, "steps.a.times"),
        ({"negated": True, "contiguity": "strict"}, "steps.a.contiguity"),
        ({"negated": True, "min_gap": 1}, "steps.a.min_gap"),
    ],
)
def test_step_validation(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(RuleError) as info:
        Step("a", always, "t", **kw)
    assert info.value.field == field


def test_step_name_and_condition_are_checked() -> None:
    with pytest.raises(RuleError):
        Step("not a name", always, "t")
    with pytest.raises(RuleError):
        Step("a", "event.x", "t")  # type: ignore[arg-type]
    with pytest.raises(RuleError):
        Step("a", always, " ")


def test_state_key_follows_the_definition() -> None:
    a = brute_force()
    assert a.state_key == brute_force().state_key
    assert a.state_key != brute_force(within=20 * S).state_key
    assert a.state_key.startswith("pattern:brute_force:")
