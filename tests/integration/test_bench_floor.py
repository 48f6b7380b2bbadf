"""bench/floor.py runs the ladder's job for real: a MiniCluster per run, thread mode, RocksDB, a blackhole;
and the bench's ``pyflink-floor`` contender runs the ladder's top level between the job's own Kafka parts."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import Settings
from tests.integration.support import JobProcess, _key, consume_until, ev, produce
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


def test_the_floor_contender_decides_each_record_through_the_jobs_kafka_and_keeps_a_state_per_user(
    stack: Settings, topic: Callable[..., str], run_job: Callable[..., JobProcess], tmp_path: Path
) -> None:
    """bench/contenders/pyflink_floor.py on a MiniCluster: the job's source and key, one keyed ValueState, the
    job's Kafka sink; one decision per record, keyed by the event id, counting each user's records."""
    events, decisions = topic("floor-events"), topic("floor-decisions")
    env = {
        "RISKCTL_JOB_EVENTS_TOPIC": events,
        "RISKCTL_JOB_DECISIONS_TOPIC": decisions,
        "RISKCTL_JOB_GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "RISKCTL_JOB_CHECKPOINT_DIR": (tmp_path / "chk").as_uri(),
    }
    records: list[bytes | str | dict[str, Any]] = [
        ev("f1", "u1", "login", 0),
        ev("f2", "u2", "login", 1),
        ev("f3", "u1", "order", 2, amount=5),
        "not json",  # a hostile record: decided under the empty id, the job goes on
        ev("f4", "u1", "payment", 3, amount=5),
    ]
    produce(stack, events, records, key=_key)  # by user, as the job's producers key them
    job = run_job("bench/contenders/pyflink_floor.py", env=env)
    got = consume_until(stack, decisions, lambda rs: len(rs) >= len(records), timeout=180, job=job)
    counts = {r["event_id"]: r["features"]["n"] for r in got}
    assert len(got) == len(records), got
    # each user's records counted by its own state (u1's three in order: one partition per key)
    assert (counts["f1"], counts["f3"], counts["f4"]) == (1, 2, 3), counts
    assert counts["f2"] == 1 and counts[""] == 1, counts
    assert {r["action"] for r in got} == {"PASS"}
