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


class FakeMetricFetcher:
    """Flink 1.20's REST metric answers (MetricFetcherImpl + AbstractMetricsHandler), on a fake clock: a
    request starts a refresh if the last one started more than ``interval`` seconds ago and has ended, and is
    answered from the store as it is, before that refresh lands."""

    def __init__(self, interval: float, stored: int | None, last_refresh: float, config: list[Any]) -> None:
        self.now = 0.0
        self.interval = interval
        self.stored = stored  # None: the job is not in the store yet
        self.last_refresh = last_refresh
        self.refreshing: tuple[float, int] | None = None  # (lands at, value)
        self.true_restarts = 1
        self.config = config

    def sleep(self, s: float) -> None:
        self.now += s

    def _land(self) -> None:
        if self.refreshing and self.refreshing[0] <= self.now:
            self.stored, self.refreshing = self.refreshing[1], None

    def rest(self, path: str) -> Any:
        self._land()
        if path == "/jobmanager/config":
            return self.config
        assert path == "/jobs/j1/metrics?get=numRestarts", path
        if self.refreshing is None and self.now - self.last_refresh > self.interval:
            self.last_refresh = self.now
            self.refreshing = (self.now + 0.05, self.true_restarts)
        return [] if self.stored is None else [{"id": "numRestarts", "value": str(self.stored)}]


def _job(chaos: ModuleType, fetcher: FakeMetricFetcher, monkeypatch: pytest.MonkeyPatch) -> Any:
    job = chaos.Job.__new__(chaos.Job)  # no topics, table or cluster: only the REST reads
    job.job_id = "j1"
    job.rest = fetcher.rest
    monkeypatch.setattr(chaos, "time", SimpleNamespace(sleep=fetcher.sleep))
    return job


@pytest.mark.parametrize(
    ("stored", "last_refresh"),
    [
        (0, -4.0),  # chaos-stop38: the last refresh (4 s ago) was before the kill; the read starts none
        (0, -60.0),  # the read starts a refresh, and is answered before it lands
        (None, -60.0),  # the job was not in the store yet: the rows with "–"
    ],
)
def test_restarts_are_read_after_a_refresh_that_started_after_the_first_read(
    chaos: ModuleType, monkeypatch: pytest.MonkeyPatch, stored: int | None, last_refresh: float
) -> None:
    fetcher = FakeMetricFetcher(10.0, stored, last_refresh, config=[])
    job = _job(chaos, fetcher, monkeypatch)
    assert job.restarts() == 1
    assert fetcher.now <= 15.0  # Flink's default interval (10 s) and a bit


def test_restarts_wait_for_the_cluster_s_own_fetch_interval(
    chaos: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = [{"key": "metrics.fetcher.update-interval", "value": "2 s"}, {"key": "x", "value": "y"}]
    fetcher = FakeMetricFetcher(2.0, 0, -1.0, config=config)
    job = _job(chaos, fetcher, monkeypatch)
    assert job.restarts() == 1
    assert fetcher.now <= 4.0
    # 0 turns the fetcher off: the store stays empty, there is nothing to wait for
    off = FakeMetricFetcher(0.0, None, 0.0, config=[{"key": "metrics.fetcher.update-interval", "value": "0"}])
    off.true_restarts = None  # type: ignore[assignment]
    off.rest = lambda path: off.config if path == "/jobmanager/config" else []  # type: ignore[method-assign]
    job = _job(chaos, off, monkeypatch)
    assert job.restarts() is None
    assert off.now == 0.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10 s", 10.0), ("500ms", 0.5), ("2min", 120.0), ("1500", 1.5), ("0", 0.0), ("", 10.0), ("soon", 10.0)],
)
def test_flink_durations(chaos: ModuleType, text: str, seconds: float) -> None:
    assert chaos.flink_duration_s(text, default=10.0) == seconds
