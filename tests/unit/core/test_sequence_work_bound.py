"""The work one event may cost a sequence pattern is bounded in every path, in work units (never wall time).

Two paths were not bounded by the validator's estimate (``MAX_SEQUENCE_COST``, riskctl.core.rule_document):

* a late event replayed the whole late-event buffer (up to ``max_buffer`` events) from scratch, each replayed
  event costing up to the bound: 4.6 s for one late event of an accepted rule. The replay now counts its work
  as it goes and is given up past ``MAX_SEQUENCE_COST`` (the state stays as it was, one overflow counted);
* an ``at_least`` step held every event it took within ``within`` (copying them on each take), where the
  estimate charges ``MAX_TIMES``. A partial match now stops looping at ``MAX_TIMES`` events (counted as
  overflow); its hand-over to the next step goes on.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

from riskctl.core.engine import Engine
from riskctl.core.events import normalize_event
from riskctl.core.pattern_spec import MAX_SEQUENCE_COST, MAX_TIMES
from riskctl.core.patterns import LATE_REPLAY_BURST, LATE_REPLAY_RATE, PatternMatcher, PatternSpec, Step
from riskctl.core.rules import load_rules_text
from riskctl.core.state import InMemoryKeyedState

T0 = 1_700_000_000_000


def of_type(t: str) -> Any:
    def cond(event: Mapping[str, Any], steps: Mapping[str, Sequence[Any]]) -> bool:
        return event.get("type") == t

    return cond


def ev(i: int, t: str, ts: int | None = None) -> dict[str, Any]:
    return {"event_id": f"e{i}", "type": t, "ts": T0 + i if ts is None else ts}


def held(stored: Any) -> int:
    """The most events one partial match of the state holds in one step."""
    if stored is None:
        return 0
    return max((len(v) for run in stored[0] for k, v in run[8].items() if not k.startswith("_")), default=0)


def loop_spec(max_partial: int = 4) -> PatternSpec:
    return PatternSpec(
        "loop",
        (
            Step("s", of_type("s"), "event.type == 's'"),
            Step("b", of_type("x"), "event.type == 'x'", times=1, quantifier="at_least"),
            Step("c", of_type("z"), "event.type == 'z'", contiguity="strict"),
        ),
        within=10**9,
        max_partial=max_partial,
    )


def test_an_at_least_loop_holds_at_most_max_times_events_and_the_cap_is_counted() -> None:
    m = PatternMatcher(loop_spec())
    stored = m.process(None, ev(0, "s"), T0).new_stored
    overflow = 0
    for i in range(1, MAX_TIMES + 201):
        r = m.process(stored, ev(i, "x"), T0 + i)
        stored = r.new_stored
        overflow += r.overflow
        assert held(stored) <= MAX_TIMES
    assert overflow == 1
    # The 1,001st event stopped the loop: what is left is the partial match of 1,000 that may hand over to c,
    # which the next x (strict c) ends. Nothing holds more than the estimate charges.
    assert stored is None


def test_at_the_cap_the_hand_over_to_the_next_step_goes_on() -> None:
    m = PatternMatcher(loop_spec())
    stored = m.process(None, ev(0, "s"), T0).new_stored
    for i in range(1, MAX_TIMES + 1):
        stored = m.process(stored, ev(i, "x"), T0 + i).new_stored
    r = m.process(stored, ev(MAX_TIMES + 1, "z"), T0 + MAX_TIMES + 1)
    assert len(r.matches) == 1 and len(r.matches[0].event_ids["b"]) == MAX_TIMES and r.overflow == 0


def test_a_state_holding_more_than_the_cap_restores_and_stops_at_its_next_take() -> None:
    """A state written before the cap (a partial match holding 1,200 events) is read as it is."""
    m = PatternMatcher(loop_spec())
    stored = m.process(None, ev(0, "s"), T0).new_stored
    for i in range(1, MAX_TIMES + 1):
        stored = m.process(stored, ev(i, "x"), T0 + i).new_stored
    s_ts, s_seq, k, c, l_ts, l_seq, loop_ok, next_ok, ctx, seqs = stored[0][-1]
    extra = tuple(ev(10_000 + j, "x") for j in range(200))
    ctx = dict(ctx, b=ctx["b"] + extra)
    stored[0][-1] = (s_ts, s_seq, k, c + 200, l_ts, l_seq, True, next_ok, ctx, seqs + tuple(range(200)))
    blob = pickle.dumps(stored)
    r = m.process(pickle.loads(blob), ev(5000, "z"), T0 + 5000)
    assert len(r.matches) == 1 and len(r.matches[0].event_ids["b"]) == MAX_TIMES + 200
    r = m.process(pickle.loads(blob), ev(5001, "x"), T0 + 5001)
    assert r.overflow == 1 and held(r.new_stored) <= MAX_TIMES + 200


HEAVY = " and ".join(["event.amount > 1"] * 98)  # 393 elements, as the validator counts them


def heavy_spec(max_partial: int) -> PatternSpec:
    return PatternSpec(
        "heavy",
        (
            Step("a", of_type("a"), "event.type == 'a'"),
            Step("b", lambda e, s: False, HEAVY),
        ),
        within=10**9,
        max_partial=max_partial,
    )


def test_a_late_replay_past_the_work_bound_is_given_up_and_counted() -> None:
    # 700 partial matches each testing a 393-element condition: one replayed event is past the bound.
    m = PatternMatcher(heavy_spec(700), lateness=60_000)
    stored = None
    for i in range(700):
        stored = m.process(stored, ev(i, "a"), T0 + i).new_stored
    runs_before = list(stored[0])
    r = m.process(stored, ev(10_000, "a"), T0 + 100)  # late: older than the newest
    assert not r.too_late
    assert r.overflow == 1 and PatternMatcher.overflow(r.new_stored) == 1 and r.matches == ()
    assert r.new_stored[0] == runs_before  # the partial matches are those of before the late event
    # Deterministic: a copy of the state gives up at the same place, and in-order events go on as before.
    again = m.process(pickle.loads(pickle.dumps(r.new_stored)), ev(10_001, "a"), T0 + 101)
    assert again.overflow == 1
    nxt = m.process(r.new_stored, ev(10_002, "a"), T0 + 1000)
    assert nxt.overflow == 1  # 701 partial matches: the oldest dropped, as max_partial does


def test_a_late_replay_within_the_work_bound_still_matches() -> None:
    # 20 partial matches over 21 events (the replay's work about 20 x 21 / 2 x 394 < MAX_SEQUENCE_COST)
    m = PatternMatcher(heavy_spec(30), lateness=60_000)
    stored = None
    for i in range(20):
        stored = m.process(stored, ev(i, "a"), T0 + i).new_stored
    r = m.process(stored, ev(10_000, "a"), T0 + 10)
    assert r.overflow == 0 and len(r.new_stored[0]) == 21
    assert r.new_stored[0][10][0] == T0 + 10  # the late event started one in its place


def test_the_late_replay_of_the_heaviest_accepted_rule_stays_within_the_bound() -> None:
    """The rule of the 4.6 s late event (bench/hostile_rules.py 'arith_elements'): its replay is given up."""
    steps = (
        "    - name: a\n      when: event.type == 'x'\n    - name: b\n      when: "
        + " or ".join(["(" + " + ".join(["event.amount"] * 20) + ") > 1e15"] * 6)
        + "\n"
    )
    text = f"id: r\naction: REVIEW\nsequence:\n  within: 7d\n  max_partial: 670\n  steps:\n{steps}"
    engine = Engine(load_rules_text(text), lateness=60_000)
    state = InMemoryKeyedState()
    for i in range(670):
        engine.process(state, normalize_event(dict(ev(i, "x"), user_id="u", amount=1.5)))
    late = normalize_event(dict(ev(5000, "x", T0 + 600), user_id="u", amount=1.5))
    engine.process(state, late)
    assert engine.pattern_overflow == 1
    (stored,) = (v for k, v in state.data.items() if k.startswith("pattern:"))
    # Given up: the partial matches are those of before (a replay would have started one at the late event
    # and dropped the oldest for max_partial, which is also one overflow).
    assert len(stored[0]) == 670 and stored[0][0][0] == T0
    assert all(run[0] != T0 + 600 or run[1] != 670 for run in stored[0])
    assert MAX_SEQUENCE_COST == 250_000


# ------------------------------------------------------------------------------------ the state bound


def seq_rule(steps: str, max_partial: int = 3) -> str:
    return f"id: r\naction: REVIEW\nsequence:\n  within: 7d\n  max_partial: {max_partial}\n  steps:\n{steps}"


AT_LEAST = (
    "    - name: s\n      when: event.type == 's'\n    - name: b\n      when: event.type == 'x'\n"
    "      at_least: 1\n    - name: c\n      when: event.type == 'z'\n      contiguity: strict\n"
)


def test_an_at_least_step_has_a_state_bound_and_a_real_state_stays_under_it() -> None:
    from riskctl.core.bounds import state_bound

    rules = load_rules_text(seq_rule(AT_LEAST))
    bound = state_bound(rules, lateness=0)  # raised ValueError before the cap: no bound known
    engine = Engine(rules, lateness=0)
    state = InMemoryKeyedState()
    peak = 0
    for i in range(3 + MAX_TIMES + 100):
        t = "s" if i < 3 else "x"
        event = {"event_id": chr(0x10000 + i) + "\U0010ffff" * 255, "user_id": "u", "type": t, "ts": T0 + i}
        engine.process(state, normalize_event(event))
        if i % 100 == 0 or MAX_TIMES - 5 < i < MAX_TIMES + 5:
            peak = max(peak, len(pickle.dumps(state.data, protocol=5)))
    assert 1_000_000 < peak < bound.total


def test_the_state_bound_counts_the_kept_aggregates() -> None:
    from riskctl.core.bounds import state_bound

    def bound(b_when: str) -> int:
        steps = (
            "    - name: a\n      when: event.type == 'x'\n      times: 50\n"
            f'    - name: b\n      when: "{b_when}"\n'
        )
        return state_bound(load_rules_text(seq_rule(steps, 64)), lateness=0).total

    plain = bound("event.type == 'y' and event.device != null")
    kept = bound("event.type == 'y' and distinct(a.device) > 3")
    # 64 partial matches, each with a set of 50 distinct values of up to 256 4-byte characters
    assert kept - plain > 64 * 50 * 256


def distinct_rule(fields: int, max_partial: int, times: int = 1000) -> str:
    cond = " and ".join(f"distinct(b.f{j}) >= 0" for j in range(fields))
    return seq_rule(
        "    - name: s\n      when: event.type == 's'\n"
        f"    - name: b\n      when: \"event.type == 'x' and {cond}\"\n      times: {times}\n"
        "    - name: c\n      when: event.type == 'z'\n",
        max_partial,
    )


def test_the_estimate_charges_the_set_a_kept_distinct_copies_per_take() -> None:
    """Each take into a step copies the set of every distinct() kept over it (up to the step's events): 205
    partial matches of forty over a step of 1,000 cost 100-220 ms per event (bench 'distinct_sets')."""
    from riskctl.core.errors import RuleSetError

    try:
        load_rules_text(distinct_rule(40, 205))
    except RuleSetError as exc:
        assert "evaluations per event" in str(exc)
    else:
        raise AssertionError("accepted")
    load_rules_text(distinct_rule(40, 6))  # 6 x (elements + 1,000 + 40 x 1,000) fits
    load_rules_text(distinct_rule(1, 64, times=5))  # an ordinary distinct over a small step: as before


def test_a_late_replay_charges_the_set_of_reported_matches() -> None:
    """Before the replay, the matches already reported (up to 4 x max_buffer, each identified by its events'
    arrival numbers) are hashed into a set: 4,000 of 1,000 events took 36 ms. It is charged (1/8 unit per
    number); past the bound the replay is given up before it starts."""
    spec = PatternSpec(
        "r",
        (Step("a", of_type("a"), "event.type == 'a'"), Step("b", of_type("b"), "event.type == 'b'")),
        within=10**9,
        after_match="no_skip",
    )
    m = PatternMatcher(spec, lateness=60_000)
    stored = None
    for i in range(3):
        stored = m.process(stored, ev(i, "a"), T0 + i).new_stored
    # what 4,000 matches of long no_skip rules leave (their starts still in the buffer)
    stored[7] = [(T0, 0, tuple(range(j, j + 600))) for j in range(4000)]
    r = m.process(stored, ev(100, "b"), T0 + 1)
    assert r.overflow == 1 and r.matches == () and len(r.new_stored[7]) == 4000
    stored[7] = stored[7][:100]  # 100 x 600 / 8 = 7,500: replayed
    stored[10] = None  # with a full budget of late replays (the given-up one spent it; tested below)
    r = m.process(stored, ev(101, "b"), T0 + 1)
    # replayed: the given-up late event was kept in the buffer, so it is matched now (e0 e100, e1 e100)
    assert r.overflow == 0 and [mt.event_ids["b"] for mt in r.matches] == [("e100",), ("e100",)]


# ------------------------------------------------------------------------------ the budget of late replays


def late_spec() -> PatternSpec:
    return PatternSpec(
        "late", (Step("a", of_type("a"), "event.type == 'a'"), Step("b", of_type("b"), "b")), 10**9
    )


def test_a_producer_stamping_a_users_events_late_gets_his_replays_bounded_per_event() -> None:
    """Each late event replayed the whole buffer: 1,000 buffered events made every late one cost 1,000 units
    and more, as often as the producer liked (20-30 times an in-order event in the engine). Now a key's
    replays cost at most LATE_REPLAY_BURST + LATE_REPLAY_RATE per event of the key, together; the others are
    not started (one overflow each)."""
    m = PatternMatcher(late_spec(), lateness=10**8, max_buffer=10_000)
    stored = None
    n_in_order, n_late = 1000, 3000
    for i in range(n_in_order):  # 'b's: kept for a late 'a', no partial match (a replay of them is pure scan)
        stored = m.process(stored, ev(i, "b"), T0 + i).new_stored
    skipped = 0
    for j in range(n_late):
        r = m.process(stored, ev(n_in_order + j, "b"), T0 + 500)
        assert not r.too_late and r.matches == ()
        stored = r.new_stored
        skipped += r.overflow
    replayed = n_late - skipped
    # each replay went over at least the 1,000 in-order events of the buffer, one unit each
    assert replayed * n_in_order <= LATE_REPLAY_BURST + LATE_REPLAY_RATE * (n_in_order + n_late)
    assert replayed >= LATE_REPLAY_BURST // (n_in_order + n_late)  # the burst was spent on replays
    assert skipped > n_late // 2  # the old code replayed all 3,000 (3,000,000+ units)

    # A late event not replayed waits in the buffer: the next replay the key pays for matches it.
    r = m.process(stored, ev(9_000, "a"), T0 + 600)
    assert r.overflow == 1 and r.matches == ()  # not replayed now
    stored = r.new_stored
    for k in range(10):  # the key's next events earn what a replay of its buffer costs
        stored = m.process(stored, ev(9_001 + k, "z"), T0 + 2000 + k).new_stored
    r = m.process(stored, ev(9_100, "b"), T0 + 700)
    assert r.overflow == 0
    assert [(mt.event_ids["a"], mt.completed_by) for mt in r.matches] == [(("e9000",), "late")]


def test_a_state_of_the_layout_before_the_budget_gets_a_full_one_at_its_first_late_event() -> None:
    m = PatternMatcher(late_spec(), lateness=10**6)
    stored = None
    for i in range(5):
        stored = m.process(stored, ev(i, "b"), T0 + i).new_stored
    old = stored[:10]  # as written before the budget's slot
    r = m.process(old, ev(10, "a"), T0 + 1)
    assert [mt.event_ids for mt in r.matches] == [{"a": ("e10",), "b": ("e2",)}]
    left, at, cost = r.new_stored[10]  # a full budget less this replay's work (6 events gone over, 1 pair)
    assert len(r.new_stored) == 11 and left == LATE_REPLAY_BURST - cost and 6 <= cost < 100 and at == 6


def test_a_jump_in_event_time_that_empties_the_buffer_does_not_refill_the_replay_budget() -> None:
    # Without a strict step an event no condition holds for is not buffered: one stamped past what the buffer
    # keeps emptied it, the state went (nothing pending) and with it the budget: the key started full again.
    # A producer alternating floods of late events with such jumps got a burst per jump (measured: 1,240 units
    # an event over 20 cycles of 64 events, against 512).
    a = of_type("a")
    a.reads_steps = False  # type: ignore[attr-defined]
    b = of_type("b")
    b.reads_steps = False  # type: ignore[attr-defined]
    spec = PatternSpec(
        "p",
        (Step("a", a, "event.type == 'a'", quantifier="at_least"), Step("b", b, "event.type == 'b'")),
        10_000,
    )
    matcher = PatternMatcher(spec, lateness=1000)
    stored: Any = None
    for i in range(60):
        stored = matcher.process(stored, {"event_id": f"a{i}", "type": "a"}, i).new_stored
    stored = matcher.process(stored, {"event_id": "late", "type": "a"}, 10).new_stored
    credit = stored[10]
    assert credit is not None and credit[0] < LATE_REPLAY_BURST  # the replay drew on the budget
    jump = matcher.process(stored, {"event_id": "c", "type": "c"}, 60 + 10_000 + 2000)
    assert jump.new_stored is not None and not jump.new_stored[6] and not jump.new_stored[0]
    # kept: the next replay pays from what is left; the last replay's cost, the next one's gate, went with the
    # buffer it went over
    assert jump.new_stored[10] == (credit[0], credit[1], 0)


def test_the_gate_of_the_next_replay_shrinks_with_the_buffer() -> None:
    """A replay is not started while the key has less than its last replay cost. That cost stayed what it was
    after the buffer had emptied: a key whose budget a flood of late events had drained waited about
    last cost / LATE_REPLAY_RATE events (up to ~489) before a replay of a buffer of one event."""
    m = PatternMatcher(late_spec(), lateness=20_000, max_buffer=20_000)
    stored = None
    n = 10_000
    for i in range(n):  # 'b's within the lateness: a replay goes over all of them
        stored = m.process(stored, ev(i, "b"), T0 + i).new_stored
    for j in range(100):  # late 'b's until the budget is too low for one more replay
        r = m.process(stored, ev(n + j, "b"), T0 + 5_000)
        stored = r.new_stored
        if r.overflow:
            break
    else:
        raise AssertionError("the budget never ran out")
    assert stored[10][2] > n  # the last replay's cost: the whole buffer
    # time moves on: the buffer keeps only the newest event (the others are older than any late event can be)
    newest = T0 + 60_000  # past the lazy pruning's due (2 x lateness)
    stored = m.process(stored, ev(20_000, "b"), newest).new_stored
    assert len(stored[6]) == 1 and stored[10][2] < 10
    r = m.process(stored, ev(20_001, "a"), newest - 100)  # late, before the newest 'b'
    assert r.overflow == 0
    assert [(mt.event_ids, mt.completed_by) for mt in r.matches] == [
        ({"a": ("e20001",), "b": ("e20000",)}, "late")
    ]
