"""riskctl.flink.fast_path over PyFlink's own embedded operation classes (apache-flink's
``TwoInputFunctionOperation``, its converters built from the type protos the JVM sends, its keyed-broadcast
wrapper and contexts), with stand-ins for the Java objects behind them.

The same records go through the operation as PyFlink runs it and through the fast path; what would reach
the JVM must be the same, value for value. The job's integration tests run the fast path in real Flink
(tests/integration/test_job_door.py checks its counter).
"""

from __future__ import annotations

import gc
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from riskctl.flink import fast_path
from riskctl.flink.risk_function import PATH_METRIC, RAW_EVENT, TAGGED, RiskFunction
from tests.unit.flink.test_flink_keyed_state import RULE, FakeListState, FakeRuntime, FakeValueState

T = 1_699_999_990_000
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def pyflink_embedded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """PyFlink's embedded modules, importable outside the JVM: pemja's ``findClass`` (which only the JVM's
    interpreter has) gives stand-ins. The modules imported here are dropped afterwards."""
    stub = types.ModuleType("pemja")
    stub.findClass = lambda name: types.SimpleNamespace(INSTANCE=None)  # type: ignore[attr-defined]
    before = set(sys.modules)
    monkeypatch.setitem(sys.modules, "pemja", stub)
    from pyflink.fn_execution import flink_fn_execution_pb2 as pb
    from pyflink.fn_execution.embedded import operations

    yield types.SimpleNamespace(pb=pb, operations=operations)
    for name in set(sys.modules) - before:
        if name.startswith("pyflink.fn_execution"):
            del sys.modules[name]


class JTimers:
    """Java's TimerService, as PyFlink's TimerServiceImpl calls it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def registerEventTimeTimer(self, ts: int) -> None:  # noqa: N802 - Java's name
        self.calls.append(("register", ts))

    def deleteEventTimeTimer(self, ts: int) -> None:  # noqa: N802
        self.calls.append(("delete", ts))

    def registerProcessingTimeTimer(self, ts: int) -> None:  # noqa: N802
        self.calls.append(("processing", ts))

    def currentProcessingTime(self) -> int:  # noqa: N802
        return 0


class JContext:
    """The Java context of the keyed broadcast function: the current key as the JVM passes it (a Row)."""

    def __init__(self) -> None:
        self.key = ""
        self.timers = JTimers()
        self.key_calls = 0

    def timerService(self) -> JTimers:  # noqa: N802
        return self.timers

    def getCurrentKey(self) -> Any:  # noqa: N802
        self.key_calls += 1
        return (0, (self.key,))


class Decide(RiskFunction):
    """The job's function with stand-in state behind it: ``open`` is called by PyFlink's operation."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(lateness_ms=0, state_ttl_ms=3_600_000, rules_wait_ms=0, **kwargs)
        self.backing = FakeValueState()
        self.runtime = FakeRuntime(self.backing)

    def open(self, runtime_context: Any) -> None:
        try:
            super().open(self.runtime)
        finally:
            gc.enable()
            gc.unfreeze()
        assert self.engine is not None
        self.engine.upsert_rule(RULE)
        self.engine.upsert_rule(yaml.safe_load((ROOT / "rules" / "new_device_2fa.yaml").read_text()))
        self.started = self.have_rules = True
        self.pending = FakeListState()


def _type(pb: Any, name: str, fields: list[tuple[str, Any]] | None = None) -> Any:
    t = pb.TypeInfo(type_name=getattr(pb.TypeInfo, name))
    for field_name, field_type in fields or []:
        f = t.row_type_info.fields.add()
        f.field_name = field_name
        f.field_type.CopyFrom(field_type)
    return t


def _operation(env: Any, fn: Decide, ctx: JContext) -> Any:
    """PyFlink's operation for the job's decide function, as the JVM builds it (thread mode)."""
    pb = env.pb
    from pyflink.fn_execution.embedded.converters import from_type_info_proto

    string = _type(pb, "STRING")
    plain = {"raw": "PRIMITIVE_ARRAY", "topic": "STRING", "partition": "INT", "offset": "LONG"}
    event = _type(pb, "ROW", [(n, _type(pb, plain[n])) for n in RAW_EVENT.get_field_names()])
    keyed = _type(pb, "ROW", [("k", string), ("v", event)])
    out = {"ch": "STRING", "k": "STRING", "v": "PRIMITIVE_ARRAY"}
    tagged = _type(pb, "ROW", [(n, _type(pb, out[n])) for n in TAGGED.get_field_names()])
    proto = pb.UserDefinedDataStreamFunction(
        function_type=pb.UserDefinedDataStreamFunction.KEYED_CO_BROADCAST_PROCESS,
        payload=b"",
        key_type_info=_type(pb, "ROW", [("k", string)]),
    )
    from pyflink.fn_execution import pickle

    real_loads = pickle.loads
    try:  # the payload is the function itself (PyFlink unpickles a cloudpickled copy)
        pickle.loads = lambda data: fn
        return env.operations.TwoInputFunctionOperation(
            [proto],
            from_type_info_proto(keyed),
            from_type_info_proto(_type(pb, "PICKLED_BYTES")),
            from_type_info_proto(tagged),
            types.SimpleNamespace(),  # the Java runtime context: the function's open() does not use it
            ctx,
            ctx,
            None,
            {},
            object(),
            object(),
        )
    finally:
        pickle.loads = real_loads


def _records() -> list[tuple[str, dict[str, Any] | bytes]]:
    out: list[tuple[str, dict[str, Any] | bytes]] = []
    for n, (user, amount) in enumerate([("u1", 40), ("u2", 5), ("u1", 70), ("u1", 10), ("u3", 1)]):
        out.append(
            (user, {"event_id": f"e{n}", "user_id": user, "type": "transfer", "ts": T + n, "amount": amount})
        )
    login = {"type": "login", "success": True, "device_id": "d1", "city": "Paris"}
    out.append(("u3", {"event_id": "e5", "user_id": "u3", "ts": T + 5, **login}))  # a new device: a timer
    out.append(("u4", {"event_id": "e6", "user_id": "u4", "ts": T + 6, **login}))
    out.append(("u3", {"event_id": "e7", "user_id": "u3", "type": "2fa", "success": True, "ts": T + 7}))
    out.append(("u2", b"{not json"))  # a dead letter
    out.append(("u2", {"event_id": "e9", "user_id": "u2", "type": "transfer", "ts": T + 9, "amount": 200}))
    return out


def _run(env: Any, fast: bool) -> tuple[list[Any], Decide, JContext]:
    fn = Decide(fast_path=fast)
    ctx = JContext()
    op = _operation(env, fn, ctx)
    op.open()
    out = []
    for offset, (user, event) in enumerate(_records()):
        raw = event if isinstance(event, bytes) else json.dumps(event).encode()
        ctx.key = fn.backing.key = user
        out.append(list(op.process_element1((0, (user, (0, (raw, "events", 1, offset)))))))
    return out, fn, ctx


def test_the_fast_path_hands_the_jvm_what_pyflinks_own_path_does(pyflink_embedded: Any) -> None:
    own, own_fn, own_ctx = _run(pyflink_embedded, fast=False)
    fast, fast_fn, fast_ctx = _run(pyflink_embedded, fast=True)
    assert own_fn.path == "PyFlink's own (job.fast_path is false)"
    assert fast_fn.path == "the fast path"
    assert fast_fn.runtime.metrics.groups["riskctl"].counters[PATH_METRIC].count == 1
    assert own_fn.runtime.metrics.groups["riskctl"].counters[PATH_METRIC].count == 0

    def stable(outs: list[Any]) -> list[Any]:  # decided_at_ms and the like vary between the runs
        def doc(v: bytes) -> Any:
            d = json.loads(v)
            return {k: x for k, x in d.items() if not k.endswith("_ms") and k != "elapsed_us"}

        return [[(kind, (ch, k, doc(v))) for kind, (ch, k, v) in o] for o in outs]

    assert stable(fast) == stable(own)
    assert [[r[1][0] for r in o] for o in fast] == [["decision"]] * 8 + [["dead"], ["decision"]]
    actions = [json.loads(r[1][2])["action"] for o in fast for r in o if r[1][0] == "decision"]
    assert actions == ["PASS", "PASS", "REVIEW", "REVIEW", "PASS", "PASS", "PASS", "PASS", "REVIEW"]
    assert all(type(r) is tuple and r[0] == 0 and type(r[1]) is tuple for o in fast for r in o)
    assert all(type(r[1][2]) is bytes for o in fast + own for r in o)  # the record's value, as Kafka holds it
    assert fast_fn.backing.store == own_fn.backing.store  # the same state committed, key for key
    # each new-device login asks for a timer, and u3's 2FA settles its absence: that timer is deleted
    event_time = [c for c in fast_ctx.timers.calls if c[0] != "processing"]
    assert event_time == [
        ("register", T + 5 + 300_000),
        ("register", T + 6 + 300_000),
        ("delete", T + 5 + 300_000),
    ]
    assert event_time == [c for c in own_ctx.timers.calls if c[0] != "processing"]
    assert fast_ctx.key_calls == 0 and own_ctx.key_calls == len(_records())  # the JVM asked once per record


def test_what_the_fast_path_does_not_recognise_it_leaves_alone(pyflink_embedded: Any) -> None:
    fn = Decide()
    ctx = JContext()
    op = _operation(pyflink_embedded, fn, ctx)
    op._output_data_converter._field_names = ["channel", "k", "v"]  # another output row than TAGGED
    op.open()
    assert fn.path == "PyFlink's own (the output is not Row(ch, k, v) of plain values)"
    assert "process_element1" not in vars(op)
    ctx.key = fn.backing.key = "u1"
    raw = json.dumps({"event_id": "e1", "user_id": "u1", "type": "login", "ts": T}).encode()
    out = list(op.process_element1((0, ("u1", (0, (raw, "events", 0, 7))))))
    assert [r[1][0] for r in out] == ["decision"] and ctx.key_calls == 1


def test_outside_pyflinks_operation_nothing_is_installed() -> None:
    assert fast_path.install(object(), lambda k, r, c: [], ["raw"], ["ch"]) is not None
