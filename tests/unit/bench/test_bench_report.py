"""The benchmark's own arithmetic and verdicts (bench/harness/): percentiles, targets, the markdown report.

The benchmark never runs in the suite (its figures depend on the machine); what it concludes from its figures
must still be right, so the pieces that turn figures into verdicts are tested here on hand-made results.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from riskctl.core.stats import percentile
from tests.unit.bench import bench_module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The harness's report module (bench/harness/report.py; the harness is imported as ``harness`` with
    bench/ on the path, as bench/bench.py imports it)."""
    return bench_module("harness.report")


@pytest.fixture(scope="module")
def measures() -> ModuleType:
    return bench_module("harness.measures")


def test_percentiles_are_nearest_rank(measures: ModuleType) -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert percentile(values, 90) == 90.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([], 50) is None
    assert measures.percentiles([5.0]) == {"p50": 5.0, "p90": 5.0, "p99": 5.0, "p99_9": 5.0, "max": 5.0}


def _phase(rate: int, p99: float, *, saturated: bool = False) -> dict[str, Any]:
    lat = {"p50": 5.0, "p90": 8.0, "p99": p99, "p99_9": p99, "max": p99}
    return {
        "offered_per_s": rate,
        "achieved_send_per_s": rate,
        "decided_per_s": rate,
        "saturated": saturated,
        "latency_ms": lat,
        "latency_in_kafka_ms": lat,
        "latency_broker_to_broker_ms": lat,
        "decided": 1,
    }


def _doc(
    *,
    p2: float,
    p99_5k: float,
    saturated: bool,
    propagation_p99: float,
    live: float,
    sustained: float = 25000.0,
    loop: float = 10000.0,
    cpu: float = 40.0,
    p99_1k: float = 15.0,
    engine: float = 120000.0,
) -> dict[str, Any]:
    return {
        "runs": [
            {
                "contender": "riskctl-thread",
                "parallelism": 1,
                "throughput": {"events_per_s": sustained, "decide_thread_cpu_us_per_event": cpu},
                "latency": [_phase(1000, p99_1k), _phase(5000, p99_5k, saturated=saturated)],
                "propagation": {"commit_to_first_decision_ms": {"p99": propagation_p99}},
                "rocksdb": {"live_bytes_per_key": live},
                "checkpoints": {
                    "completed": 9,
                    "failed": 0,
                    "sync_ms": {"p50": 30, "max": 90},
                    "alignment_ms": {"p50": 0, "max": 4},
                    "end_to_end_ms": {"p50": 60, "max": 120},
                },
            },
            {"contender": "riskctl-cluster", "parallelism": 2, "throughput": {"events_per_s": p2}},
            {"contender": "riskctl-thread", "parallelism": 2, "throughput": {"events_per_s": p2 / 2}},
            {"contender": "plain-loop", "parallelism": 1, "throughput": {"events_per_s": loop}},
        ],
        "pure_engine": {"events_per_s": engine},
    }


GOOD: dict[str, Any] = {
    "p2": 31000.0,
    "p99_5k": 40.0,
    "saturated": False,
    "propagation_p99": 300.0,
    "live": 600.0,
}


def test_every_target_met(bench: ModuleType) -> None:
    verdicts = bench.targets(_doc(**GOOD))
    assert len(verdicts) == 9
    assert all(v.endswith("-> met") for v in verdicts), verdicts
    assert "(riskctl-cluster)" in verdicts[0]  # the best p=2 run counts


@pytest.mark.parametrize(
    ("changes", "missed"),
    [
        ({"p2": 29999.0}, [0]),
        ({"p99_5k": 50.0}, [1]),
        ({"saturated": True}, [1]),  # a queue is not a latency, however low its p99
        ({"propagation_p99": 1000.0}, [2]),
        ({"live": 1024.0}, [3]),
        ({"sustained": 19999.0, "loop": 9000.0}, [4]),
        ({"loop": 12501.0}, [5]),  # at least twice the plain loop of the same run
        ({"cpu": 50.1}, [6]),
        ({"p99_1k": 20.0}, [7]),
        ({"engine": 99999.0}, [8]),
    ],
)
def test_each_target_can_be_missed(bench: ModuleType, changes: dict[str, Any], missed: list[int]) -> None:
    verdicts = bench.targets(_doc(**(GOOD | changes)))
    assert [i for i, v in enumerate(verdicts) if v.endswith("MISSED")] == missed, verdicts


def test_the_compiled_engine_is_judged_beside_the_pure_python_one(bench: ModuleType) -> None:
    doc = _doc(**GOOD) | {"pure_engine_compiled": {"events_per_s": 99999.0, "core": "native:/b"}}
    verdicts = bench.targets(doc)
    assert len(verdicts) == 10
    assert verdicts[8] == "pure engine >= 100,000 events/s on one core: 120000.0 -> met"
    assert verdicts[9] == "pure engine, compiled core >= 100,000 events/s on one core: 99999.0 -> MISSED"


def test_markdown_shows_the_in_kafka_latency_and_the_saturation(bench: ModuleType) -> None:
    doc = _doc(p2=10000, p99_5k=900, saturated=True, propagation_p99=300, live=600)
    doc["runs"][0]["propagation"] |= {
        "edits": 25,
        "probe_interval_ms": 10,
        "commit_to_applied_ms": {"n": 25, "p50": 1, "p99": 2, "max": 3},
    }
    doc["runs"][0]["propagation"]["commit_to_first_decision_ms"] |= {"n": 25, "p50": 1, "max": 3}
    doc |= {
        "started": "now",
        "command": "bench.py",
        "quick": True,
        "machine": {"nproc": 2, "loadavg": [0.5, 0.5, 0.5]},
        "workload": {"events": 1, "users": 1, "zipf": 1.0, "rules": 8},
        "pure_engine": {"events_per_s": 1.0, "events": 1, "users": 1, "state_bytes_per_user_encoded": 1.0},
    }
    doc["targets"] = bench.targets(doc)
    text = bench.markdown(doc)
    assert "| riskctl-thread | 5,000 | 5,000 | 5,000 | 5.0 | 8.0 | 900 |" in text
    assert "yes: a queue, not latency" in text
    assert "p99 < 50 ms at 5,000 events/s" in text and "MISSED" in text


def test_a_run_without_a_sustained_figure_says_why(bench: ModuleType) -> None:
    doc = _markdown_doc()
    stopped = {"events": 120000, "decided": 119814, "complete": False, "stopped_at_limit_s": 180}
    doc["runs"] += [
        {
            "contender": "riskctl-process",
            "parallelism": 1,
            "cold": {"events": 30000, "decided": 30000, "complete": True, "events_per_s": 521.7},
            "settle": stopped,
            "throughput": {},
        },
        {"contender": "riskctl-cluster", "parallelism": 3, "error": "Traceback\nRuntimeError: no slots"},
    ]
    doc["targets"] = bench.targets(doc)
    text = bench.markdown(doc)
    assert (
        "| riskctl-process | 1 | not measured: the settle phase stopped at its 180 s limit with "
        "119814/120000 decided | | | 521.7 |" in text
    )
    failed = "| riskctl-cluster | 3 | not measured: the run failed (RuntimeError: no slots) | | | None |"
    assert failed in text
    assert "| riskctl-thread | 1 | 25000.0 |" in text  # a measured run keeps its figures


def _api_rate(rate: int, p99: float, *, timeouts: float = 0.0, errors: int = 0) -> dict[str, Any]:
    pcts = {"p50": 5.0, "p99": p99, "p99.9": p99}
    return {
        "target_rate": rate,
        "achieved_send_rate": float(rate),
        "answered_per_s": float(rate),
        "client_ms": pcts,
        "api_elapsed_ms": pcts,
        "kafka_produce_to_decision_ms": pcts,
        "timeout_rate": timeouts,
        "errors": errors,
        "api_adds_ms_p50": 1.0,
    }


def _api(**at_1000: Any) -> dict[str, Any]:
    runs = [_api_rate(200, 10), _api_rate(1000, **({"p99": 40.0} | at_1000)), _api_rate(5000, 150)]
    return {"command": "bench/api_bench.py", "started": "now", "timeout_ms": 150, "runs": runs}


@pytest.mark.parametrize(
    ("at_1000", "met"),
    [
        ({}, True),
        ({"p99": 50.0}, False),
        ({"timeouts": 0.001}, False),  # no timeouts at 1,000 requests/s, however low the p99
        ({"errors": 1}, False),
    ],
)
def test_the_api_section_adds_the_apis_targets(bench: ModuleType, at_1000: dict[str, Any], met: bool) -> None:
    doc = _doc(**GOOD)
    doc["api"] = _api(**at_1000)
    verdicts = bench.targets(doc)
    assert len(verdicts) == 11
    assert verdicts[9].startswith("API p99 < 50 ms at 1,000 requests/s with no timeouts")
    assert verdicts[9].endswith("-> met" if met else "-> MISSED")
    assert verdicts[10].startswith("API p99 < 200 ms at 5,000 requests/s") and verdicts[10].endswith("-> met")
    assert bench.api_table(doc["api"]["runs"])[3].startswith("| 1000 | 1000.0 | 1000.0 | 5.0 |")


def _markdown_doc(**top: Any) -> dict[str, Any]:
    """A whole bench.json as ``markdown`` reads it, with the runs of :func:`_doc` (``top`` overrides)."""
    doc = _doc(**GOOD) | {
        "started": "now",
        "command": "bench.py",
        "quick": False,
        "machine": {"nproc": 2, "loadavg": [0.5, 0.5, 0.5]},
        "workload": {"events": 1, "users": 1, "zipf": 1.0, "rules": 8},
    }
    doc["pure_engine"] |= {"events": 1, "users": 1, "state_bytes_per_user_encoded": 1.0}
    del doc["runs"][0]["propagation"]
    return doc | top


def test_markdown_shows_the_decide_tasks_cost_and_pauses(bench: ModuleType) -> None:
    doc = _markdown_doc()
    text = bench.markdown(doc)
    assert "| riskctl-thread | 1 | 40.0 | ? | 9 / 0 | 30 / 90 | 0 / 4 | 60 / 120 |" in text
    doc["runs"][0]["throughput"]["decide_thread_waiting_for_a_core"] = 0.254
    assert "| riskctl-thread | 1 | 40.0 | 25% | 9 / 0 |" in bench.markdown(doc)


def test_markdown_gives_the_boxs_speed_where_the_run_measured_it(bench: ModuleType) -> None:
    assert "Speed of the box" not in bench.markdown(_markdown_doc())  # runs before it was measured
    machine = {"nproc": 2, "loadavg": [0.5, 0.5, 0.5], "calibration_s": 0.105}
    doc = _markdown_doc(machine=machine)
    loop = "a pure-Python loop (0.08 s on the quiet box of engine.md)"
    assert f"{loop}: 0.105 s at the start." in bench.markdown(doc)
    machine |= {"calibration_end_s": 0.2, "calibration_memory_s": 0.9, "calibration_memory_end_s": 1.25}
    text = bench.markdown(doc)
    assert f"{loop}: 0.105 s at the start, 0.200 s at the end; " in text
    assert "; random reads over 150 MB of objects: 0.900 s at the start, 1.250 s at the end." in text


def test_every_run_records_the_boxs_speed(monkeypatch: Any) -> None:
    from harness import sampling

    assert 0 < sampling.calibrate() < 60 and 0 < sampling.calibrate_memory(n=20_000) < 60
    monkeypatch.setattr(sampling, "calibrate_memory", lambda: 1.0)  # 5 s at its full size
    machine = sampling.machine()
    assert machine["calibration_memory_s"] == 1.0 and machine["calibration_s"] > 0
    end = sampling.speed("_end")
    assert set(end) == {"calibration_end_s", "calibration_memory_end_s"} and end["calibration_end_s"] > 0


def test_the_decide_threads_wait_for_a_core_from_schedstat(tmp_path: Any, monkeypatch: Any) -> None:
    """thread_schedule sums /proc/<pid>/task/<tid>/schedstat of the threads named with the prefix;
    waiting_share is the share of their busy time spent runnable without a core."""
    from harness import sampling

    proc = tmp_path / "proc"
    threads = {"11": ("decide -> (*ano", "3000000000 1000000000 9"), "12": ("rocksdb:low0", "5 5 1")}
    for tid, (name, sched) in threads.items():
        task = proc / "7" / "task" / tid
        task.mkdir(parents=True)
        (task / "stat").write_text(f"{tid} ({name}) S 1 " + " ".join(["0"] * 40))
        (task / "schedstat").write_text(sched + "\n")
    real_read = sampling.Path.read_text
    real_listdir = sampling.os.listdir

    def moved(path: str) -> str:
        return str(proc) + path.removeprefix("/proc") if path.startswith("/proc/") else path

    monkeypatch.setattr(sampling, "session_jvms", lambda session: [7])
    monkeypatch.setattr(sampling.os, "listdir", lambda path: real_listdir(moved(path)))
    monkeypatch.setattr(
        sampling.Path, "read_text", lambda self, *a, **k: real_read(type(self)(moved(str(self))))
    )
    assert sampling.thread_schedule(1, "decide") == (3.0, 1.0)
    assert sampling.thread_schedule(1, "nothing") is None
    assert sampling.waiting_share((1.0, 0.5), (3.0, 1.0)) == pytest.approx(0.5 / 2.5)
    assert sampling.waiting_share(None, (3.0, 1.0)) is None
    assert sampling.waiting_share((3.0, 1.0), (3.0, 1.0)) is None


def test_markdown_shows_where_the_jvm_spent_its_cpu_and_flags_a_jvm_still_compiling(
    bench: ModuleType,
) -> None:
    doc = _markdown_doc(quick=True, plan={"settle_events": 0})
    doc["runs"][0]["throughput"] |= {
        "jvm_threads_cpu_us_per_event": {"decide -> (*ano": 90.5, "C CompilerThre": 30.0, "total": 150.0},
        "jit_share_of_jvm_cpu": 0.2,
    }
    doc["runs"][0]["latency"][0]["jvm_threads_cpu_us_per_event"] = {"decide -> (*ano": 400.0, "total": 700.0}
    text = bench.markdown(doc)
    assert "- riskctl-thread p=1: `decide -> (*ano` 90.5, `C CompilerThre` 30.0, `total` 150.0" in text
    assert "- riskctl-thread p=1: 1,000/s: decide 400.0, JVM 700.0" in text
    assert "**Not warm:**" in text and "riskctl-thread p=1 (20%)" in text
    doc["runs"][0]["throughput"]["jit_share_of_jvm_cpu"] = 0.01
    assert "**Not warm:**" not in bench.markdown(doc)


def test_thread_groups_per_event_and_the_jit_share() -> None:
    from harness.sampling import _thread_group, jit_share, per_event_us

    assert _thread_group("rocksdb:low12") == _thread_group("rocksdb:low0") == "rocksdb:low"
    assert _thread_group("C2 CompilerThre") == _thread_group("C1 CompilerThre") == "C CompilerThre"
    before = {"decide": 1.0, "C CompilerThre": 2.0, "a": 0.0, "b": 0.0}
    after = {"decide": 3.0, "C CompilerThre": 2.4, "a": 0.25, "b": 0.25, "new": 0.5}
    parts = per_event_us(before, after, events=1000, top=2)
    assert parts == {"decide": 2000.0, "new": 500.0, "other": 900.0, "total": 3400.0}
    assert jit_share(before, after) == pytest.approx(0.4 / 3.4)
    assert jit_share(after, after) is None


def test_markdown_shows_the_scaling_factor_and_the_cores_busy(bench: ModuleType) -> None:
    doc = _markdown_doc()
    doc["runs"][0]["throughput"]["events_per_s"] = 8000.0
    doc["runs"][0]["throughput"]["resources"] = {
        "contender JVM": {"cpu_pct": 120.0},
        "kafka": {"cpu_pct": 40.0},
        "bench (load generator, reader)": {"cpu_pct": 30.0},
    }
    text = bench.markdown(doc)
    cluster = doc["runs"][1]["throughput"]["events_per_s"]
    assert (
        f"| riskctl-cluster (against riskctl-thread p=1) | {cluster} | 8000.0 | {cluster / 8000:.2f} |"
        in text
    )
    assert "- riskctl-thread p=1: 1.90 cores busy (contender JVM 1.20, kafka 0.40, bench" in text


def test_the_pure_engine_is_the_median_of_its_runs_and_the_report_shows_them(
    bench: ModuleType, measures: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench.py measures the engine three times, each in a fresh process: the figure judged is the median
    run's, and every run's events/s is shown beside it."""
    rates = iter([70_000.0, 50_000.0, 60_000.0])
    builds: list[str] = []

    def child(records: list[bytes], build: str, collector: str) -> dict[str, Any]:
        assert collector == "replay"
        builds.append(build)
        return {"events": len(records), "events_per_s": next(rates), "users": 3, "core": "python"}

    monkeypatch.setattr(measures, "pure_engine_child", child)
    got = measures.pure_engine_runs([b"{}"] * 5, "/b")
    assert builds == ["/b"] * 3
    assert got["events_per_s"] == 60_000.0 and got["runs_events_per_s"] == [70_000.0, 50_000.0, 60_000.0]
    doc = _markdown_doc() | {"pure_engine": got}
    assert (
        "60,000.0 events/s over 5 events (3 users with state; core: python), the median of 3 runs: "
        "70,000.0, 50,000.0, 60,000.0." in bench.markdown(doc)
    )
    assert "pure engine >= 100,000 events/s on one core: 60000.0 -> MISSED" in bench.targets(
        _doc(**GOOD) | {"pure_engine": got}
    )


def test_a_pure_engine_measure_that_failed_is_reported_not_judged_met(bench: ModuleType) -> None:
    """bench.py records a failed engine measure as its error (the contenders' figures are written all the
    same): the report says so and the target is missed."""
    failed = {"error": "Command '...' returned non-zero exit status 1.", "core": "/b"}
    doc = _markdown_doc() | {"pure_engine_compiled": failed}
    text = bench.markdown(doc)
    assert (
        "With the compiled core the riskctl jobs run: not measured (Command '...' returned non-zero exit "
        "status 1.; core: /b)." in text
    )
    assert "pure engine, compiled core >= 100,000 events/s on one core: None -> MISSED" in bench.targets(
        _doc(**GOOD) | {"pure_engine_compiled": failed}
    )


def test_the_engine_with_the_collector_off_as_in_the_job_leaves_no_cyclic_garbage(
    measures: ModuleType,
) -> None:
    """The job's decide functions run the engine with CPython's cyclic collector off, on the claim that the
    engine makes no reference cycles (reference counting frees its state). The bench's measure of the engine
    as the job runs it checks the claim: the collection after the run finds nothing. Here on 4,000 of the
    simulator's events (attacks included), in a fresh process as in the bench: a cycle in the engine's state
    fails this test."""
    import itertools
    import json

    from riskctl.sim import SimConfig, Simulator

    config = SimConfig(
        users=300, rate=1000.0, duration_s=10, attack_fraction=0.05, seed=7, start_ts=1_700_000_000_000
    )
    records = [json.dumps(e).encode() for e in itertools.islice(Simulator(config), 4000)]
    got = measures.pure_engine_child(records, "", "job")
    assert got["collector"] == "job" and got["events"] == 4000
    assert got["cyclic_garbage"] == 0, got
    replay = measures.pure_engine_child(records[:100], "", "replay")
    assert replay["collector"] == "replay" and replay["cyclic_garbage"] is None


def test_the_engine_as_the_job_runs_it_is_reported_and_judged(bench: ModuleType) -> None:
    off = {"events_per_s": 101_000.0, "events": 5, "users": 3, "core": "native:/b", "cyclic_garbage": 0}
    doc = _markdown_doc() | {"pure_engine_compiled_job_gc": off}
    assert (
        "The compiled core with the collector off, as in the job: 101,000.0 events/s over 5 events (3 users "
        "with state; core: native:/b; cyclic garbage left after the run: 0 objects)." in bench.markdown(doc)
    )
    verdicts = bench.targets(_doc(**GOOD) | {"pure_engine_compiled_job_gc": off})
    assert verdicts[-1] == (
        "pure engine, compiled core, the collector off as in the job >= 100,000 events/s on one core: "
        "101000.0 -> met"
    )
