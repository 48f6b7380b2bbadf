"""The frame every fault scenario of bench/chaos/run.py shares, on fakes: a service outage (stop, wait,
start) and a scenario run that is closed however the scenario ends. The suite itself stops the shared
broker and database, so it never runs in the tests.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

RUN = Path(__file__).resolve().parents[3] / "bench" / "chaos" / "run.py"


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("riskctl_chaos_run", RUN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["riskctl_chaos_run"] = module
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)  # puts the project and bench/ on sys.path, as a script does
    finally:
        sys.path[:] = path
    return module


class FakeService:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def stop(self) -> None:
        self.calls.append(("stop", None))

    def start(self, timeout: float) -> None:
        self.calls.append(("start", timeout))


def test_an_outage_stops_waits_and_starts_the_service_again(chaos: ModuleType) -> None:
    service = FakeService()
    t, back = chaos.outage(service, "fake", 0.05)
    assert service.calls == [("stop", None), ("start", 120)]
    assert back - t >= 0.05


def test_a_scenario_run_is_closed_when_the_scenario_fails(
    chaos: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    run = SimpleNamespace(name="r")
    monkeypatch.setattr(chaos, "start_run", lambda *a: events.append("start") or run)
    monkeypatch.setattr(chaos, "close_run", lambda r: events.append(f"close {r.name}"))
    plan = SimpleNamespace(warmup_s=0.0)
    with pytest.raises(RuntimeError, match="fault"):
        with chaos.scenario_run(None, None, "x", "at-least-once", plan) as got:
            assert got is run
            events.append("fault")
            raise RuntimeError("fault")
    assert events == ["start", "fault", "close r"]


def test_a_scenario_settles_for_its_tail_then_drains_and_summarizes(
    chaos: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    run = SimpleNamespace(job=SimpleNamespace(name="job-1"))
    monkeypatch.setattr(chaos, "finish_run", lambda r, p: events.append("finish"))
    monkeypatch.setattr(chaos, "summarize", lambda r, name: {"job": name})
    assert chaos.settle_and_summarize(run, SimpleNamespace(), 0.0) == {"job": "job-1"}
    assert events == ["finish"]


def test_records_neither_acknowledged_nor_failed_are_counted_with_the_producer_s_state(
    chaos: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chaos-stop35: after a broker restart the load's producer held about 30,000 records, neither delivered
    nor failed, through its flush; the row counted only the 10,060 acknowledged ones (sent 10,060, not
    acked 0, lost 0) and said nothing of the others nor of the producer's state."""
    import json

    monkeypatch.setattr(chaos, "gaps", lambda run: {})
    monkeypatch.setattr(chaos, "replay_diffs", lambda run: {})
    monkeypatch.setattr(chaos, "dead_ids", lambda run: set())
    stats = {
        "time": 1,
        "eos": {"idemp_state": "Assigned"},
        "brokers": {
            "b1": {"name": "127.0.0.1:9092/1", "state": "UP", "outbuf_cnt": 0, "waitresp_cnt": 2,
                   "toppars": {"events-0": {}}},
        },
        "topics": {
            "events": {
                "partitions": {
                    "0": {"leader": 1, "msgq_cnt": 30, "xmit_msgq_cnt": 5, "msgs_inflight": 7, "x": 0},
                    "-1": {"leader": -1, "msgq_cnt": 0},
                }
            }
        },
    }  # fmt: skip
    load = SimpleNamespace(
        order=[(f"e{i}", b"") for i in range(6)],
        acked={"e0": (0, 0), "e1": (0, 1), "e2": (1, 0)},
        failed={"e3": "timed out"},
        stats=json.dumps(stats),
    )
    job = SimpleNamespace(
        delivery="at-least-once",
        topics={"events": "events"},
        restarts=lambda: 0,
        exceptions=lambda: [],
        state=lambda: "RUNNING",
    )
    reader = SimpleNamespace(lock=threading.Lock(), decisions={"e0": [(1.0, "PASS")]})
    run = SimpleNamespace(job=job, load=load, reader=reader, faults=[], extra={}, load_window=(0.0, 1.0))
    row = chaos.summarize(run, "broker-stop")
    assert (row["sent"], row["not_acked"], row["not_delivered"]) == (3, 1, 2)
    state = row["load_producer"]
    assert state["idemp_state"] == "Assigned"
    assert state["brokers"] == {
        "127.0.0.1:9092/1": {"state": "UP", "outbuf_cnt": 0, "waitresp_cnt": 2, "partitions": ["events-0"]}
    }
    assert state["partitions"] == {"0": {"leader": 1, "msgq_cnt": 30, "xmit_msgq_cnt": 5, "msgs_inflight": 7}}
    # all delivered: nothing more in the row; no statistics yet: said so
    load.order = load.order[:4]
    assert "load_producer" not in chaos.summarize(run, "broker-stop")
    assert chaos.producer_state("", "events") == {"stats": "none"}
