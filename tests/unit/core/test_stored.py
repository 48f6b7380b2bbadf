"""Bounded state: the fields expressions read, projection and capping of stored values, the worst-case bytes
per user for the rules in rules/ and an adversarial user who must stay under it."""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from riskctl.core.bounds import state_bound
from riskctl.core.engine import Engine
from riskctl.core.expr import CompiledExpression, compile_step_condition
from riskctl.core.features import FeatureSpec, compile_feature
from riskctl.core.rules import load_rules, load_rules_text
from riskctl.core.runner import LocalRunner
from riskctl.core.state import InMemoryKeyedState
from riskctl.core.stored import (
    MAX_STORED_STRING,
    TOKEN_LENGTH,
    make_projector,
    stored_string,
    stored_value,
)

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "rules"
LATENESS = 5_000  # riskctl.config's default lateness_ms
T0 = 1_700_000_000_000
KIB = 1024


# ---------------------------------------------------------------------------------------- event_fields
@pytest.mark.parametrize(
    ("text", "steps", "fields"),
    [
        ("event.amount > 5 and event.a.b == 1", (), {"amount", "a"}),
        ("sum(s.amount) > 1 and first(s).city != event.city", ("s",), {"amount", "city"}),
        ("last(s.device) == event.device and s.x.y == 2", ("s",), {"device", "x"}),
        ("count(s) >= 3", ("s",), set()),
        ("true", (), set()),
    ],
)
def test_event_fields_are_the_top_level_fields_read(
    text: str, steps: tuple[str, ...], fields: set[str]
) -> None:
    assert CompiledExpression(text, steps=steps).event_fields == frozenset(fields)


@pytest.mark.parametrize("text", ["first(s) == last(s)", "last(s) != null", "coalesce(first(s), 1) == 1"])
def test_event_fields_unknown_when_a_whole_event_is_a_value(text: str) -> None:
    assert CompiledExpression(text, steps=("s",)).event_fields is None


def test_step_conditions_carry_their_event_fields() -> None:
    cond = compile_step_condition("event.type == 'login' and s.city == event.city", steps=("s",))
    assert cond.as_step_condition().event_fields == frozenset({"type", "city"})  # type: ignore[attr-defined]


def test_the_rules_in_rules_dir_store_four_fields() -> None:
    plan = Engine(load_rules(RULES), lateness=LATENESS)._plan
    assert plan.stored_fields == frozenset({"event_id", "type", "success", "amount"})


# ---------------------------------------------------------------------------------------- capping
def test_short_strings_are_kept_long_ones_become_fixed_size_tokens() -> None:
    short = "é" * MAX_STORED_STRING
    assert stored_string(short) is short
    long_a, long_b = "a" * 100 * KIB, "a" * (100 * KIB - 1) + "b"
    ta, tb = stored_string(long_a), stored_string(long_b)
    assert len(ta) == len(tb) == TOKEN_LENGTH
    assert ta == stored_string("a" * 100 * KIB)  # equality kept
    assert ta != tb  # same prefix, different strings
    assert ta.startswith("a" * 64)


def test_a_lone_surrogate_or_astral_characters_are_digested_and_picklable() -> None:
    token = stored_string("\ud800" * 1000)
    assert len(token) == TOKEN_LENGTH
    assert pickle.loads(pickle.dumps(token, protocol=5)) == token
    assert len(stored_string("\U0001f600" * 10_000).encode()) < 400


def test_containers_small_kept_large_or_deep_become_tokens() -> None:
    small = {"a": [1, 2.5, "x"], "b": None}
    assert stored_value(small) == small
    big = list(range(100_000))
    token = stored_value(big)
    assert isinstance(token, str) and token.startswith("<list>") and len(token) < 120
    assert stored_value(list(range(100_000))) == token and stored_value(list(range(99_999))) != token
    deep: Any = 1
    for _ in range(100_000):  # far past the interpreter's recursion limit
        deep = [deep]
    assert isinstance(stored_value(deep), str)
    long_inside = {"k": "z" * (MAX_STORED_STRING + 1)}
    assert isinstance(stored_value(long_inside), str)


def test_projection_keeps_only_the_named_fields_capped() -> None:
    project = make_projector(frozenset({"event_id", "type", "city"}))
    event = {"event_id": "e1", "type": "login", "city": "c" * 5000, "free": "x" * 100 * KIB, "ts": 5}
    out = project(event)
    assert set(out) == {"event_id", "type", "city"}
    assert out["event_id"] == "e1" and len(out["city"]) == TOKEN_LENGTH
    assert event["city"] == "c" * 5000  # the event itself is not changed
    everything = make_projector(None)({"f" * 1000: "v" * 1000, "n": 3})
    assert all(len(k) <= MAX_STORED_STRING and (not isinstance(v, str) or len(v) <= MAX_STORED_STRING)
               for k, v in everything.items())  # fmt: skip


def test_distinct_count_and_first_seen_keep_long_values_as_tokens_with_equality() -> None:
    dc = compile_feature(FeatureSpec("distinct_count", field="ua", window=60_000))
    fs = compile_feature(FeatureSpec("first_seen", field="ua", window=60_000))
    a, b = "a" * 10 * KIB, "b" * 10 * KIB
    stored_dc = stored_fs = None
    values = []
    for i, ua in enumerate([a, b, "a" * 10 * KIB]):
        v1, stored_dc = dc.evaluate(stored_dc, {"ua": ua}, T0 + i)
        v2, stored_fs = fs.evaluate(stored_fs, {"ua": ua}, T0 + i)
        values.append((v1, v2))
    assert values == [(1, True), (2, True), (2, False)]
    assert len(pickle.dumps(stored_dc)) < 1000 and len(pickle.dumps(stored_fs)) < 1000


def test_sequence_equality_between_long_values_still_holds() -> None:
    rules = load_rules_text(
        """
id: same_ua
action: REVIEW
sequence:
  within: 1m
  steps:
    - {name: a, when: "event.type == 'login'"}
    - {name: b, when: "event.type == 'transfer' and event.ua == a.ua"}
"""
    )
    runner = LocalRunner(Engine(rules, lateness=1_000))
    ua = "Mozilla/" + "x" * 10 * KIB
    base = {"user_id": "u", "ua": ua}
    runner.run([{**base, "event_id": "l", "type": "login", "ts": T0}], finish=False)
    out = runner.run(
        [{**base, "event_id": "t", "type": "transfer", "ts": T0 + 1, "ua": "Mozilla/" + "x" * 10 * KIB}]
    )
    assert [r.action for r in out if r.__class__.__name__ == "Decision"] == ["REVIEW"]


def test_a_dict_reused_for_the_next_event_is_projected_afresh() -> None:
    rules = load_rules_text(
        """
id: two_fails
action: REJECT
sequence:
  within: 1m
  steps:
    - {name: a, when: "event.type == 'login' and event.success == false", times: 2}
"""
    )
    engine = Engine(rules, lateness=1_000)
    state = InMemoryKeyedState()
    event: dict[str, Any] = {"user_id": "u", "type": "login", "success": False}
    actions = []
    for i in range(2):  # one dict, changed in place between calls (a caller reusing its buffer)
        event.update(event_id=f"e{i}", ts=T0 + i)
        actions.append(engine.process(state, event).decision)
    last = actions[-1]
    assert last is not None and last.action == "REJECT"
    assert last.rules[0].evidence["match"]["steps"] == {"a": ["e0", "e1"]}


# ---------------------------------------------------------------------------------------- the bound
def _documented_bound() -> int:
    text = (ROOT / "docs" / "engine.md").read_text()
    m = re.search(r"worst case is \*\*([\d,]+) bytes\*\*", text)
    assert m, "docs/engine.md states the worst-case bytes per user"
    return int(m.group(1).replace(",", ""))


def test_docs_state_the_computed_bound_for_rules_dir() -> None:
    assert state_bound(load_rules(RULES), lateness=LATENESS).total == _documented_bound()


def test_no_bound_when_a_step_reads_whole_events() -> None:
    rules = load_rules_text(
        """
id: whole
action: REVIEW
sequence:
  within: 1m
  steps:
    - {name: a, when: "event.type == 'x'"}
    - {name: b, when: "event.type == 'y' and last(a) != null"}
"""
    )
    with pytest.raises(ValueError, match="whole events"):
        state_bound(rules, lateness=LATENESS)


def _adversarial_events(n: int) -> Iterator[dict[str, Any]]:
    """One user, n events in ~12 s of event time, each with a 100 KiB free field and the worst strings the
    rules in rules/ read (ids of 256 astral characters, 100 KiB cities and devices, strings where a bool or a
    number is expected), in a mix that starts every pattern. Made one at a time: none is kept alive."""
    user = "\U0001f600" * 256
    kinds = ["fail", "fail", "ok", "transfer", "register", "order", "password", "2fa", "weird"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        ev: dict[str, Any] = {
            "event_id": chr(0x10000 + i) + "\U0010ffff" * 255,
            "user_id": user,
            "ts": T0 + i * 10,
            "free": f"{i:08d}" + "x" * (100 * KIB - 8),
            "city": f"{i:08d}" + "c" * (100 * KIB - 8),
            "device_id": f"{i:08d}" + "d" * (100 * KIB - 8),
        }
        if kind in ("fail", "ok"):
            ev.update(type="login", success=kind == "ok")
        elif kind == "transfer":
            ev.update(type="transfer", amount=20_000.5)
        elif kind == "password":
            ev.update(type="password_change")
        elif kind == "2fa":
            ev.update(type="2fa", success=False)
        elif kind == "weird":
            ev.update(type="t" * 100 * KIB, success="s" * 100 * KIB, amount="a" * 100 * KIB)
        else:
            ev.update(type=kind)
        yield ev


def test_an_adversarial_user_stays_under_the_bound() -> None:
    bound = state_bound(load_rules(RULES), lateness=LATENESS).total
    runner = LocalRunner(Engine(load_rules(RULES), lateness=LATENESS))
    peak = 0
    for i, event in enumerate(_adversarial_events(1_200)):
        list(runner.feed(event))
        if i % 100 == 99:
            peak = max(peak, *runner.store.encoded_sizes())
    assert 0 < peak < bound
    # before projection and capping the same user held ~1,200 x 300 KiB; now far less than one event's worth
    assert peak < 16 * 100 * KIB
