"""A rule change rebuilds the engine's plan from what the previous plan compiled: only the changed rule is
compiled again, and the decisions are exactly those of an engine built from scratch for the same rules.

Compiling every rule again at each change made bulk changes quadratic (docs/rules-store.md): 2,000 rules
applied one by one took minutes, most of it parsing the other rules' feature filters again.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from riskctl.core.engine import Engine
from riskctl.core.rules import Rule, RuleSet, load_rules_text
from riskctl.core.state import InMemoryKeyedState
from riskctl.testing import EventFactory

LATENESS = 5_000
TTL = 86_400_000

# A pool of rule documents by id; several versions of an id change its definition, its status or what
# the sequences keep of an event (the fields they read), which rebuilds the matchers' projection.
POOL: dict[str, list[str]] = {
    "logins": [
        """
id: logins
action: REVIEW
features: {n: {kind: count, window: 1h, filter: 'event.type == "login"'}}
when: n >= 2
""",
        """
id: logins
action: REJECT
priority: 5
features: {n: {kind: count, window: 2h, filter: 'event.type == "login"'}}
when: n >= 3
""",
        """
id: logins
action: REVIEW
status: shadow
features: {n: {kind: count, window: 1h, filter: 'event.type == "login"'}}
when: n >= 2
""",
    ],
    "sums": [
        """
id: sums
action: REVIEW
applies_to: [transfer]
features: {total: {kind: sum, field: amount, window: 5m, filter: 'event.type == "transfer"'}}
when: total > 500
""",
        """
id: sums
action: REVIEW
status: disabled
features: {total: {kind: sum, field: amount, window: 5m, filter: 'event.type == "transfer"'}}
when: total > 500
""",
    ],
    "fails": [
        """
id: fails
action: REJECT
priority: 50
sequence:
  within: 10m
  steps:
    - {name: fail, when: 'event.type == "login" and event.success == false'}
    - {name: ok, when: 'event.type == "login" and event.success == true'}
""",
    ],
    "chain": [
        """
id: chain
action: REJECT
priority: 40
sequence:
  within: 30m
  steps:
    - {name: login, when: 'event.type == "login" and event.city == "Lagos"'}
    - {name: money, when: 'event.type == "transfer" and event.amount >= 100'}
""",
        """
id: chain
action: REVIEW
priority: 40
sequence:
  within: 30m
  steps:
    - {name: login, when: 'event.type == "login" and event.device == "d2"'}
    - {name: money, when: 'event.type == "transfer" and event.amount >= 100'}
""",
    ],
    "cross": [  # checked on transfers, its feature counts logins: a change to the logins' plan too
        """
id: cross
action: REVIEW
priority: 7
applies_to: [transfer]
features: {recent: {kind: count, window: 30m, filter: 'event.type == "login"'}}
when: recent >= 2
""",
    ],
    "also_logins": [  # the same feature definition as logins' first version: shared state
        """
id: also_logins
action: PASS
features: {m: {kind: count, window: 1h, filter: 'event.type == "login"'}}
when: m >= 1
""",
    ],
}


def parse(text: str) -> Rule:
    (rule,) = load_rules_text(text)
    return rule


def make_engine(rules: list[Rule]) -> Engine:
    return Engine(RuleSet(rules), lateness=LATENESS, state_ttl=TTL, cleanup_timers=False)


def test_a_rule_change_takes_over_what_the_other_rules_compiled() -> None:
    engine = make_engine([])
    engine.upsert_rule(parse(POOL["logins"][0]))
    engine.upsert_rule(parse(POOL["fails"][0]))
    before = engine._plan
    engine.upsert_rule(parse(POOL["sums"][0]))  # reads no new event field: the projection is the same
    after = engine._plan
    assert after is not before
    assert after.rule_by_id["logins"] is before.rule_by_id["logins"]
    assert after.rule_by_id["fails"] is before.rule_by_id["fails"]
    assert after.pattern_by_rule["fails"] is before.pattern_by_rule["fails"]
    (key,) = (k for _, k in after.rule_by_id["logins"].features)
    assert after.feature_by_key[key] is before.feature_by_key[key]
    assert after.project is before.project


def test_a_change_to_what_sequences_keep_rebuilds_their_matchers() -> None:
    engine = make_engine([parse(POOL["fails"][0])])
    before = engine._plan
    engine.upsert_rule(parse(POOL["chain"][0]))  # keeps city and amount of an event too
    after = engine._plan
    assert after.stored_fields != before.stored_fields
    assert after.project is not before.project
    assert after.pattern_by_rule["fails"] is not before.pattern_by_rule["fails"]
    assert after.rule_by_id["fails"] is before.rule_by_id["fails"]  # its rule plan does not depend on it


def test_a_bulk_change_compiles_each_feature_once(monkeypatch: Any) -> None:
    import riskctl.core.engine as engine_module

    if not hasattr(engine_module.compile_feature, "__code__"):  # the compiled core binds it natively
        engine = make_engine([])
        for i in range(60):
            engine.upsert_rule(sum_rule(i))
        keys = {k for r in engine._plan.rules for _, k in r.features}
        assert len(keys) == 60
        return
    calls = []
    real = engine_module.compile_feature

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0].state_key)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "compile_feature", counting)
    engine = make_engine([])
    for i in range(60):
        engine.upsert_rule(sum_rule(i))
    assert len(calls) == 60, f"{len(calls)} compilations for 60 rules added one by one"
    assert len(set(calls)) == 60


def sum_rule(i: int) -> Rule:
    condition = f'event.type == "transfer" and event.merchant == "m{i}"'
    return parse(
        f"""
id: merchant_{i}
action: REVIEW
features: {{s: {{kind: sum, field: amount, window: 5m, filter: '{condition}'}}}}
when: s > {1000 + i}
"""
    )


EVENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "fail": ("login", {"success": False, "city": "Paris", "device": "d1"}),
    "ok": ("login", {"success": True, "city": "Paris", "device": "d1"}),
    "ok_lagos": ("login", {"success": True, "city": "Lagos", "device": "d1"}),
    "ok_d2": ("login", {"success": True, "city": "Paris", "device": "d2"}),
    "small": ("transfer", {"amount": 50}),
    "big": ("transfer", {"amount": 400}),
    "pw": ("password_change", {}),
}


def test_a_change_reaches_the_event_types_it_concerns_and_only_those() -> None:
    """The event types' plans a change leaves as they were are taken over; the others are built again."""
    engine = make_engine([parse(POOL["logins"][0])])
    state = InMemoryKeyedState()
    user = EventFactory("u1")
    for at in (1, 2):
        engine.process(state, user.login(at, success=True, city="Paris"))
    engine.process(state, user.transfer(3, amount=10))
    before = engine._plan
    assert set(before.by_type) == {"login", "transfer"}
    # a rule sharing the logins' feature, checked on every type: both plans change
    engine.upsert_rule(parse(POOL["also_logins"][0]))
    assert engine._plan.by_type == {}
    got = engine.process(state, user.login(4, success=True, city="Paris"))
    assert "also_logins" in {r.id for r in got.decision.rules}
    engine.process(state, user.transfer(5, amount=10))
    # a rule checked on transfers whose feature counts logins: the login plan changes too
    engine.upsert_rule(parse(POOL["cross"][0]))
    assert engine._plan.by_type == {}
    engine.process(state, user.login(6, success=True, city="Paris"))
    engine.process(state, user.login(7, success=True, city="Paris"))
    got = engine.process(state, user.transfer(8, amount=10))
    assert "cross" in {r.id for r in got.decision.rules}
    # a rule on transfers only, with a transfer feature: the login plan is taken over
    login_plan = engine._plan.by_type["login"]
    engine.upsert_rule(parse(POOL["sums"][0]))
    assert engine._plan.by_type == {"login": login_plan}


STEP = st.one_of(
    st.tuples(st.just("upsert"), st.sampled_from(sorted(POOL)), st.integers(0, 2)),
    st.tuples(st.just("delete"), st.sampled_from(sorted(POOL)), st.just(0)),
    st.tuples(
        st.just("event"),
        st.sampled_from(sorted(EVENTS)),
        st.integers(-3, 20),  # seconds after the previous event (negative: late, within the lateness)
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=40))
def test_decisions_after_any_changes_are_those_of_an_engine_built_for_the_rules(
    steps: list[tuple[str, str, int]],
) -> None:
    live = make_engine([])
    live_state = InMemoryKeyedState()
    fresh_state = InMemoryKeyedState()
    texts: dict[str, str] = {}
    user = EventFactory("u1")
    at = 0.0
    for op, what, n in steps:
        if op == "upsert":
            text = POOL[what][n % len(POOL[what])]
            texts[what] = text
            live.upsert_rule(parse(text))
            continue
        if op == "delete":
            texts.pop(what, None)
            live.delete_rule(what)
            continue
        at = max(0.0, at + n)
        kind, fields = EVENTS[what]
        event = user.event(kind, at, **fields)
        # built from scratch from the same documents: nothing taken over from a previous plan
        fresh = make_engine([parse(t) for t in texts.values()])
        assert live.ruleset.version == fresh.ruleset.version
        got = live.process(live_state, event)
        want = fresh.process(fresh_state, event)
        assert got.decision == want.decision
        assert got.alerts == want.alerts
        assert live_state.data == fresh_state.data
