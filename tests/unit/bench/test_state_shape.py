"""bench/state_shape.py: what a user's stored state is made of, counted from what the job arm stored.

The counts must be those of the bytes the job's state wrote: every stored user decoded, each value under the
name the engine gave it, the objects as marshal writes them.
"""

from __future__ import annotations

import marshal
import pickle
from types import ModuleType

import pytest

from riskctl.core.state import encode_state, state_code
from tests.unit.bench import bench_module


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return bench_module("state_shape")


def test_objects_are_counted_as_marshal_writes_them(tool: ModuleType) -> None:
    assert tool.objects(5) == 1
    assert tool.objects((1, [2, 3], {"a": None})) == 1 + 1 + (1 + 2) + (1 + 2)


def test_the_shape_counts_each_stored_user_under_its_names(tool: ModuleType) -> None:
    names = ["_engine", "pattern:rule_a:0123456789abcdef", "first_seen.0123456789ab"]
    codes = [state_code(n) for n in names]
    stored = {
        # as the job writes its state: the encoded bytes, pickled once (pickle_writes)
        "u1": pickle.dumps(encode_state({codes[0]: [1, 2**40], codes[1]: ((1, 2), "x")}), protocol=3),
        "u2": bytearray(pickle.dumps(encode_state({codes[0]: [3, 4]}), protocol=3)),
    }
    found = tool.shape(stored, names)
    assert found["users"] == 2
    engine = found["names"]["_engine"]
    both = len(marshal.dumps([1, 2**40], 4)) + len(marshal.dumps([3, 4], 4))
    assert engine == {"held_by": 1.0, "objects": 3.0, "bytes": both / 2}
    pattern = found["names"]["pattern:rule_a"]
    assert pattern["held_by"] == 0.5 and pattern["objects"] == 5 / 2
    assert "first_seen.0123456789ab" not in found["names"]  # held by no user
    assert found["kinds"]["int past 31 bits"] == 0.5


def test_a_run_over_the_workload_finds_the_rules_states(tool: ModuleType) -> None:
    found = tool.run(600)
    assert found["users"] > 100
    assert found["names"]["_engine"]["held_by"] == 1.0  # every user with state has the engine's own list
    assert any(label.startswith("pattern:") for label in found["names"])
    assert sum(row["objects"] * row["held_by"] for row in found["names"].values()) > 0
