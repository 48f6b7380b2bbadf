"""bench/flink_profile/stalls.py and the timeline it reads (``bench.py --timeline``): slow events grouped into
stalls, each put down to the checkpoint triggered just before it, or to nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.bench import bench_module


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return bench_module("flink_profile.stalls")


def test_slow_events_close_together_are_one_stall(tool: ModuleType) -> None:
    rows = [(0.0, 5.0), (1.0, 30.0), (2.0, 45.0), (3.0, 4.0), (250.0, 21.0), (1000.0, 50.0)]
    found = tool.stalls(rows, 20.0, 300.0)
    assert [(s.start_ms, s.end_ms, s.events, s.worst_ms) for s in found] == [
        (1.0, 250.0, 3, 45.0),
        (1000.0, 1000.0, 1, 50.0),
    ]


def test_a_stall_is_put_down_to_the_checkpoint_triggered_just_before(tool: ModuleType) -> None:
    cp = {"id": 7, "trigger_ms": 990.0, "sync_ms": 30, "alignment_ms": 1, "start_delay_ms": 5}
    early = {"id": 6, "trigger_ms": -5000.0, "sync_ms": 30, "alignment_ms": 1, "start_delay_ms": 5}
    found = tool.stalls([(10.0, 60.0), (1000.0, 40.0), (3000.0, 90.0)], 20.0, 300.0)
    tool.attribute(found, [early, cp])
    assert [s.checkpoint["id"] if s.checkpoint else None for s in found] == [None, 7, None]


def test_the_report_reads_a_runs_folder(tool: ModuleType, tmp_path: Path) -> None:
    harness = bench_module("harness.measures")
    sent = {f"e{i}": 1_000.0 + i / 1000 for i in range(1000)}  # one event per ms from t = 1,000 s
    appended = {k: t * 1000 + (80.0 if 500 <= int(k[1:]) < 520 else 5.0) for k, t in sent.items()}
    harness.write_timeline(tmp_path / "timeline-riskctl-thread-p1-1000.csv", sent, appended, {})
    checkpoints = [
        {"id": 3, "trigger_ms": 1_000_495.0, "sync_ms": 33, "alignment_ms": 0, "start_delay_ms": 4}
    ]
    (tmp_path / "checkpoints-riskctl-thread-p1.json").write_text(json.dumps(checkpoints))
    text = tool.report(tmp_path, 20.0, 300.0)
    assert "riskctl-thread-p1 at 1,000/s: 1,000 events, 20 (2.0%) slower than 20 ms, in 1 stalls" in text
    assert "20 of them right after a checkpoint's trigger" in text
    assert "checkpoint 3 (synchronous phase 33 ms" in text


def test_a_run_without_timeline_says_how_to_get_one(tool: ModuleType, tmp_path: Path) -> None:
    assert "--timeline" in tool.report(tmp_path, 20.0, 300.0)


def test_the_summary_takes_the_last_ten_checkpoints_and_the_timeline_all(tmp_path: Path) -> None:
    contenders = bench_module("harness.contenders")
    job = object.__new__(contenders.RiskctlJob)  # no job started: its REST answers are given below
    history = [
        {"id": i, "status": "COMPLETED", "trigger_timestamp": 1000 * i, "end_to_end_duration": 100 + i}
        for i in range(1, 13)
    ] + [{"id": 13, "status": "FAILED", "trigger_timestamp": 13_000}]
    history.reverse()  # Flink lists the newest first

    def rest(path: str) -> Any:
        if path == "/jobs/j/checkpoints":
            return {"history": history, "counts": {"completed": 12, "failed": 1}}
        cid = int(path.split("/details/")[1].split("/")[0])
        return {
            "summary": {
                "checkpoint_duration": {"sync": {"max": cid}, "async": {"max": 2 * cid}},
                "alignment": {"duration": {"max": 0}},
                "start_delay": {"max": 5},
            }
        }

    job._rest = rest
    job._decide_vertex = lambda: ("j", "d")
    timeline = job.checkpoint_timeline()
    assert [c["id"] for c in timeline] == list(range(1, 13))  # all, oldest first
    assert timeline[0] == {
        "id": 1,
        "trigger_ms": 1000,
        "end_to_end_ms": 101,
        "sync_ms": 1,
        "async_ms": 2,
        "alignment_ms": 0,
        "start_delay_ms": 5,
    }
    summary = job.checkpoints()
    assert summary["sampled"] == 10 and summary["completed"] == 12 and summary["failed"] == 1
    assert summary["sync_ms"] == {"p50": 8, "max": 12}  # checkpoints 3-12
    assert summary["end_to_end_ms"] == {"p50": 108, "max": 112}
