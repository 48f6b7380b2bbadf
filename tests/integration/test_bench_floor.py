"""bench/floor.py runs the ladder's job for real: a MiniCluster per run, thread mode, RocksDB, a blackhole."""

from __future__ import annotations

import pytest

from tests.unit.bench import bench_module

pytestmark = pytest.mark.integration


def test_the_top_level_runs_on_a_minicluster_and_costs_a_positive_time_per_record() -> None:
    floor = bench_module("floor")
    # level 3: a keyed ValueState, a Row out and orjson both ways, each record through the embedded Python
    got = floor.floor((3,), small=2_000, big=62_000)  # some 2.5 s more: above the start-up's spread
    level = got["levels"]["3"]
    seconds = level["seconds"]
    assert seconds["62000"] > seconds["2000"] > 0, seconds  # more records took longer: the job ran them
    assert level["us_per_record"] is not None and 1 < level["us_per_record"] < 10_000
    assert level["records_per_s"] == pytest.approx(
        1e6 / level["us_per_record"], rel=0.01
    )  # of the unrounded us
    assert level["reference_us_per_record"] == 34.0
