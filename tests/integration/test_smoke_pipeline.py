"""The smoke pipeline through real Kafka, MariaDB (binlog, CDC) and Flink, embedded and on a cluster."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import Settings
from tests.integration.support import JobProcess, consume_until, produce

pytestmark = pytest.mark.integration

EVENTS = [{"user_id": f"u{i % 3}", "seq": i} for i in range(9)] + ["not json at all"]


def _expected_counts() -> list[tuple[str, int]]:
    seen: Counter[str] = Counter()
    out = []
    for e in EVENTS:
        key = e["user_id"] if isinstance(e, dict) else "<not-json>"
        seen[key] += 1
        out.append((key, seen[key]))
    return out


def _cdc_table(mysql: Any) -> str:
    table = f"smoke_{uuid.uuid4().hex[:8]}"
    with mysql.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(64))")
        cur.execute(f"INSERT INTO {table} VALUES (1, 'before-start')")
    return table


def _check(
    settings: Settings, mysql: Any, table: str, in_topic: str, out_topic: str, job: JobProcess | None
) -> None:
    produce(settings, in_topic, EVENTS)

    def kafka_part_done(recs: list[dict[str, Any]]) -> bool:
        return sum(r["source"] == "kafka" for r in recs) >= len(EVENTS) and any(
            r["source"] == "cdc" for r in recs
        )

    records = consume_until(settings, out_topic, kafka_part_done, timeout=240, job=job)
    counts = sorted((r["key"], r["count"]) for r in records if r["source"] == "kafka")
    assert counts == sorted(_expected_counts()), records
    # the snapshot row arrived; now a row inserted while the job runs must arrive through the binlog
    with mysql.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (2, 'while-running')")
        cur.execute(f"UPDATE {table} SET name = 'updated' WHERE id = 1")

    def cdc_done(recs: list[dict[str, Any]]) -> bool:
        return any(r["source"] == "cdc" and r["row"]["name"] == "updated" for r in recs)

    records = consume_until(settings, out_topic, cdc_done, timeout=120, job=job)
    cdc = [(r["op"], r["row"]["id"], r["row"]["name"]) for r in records if r["source"] == "cdc"]
    assert ("INSERT", 1, "before-start") in cdc, cdc
    assert ("INSERT", 2, "while-running") in cdc, cdc
    assert ("UPDATE_AFTER", 1, "updated") in cdc, cdc


def _smoke_args(in_topic: str, out_topic: str, table: str) -> list[str]:
    return [
        "--input-topic",
        in_topic,
        "--output-topic",
        out_topic,
        "--group-id",
        in_topic,
        "--mysql-table",
        table,
    ]


def test_smoke_pipeline_on_minicluster(stack: Settings, mysql: Any, topic: Any, run_job: Any) -> None:
    table = _cdc_table(mysql)
    in_topic, out_topic = topic("in"), topic("out")
    job = run_job("jobs/smoke.py", *_smoke_args(in_topic, out_topic, table))
    _check(stack, mysql, table, in_topic, out_topic, job)
    # its MiniCluster works in the stack's folder, which the next run removes (not a new /tmp/minicluster_*
    # of 50 MB per run), and logs in the stack's folder too
    work = Path(stack.stack.dir) / "minicluster" / str(job.proc.pid)
    assert list(work.glob("rocksdb/*EmbeddedPython*/db/CURRENT")), sorted(work.rglob("*"))[:20]
    logs = Path(stack.stack.dir) / "minicluster-logs" / str(job.proc.pid)
    assert list(logs.glob("flink-*-python-*.log")), logs


@pytest.mark.cluster
def test_smoke_pipeline_on_standalone_cluster(
    stack: Settings, mysql: Any, topic: Any, submit_job: Any, flink_cluster: Any
) -> None:
    table = _cdc_table(mysql)
    in_topic, out_topic = topic("in"), topic("out")
    job_id = submit_job("jobs/smoke.py", *_smoke_args(in_topic, out_topic, table))
    _check(stack, mysql, table, in_topic, out_topic, None)
    with urllib.request.urlopen(f"{flink_cluster.rest_url}/jobs/{job_id}", timeout=10) as resp:  # noqa: S310
        state = json.load(resp)["state"]
    assert state == "RUNNING"
