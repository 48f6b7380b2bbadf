"""bench/decide_budget.py: the decide operator's Python side in parts, run here on a small simulated workload.

The figures depend on the machine and are not checked; what the tool concludes from a run must be right: every
arm decides every record through the job's own function, and a pickled state that decides differently from
the plain objects stops the run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from itertools import islice
from types import ModuleType

import pytest

from riskctl.config import PROJECT_ROOT
from riskctl.sim import SimConfig, Simulator
from tests.unit.bench import bench_module


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return bench_module("decide_budget")


@pytest.fixture(scope="module")
def recs(tool: ModuleType) -> list[object]:
    config = SimConfig(users=200, rate=200.0, duration_s=30.0, attack_fraction=0.2, seed=7, zipf=1.0)
    lines = [json.dumps(e).encode() for e in islice(Simulator(config), 3_000)]
    lines.append(b'{"not": "an event"}')  # a dead letter, as in the job
    return tool.records(lines)


def test_every_arm_decides_every_record_and_the_pickled_state_decides_as_the_objects(
    tool: ModuleType, recs: list[object]
) -> None:
    half = len(recs) - len(recs) // 2
    outputs = {}
    for arm in tool.ARMS:
        us, out = tool.measure(arm, recs)
        assert us > 0
        outputs[arm] = out
        kinds = [row[0] for row in out]
        assert kinds.count("decision") + kinds.count("dead") == half  # one outcome per timed record
        assert kinds.count("dead") == 1
    assert outputs["job"] == outputs["no-pickling"]
    fired = {r["id"] for row in outputs["job"] if row[0] == "decision" for r in json.loads(row[2])["rules"]}
    assert "brute_force_login" in fired  # the attacks reach the sequence rules
    assert all(json.loads(row[2])["rules"] == [] for row in outputs["no-rules"] if row[0] == "decision")


def test_a_pickled_state_that_decides_differently_stops_the_run(
    tool: ModuleType, recs: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tool.measure

    def measure(arm: str, records: list[object]) -> tuple[float, list[tuple[object, ...]]]:
        us, out = real(arm, records)
        return us, out[:-1] if arm == "job" else out

    monkeypatch.setattr(tool, "measure", measure)
    with pytest.raises(SystemExit, match="different records"):
        tool.budget(recs, 1, ("job", "no-pickling"))


def test_the_report_splits_the_medians_into_parts(tool: ModuleType) -> None:
    figures = {"job": [40.0, 42.0, 44.0], "no-pickling": [28.0], "no-patterns": [15.0], "no-rules": [9.0]}
    text, doc = tool.report(figures, 1000, "bench/decide_budget.py")
    assert doc["median"]["job"] == 42.0
    assert list(doc["parts"].values()) == [14.0, 13.0, 6.0, 9.0]
    assert "| job | 42.0 | 40.0-44.0 |" in text


def test_the_records_go_through_the_fast_paths_entry_as_in_the_job(
    tool: ModuleType, recs: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's decide operator calls ``decide_record`` (riskctl.flink.fast_path): PyFlink's own path, which
    builds a pyflink Row per output, is not what the budget measures."""
    from riskctl.flink.risk_function import RiskFunction

    def not_in_the_job(self: object, value: object, ctx: object) -> list[object]:
        raise AssertionError("process_element is PyFlink's own path, not the fast path the job takes")

    monkeypatch.setattr(RiskFunction, "process_element", not_in_the_job)
    _, out = tool.measure("no-rules", recs[:200])
    assert out and all(type(row) is tuple for row in out)


INSTRUCTION_EVENTS = 300


def test_the_job_arm_s_instructions_are_counted_per_event_with_what_it_emitted(tool: ModuleType) -> None:
    """``--instructions``: 2N events less N under callgrind, per event; what the tree emitted is the job arm's
    own output over the workload's first 2N events, as a run here gives it."""
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (Debian: apt-get install valgrind)")
    per_event, emitted = tool.count_instructions(str(PROJECT_ROOT), INSTRUCTION_EVENTS)
    # the decide function runs some 100,000-200,000 instructions per event on the bench's workload (compiled
    # or not): the start-up, the imports and the reading of the workload, in both runs, are not in it
    assert 20_000 < per_event < 2_000_000
    out = tool.measure("job", tool.records(tool.workload(tool.USERS, 2 * INSTRUCTION_EVENTS)))[1]
    assert emitted == {"records": len(out), "digest": hashlib.sha256(repr(out).encode()).hexdigest()}


def test_trees_that_emit_other_records_are_named_and_the_counts_compared(
    tool: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = {
        "a": (100_000.0, {"records": 5, "digest": "x"}),
        "b": (90_000.0, {"records": 5, "digest": "y"}),
    }
    monkeypatch.setattr(tool.callgrind.shutil, "which", lambda name: "/usr/bin/valgrind")
    monkeypatch.setattr(tool, "count_instructions", lambda spec, events: counted[spec])
    text = tool.instructions_report(["a", "b"], 10)
    assert "| a | 100,000 | +0.0% |" in text and "| b | 90,000 | -10.0% |" in text
    assert "DIFFERENT in b" in text
    counted["b"] = (90_000.0, {"records": 5, "digest": "x"})
    assert "the same in every tree" in tool.instructions_report(["a", "b"], 10)


def test_a_missing_valgrind_is_a_clear_exit(tool: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tool.callgrind.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="needs valgrind"):
        tool.instructions_report([str(PROJECT_ROOT)], INSTRUCTION_EVENTS)
