"""The same event delivered twice is decided once (riskctl/core/dedup.py, docs/engine.md "Duplicate
events").

A retry of riskctl serve that reaches another API instance, or a producer that sends again, delivers an event
a second time. The duplicate gets the first one's action, changes no feature or sequence, and raises nothing.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskctl.core import dedup
from riskctl.core.decisions import Alert, Decision
from riskctl.core.engine import SEEN, Engine
from riskctl.core.events import parse_event
from riskctl.core.rules import load_rules_text
from riskctl.core.runner import LocalRunner

T0 = 1_700_000_000_000
WINDOW = 600_000

RULES = """
id: big_sum
action: REVIEW
applies_to: [transfer]
features:
  total: {kind: sum, field: amount, window: 1h, filter: "event.type == 'transfer'"}
when: total >= 150
---
id: brute_force
action: REJECT
sequence:
  within: 10s
  steps:
    - {name: fails, when: "event.type == 'login' and event.success == false", times: 3}
    - {name: ok, when: "event.type == 'login' and event.success == true", contiguity: strict}
"""


def _event(eid: str, etype: str, at_ms: int, reply_to: str | None, **fields: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"event_id": eid, "user_id": "u", "type": etype, "ts": T0 + at_ms, **fields}
    if reply_to is not None:
        e["reply_to"] = reply_to
    return e


def transfer(eid: str, at_ms: int, amount: float = 50, reply_to: str | None = "api-a") -> dict[str, Any]:
    return _event(eid, "transfer", at_ms, reply_to, amount=amount)


def login(eid: str, at_ms: int, success: bool, reply_to: str | None = "api-a") -> dict[str, Any]:
    return _event(eid, "login", at_ms, reply_to, success=success)


def run(
    events: list[dict[str, Any]],
    window: int = WINDOW,
    dedup_all: bool = False,
    lateness: int = 5_000,
    state_ttl: int | None = 24 * 3_600_000,
    finish: bool = False,  # (finishing fires the clean-up timers: no state left)
) -> tuple[list[Decision], list[Alert], LocalRunner]:
    engine = Engine(
        load_rules_text(RULES),
        lateness=lateness,
        state_ttl=state_ttl,
        dedup_window=window,
        dedup_all=dedup_all,
    )
    runner = LocalRunner(engine)
    records = runner.run(events, finish=finish)
    return (
        [r for r in records if isinstance(r, Decision)],
        [r for r in records if isinstance(r, Alert)],
        runner,
    )


def test_a_transfer_sent_again_through_another_instance_counts_once() -> None:
    # without deduplication the retry of t2 would make the sum 150 (REVIEW) and t3 would see 200
    decisions, _, runner = run(
        [
            transfer("t1", 0),
            transfer("t2", 1_000),
            transfer("t2", 1_000, reply_to="api-b"),
            transfer("t3", 2_000),
        ]
    )
    t2, again, t3 = decisions[1], decisions[2], decisions[3]
    assert (t2.action, t2.duplicate) == ("PASS", False)
    assert again.event_id == "t2" and again.duplicate and again.action == "PASS" and again.rules == []
    assert again.to_dict()["duplicate"] is True and t2.to_dict()["duplicate"] is False
    assert t3.action == "REVIEW"  # 50 + 50 + 50: the retry was not counted
    assert t3.rules[0].evidence["features"] == {"total": 150}
    assert runner.engine.duplicates == 1


def test_without_deduplication_the_retry_counts_twice() -> None:
    decisions, _, _ = run([transfer("t1", 0), transfer("t2", 1_000), transfer("t2", 1_000)], window=0)
    assert [d.action for d in decisions] == ["PASS", "PASS", "REVIEW"]
    assert not any(d.duplicate for d in decisions)


def test_a_retried_reject_stays_a_reject() -> None:
    # Decided afresh, the retried success would PASS: the sequence that rejected it is spent. An attacker
    # retrying until PASS gets the first answer again.
    events = [login(f"f{i}", i * 100, False) for i in range(3)] + [login("ok", 400, True)]
    decisions, alerts, _ = run([*events, login("ok", 400, True, reply_to="api-b")])
    assert decisions[3].action == "REJECT" and decisions[3].rules[0].id == "brute_force"
    assert decisions[4].duplicate and decisions[4].action == "REJECT" and decisions[4].rules == []
    assert alerts == []
    no_dedup, _, _ = run([*events, login("ok", 400, True)], window=0)
    assert no_dedup[4].action == "PASS"  # what the first check guards against


def test_the_same_id_with_other_content_is_a_new_event() -> None:
    # a transfer of 10,000 sent under the id of an earlier transfer of 10 is not given that one's PASS
    decisions, _, _ = run([transfer("t1", 0, amount=10), transfer("t1", 100, amount=10_000)])
    assert not decisions[1].duplicate and decisions[1].action == "REVIEW"


def test_remembered_for_the_window_of_event_time_only() -> None:
    window = 60_000
    decisions, _, _ = run(
        [transfer("t1", 0), transfer("t2", 61_000), transfer("t1", 0, reply_to="api-b")],
        window=window,
        lateness=0,
    )
    # t1 was 61 s behind the newest event when it came again: forgotten, decided again (too late here)
    assert not decisions[2].duplicate and decisions[2].too_late
    decisions, _, _ = run(
        [transfer("t1", 0), transfer("t2", 59_000), transfer("t1", 0, reply_to="api-b")],
        window=window,
        lateness=0,
    )
    assert decisions[2].duplicate and decisions[2].too_late  # still within the window: the first's action


def test_only_the_events_of_the_api_unless_all() -> None:
    plain = [transfer("t1", 0, reply_to=None), transfer("t2", 100, reply_to=None)]
    again = transfer("t2", 100, reply_to=None)
    decisions, _, runner = run([*plain, again])
    assert not decisions[2].duplicate and decisions[2].action == "REVIEW"
    assert SEEN not in runner.store.for_key("u").data  # nothing remembered for events from Kafka
    decisions, _, _ = run([*plain, again], dedup_all=True)
    assert decisions[2].duplicate and decisions[2].action == "PASS"


def test_a_duplicate_changes_no_state() -> None:
    events = [transfer("t1", 0), transfer("t2", 1_000)]
    _, _, runner = run(events)
    before = pickle.dumps(runner.store.for_key("u").data)
    decisions = runner.run([transfer("t2", 1_000, reply_to="api-c")], finish=False)
    assert decisions[0].duplicate  # type: ignore[union-attr]
    assert pickle.dumps(runner.store.for_key("u").data) == before


def test_at_most_the_cap_is_remembered_the_oldest_forgotten() -> None:
    n = dedup.SEEN_CAP + 1
    events = [transfer(f"t{i}", i, amount=0) for i in range(n)]
    decisions, _, runner = run([*events, transfer("t0", 0, amount=0), transfer(f"t{n - 1}", n - 1, amount=0)])
    assert len(runner.store.for_key("u").data[SEEN]) == dedup.ENTRY * dedup.SEEN_CAP
    assert not decisions[n].duplicate  # the first one, forgotten
    assert decisions[n + 1].duplicate


def test_a_digest_found_across_two_entries_is_not_a_match() -> None:
    key = bytes(range(dedup.DIGEST))
    # an entry whose digest ends with the key's first half and whose info starts with its second half
    half = dedup.DIGEST // 2
    other = bytes([9] * half) + key[:half] + key[half:] + bytes(dedup.ENTRY - dedup.DIGEST - half)
    assert len(other) == dedup.ENTRY and key in other
    assert dedup.seen_rank(other, key) == -1
    seen = dedup.remember(other, key, 5, 2, 0)
    assert dedup.seen_rank(seen, key) == 2


def test_the_digest_ignores_reply_to_and_key_order() -> None:
    a = {"event_id": "e", "user_id": "u", "type": "t", "ts": 1, "reply_to": "x"}
    b = {"reply_to": "y", "ts": 1, "type": "t", "user_id": "u", "event_id": "e"}
    assert dedup.digest(a) == dedup.digest(b)
    assert dedup.digest(a) != dedup.digest({**a, "ts": 2})
    # beyond orjson's integers: the json fallback; 128 bits, so no pair of events can be made to collide
    assert len(dedup.digest({**a, "big": 1 << 80})) == dedup.DIGEST == 16


def test_a_negative_window_is_refused() -> None:
    with pytest.raises(ValueError, match="dedup_window"):
        Engine(dedup_window=-1)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 20_000), st.sampled_from([0, 40, 120, "fail", "ok"])),
        min_size=1,
        max_size=25,
    ),
    st.lists(st.tuples(st.integers(0, 24), st.sampled_from([0, 0, 1, 3, 25])), max_size=10),
)
def test_sending_any_events_again_changes_nothing_else(
    raw: list[tuple[int, int, int | str]], again: list[tuple[int, int]]
) -> None:
    """Each event sent again, right after itself or after ``delay`` more events: the decisions of the others
    are exactly those of the stream without the repeats, every repeat of an event that was not too late is a
    duplicate with its action, and the state is freed as without them (transfers and the logins of a
    sequence; no state TTL: the clean-up timers alone free the user)."""
    events = [
        login(f"t{i}-{k}", at, what == "ok") if isinstance(what, str) else transfer(f"t{i}-{k}", at, what)
        for k, (i, at, what) in enumerate(raw)
    ]
    once, once_alerts, _ = run(events, state_ttl=None, finish=True)
    repeats: dict[int, list[dict[str, Any]]] = {}
    for i, delay in again:
        k = i % len(events)
        repeats.setdefault(min(k + delay, len(events) - 1), []).append({**events[k], "reply_to": "api-b"})
    twice_events: list[dict[str, Any]] = []
    for k, e in enumerate(events):
        twice_events += [e, *repeats.get(k, [])]
    twice, twice_alerts, runner = run(twice_events, state_ttl=None, finish=True)
    firsts: dict[str, Decision] = {}
    for d in twice:
        first = firsts.setdefault(d.event_id, d)
        if d is not first:
            # a too-late event changes no state, so it is not remembered: decided again, as too late
            assert d.duplicate is not first.too_late
            assert d.too_late or not first.too_late
            assert d.action == first.action or not d.duplicate
    assert [d.to_dict() for d in firsts.values()] == [d.to_dict() for d in once]
    assert [a.to_dict() for a in twice_alerts] == [a.to_dict() for a in once_alerts]
    assert runner.store.encoded_sizes() == []


@pytest.mark.parametrize("window", [0, WINDOW])
def test_without_a_state_ttl_a_silent_user_is_still_freed(window: int) -> None:
    # (found in review) the clean-up freed a key only when nothing but _engine was left: with state_ttl=None
    # (replay --state-ttl none) every user who sent one event of the API kept _engine and _seen for ever
    runner = LocalRunner(Engine(load_rules_text(RULES), lateness=5_000, state_ttl=None, dedup_window=window))
    decisions = runner.run([transfer("t1", 0), transfer("t1", 0, reply_to="api-b")], finish=False)
    assert decisions[1].duplicate is (window > 0)  # type: ignore[union-attr]
    list(runner.finish())
    assert runner.store.for_key("u").data == {}


def test_with_api_an_event_followed_only_by_events_from_kafka_is_remembered_past_the_window() -> None:
    # docs/engine.md: forgotten when a newer event that is checked comes more than the window after it
    later = transfer("k1", 3_600_000, reply_to=None)
    decisions, _, _ = run([transfer("t1", 0), later, transfer("t1", 0, reply_to="api-b")])
    assert decisions[2].duplicate and decisions[2].too_late
    decisions, _, _ = run(
        [transfer("t1", 0), {**later, "reply_to": "api-a"}, transfer("t1", 0, reply_to="b")]
    )
    assert not decisions[2].duplicate and decisions[2].too_late


def test_the_content_is_compared_as_normalised_not_as_rules_compare_it() -> None:
    raw = b'{"event_id": 7, "user_id": "u", "type": "transfer", "ts": 1, "amount": "100"}'
    same = b'{"event_id": "7", "user_id": "u", "type": "transfer", "ts": 1, "amount": 100}'
    assert dedup.digest(parse_event(raw)) == dedup.digest(parse_event(same))
    for other in (b"100.0", b"1e2"):
        assert dedup.digest(parse_event(same.replace(b"100", other))) != dedup.digest(parse_event(same))


def test_a_window_shorter_than_the_lateness_still_keeps_what_is_not_too_late() -> None:
    # (found in review) with job.lateness_ms above job.dedup_window_ms, an event forgotten by the window but
    # still within the lateness was decided again and counted twice: 50 + 50 + 50 + 40 made t3 a REVIEW
    events = [transfer("t1", 0), transfer("t2", 20_000), transfer("t1", 0, reply_to="api-b")]
    decisions, _, _ = run([*events, transfer("t3", 21_000, amount=40)], window=10_000, lateness=60_000)
    assert decisions[2].duplicate and not decisions[2].too_late
    assert decisions[3].action == "PASS"
