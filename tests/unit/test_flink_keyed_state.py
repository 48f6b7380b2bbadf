"""FlinkKeyedState: the engine's KeyedState over one Flink ValueState, with an LRU cache of decoded dicts.

A stand-in ValueState (a dict per key, with read/write counters) replaces Flink's here; the job's integration
tests run the real one on RocksDB.
"""

from __future__ import annotations

import copy
from typing import Any

from riskctl.core.engine import Engine
from riskctl.core.rules import RuleSet, parse_rule
from riskctl.flink.risk_function import FlinkKeyedState


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
    assert backing.reads == 1  # the second event of u1 used the cached dict
    assert backing.writes == 2 and backing.store["u1"] == {"n": 2}  # the ValueState has every change


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
