"""FlinkKeyedState: the engine's KeyedState over one Flink ValueState (the dict's bytes), with an LRU cache of
the committed bytes.

A stand-in ValueState (a dict per key, with read/write counters) replaces Flink's here; the job's integration
tests run the real one on RocksDB.
"""

from __future__ import annotations

import copy
import pickle
import sys
from pathlib import Path
from typing import Any

from riskctl.core.engine import Engine
from riskctl.core.rules import RuleSet, parse_rule
from riskctl.core.state import PICKLE_MARK, InMemoryKeyedState, decode_state, encode_state, state_code
from riskctl.flink import fast_path
from riskctl.flink.risk_function import FlinkKeyedState
from tests.helpers import PatchedEngine


class FakeValueState:
    """Flink's ValueState for a current key that the test sets; values are deep-copied like a serializer."""

    def __init__(self) -> None:
        self.store: dict[str, Any] = {}
        self.key = ""
        self.reads = 0
        self.writes = 0
        self.clears = 0

    def value(self) -> Any:
        self.reads += 1
        return copy.deepcopy(self.store.get(self.key))

    def update(self, value: Any) -> None:
        self.writes += 1
        self.store[self.key] = copy.deepcopy(value)

    def clear(self) -> None:
        self.clears += 1
        self.store.pop(self.key, None)


def use(state: FlinkKeyedState, backing: FakeValueState, key: str) -> None:
    backing.key = key
    state.begin(key)


def stored(backing: FakeValueState, key: str) -> Any:
    """The dict ``key``'s bytes hold: marshal's format (state layout 5), as this release writes them."""
    raw = backing.store[key]
    assert type(raw) is bytes and raw[0] != PICKLE_MARK, raw[:2]
    return decode_state(raw)


def test_a_cached_key_is_not_read_again_but_every_change_is_written() -> None:
    backing = FakeValueState()
    state = FlinkKeyedState(backing, cache_size=10)
    use(state, backing, "u1")
    assert state.get("n") is None
    state.put("n", 1)
    state.commit()
    use(state, backing, "u1")
    state.put("n", state.get("n") + 1)
    state.commit()
    assert backing.reads == 1  # the second event of u1 used the cached bytes
    assert backing.writes == 2 and stored(backing, "u1") == {state_code("n"): 2}  # every change


def test_nothing_is_written_when_nothing_changed() -> None:
    backing = FakeValueState()
    backing.store["u1"] = {"n": 5}
    state = FlinkKeyedState(backing)
    use(state, backing, "u1")
    assert state.get("n") == 5
    state.commit()
    assert backing.writes == 0 and backing.clears == 0


def test_the_least_recently_used_key_is_evicted_and_read_again() -> None:
    backing = FakeValueState()
    state = FlinkKeyedState(backing, cache_size=2)
    for key in ("a", "b", "c"):  # a is evicted when c comes in
        use(state, backing, key)
        state.put("seen", key)
        state.commit()
    reads = backing.reads
    use(state, backing, "c")
    assert state.get("seen") == "c"
    state.commit()
    assert backing.reads == reads  # c is cached
    use(state, backing, "a")
    assert state.get("seen") == "a"  # read back from the ValueState, not lost
    state.commit()
    assert backing.reads == reads + 1


def test_a_key_used_again_becomes_the_most_recent_and_is_kept() -> None:
    backing = FakeValueState()
    state = FlinkKeyedState(backing, cache_size=2)
    for key in ("a", "b", "a"):  # a is used again (and changed): b is now the least recent
        use(state, backing, key)
        state.put("seen", key)
        state.commit()
    use(state, backing, "c")
    state.put("seen", "c")
    state.commit()
    reads = backing.reads
    use(state, backing, "a")
    assert state.get("seen") == "a" and backing.reads == reads  # still cached
    state.commit()
    use(state, backing, "b")
    assert state.get("seen") == "b" and backing.reads == reads + 1  # evicted by c


def test_emptied_state_is_cleared_and_forgotten() -> None:
    backing = FakeValueState()
    state = FlinkKeyedState(backing)
    use(state, backing, "u1")
    state.put("x", 1)
    state.commit()
    use(state, backing, "u1")
    state.remove("x")
    state.commit()
    assert "u1" not in backing.store and backing.clears == 1
    backing.store["u1"] = {"x": 9}  # e.g. restored from elsewhere: the cache must not hide it
    use(state, backing, "u1")
    assert state.get("x") == 9


def test_cache_off_reads_every_time() -> None:
    backing = FakeValueState()
    state = FlinkKeyedState(backing, cache_size=0)
    for _ in range(3):
        use(state, backing, "u1")
        state.put("n", 1)
        state.commit()
    assert backing.reads == 3


def test_the_engine_decides_the_same_with_and_without_the_cache() -> None:
    rule = parse_rule(
        {
            "id": "three_logins",
            "action": "REVIEW",
            "features": {"logins_1m": {"kind": "count", "window": "1m", "filter": 'event.type == "login"'}},
            "when": "logins_1m >= 3",
        }
    )

    def run(cache_size: int) -> list[str]:
        engine = Engine(RuleSet([rule]), lateness=0, state_ttl=3_600_000)
        backing = FakeValueState()
        state = FlinkKeyedState(backing, cache_size=cache_size)
        actions = []
        for i in range(12):
            user = f"u{i % 3}"
            use(state, backing, user)
            event = {"event_id": f"e{i}", "user_id": user, "type": "login", "ts": 1_000 * i}
            result = engine.process(state, event)
            state.commit()
            assert result.decision is not None
            actions.append(result.decision.action)
        return actions

    cached, uncached = run(2), run(0)
    assert cached == uncached
    assert cached.count("REVIEW") == 6  # each user's third and fourth login


# -- the guard: one event's failure never stops the job ------------------------------------------------------
class TtlValueState(FakeValueState):
    """Flink's ValueState with a processing-time TTL as the job sets it (refreshed by each write, an expired
    value never returned), on a clock the test moves."""

    def __init__(self, ttl_s: float, clock: Any) -> None:
        super().__init__()
        self.ttl_s = ttl_s
        self.clock = clock
        self.written: dict[str, float] = {}

    def value(self) -> Any:
        if self.key in self.written and self.clock() - self.written[self.key] >= self.ttl_s:
            self.store.pop(self.key, None)
        return super().value()

    def update(self, value: Any) -> None:
        super().update(value)
        self.written[self.key] = self.clock()


def test_a_cached_key_reads_as_flinks_ttl_has_it(monkeypatch: Any) -> None:
    """A stall longer than Flink's TTL (processing time) frees a key the engine (event time) would still read;
    whether the key was cached must not change the decision."""
    import time

    now = [1_000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    rule = parse_rule(RULE)  # a 1 h sum of amounts > 100 -> REVIEW
    a = {"event_id": "a", "user_id": "u1", "type": "transfer", "ts": 1_699_990_000_000, "amount": 60}
    b = {**a, "event_id": "b", "ts": a["ts"] + 1_800_000}  # half an hour later in event time
    actions = {}
    for cache_size in (0, 10):
        backing = TtlValueState(3_660.0, lambda: now[0])  # the engine's hour plus a margin of a minute
        state = FlinkKeyedState(backing, cache_size=cache_size, ttl_ms=3_660_000)
        engine = Engine(RuleSet([rule]), state_ttl=3_600_000, cleanup_timers=False)
        got = []
        for event, stall in ((a, 0.0), (b, 4_000.0)):  # b is read after a stall of 4,000 s
            now[0] += stall
            use(state, backing, "u1")
            got.append(engine.process(state, event).decision.action)  # type: ignore[union-attr]
            state.commit()
        actions[cache_size] = got
    assert actions[0] == ["PASS", "PASS"]  # Flink had expired a's state
    assert actions[10] == actions[0]


def test_abort_leaves_the_committed_value_in_the_cache_and_the_value_state() -> None:
    backing = FakeValueState()
    state = FlinkKeyedState(backing, cache_size=10)
    use(state, backing, "u1")
    state.put("buf", [1])
    state.commit()
    use(state, backing, "u1")
    state.get("buf").append(2)  # the engine changes decoded values in place, then fails before commit
    state.abort()
    use(state, backing, "u1")
    assert state.get("buf") == [1] and backing.reads == 1  # the cached bytes are the committed value
    state.commit()
    assert stored(backing, "u1") == {state_code("buf"): [1]} and backing.writes == 1


def test_each_event_decodes_its_own_copy_of_the_cached_bytes() -> None:
    backing = FakeValueState()
    state = FlinkKeyedState(backing, cache_size=10)
    use(state, backing, "u1")
    state.put("recent", [{"ts": 1}])
    state.commit()
    use(state, backing, "u1")
    first = state.get("recent")
    state.commit()  # nothing changed: nothing written
    use(state, backing, "u1")
    second = state.get("recent")
    assert first == second and first is not second and backing.writes == 1


def test_a_value_of_the_former_layout_is_read_and_written_back_as_bytes() -> None:
    """A checkpoint of an older version holds the dict itself (pickled by PyFlink, handed over decoded)."""
    backing = FakeValueState()
    backing.store["u1"] = {"n": 1, "_engine": [1, 2]}
    state = FlinkKeyedState(backing, cache_size=10)
    use(state, backing, "u1")
    state.put("n", state.get("n") + 1)
    state.commit()
    assert stored(backing, "u1") == {state_code("n"): 2, state_code("_engine"): [1, 2]}
    use(state, backing, "u1")
    assert state.get("n") == 2 and backing.reads == 1  # cached as bytes from then on


def test_names_are_stored_as_their_codes_and_a_state_of_layout_3_is_read() -> None:
    """State layout 4: a user's dict holds each value under its name's code (a fifth to a quarter of the bytes
    were names). A dict of the former layouts, keyed by names, is read and written back as codes."""
    backing = FakeValueState()
    name = "pattern:rule_a:0123456789abcdef"
    backing.store["u1"] = pickle.dumps({name: (1, 2), "_engine": [3]}, protocol=5)
    state = FlinkKeyedState(backing, cache_size=10)
    use(state, backing, "u1")
    assert state.get(name) == (1, 2) and state.get("_engine") == [3]
    assert sorted(state.names()) == ["_engine", name]
    state.put("_engine", [4])
    state.commit()
    raw = backing.store["u1"]
    assert stored(backing, "u1") == {state_code(name): (1, 2), state_code("_engine"): [4]}
    assert b"rule_a" not in raw and b"_engine" not in raw


def test_values_pickled_by_pyflinks_wrapper_are_read_from_the_java_state() -> None:
    """In thread mode the job reads and writes the Java ValueState itself (riskctl.flink.fast_path): the
    bytes of an older release, or of PyFlink's own path, went through PyFlink's wrapper, which pickled them
    once more (and layout 1 had the wrapper pickle the dict itself); layout 4 wrote its pickle unwrapped.
    All are read as they were written. Every write pickles the state's own bytes (``pickle_writes``), which
    PyFlink's wrapper reads as the bytes they are: a job with ``job.fast_path: false`` restores them.
    """
    backing = FakeValueState()
    codes = {state_code("n"): 1}
    backing.store["u1"] = pickle.dumps(pickle.dumps(codes, protocol=5), protocol=4)  # layouts 2-4, wrapped
    backing.store["u2"] = pickle.dumps({"n": 7}, protocol=4)  # layout 1: the dict itself, wrapped
    backing.store["u3"] = pickle.dumps(codes, protocol=5)  # layout 4 on the Java state: its pickle as it is
    backing.store["u4"] = pickle.dumps(encode_state(codes), protocol=4)  # layout 5, through the wrapper
    state = FlinkKeyedState(backing, cache_size=10, pickle_writes=True)
    for n, user in enumerate(("u1", "u2", "u3", "u4")):
        use(state, backing, user)
        assert state.get("n") == (7 if user == "u2" else 1)
        state.put("n", 10 + n)
        state.commit()
    for n, user in enumerate(("u1", "u2", "u3", "u4")):
        raw = backing.store[user]
        # one unpickling gives the state's own bytes, in marshal's format (PyFlink's wrapper gives them so)
        inner = pickle.loads(raw)
        assert (
            type(inner) is bytes
            and inner[0] != PICKLE_MARK
            and decode_state(inner) == {state_code("n"): 10 + n}
        )
        assert raw == pickle.dumps(inner, protocol=3)  # no frame: 8 bytes around the state's own
    reread = FlinkKeyedState(backing, cache_size=0)
    use(reread, backing, "u3")
    assert reread.get("n") == 12


def test_without_pickle_writes_the_state_writes_its_own_bytes() -> None:
    """PyFlink's wrapper (``job.fast_path: false``, or a state the fast path does not take) pickles each value
    itself: the state hands it its own bytes, and reads back what the wrapper unpickles."""
    backing = PickledValueState()
    state = FlinkKeyedState(backing, cache_size=0)
    use(state, backing, "u1")
    state.put("n", 1)
    state.commit()
    inner = pickle.loads(backing.store["u1"])  # what the wrapper was given
    assert inner[0] != PICKLE_MARK and decode_state(inner) == {state_code("n"): 1}
    use(state, backing, "u1")
    assert state.get("n") == 1


def test_outside_the_embedded_runtime_the_state_stays_pyflinks() -> None:
    """The Java ValueState is used only under PyFlink's own embedded wrapper of pickled bytes; anything else
    (process mode's states, another PyFlink, a stand-in) is used as it is, with the reason logged."""
    backing = FakeValueState()
    state, why = fast_path.java_value_state(backing)
    assert state is backing and why is not None and why.startswith("PyFlink's embedded states are not")


def test_the_java_state_is_taken_only_from_pyflinks_wrapper_of_pickled_bytes(monkeypatch: Any) -> None:
    """What the checks of ``java_value_state`` take and refuse, over stand-ins of PyFlink's embedded modules
    (they import only inside the JVM); the job's integration tests run the real ones (the decide operator logs
    which way its state goes)."""
    import types

    class PickleDataConverter:
        pass

    class OtherConverter:
        pass

    class ValueStateImpl:
        def __init__(self, state: Any, converter: Any) -> None:
            self._state, self._value_converter = state, converter

    states = types.ModuleType("pyflink.fn_execution.datastream.embedded.state_impl")
    states.ValueStateImpl = ValueStateImpl  # type: ignore[attr-defined]
    converters = types.ModuleType("pyflink.fn_execution.embedded.converters")
    converters.PickleDataConverter = PickleDataConverter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, states.__name__, states)
    monkeypatch.setitem(sys.modules, converters.__name__, converters)
    java = FakeValueState()
    assert fast_path.java_value_state(ValueStateImpl(java, PickleDataConverter())) == (java, None)
    for wrapped in (
        ValueStateImpl(java, OtherConverter()),  # values of another type, which its converter would change
        ValueStateImpl(None, PickleDataConverter()),  # no Java state under it
        ValueStateImpl(object(), PickleDataConverter()),  # not a ValueState
        java,  # not PyFlink's wrapper at all
    ):
        state, why = fast_path.java_value_state(wrapped)
        assert state is wrapped and why, why


def test_the_codes_are_the_same_in_every_process_and_version() -> None:
    """A checkpoint's states are read by other processes and later versions: the code of a name is fixed."""
    assert state_code("_engine") == 1292743410803865971
    assert state_code("pattern:brute_force_login:2968942bf734c652") == 1941137440877942794
    assert all(0 <= state_code(n) < 2**62 for n in ("", "x", "first_seen.07032a8dd142", "\u00e9" * 300))


def test_a_restored_state_gives_its_names_back_and_a_stale_one_is_released() -> None:
    """After a restore the process has used no name yet: names() asks the engine for the names in force, so
    the engine keeps the state of an unchanged rule and releases that of a rule no longer in force (whose code
    no name in force has) when the rule set changed."""
    count = parse_rule(
        {
            "id": "logins",
            "action": "REVIEW",
            "features": {"n": {"kind": "count", "window": "1h", "filter": 'event.type == "login"'}},
            "when": "n >= 3",
        }
    )
    seq = parse_rule(
        {
            "id": "a_then_b",
            "action": "REVIEW",
            "sequence": {
                "within": "1h",
                "steps": [
                    {"name": "a", "when": 'event.type == "login"'},
                    {"name": "b", "when": 'event.type == "order"'},
                ],
            },
        }
    )
    backing = FakeValueState()
    first = Engine(RuleSet([count, seq]), lateness=0, state_ttl=3_600_000)
    state = FlinkKeyedState(backing, known_names=lambda: first.state_names)
    ts = 1_700_000_000_000
    for i in range(2):
        use(state, backing, "u1")
        first.process(state, {"event_id": f"e{i}", "user_id": "u1", "type": "login", "ts": ts + i})
        state.commit()
    before = set(stored(backing, "u1"))
    assert before <= {state_code(n) for n in first.state_names}

    # the same rules but the sequence, in a new process (a restore): nothing used in it yet
    second = Engine(RuleSet([count]), lateness=0, state_ttl=3_600_000)
    restored = FlinkKeyedState(backing, known_names=lambda: second.state_names)
    use(restored, backing, "u1")
    result = second.process(restored, {"event_id": "e2", "user_id": "u1", "type": "login", "ts": ts + 2})
    restored.commit()
    assert result.decision is not None and result.decision.action == "REVIEW"  # the count went on: 3 logins
    kept_codes = set(stored(backing, "u1"))
    kept = {state_code(n) for n in second.state_names}
    assert kept_codes == before & kept != set()
    assert before - kept == {state_code(k) for k in first.state_names if k.startswith("pattern:a_then_b:")}
    # (the sequence's state was released: the stored codes are those of the names in force)

    # without the engine's names, a code never used in the process would read as a stale name
    blind = FlinkKeyedState(backing)
    use(blind, backing, "u1")
    assert all(type(n) is int for n in blind.names())
    blind.remove(next(iter(blind.names())))
    assert len(list(blind.names())) == len(kept_codes) - 1


class FakeTimers:
    def __init__(self) -> None:
        self.event_time: list[int] = []
        self.processing_time: list[int] = []

    def register_event_time_timer(self, ts: int) -> None:
        self.event_time.append(ts)

    def register_processing_time_timer(self, ts: int) -> None:
        self.processing_time.append(ts)

    def delete_event_time_timer(self, ts: int) -> None:
        self.event_time.remove(ts)

    def current_processing_time(self) -> int:
        return 0


class FakeCtx:
    def __init__(self, key: str) -> None:
        self.key = key
        self.timers = FakeTimers()

    def get_current_key(self) -> str:
        return self.key

    def timer_service(self) -> FakeTimers:
        return self.timers

    def get_broadcast_state(self, desc: Any) -> dict[str, str]:
        return {}

    def time_domain(self) -> Any:
        from pyflink.datastream import TimeDomain

        return TimeDomain.EVENT_TIME


def _function(monkeypatch: Any) -> Any:
    import time

    from riskctl.flink.risk_function import RiskFunction

    fn = RiskFunction(lateness_ms=0, state_ttl_ms=3_600_000, rules_wait_ms=0)
    fn.engine = Engine(RuleSet([parse_rule(RULE)]))
    backing = FakeValueState()
    backing.key = "u1"
    fn.state = FlinkKeyedState(backing)
    fn.started = fn.have_rules = True
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    return fn, backing


RULE = {
    "id": "big",
    "action": "REVIEW",
    "features": {"total": {"kind": "sum", "field": "amount", "window": "1h"}},
    "when": "total > 100",
}


def _record(event: dict[str, Any] | bytes) -> tuple[Any, ...]:
    import json

    raw = event if isinstance(event, bytes) else json.dumps(event).encode()
    return (raw, "events", 1, 42)


def test_an_exception_while_deciding_dead_letters_the_event_and_rolls_back(monkeypatch: Any) -> None:
    import json

    fn, backing = _function(monkeypatch)
    ev = {"event_id": "e1", "user_id": "u1", "type": "transfer", "ts": 1_699_999_990_000, "amount": 60}
    rows = list(fn.process_element(_record(ev), FakeCtx("u1")))
    assert [r[0] for r in rows] == ["decision"]
    committed = copy.deepcopy(backing.store["u1"])

    engine = fn.engine
    real = engine.process

    def failing(state: Any, event: Any, clock: int | None = None) -> Any:
        real(state, event, clock)  # changes the cached state in place, then fails
        fn.engine.current_rule = "big"
        msg = "boom"
        raise ZeroDivisionError(msg)

    monkeypatch.setattr(fn, "engine", PatchedEngine(fn.engine, process=failing))
    ev2 = {**ev, "event_id": "e2", "ts": ev["ts"] + 1000}
    rows = list(fn.process_element(_record(ev2), FakeCtx("u1")))
    assert [r[0] for r in rows] == ["dead"] and rows[0][1] == "events:1:42"
    dl = json.loads(rows[0][2])
    assert dl["error"] == "ZeroDivisionError" and dl["rule_id"] == "big"
    assert dl["reason"] == "internal error while deciding: ZeroDivisionError: boom"
    assert json.loads(dl["raw"])["event_id"] == "e2" and fn.internal_errors == 1
    assert backing.store["u1"] == committed  # nothing of the failed event was committed

    monkeypatch.setattr(fn, "engine", engine)
    rows = list(fn.process_element(_record({**ev, "event_id": "e3", "ts": ev["ts"] + 2000}), FakeCtx("u1")))
    decision = json.loads(rows[0][2])
    assert decision["event_id"] == "e3" and decision["rules"][0]["evidence"]["features"]["total"] == 120


def test_hostile_records_and_a_far_future_ts_are_dead_letters_in_the_function(monkeypatch: Any) -> None:
    import json

    fn, _ = _function(monkeypatch)
    far = {"event_id": "f", "user_id": "u1", "type": "login", "ts": 253_402_300_799_999}
    for record, reason in (
        (_record(far), "ms ahead of now"),
        (_record(b"\xff" * 1_000_000), "larger than max_event_bytes"),
        ((None, "events", 0, 1), "empty record"),
    ):
        rows = list(fn.process_element(record, FakeCtx("u1")))
        assert [r[0] for r in rows] == ["dead"] and reason in json.loads(rows[0][2])["reason"]
        assert len(rows[0][2]) <= 262_144


def test_a_failing_timer_is_counted_and_never_raised(monkeypatch: Any) -> None:
    fn, _ = _function(monkeypatch)

    def failing(state: Any, ts: int) -> Any:
        msg = "timer boom"
        raise RuntimeError(msg)

    monkeypatch.setattr(fn, "engine", PatchedEngine(fn.engine, on_timer=failing))
    assert list(fn.on_timer(123, FakeCtx("u1"))) == []
    assert fn.timer_errors == 1


class FakeListState:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: Any) -> None:
        self.items.append(copy.deepcopy(item))

    def get(self) -> list[Any]:
        return list(self.items)

    def clear(self) -> None:
        self.items.clear()


def test_held_events_keep_their_record_for_a_dead_letter(monkeypatch: Any) -> None:
    import json

    fn, _ = _function(monkeypatch)
    fn.pending = FakeListState()
    fn.started = fn.have_rules = False
    fn.rules_wait_ms = 10**9
    fn.opened_at = __import__("time").monotonic()
    ev = {"event_id": "h1", "user_id": "u1", "type": "transfer", "ts": 1_699_999_990_000, "amount": 1}
    assert list(fn.process_element(_record(ev), FakeCtx("u1"))) == []  # held at start-up
    assert fn.held_keys == {"u1"} and fn.pending.items[0][1][1:] == ("events", 1, 42)
    fn.started = True

    def failing(state: Any, event: Any, clock: int | None = None) -> Any:
        msg = "held boom"
        raise ValueError(msg)

    monkeypatch.setattr(fn, "engine", PatchedEngine(fn.engine, process=failing))
    rows = list(fn.process_element(_record({**ev, "event_id": "h2"}), FakeCtx("u1")))
    assert [r[0] for r in rows] == ["dead", "dead"]
    assert [json.loads(json.loads(r[2])["raw"])["event_id"] for r in rows] == ["h1", "h2"]


class _RestoredCtx(FakeCtx):
    """A context after a restore: the rules in broadcast state; an event-time or processing-time call."""

    def __init__(self, key: str, processing_time: bool = False) -> None:
        super().__init__(key)
        self.processing_time = processing_time

    def get_broadcast_state(self, desc: Any) -> dict[str, str]:
        import json

        return {"big": json.dumps(RULE)}

    def time_domain(self) -> Any:
        from pyflink.datastream import TimeDomain

        return TimeDomain.PROCESSING_TIME if self.processing_time else TimeDomain.EVENT_TIME


def _held_then_restored(monkeypatch: Any) -> tuple[Any, Any]:
    """An attempt that held one event of u1 at start-up, checkpointed; the instance restored from it (its
    open() just ran: rules in broadcast state, not read yet, nothing held by this instance)."""
    import time

    from riskctl.flink.risk_function import RiskFunction

    held = FakeListState()
    first, backing = _function(monkeypatch)
    first.pending = held
    first.started = first.have_rules = False
    first.rules_wait_ms = 10**9
    first.opened_at = time.monotonic()
    ev = {"event_id": "held1", "user_id": "u1", "type": "transfer", "ts": 1_699_999_990_000, "amount": 500}
    assert list(first.process_element(_record(ev), FakeCtx("u1"))) == []
    restored = RiskFunction(lateness_ms=0, state_ttl_ms=3_600_000, rules_wait_ms=10_000)
    restored.engine = Engine(RuleSet())
    restored.state = FlinkKeyedState(backing)
    restored.pending = held  # what the checkpoint kept
    restored.opened_at = time.monotonic()
    restored.restored_hold_until = restored.opened_at + 10
    return restored, held


def test_a_restored_hold_timer_decides_the_events_an_earlier_attempt_held(monkeypatch: Any) -> None:
    import json

    fn, held = _held_then_restored(monkeypatch)
    rows = fn.on_timer(123, _RestoredCtx("u1", processing_time=True))
    assert [(r[0], json.loads(r[2])["event_id"], json.loads(r[2])["action"]) for r in rows] == [
        ("decision", "held1", "REVIEW")
    ]
    assert held.items == []


def test_a_key_s_next_event_after_a_restore_comes_after_its_held_events(monkeypatch: Any) -> None:
    import json

    fn, held = _held_then_restored(monkeypatch)
    ev = {"event_id": "new1", "user_id": "u1", "type": "transfer", "ts": 1_699_999_991_000, "amount": 1}
    rows = list(fn.process_element(_record(ev), _RestoredCtx("u1")))
    decisions = [json.loads(r[2]) for r in rows]
    assert [(d["event_id"], d["rules"][0]["evidence"]["features"]) for d in decisions] == [
        ("held1", {"total": 500}),
        ("new1", {"total": 501}),
    ]
    assert held.items == []


def test_after_start_up_events_read_no_held_events(monkeypatch: Any) -> None:
    fn, held = _held_then_restored(monkeypatch)
    fn.restored_hold_until = 1.0  # the window is over (monotonic time 1 s is long past)
    fn.have_rules = fn.started = True
    reads = []
    real_get = held.get
    monkeypatch.setattr(held, "get", lambda: reads.append(1) or real_get())
    ev = {"event_id": "e1", "user_id": "u2", "type": "transfer", "ts": 1_699_999_991_000, "amount": 1}
    assert [r[0] for r in fn.process_element(_record(ev), _RestoredCtx("u2"))] == ["decision"]
    assert reads == [] and fn.restored_hold_until == 0.0


class FakeRuntime:
    """What RiskFunction.open asks of Flink's RuntimeContext."""

    def __init__(self, backing: FakeValueState) -> None:
        self.backing = backing
        self.descriptors: list[Any] = []
        self.metrics = FakeMetrics()

    def get_state(self, desc: Any) -> FakeValueState:
        self.descriptors.append(desc)
        return self.backing

    def get_list_state(self, desc: Any) -> FakeListState:
        return FakeListState()

    def get_index_of_this_subtask(self) -> int:
        return 0

    def get_attempt_number(self) -> int:
        return 0

    def get_metrics_group(self) -> FakeMetrics:
        return self.metrics


class FakeCounter:
    def __init__(self) -> None:
        self.count = 0
        self.calls = 0

    def inc(self, n: int = 1) -> None:
        self.count += n
        self.calls += 1


class FakeMetrics:
    """Flink's MetricGroup: named groups and counters."""

    def __init__(self) -> None:
        self.counters: dict[str, FakeCounter] = {}
        self.groups: dict[str, FakeMetrics] = {}

    def add_group(self, name: str) -> FakeMetrics:
        return self.groups.setdefault(name, FakeMetrics())

    def counter(self, name: str) -> FakeCounter:
        return self.counters.setdefault(name, FakeCounter())


def test_the_job_arms_no_cleanup_timer_and_flinks_ttl_frees_silent_keys(monkeypatch: Any) -> None:
    import gc
    import json
    import time

    from riskctl.flink.risk_function import RiskFunction

    fn = RiskFunction(lateness_ms=0, state_ttl_ms=3_600_000, rules_wait_ms=0)
    backing = FakeValueState()
    backing.key = "u1"
    runtime = FakeRuntime(backing)
    try:
        fn.open(runtime)
    finally:
        gc.enable()  # open() turns the collector off for the decide interpreter
        gc.unfreeze()
    assert fn.engine is not None and fn.engine.cleanup_timers is False
    (desc,) = runtime.descriptors
    ttl = desc._ttl_config  # the keys that never come back: Flink's TTL, job.state_ttl_margin_ms (a day) past
    assert ttl.get_ttl().to_milliseconds() == 3_600_000 + 86_400_000  # the engine's
    fn.engine.upsert_rule(RULE)
    fn.started = fn.have_rules = True
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    ev = {"event_id": "e1", "user_id": "u1", "type": "transfer", "ts": 1_699_999_990_000, "amount": 60}
    ctx = FakeCtx("u1")
    rows = list(fn.process_element(_record(ev), ctx))
    assert json.loads(rows[0][2])["event_id"] == "e1"
    assert ctx.timers.event_time == []  # where the replay's engine asks for one at ts + TTL
    replay = Engine(RuleSet([parse_rule(RULE)]), state_ttl=3_600_000)
    assert replay.process(InMemoryKeyedState(), ev).timers == [ev["ts"] + 3_600_000]


def test_job_state_cache_keys_sizes_the_decide_operators_cache(tmp_path: Any) -> None:
    import gc

    import pytest

    from riskctl.config import load_settings
    from riskctl.errors import ConfigError
    from riskctl.flink.risk_function import RiskFunction

    env = {"RISKCTL_STACK_DIR": str(tmp_path)}
    assert load_settings(env=env).job.state_cache_keys == 80_000
    for bad in ("-1", "1000001", "many"):
        with pytest.raises(ConfigError, match="state_cache_keys"):
            load_settings(env={**env, "RISKCTL_JOB_STATE_CACHE_KEYS": bad})
    settings = load_settings(env={**env, "RISKCTL_JOB_STATE_CACHE_KEYS": "2"})
    fn = RiskFunction(
        lateness_ms=0, state_ttl_ms=3_600_000, rules_wait_ms=0, cache_keys=settings.job.state_cache_keys
    )
    backing = FakeValueState()
    try:
        fn.open(FakeRuntime(backing))
    finally:
        gc.enable()
        gc.unfreeze()
    assert fn.state is not None
    for key in ("a", "b", "c"):  # three users through a cache of two: the first is read again
        backing.key = key
        fn.state.begin(key)
        fn.state.put("n", 1)
        fn.state.commit()
    for key in ("a", "c"):
        backing.key = key
        fn.state.begin(key)
        fn.state.get("n")
        fn.state.commit()
    assert (fn.state.hits, fn.state.misses) == (1, 4)


# -- the engine over FlinkKeyedState decides as over a plain dict --------------------------------------------
class PickledValueState(FakeValueState):
    """A ValueState whose values go through pickle, as Flink's PICKLED_BYTE_ARRAY serializer sends them."""

    def value(self) -> Any:
        self.reads += 1
        raw = self.store.get(self.key)
        return None if raw is None else pickle.loads(raw)

    def update(self, value: Any) -> None:
        self.writes += 1
        self.store[self.key] = pickle.dumps(value)


class FlinkStore:
    """LocalRunner's store over one FlinkKeyedState: each use of a key commits the previous one's."""

    def __init__(self, cache_size: int) -> None:
        self.backing = PickledValueState()
        self.state = FlinkKeyedState(self.backing, cache_size)
        self.open = False

    def for_key(self, key: str) -> FlinkKeyedState:
        self.end()
        use(self.state, self.backing, key)
        self.open = True
        return self.state

    get_existing = for_key

    def drop_if_empty(self, key: str) -> None:
        pass

    def end(self) -> None:
        if self.open:
            self.state.commit()
            self.open = False


def test_the_rules_folder_over_the_simulator_decides_the_same_as_over_a_dict() -> None:
    """Decisions and alerts of the rules in rules/ (features, sequences, absences) over simulated users with
    attacks, with a cache far smaller than the users so most events read their state back from its bytes."""
    from riskctl.config import PROJECT_ROOT
    from riskctl.core.rules import load_rules
    from riskctl.core.runner import LocalRunner
    from riskctl.sim.generator import SimConfig, generate

    events, attacks = generate(SimConfig(users=150, rate=40, duration_s=120, attack_fraction=0.2, seed=7))
    assert len(events) > 2_000 and attacks

    def run(store: FlinkStore | None) -> list[dict[str, Any]]:
        rules = load_rules(PROJECT_ROOT / "rules")
        runner = LocalRunner(Engine(rules, lateness=2_000, state_ttl=3_600_000, cleanup_timers=False))
        if store is not None:
            runner.store = store  # type: ignore[assignment]
        records = []
        for event in events:
            records += [r.to_dict() for r in runner.feed(event)]
            if store is not None:
                store.end()
        records += [r.to_dict() for r in runner.finish()]
        return records

    store = FlinkStore(cache_size=20)
    over_flink, over_dict = run(store), run(None)
    assert over_flink == over_dict
    assert {r["action"] for r in over_dict if "action" in r} >= {"PASS", "REJECT"}
    assert any("alert_id" in r for r in over_dict)
    assert store.state.misses > len(events) / 2  # read back from bytes, not served from the cache


def _opened(cache_keys: int, **options: Any) -> tuple[Any, FakeValueState, FakeRuntime]:
    """A RiskFunction opened on fakes (its open() freezes the collector: set back for the test run)."""
    import gc

    from riskctl.flink.risk_function import RiskFunction

    fn = RiskFunction(
        lateness_ms=0, state_ttl_ms=3_600_000, rules_wait_ms=0, cache_keys=cache_keys, **options
    )
    backing = FakeValueState()
    runtime = FakeRuntime(backing)
    try:
        fn.open(runtime)
    finally:
        gc.enable()
        gc.unfreeze()
    return fn, backing, runtime


def test_the_cache_and_the_guard_are_counted_in_flink_metrics(monkeypatch: Any) -> None:
    """riskctl.stateCacheHits/Misses (for sizing job.state_cache_keys) and riskctl.internalErrors/timerErrors,
    brought up to date at most once a second (each update is a call into the JVM), and at close."""
    import gc
    import time

    from riskctl.flink.risk_function import METRICS, PATH_METRIC

    fn, backing, runtime = _opened(cache_keys=1)
    assert fn.engine is not None
    fn.engine.upsert_rule(RULE)
    fn.started = fn.have_rules = True
    counters = runtime.metrics.groups["riskctl"].counters
    assert sorted(counters) == sorted((*METRICS, PATH_METRIC))
    # not opened by PyFlink's operation (tests/unit/flink/test_fast_path.py is): PyFlink's own path, and
    # not counted as the fast path
    assert fn.path.startswith("PyFlink's own (")
    clock = [1_700_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    T = 1_699_999_990_000  # noqa: N806

    ctxs: list[FakeCtx] = []

    def send(user: str, n: int) -> None:
        backing.key = user
        ctxs.append(FakeCtx(user))
        ev = {"event_id": f"e{n}", "user_id": user, "type": "transfer", "ts": T + n, "amount": 1}
        rows = list(fn.process_element(_record(ev), ctxs[-1]))
        assert [r[0] for r in rows] == ["decision"]

    for n, user in enumerate(["u1", "u1", "u1", "u2", "u1"]):  # a cache of one user: u1 is read 2 times
        send(user, n)
    assert {name: c.count for name, c in counters.items()} == dict.fromkeys((*METRICS, PATH_METRIC), 0)
    assert ctxs[0].timers.processing_time == [1_700_000_001_000]  # and a report due a second later
    assert [c.timers.processing_time for c in ctxs[1:]] == [[]] * 4  # within the second: no call into the JVM

    class TimerCtx(FakeCtx):
        def time_domain(self) -> Any:
            from pyflink.datastream import TimeDomain

            return TimeDomain.PROCESSING_TIME

    clock[0] += 1.0
    assert list(fn.on_timer(1_700_000_001_000, TimerCtx("u1"))) == []  # no event came: the timer reports
    assert counters["stateCacheHits"].count == 2 and counters["stateCacheMisses"].count == 3
    calls = sum(c.calls for c in counters.values())
    # An event within the second after a timer's report: not reported now, but a timer is due at the next
    # report (there was none: its counts waited for the next event, over a minute in the door tests)
    clock[0] += 0.5
    send("u1", 5)
    assert sum(c.calls for c in counters.values()) == calls
    assert ctxs[-1].timers.processing_time == [1_700_000_002_000]
    send("u1", 6)  # one timer per report
    assert ctxs[-1].timers.processing_time == []
    clock[0] += 0.5
    assert list(fn.on_timer(1_700_000_002_000, TimerCtx("u1"))) == []
    assert counters["stateCacheHits"].count == 4  # u1's two events

    def failing(state: Any, event: Any, clock: int | None = None) -> Any:
        raise ZeroDivisionError

    monkeypatch.setattr(fn, "engine", PatchedEngine(fn.engine, process=failing))
    bad = {"event_id": "x", "user_id": "u1", "type": "transfer", "ts": T + 100, "amount": 1}
    assert [r[0] for r in fn.process_element(_record(bad), FakeCtx("u1"))] == ["dead"]
    try:
        fn.close()
    finally:
        gc.enable()
    assert counters["internalErrors"].count == 1
    assert counters["stateCacheHits"].count + counters["stateCacheMisses"].count == 8


def test_the_job_deletes_the_timer_of_a_settled_absence(monkeypatch: Any) -> None:
    fn, _ = _function(monkeypatch)
    fn.engine = Engine(
        RuleSet(
            [
                parse_rule(
                    {
                        "id": "no_2fa",
                        "action": "REVIEW",
                        "sequence": {
                            "within": "5m",
                            "steps": [
                                {"name": "login", "when": 'event.type == "login"'},
                                {"name": "none", "when": 'event.type == "2fa"', "absent": True},
                            ],
                        },
                    }
                )
            ]
        ),
        state_ttl=3_600_000,
        cleanup_timers=False,
    )
    ctx = FakeCtx("u1")
    ts = 1_699_999_990_000
    login = {"event_id": "e1", "user_id": "u1", "type": "login", "ts": ts}
    list(fn.process_element(_record(login), ctx))
    assert ctx.timers.event_time == [ts + 300_000]
    tfa = {"event_id": "e2", "user_id": "u1", "type": "2fa", "ts": ts + 5_000}
    list(fn.process_element(_record(tfa), ctx))
    assert ctx.timers.event_time == []  # deleted: it would have fired for nothing


def test_a_decision_too_large_for_the_sinks_is_written_without_its_evidence(monkeypatch: Any) -> None:
    """20 rules reading a 58 KB list: the decision would be 1.2 MB, over the sinks' 1 MiB max.request.size
    (the sink would fail and the job restart on this event, forever)."""
    import json

    from riskctl.core.decisions import MAX_RECORD_BYTES

    fn, _ = _function(monkeypatch)
    vpn = {"action": "REVIEW", "when": 'contains(event.tags, "vpn")', "alert": True}
    rules = [parse_rule({"id": f"vpn{i}", **vpn}) for i in range(20)]
    fn.engine = Engine(RuleSet(rules))
    ev = {"event_id": "e1", "user_id": "u1", "type": "login", "ts": 1_699_999_990_000}
    rows = list(fn.process_element(_record({**ev, "tags": ["vpn"] + ["x" * 200] * 290}), FakeCtx("u1")))
    assert [r[0] for r in rows] == ["decision"] + ["alert"] * 20
    assert all(len(r[2]) <= MAX_RECORD_BYTES for r in rows)
    decision = json.loads(rows[0][2])
    assert decision["action"] == "REVIEW" and len(decision["rules"]) == 20
    assert "evidence dropped" in decision["rules"][0]["evidence"]["omitted"]
    assert json.loads(rows[1][2])["rule"]["evidence"]["fields"]["tags"][0] == "vpn"  # an alert alone fits


def test_a_taskmanager_running_other_riskctl_code_refuses_the_job(tmp_path: Any) -> None:
    """A TaskManager's embedded interpreter keeps the modules it imported for its JVM's life: one that ran
    Python before riskctl changed would decide with the old code (seen here: a cluster started before an edit
    ran the edited job with the former risk_function and lost its held events)."""
    import pytest

    from riskctl.flink import risk_function
    from riskctl.flink.risk_function import RiskFunction, code_fingerprint

    fn = RiskFunction(lateness_ms=0, state_ttl_ms=3_600_000, rules_wait_ms=0)
    assert fn.code == risk_function.LOADED_CODE == code_fingerprint()  # the sources have not changed since
    fn.code = "0123456789abcdef"  # built by a client with other sources
    with pytest.raises(RuntimeError, match="restart the TaskManagers after installing or changing riskctl"):
        fn.open(FakeRuntime(FakeValueState()))


def _package_copy(tmp_path: Any) -> Any:
    """A copy of the riskctl package (the sources only) under ``tmp_path``: its folder."""
    import shutil

    from riskctl.flink.risk_function import PACKAGE_DIR

    copy = tmp_path / "riskctl"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_the_code_digest_changes_with_any_module_a_job_runs(tmp_path: Any) -> None:
    """An edit of a module the job's operators run, one they import at module level or only inside a
    function (riskctl.flink.env imports riskctl.stack.process in one), or a module they import by a name of
    its package (``from riskctl.core import native``) changes the digest a TaskManager compares."""
    from riskctl.flink.risk_function import code_fingerprint

    pkg = _package_copy(tmp_path)
    for edited in (
        "flink/job.py",
        "flink/risk_function.py",
        "core/engine.py",
        "core/expr/parser.py",
        "stack/process.py",
        "core/native.py",
        "config/settings.py",
        "__init__.py",
    ):
        before = code_fingerprint(pkg)
        path = pkg / edited
        path.write_text(path.read_text() + "# an edit\n")
        assert code_fingerprint(pkg) != before, edited


def test_the_code_digest_ignores_the_modules_no_job_runs(tmp_path: Any) -> None:
    """A test's job ended with exit 1 on a loaded machine: another engineer saved riskctl/console/accounts.py
    in the checkout between the client's import of riskctl and the MiniCluster's Python's (seconds apart,
    more on a loaded machine), and the digest of every source of the package differed, so the decide
    operator refused the job ("this TaskManager's Python runs riskctl ..."). Only the sources a job runs
    count now: an edit of the console, the CLI or the API, or a new module nothing imports, leaves it."""
    from riskctl.flink.risk_function import code_fingerprint

    pkg = _package_copy(tmp_path)
    before = code_fingerprint(pkg)
    for edited in ("console/accounts.py", "console/app.py", "cli/main.py", "serve/app.py", "sim/__init__.py"):
        path = pkg / edited
        path.write_text(path.read_text() + "# an edit\n")
    (pkg / "_edited_after_build.py").write_text("# a new module nothing imports\n")
    assert code_fingerprint(pkg) == before


def test_the_code_digest_covers_every_riskctl_module_the_jobs_operators_import() -> None:
    """What a fresh interpreter loads of riskctl for the job's operators (a TaskManager's, unpickling them)
    is within the sources the digest covers: a module missing there could change under a running job's
    TaskManager unnoticed."""
    import json
    import os
    import subprocess
    import sys

    from riskctl.flink.risk_function import PACKAGE_DIR, job_sources

    script = (
        "import json, sys; import riskctl.flink.job; "
        "print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items()) "
        "if n.split('.')[0] == 'riskctl' and getattr(m, '__file__', None))))"
    )
    env = {**os.environ, "RISKCTL_NATIVE_CORE": ""}  # the sources, not a compiled build of the core
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    loaded = {str(Path(f).resolve().relative_to(PACKAGE_DIR).as_posix()) for f in json.loads(out.stdout)}
    assert "flink/risk_function.py" in loaded
    assert loaded <= set(job_sources()), sorted(loaded - set(job_sources()))


def test_open_collects_a_failed_attempts_cyclic_garbage_before_freezing(monkeypatch: Any) -> None:
    """The TaskManager's interpreter outlives a restart: what the failed attempt left in reference cycles (its
    function and state cache, PyFlink's operators) must not be frozen into the permanent generation."""
    import gc
    import weakref

    from riskctl.flink.risk_function import RiskFunction

    class Attempt:
        pass

    old = Attempt()
    old.cycle = old  # type: ignore[attr-defined]
    gone = weakref.ref(old)
    del old
    gc.disable()  # as the previous attempt's open() left it (close() may not have run: a failure)
    fn = RiskFunction(lateness_ms=0, state_ttl_ms=3_600_000, rules_wait_ms=0)
    try:
        fn.open(FakeRuntime(FakeValueState()))
    finally:
        gc.enable()
        gc.unfreeze()
    assert gone() is None


def test_the_sequences_overflows_are_a_flink_counter(monkeypatch: Any) -> None:
    """Partial matches dropped past max_partial (and the other bounds of a sequence) show in the job."""
    import gc
    import time

    fn, backing, runtime = _opened(cache_keys=10)
    assert fn.engine is not None
    fn.engine.upsert_rule(
        {
            "id": "a_then_b",
            "action": "REVIEW",
            "sequence": {
                "within": "1h",
                "max_partial": 1,
                "steps": [
                    {"name": "a", "when": "event.type == 'a'"},
                    {"name": "b", "when": "event.type == 'b'"},
                ],
            },
        }
    )
    fn.started = fn.have_rules = True
    counters = runtime.metrics.groups["riskctl"].counters
    clock = [1_700_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    backing.key = "u1"
    for n in range(3):  # each 'a' starts a partial match; one may wait: two are dropped
        ev = {"event_id": f"e{n}", "user_id": "u1", "type": "a", "ts": 1_699_999_990_000 + n}
        assert [r[0] for r in fn.process_element(_record(ev), FakeCtx("u1"))] == ["decision"]
    assert fn.engine.pattern_overflow == 2
    try:
        fn.close()  # brings the counters up to date
    finally:
        gc.enable()
    assert counters["patternOverflows"].count == 2


def test_duplicates_are_a_flink_counter_and_change_no_state(monkeypatch: Any) -> None:
    """job.dedup api: the same event of riskctl serve decided again is a duplicate (riskctl.duplicates)."""
    import gc
    import json
    import time

    fn, backing, runtime = _opened(cache_keys=10, dedup_window_ms=600_000, replies=True)
    assert fn.engine is not None and fn.engine.dedup_window == 600_000 and not fn.engine.dedup_all
    fn.engine.upsert_rule({"id": "big", "action": "REJECT", "when": "event.amount > 100"})
    fn.started = fn.have_rules = True
    counters = runtime.metrics.groups["riskctl"].counters
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    backing.key = "u1"
    ev = {"event_id": "e1", "user_id": "u1", "type": "t", "ts": 1_699_999_990_000, "amount": 500}
    first = list(fn.process_element(_record({**ev, "reply_to": "api-0"}), FakeCtx("u1")))
    stored = backing.value()
    again = list(fn.process_element(_record({**ev, "reply_to": "api-1"}), FakeCtx("u1")))
    assert [r[0] for r in first] == [r[0] for r in again] == ["decision", "reply"]
    docs = [json.loads(r[2]) for r in (first[0], again[0])]
    assert [(d["action"], d["duplicate"]) for d in docs] == [("REJECT", False), ("REJECT", True)]
    assert backing.value() == stored  # nothing written for the duplicate
    try:
        fn.close()
    finally:
        gc.enable()
    assert counters["duplicates"].count == 1


def test_a_checkpointed_rule_the_new_limits_refuse_is_skipped_and_logged_and_the_others_run(
    monkeypatch: Any, caplog: Any
) -> None:
    """docs/rules.md, Limits, *Behaviour change*: a rule accepted by an older version (here a distinct_count
    over MAX_FEATURE_READS, and a condition holding a zero-width space) is not restored from the checkpoint's
    broadcast state; the job's log names it with the reason, and the other rules are in force."""
    import json
    import logging

    from riskctl.flink.risk_function import RiskFunction

    over = {
        "id": "wide",
        "action": "REJECT",
        "features": {"ips": {"kind": "distinct_count", "field": "ip", "window": "1h", "max_values": 10_000}},
        "when": "ips >= 1",
    }
    hidden = {"id": "hidden", "action": "REJECT", "when": 'event.type == "transfer\u200b" or true'}

    class Ctx(FakeCtx):
        def get_broadcast_state(self, desc: Any) -> dict[str, str]:
            return {"big": json.dumps(RULE), "wide": json.dumps(over), "hidden": json.dumps(hidden)}

    fn = RiskFunction(lateness_ms=0, state_ttl_ms=3_600_000, rules_wait_ms=0)
    fn.engine = Engine(RuleSet())
    backing = FakeValueState()
    backing.key = "u1"
    fn.state = FlinkKeyedState(backing)
    with caplog.at_level(logging.WARNING):
        fn._restore_rules(Ctx("u1"))
    assert sorted(r.id for r in fn.engine.ruleset) == ["big"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "rule 'wide' from broadcast state not restored" in logged and "MAX_FEATURE_READS" in logged
    assert "rule 'hidden' from broadcast state not restored" in logged and "U+200B" in logged


def test_a_checkpointed_rule_the_new_limits_refuse_is_reported_refused_once_by_subtask_0(
    monkeypatch: Any,
) -> None:
    """The source is restored at its offset and sends an accepted rule no more, so MySQL's status table kept
    'accepted' for a rule the restored job no longer runs ('riskctl rules list' said it was in force). The
    first output after the restore now carries a refused status with the reason: once, from subtask 0."""
    import gc
    import json

    over = {
        "id": "wide",
        "version": 7,
        "action": "REJECT",
        "features": {"ips": {"kind": "distinct_count", "field": "ip", "window": "1h", "max_values": 10_000}},
        "when": "ips >= 1",
    }
    stored = {"big": json.dumps({**RULE, "version": 3}), "wide": json.dumps(over)}

    class Ctx(FakeCtx):
        def get_broadcast_state(self, desc: Any) -> dict[str, str]:
            return stored

    ev = {"event_id": "e1", "user_id": "u1", "type": "transfer", "ts": 1_699_999_990_000, "amount": 60}
    for subtask in (0, 1):
        fn, backing, _runtime = _opened(cache_keys=10)
        fn.subtask = subtask
        backing.key = "u1"
        try:
            first = list(fn.process_element(_record(ev), Ctx("u1")))
            second = list(fn.process_element(_record({**ev, "event_id": "e2"}), Ctx("u1")))
        finally:
            gc.enable()
            gc.unfreeze()
        assert sorted(r.id for r in fn.engine.ruleset) == ["big"]
        statuses = [json.loads(r[2]) for r in first if r[0] == "status"]
        assert [r[0] for r in second] == ["decision"]
        if subtask:
            assert statuses == []
            continue
        assert [(s["rule_id"], s["version"], s["state"], s["field"]) for s in statuses] == [
            ("wide", 7, "refused", "features.ips.max_values")
        ]
        assert "MAX_FEATURE_READS" in statuses[0]["reason"]
        assert [r[0] for r in first] == ["status", "decision"]


def _opened_with_rule(**options: Any) -> Any:
    """A RiskFunction (lateness 5 s, ``options``) opened over a fake runtime, as the job's TaskManager opens
    it (its engine built by ``open``), with :data:`RULE` in force."""
    import gc

    from riskctl.flink.risk_function import RiskFunction

    fn = RiskFunction(lateness_ms=5_000, state_ttl_ms=3_600_000, rules_wait_ms=0, **options)
    backing = FakeValueState()
    backing.key = "u1"
    try:
        fn.open(FakeRuntime(backing))
    finally:
        gc.enable()  # open() turns the collector off for the decide interpreter
        gc.unfreeze()
    assert fn.engine is not None
    fn.engine.upsert_rule(RULE)
    fn.started = fn.have_rules = True
    return fn


def test_the_decide_function_takes_an_event_ahead_of_the_wall_clock_at_the_clock(monkeypatch: Any) -> None:
    """The job hands the engine the wall clock at each event (job.event_time_past_clock false): an event
    stamped 200 s ahead is taken at the clock, and the user's next transfers count; with the option on (as
    every event was before) they are too late and the sum misses them."""
    import json
    import time

    def decisions(past_clock: bool) -> list[dict[str, Any]]:
        fn = _opened_with_rule(event_time_past_clock=past_clock)
        clock = 1_700_000_000_000
        forged = {"event_id": "f", "user_id": "u1", "type": "page_view", "ts": clock + 200_000}
        out = []
        for i, ev in enumerate([forged, *({**forged, "event_id": f"t{n}", "type": "transfer", "amount": 60,
                                           "ts": clock + 1_000 * n} for n in (1, 2))]):  # fmt: skip
            monkeypatch.setattr(time, "time", lambda i=i: (clock + 1_000 * i + 10) / 1000)
            (row,) = fn.process_element(_record(ev), FakeCtx("u1"))
            out.append(json.loads(row[2]))
        return out

    capped = decisions(past_clock=False)
    assert [(d["event_id"], d["ahead_ms"], d["too_late"], d["action"]) for d in capped] == [
        ("f", 199_990, False, "PASS"),
        ("t1", 0, False, "PASS"),
        ("t2", 0, False, "REVIEW"),
    ]
    assert capped[0]["ts"] == 1_700_000_200_000  # its own
    blind = decisions(past_clock=True)
    assert [(d["ahead_ms"], d["too_late"], d["action"]) for d in blind[1:]] == [(0, True, "PASS")] * 2


def test_the_decide_function_holds_too_late_events_by_job_too_late_action(monkeypatch: Any) -> None:
    """job.too_late_action reaches the engine, and the operator counts too-late events (riskctl.tooLate)."""
    import json
    import time

    fn = _opened_with_rule(too_late_action="REVIEW")
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    ev = {"event_id": "e1", "user_id": "u1", "type": "transfer", "ts": 1_699_999_990_000, "amount": 60}
    behind = {**ev, "event_id": "e2", "ts": ev["ts"] - 6_000}
    out = [json.loads(fn.process_element(_record(e), FakeCtx("u1"))[0][2]) for e in (ev, behind)]
    assert [(d["too_late"], d["action"]) for d in out] == [(False, "PASS"), (True, "REVIEW")]
    assert fn.counts()["tooLate"] == 1
