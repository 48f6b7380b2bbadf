"""bench/engine_ab.py --instructions: the engine's instructions per event, counted under Valgrind's callgrind.

The counts depend on the interpreter and the code, not on the box; what the tool reports must still be right:
the difference between a run that feeds the events and one that only generates them, per event, repeatable,
with the records of the run that fed them; and a clear exit where valgrind is missing.
"""

from __future__ import annotations

import shutil
from types import ModuleType

import pytest

from riskctl.config import PROJECT_ROOT
from tests.unit.bench import bench_module

EVENTS = 300


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return bench_module("engine_ab")


def test_instructions_per_event_are_counted_and_repeat(tool: ModuleType) -> None:
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (Debian: apt-get install valgrind)")
    tree = str(PROJECT_ROOT)
    first, records = tool.instructions(tree, EVENTS)
    again, records_again = tool.instructions(tree, EVENTS)
    # every event decided, and the timers' alerts beside: the records of the run that fed them
    assert sum(n for kind, n in records.items() if not kind.startswith("alert:")) == EVENTS
    assert records_again == records
    # the pure-Python engine runs some tens of thousands of instructions per event (about 100,000 on
    # engine_bench's workload): the start-up and the generation, counted in both runs, are not in it
    assert 5_000 < first < 1_000_000
    assert abs(again - first) / first < 0.02


def test_a_missing_valgrind_is_a_clear_exit(tool: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tool.callgrind.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="needs valgrind"):
        tool.count_instructions([str(PROJECT_ROOT)], EVENTS)
