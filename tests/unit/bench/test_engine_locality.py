"""bench/engine_locality.py: the pure engine's cost per event against the number of users with live state.

The timings depend on the machine and are not checked; what the tool reports beside them must be right: the
workload keeps each user's density whatever the number of users (so the arms differ only by the number of
live states), the objects of a state are counted once each, and the arms decide the same records.
"""

from __future__ import annotations

import argparse
from types import ModuleType

import pytest

from tests.unit.bench import bench_module


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return bench_module("engine_locality")


def test_objects_of_a_state_are_counted_once_each(tool: ModuleType) -> None:
    shared = (1_700_000_000_000, "login")  # a tuple, a big int and a string: 3 objects
    value = {"a": [shared, shared, 3], "b": [], "c": None}
    # the dict and its key table (2), the keys (3), the full list and its items (2), the shared tuple and
    # what it holds (3, once), the empty list (1); small ints and None are CPython's own
    assert tool.state_objects(value) == 11
    assert tool.state_objects([]) == 1
    assert tool.state_objects(None) == 0
    assert tool.state_objects(True) == 0


def test_every_number_of_users_gets_the_same_density_per_user(tool: ModuleType) -> None:
    few = tool.scaled_events(200, 10)
    many = tool.scaled_events(2_000, 10)
    assert len(few) == 2_000 and len(many) == 20_000
    span_few = few[-1]["ts"] - few[0]["ts"]
    span_many = many[-1]["ts"] - many[0]["ts"]
    # the same event-time span for 10 events per user, so each user's events are as far apart
    assert abs(span_few - span_many) < 0.1 * span_many
    assert len({e["user_id"] for e in many}) > 5 * len({e["user_id"] for e in few})


def test_the_arms_decide_the_same_records_and_the_buffers_add_objects(tool: ModuleType) -> None:
    late = tool.measure_here(300, 5, 5_000, passes=1, tuned_gc=False)
    prompt = tool.measure_here(300, 5, 0, passes=1, tuned_gc=False)
    for arm in (late, prompt):
        assert arm["events"] == 1_500
        assert arm["us"] > 0
        assert arm["records"] >= arm["events"]  # a decision per event, and the alerts
        assert 0 < arm["keys_with_state"] <= 300
    assert late["counts"] == prompt["counts"]
    # the sequences' late-event buffers are kept only with a lateness
    assert late["objects_per_key"] > prompt["objects_per_key"] > 0


def test_the_report_has_a_row_per_arm_with_its_range(tool: ModuleType) -> None:
    def run(users: int, lateness: int, us: float) -> dict[str, object]:
        return {
            "users": users,
            "lateness_ms": lateness,
            "events": 100,
            "us": us,
            "records": 110,
            "objects_per_key": 40.0,
            "core": "python",
        }

    runs = [run(1_000, 5_000, 8.0), run(1_000, 5_000, 6.0), run(1_000, 5_000, 7.0), run(1_000, 0, 5.0)]
    args = argparse.Namespace(users="1000", per_user=20, rounds=3)
    text = tool.report(runs, args, "2026-12-05T00:00:00Z", "0.50")
    assert "| 1,000 | 5 s | 6.00 / 7.00 / 8.00 | 142,857 | 1.100 | 40.0 |" in text
    assert "| 1,000 | 0 s | 5.00 / 5.00 / 5.00 | 200,000 | 1.100 | 40.0 |" in text
    assert text.index("| 1,000 | 5 s") < text.index("| 1,000 | 0 s")
