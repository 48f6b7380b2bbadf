"""The layout of the job's state is the one recorded for ``STATE_LAYOUT`` (riskctl/flink/checkpoints.py).

A checkpoint records ``STATE_LAYOUT``, and a restore across a different number is refused; but the number is
raised by hand, and nothing told a developer who changed what the job stores (a field more in the engine's
bookkeeping, a feature's state of another shape, another state descriptor) that a checkpoint of the previous
layout would now be read wrongly. This test runs a fixed reference workload through the job's decide function
(riskctl.flink.risk_function.RiskFunction: its open(), its broadcast side, its events and timers, with
stand-ins for Flink's state) over the pure engine, and derives a structural signature of what is stored:
the state descriptors, each user's stored state dict (its format, its state names, and for each value its
nesting, types and positions, not its values), the held events' list state and the broadcast state's rule
documents. It must
equal the signature recorded for the current ``STATE_LAYOUT`` in state_layout.json.

When it differs: raise ``STATE_LAYOUT`` and record the new signature under the new number
(``.venv/bin/python -m tests.unit.flink.test_state_layout --record``; the older entries stay); when the new
code still reads the previous layout as it is, list that layout in ``READABLE_LAYOUTS`` too, so that its
checkpoints restore (layout 2: idle pattern states as tuples; the lists of layout 1 are read as before;
layout 3: a buffered place as its time alone; the tuples of layouts 1 and 2 are read as before; layout 4: the
values under their names' codes; a dict keyed by names is recoded when it is read; layout 5: marshal's format
instead of pickle's; a pickle is read by its first byte). A
change that both sides read correctly (as the engine reads a meta list without its last field, and the
previous release one with it) may replace the current number's entry instead: say why in the commit. A
change of the workload or of the reference rules below changes the signature without changing the layout:
re-record it under the same number.

The reference rules are a copy of rules/ (as of the layout 1) plus one rule with the feature kinds rules/ does
not use, so that an edit of rules/ (its state names derive from the definitions) does not move the signature.
"""

from __future__ import annotations

import gc
import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyflink.common import Row
from pyflink.datastream import TimeDomain

from riskctl.core.state import PICKLE_MARK, decode_state, encode_state, state_code
from riskctl.flink import risk_function
from riskctl.flink.checkpoints import STATE_LAYOUT
from riskctl.flink.risk_function import RULES_STATE, RiskFunction
from tests.unit.flink.test_flink_keyed_state import FakeListState, FakeRuntime, FakeValueState

SIGNATURES = Path(__file__).with_name("state_layout.json")
RECORDED_AS = "tests/unit/flink/state_layout.json"
RECORD = "'.venv/bin/python -m tests.unit.flink.test_state_layout --record'"
T = 1_700_000_000_000

REFERENCE_RULES = """
id: account_takeover_chain
action: REJECT
priority: 90
features:
  new_city: {kind: first_seen, field: city, horizon: 90d, filter: event.type == "login"}
sequence:
  within: 30m
  steps:
    - {name: login, when: event.type == "login" and event.success == true and new_city == true}
    - {name: password, when: event.type == "password_change"}
    - {name: transfer, when: event.type == "transfer" and event.amount >= 10000}
---
id: bot_cadence
action: REVIEW
priority: 30
features:
  interval_last_10: {kind: last_n, n: 10, stat: avg_interval, horizon: 1h}
when: interval_last_10 < 1s
---
id: brute_force_login
action: REJECT
priority: 100
sequence:
  within: 10s
  steps:
    - {name: first_fail, when: event.type == "login" and event.success == false}
    - {name: more_fails, when: event.type == "login" and event.success == false, times: 2, contiguity: strict}
    - {name: success, when: event.type == "login" and event.success == true, contiguity: strict}
---
id: login_failures_hourly
action: REVIEW
priority: 40
applies_to: [login]
features:
  failed_logins_1h: {kind: count, window: 1h, filter: event.type == "login" and event.success == false}
when: event.success == false and failed_logins_1h >= 5
---
id: new_device_without_2fa
action: REVIEW
priority: 10
features:
  new_device: {kind: first_seen, field: device_id, horizon: 90d, filter: event.type == "login"}
sequence:
  within: 5m
  steps:
    - {name: login, when: event.type == "login" and event.success == true and new_device == true}
    - {name: no_2fa, when: event.type == "2fa" and event.success == true, absent: true}
---
id: register_then_quick_order
action: REVIEW
priority: 20
sequence:
  within: 3s
  steps:
    - {name: register, when: event.type == "register"}
    - {name: order, when: event.type == "order", max_gap: 3s}
---
id: large_transfer_reject
status: shadow
action: REJECT
priority: 60
applies_to: [transfer]
when: event.amount >= 20000
---
id: transfer_velocity
action: REVIEW
priority: 50
applies_to: [transfer]
features:
  transfer_sum_5m: {kind: sum, field: amount, window: 5m, filter: event.type == "transfer"}
when: transfer_sum_5m > 50000
---
id: reference_kinds
action: REVIEW
priority: 5
features:
  avg_amount: {kind: avg, field: amount, window: 1h}
  min_amount: {kind: min, field: amount, window: 1h}
  max_amount: {kind: max, field: amount, window: 1h}
  devices_1h: {kind: distinct_count, field: device_id, window: 1h}
  since_login: {kind: time_since, filter: event.type == "login"}
  last_amounts: {kind: last_n, n: 3, stat: sum, field: amount}
when: >-
  avg_amount > 1000000 and min_amount > 0 and max_amount > 0 and devices_1h > 9
  and since_login > 0 and last_amounts > 0
"""


def shape(value: Any) -> str:
    """The structure of a stored value: types, nesting and positions, not the values (bytes keep their
    length: a packed record's size is its layout). In a list or tuple, a run of equal shapes is written once
    with its count (``int*2``); a dict keeps its keys (field names, or the workload's own fixed keys)."""
    if value is None or isinstance(value, bool | int | float | str):
        return type(value).__name__
    if isinstance(value, bytes | bytearray):
        return f"{type(value).__name__}[{len(value)}]"
    if isinstance(value, list | tuple):
        runs: list[list[Any]] = []
        for item in map(shape, value):
            if runs and runs[-1][0] == item:
                runs[-1][1] += 1
            else:
                runs.append([item, 1])
        items = ", ".join(item if n == 1 else f"{item}*{n}" for item, n in runs)
        return f"list[{items}]" if isinstance(value, list) else f"tuple({items})"
    if isinstance(value, set | frozenset):
        return f"{type(value).__name__}{{{', '.join(sorted({shape(v) for v in value}))}}}"
    if isinstance(value, dict):
        fields = sorted((repr(k), shape(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in fields) + "}"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"  # pickled as a class instance


def encoding(raw: bytes) -> str:
    """The format of a user's stored bytes: a pickle names its protocol (its second byte)."""
    return f"pickle {raw[1]}" if raw[0] == PICKLE_MARK else "marshal"


class _Runtime(FakeRuntime):
    """FakeRuntime that keeps the list states it hands out, by descriptor name."""

    def __init__(self, backing: FakeValueState) -> None:
        super().__init__(backing)
        self.lists: dict[str, FakeListState] = {}

    def get_list_state(self, desc: Any) -> FakeListState:
        self.descriptors.append(desc)
        return self.lists.setdefault(desc.name, FakeListState())


class _Broadcast(dict[str, str]):
    def put(self, key: str, value: str) -> None:
        self[key] = value

    def remove(self, key: str) -> None:
        self.pop(key, None)


class _Timers:
    def __init__(self) -> None:
        self.event_time: set[tuple[str, int]] = set()
        self.key = ""

    def register_event_time_timer(self, ts: int) -> None:
        self.event_time.add((self.key, ts))

    def delete_event_time_timer(self, ts: int) -> None:
        self.event_time.discard((self.key, ts))

    def register_processing_time_timer(self, ts: int) -> None:
        pass

    def current_processing_time(self) -> int:
        return 0


class _Ctx:
    """The keyed broadcast function's context, for one current key at a time."""

    def __init__(self) -> None:
        self.broadcast = _Broadcast()
        self.timers = _Timers()
        self.key = ""

    def get_broadcast_state(self, descriptor: Any) -> _Broadcast:
        return self.broadcast

    def timer_service(self) -> _Timers:
        return self.timers

    def get_current_key(self) -> str:
        return self.key

    def time_domain(self) -> Any:
        return TimeDomain.EVENT_TIME


def _descriptor(desc: Any) -> dict[str, Any]:
    return {
        "kind": type(desc).__name__,
        "type": str(desc.type_info),
        "ttl": getattr(desc, "_ttl_config", None) is not None,
    }


def signature() -> dict[str, Any]:
    """Run the reference workload through the job's decide function; the shape of every state it stores."""
    fn = RiskFunction(
        lateness_ms=5_000,
        state_ttl_ms=24 * 3_600_000,
        rules_wait_ms=10**9,  # the first event is held (the pending list state), as at a job's start-up
        dedup_window_ms=600_000,
        dedup_all=True,
        fast_path=False,
    )
    backing = FakeValueState()
    runtime = _Runtime(backing)
    try:
        fn.open(runtime)
    finally:
        gc.enable()  # open() turns the collector off for the decide interpreter
        gc.unfreeze()
    ctx = _Ctx()

    def send(user: str, n: int, etype: str, at_ms: int, **fields: Any) -> None:
        ctx.key = ctx.timers.key = backing.key = user
        event = {"event_id": f"{user}-{n}", "user_id": user, "type": etype, "ts": T + at_ms, **fields}
        outs = fn.decide_record(user, (json.dumps(event).encode(), "riskctl.events", 0, n), ctx)
        assert all(out[0] != "dead" for out in outs), outs

    send("u1", 0, "login", 0, success=False, city="Paris", device_id="d1")  # held: no rules yet
    pending = [shape(item) for item in runtime.lists["pending"].get()]
    for doc in yaml.safe_load_all(REFERENCE_RULES):
        statuses = list(fn.process_broadcast_element(Row("upsert", doc["id"], 1, json.dumps(doc)), ctx))
        assert all(b'"accepted"' in s[2] for s in statuses), statuses
    fn.started = True
    # u1: an account takeover chain, a late event re-checked, a duplicate
    send("u1", 1, "login", 1_000, success=False, city="Paris", device_id="d1")
    send("u1", 2, "login", 2_000, success=True, city="Lyon", device_id="d2")
    send("u1", 3, "password_change", 3_000)
    send("u1", 5, "transfer", 5_000, amount=20_000)
    send("u1", 4, "register", 4_000)  # late
    send("u1", 1, "login", 1_000, success=False, city="Paris", device_id="d1")  # delivered again
    # u2: brute force, then a new device without 2FA, whose absence timer fires
    for n in range(3):
        send("u2", n, "login", n * 1_000, success=False, device_id="d1")
    send("u2", 3, "login", 3_500, success=True, device_id="d1")
    send("u2", 4, "login", 4_000, success=True, device_id="d9")
    for key, ts in sorted(ctx.timers.event_time):
        ctx.key = ctx.timers.key = backing.key = key
        fn.on_timer(ts, ctx)
    # u3: a bot's cadence, transfer velocity, a quick order, every other feature kind
    for n in range(11):
        send("u3", n, "click", n * 100, device_id=f"d{n % 3}")
    send("u3", 11, "transfer", 1_200, amount=30_000, device_id="d1")
    send("u3", 12, "transfer", 1_300, amount=30_000.5, device_id="d2")
    send("u3", 13, "register", 2_000)
    send("u3", 14, "order", 3_000, amount=5)
    send("u3", 15, "login", 3_500, success=True, city="Oslo", device_id="d1")
    send("u3", 16, "transfer", 4_000, amount=10, device_id="d1")
    stored = sorted(backing.store.items())
    users = {user: decode_state(raw) for user, raw in stored}
    assert fn.engine is not None
    # a value stored under a name's code shows as the code and, for the reader, the name
    names = {state_code(name): name for name in fn.engine.state_names}

    def stored_as(key: Any) -> str:
        return f"#{key} ({names.get(key, '?')})" if type(key) is int else str(key)

    return {
        "descriptors": {
            **{desc.name: _descriptor(desc) for desc in runtime.descriptors},
            RULES_STATE.name: _descriptor(RULES_STATE),
        },
        "encoding": {user: encoding(raw) for user, raw in stored},
        "engine": {
            user: {stored_as(key): shape(v) for key, v in state.items()} for user, state in users.items()
        },
        "pending": pending,
        "rules": {rule_id: shape(json.loads(text)) for rule_id, text in sorted(ctx.broadcast.items())},
    }


def _paths(value: Any, at: str = "") -> dict[str, Any]:
    """Path -> shape, to name where two signatures differ."""
    if isinstance(value, dict) and at.count("/") < 3:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_paths(item, f"{at}/{key}"))
        return out
    return {at: value}


def differences(recorded: Any, current: Any) -> list[str]:
    """One line per path whose shape differs (``recorded -> current``)."""
    old, new = _paths(recorded), _paths(current)
    return [
        f"  {path}: {old.get(path, '(absent)')}\n    -> {new.get(path, '(absent)')}"
        for path in sorted(old.keys() | new.keys())
        if old.get(path) != new.get(path)
    ]


def test_the_state_layout_is_the_one_recorded_for_state_layout() -> None:
    recorded: dict[str, Any] = json.loads(SIGNATURES.read_text(encoding="utf-8"))
    current = signature()
    assert str(STATE_LAYOUT) in recorded, (
        f"no signature recorded for STATE_LAYOUT {STATE_LAYOUT} in {RECORDED_AS}: record it with {RECORD}"
    )
    diff = differences(recorded[str(STATE_LAYOUT)], current)
    assert not diff, (
        f"the job's state no longer has the layout recorded for STATE_LAYOUT {STATE_LAYOUT}:\n"
        + "\n".join(diff)
        + f"\nA checkpoint of layout {STATE_LAYOUT} would be read into the new code wrongly: raise "
        f"STATE_LAYOUT in riskctl/flink/checkpoints.py to {STATE_LAYOUT + 1} (a restore of an older "
        f"checkpoint is then refused) and record the new signature under it with {RECORD} (older entries "
        "stay). A change the new code reads correctly from the old layout too: see this test's docstring"
    )


def _encode_with(monkeypatch: pytest.MonkeyPatch, encode: Callable[[Any], bytes]) -> None:
    """The decide function's state encodes with ``encode`` (and decodes as the job does)."""
    real = risk_function.FlinkKeyedState

    def state(*args: Any, **kwargs: Any) -> Any:
        return real(*args, codec=(encode, decode_state), **kwargs)

    monkeypatch.setattr(risk_function, "FlinkKeyedState", state)


def test_a_state_name_more_in_what_the_job_stores_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the test compares sees the job's encoding: FlinkKeyedState's bytes, decoded as a restore does."""
    base = signature()
    assert base == signature() and set(base["engine"]) == {"u1", "u2", "u3"}  # deterministic, every user
    _encode_with(monkeypatch, lambda data: encode_state({**data, "_extra": [1]}))
    changed = signature()
    assert differences(base, changed) == [
        f"  /engine/{user}/_extra: (absent)\n    -> list[int]" for user in ("u1", "u2", "u3")
    ]


def test_another_encoding_of_the_same_values_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same values in another format are another layout: the previous release would misread them."""
    base = signature()
    _encode_with(monkeypatch, lambda data: pickle.dumps(data, protocol=5))
    assert differences(base, signature()) == [
        f"  /encoding/{user}: marshal\n    -> pickle 5" for user in ("u1", "u2", "u3")
    ]


if __name__ == "__main__":  # the current signature; with --record, written under STATE_LAYOUT
    if sys.argv[1:] == ["--record"]:
        signatures = json.loads(SIGNATURES.read_text(encoding="utf-8"))
        signatures[str(STATE_LAYOUT)] = signature()
        SIGNATURES.write_text(json.dumps(signatures, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"recorded the signature of STATE_LAYOUT {STATE_LAYOUT} in {RECORDED_AS}")
    else:
        json.dump({str(STATE_LAYOUT): signature()}, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
