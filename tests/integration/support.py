"""What the integration tests share besides fixtures: Kafka I/O, the MySQL connection, and the risk job a
test runs on the MiniCluster (its own topics and rules table, started in its own process group).

The fixtures (the stack, topics, the cluster) are in conftest.py; these are the plain functions and classes
that the test modules import.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from riskctl.config import PROJECT_ROOT, Settings
from riskctl.core.rules import load_rules


def connect_mysql(settings: Settings) -> Any:
    """A pymysql connection to the stack's rules database, in autocommit: each statement a test runs is
    committed at once, so the job's CDC source sees it without a commit from the test."""
    import pymysql

    return pymysql.connect(
        host=settings.mysql_host,
        port=settings.mysql_port,
        user=settings.mysql.user,
        password=settings.mysql_password,
        database=settings.mysql.database,
        autocommit=True,
    )


def produce(
    settings: Settings,
    topic: str,
    values: list[bytes | str | dict[str, Any]],
    key: Callable[[Any], bytes | None] | None = None,
) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    try:
        for v in values:
            raw = json.dumps(v).encode() if isinstance(v, dict) else v.encode() if isinstance(v, str) else v
            producer.send(topic, raw, key=key(v) if key else None)
        producer.flush()
    finally:
        producer.close()


def consume_until(
    settings: Settings,
    topic: str,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
    job: JobProcess | None = None,
    isolation_level: str = "read_uncommitted",
) -> list[dict[str, Any]]:
    """Read JSON records from ``topic`` from the beginning until ``done(records)`` or ``timeout``."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        isolation_level=isolation_level,
    )
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        # poll, not the iterator: the iterator ends only after 500 ms without a record, so a topic that
        # something keeps writing to (the API's readiness probes) kept it going past any deadline.
        while (left := deadline - time.monotonic()) > 0:
            for batch in consumer.poll(timeout_ms=int(min(left, 0.5) * 1000) + 1).values():
                records.extend(json.loads(msg.value) for msg in batch)
            if done(records):
                return records
            if job is not None:
                job.check_alive()
    finally:
        consumer.close()
    return records


_REST_URL = re.compile(r"the MiniCluster's REST API at (http://\S+)")


@dataclass
class JobProcess:
    """A Flink job run by a client process of its own (MiniCluster), killed with its JVM at the end."""

    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the job exited with {self.proc.returncode}:\n{self.log_tail()}")

    def rest_url(self, timeout: float = 120) -> str:
        """The MiniCluster's REST address, as the job's log tells it once the job runs (Flink binds a free
        port itself: a port chosen here was taken by another socket before the JVM bound it, 2026-12-06)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := _REST_URL.search(self.log.read_text(errors="replace")):
                return found.group(1)
            self.check_alive()
            time.sleep(0.2)
        raise AssertionError(f"the job told no REST address in {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


T0 = 1_800_000_000_000  # event time origin of every scenario
S = 1000


@dataclass
class Job:
    settings: Settings
    env: dict[str, str]
    rules_table: str
    topics: dict[str, str]
    proc: JobProcess | None = None
    users: set[str] = field(default_factory=set)

    def user(self, name: str) -> str:
        uid = f"{name}-{uuid.uuid4().hex[:6]}"
        self.users.add(uid)
        return uid

    def send(self, events: list[dict[str, Any]]) -> None:
        produce(self.settings, self.topics["events"], events, key=_key)

    def read(
        self, kind: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 90
    ) -> list[dict[str, Any]]:
        return consume_until(self.settings, self.topics[kind], done, timeout=timeout, job=self.proc)

    def decisions_for(self, event_ids: list[str], timeout: float = 90) -> dict[str, dict[str, Any]]:
        wanted = set(event_ids)
        recs = self.read("decisions", lambda rs: wanted <= {r["event_id"] for r in rs}, timeout)
        by_id = {r["event_id"]: r for r in recs if r["event_id"] in wanted}
        assert set(by_id) == wanted, f"missing decisions for {wanted - set(by_id)}"
        return by_id


def _key(e: Any) -> bytes | None:
    return str(e["user_id"]).encode() if isinstance(e, dict) and "user_id" in e else None


def ev(eid: str, user: str, etype: str, t: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": eid, "user_id": user, "type": etype, "ts": T0 + t, **fields}


def job_topics(name: str) -> dict[str, str]:
    """Names of fresh topics for the job's five (``test-{name}-{kind}-{suffix}``); not created here."""
    suffix = uuid.uuid4().hex[:8]
    return {k: f"test-{name}-{k}-{suffix}" for k in ("events", "decisions", "alerts", "dead", "status")}


def _topics_env(topics: dict[str, str]) -> dict[str, str]:
    return {
        "RISKCTL_JOB_EVENTS_TOPIC": topics["events"],
        "RISKCTL_JOB_DECISIONS_TOPIC": topics["decisions"],
        "RISKCTL_JOB_ALERTS_TOPIC": topics["alerts"],
        "RISKCTL_JOB_DEAD_LETTER_TOPIC": topics["dead"],
        "RISKCTL_JOB_RULE_STATUS_TOPIC": topics["status"],
    }


def file_rules_env(tmp: Path, topics: dict[str, str]) -> dict[str, str]:
    """The whole environment of a ``riskctl run`` on the rules of rules/ (job.rules_source=file): this
    process's, the job's ``topics``, a consumer group of its own and checkpoints under ``tmp``."""
    return {
        **os.environ,
        "RISKCTL_JOB_RULES_SOURCE": "file",
        "RISKCTL_JOB_RULES_DIR": str(PROJECT_ROOT / "rules"),
        **_topics_env(topics),
        "RISKCTL_JOB_GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "RISKCTL_JOB_CHECKPOINT_DIR": (tmp / "chk").as_uri(),
    }


def _job_env(settings: Settings, topics: dict[str, str], table: str, tmp: Path, group: str) -> dict[str, str]:
    server_id = 6000 + uuid.uuid4().int % 3000
    return {
        **_topics_env(topics),
        "RISKCTL_JOB_RULES_TABLE": table,
        "RISKCTL_JOB_GROUP_ID": group,
        "RISKCTL_JOB_RULES_SOURCE": "cdc",
        "RISKCTL_JOB_CDC_SERVER_ID": f"{server_id}-{server_id + 3}",
        "RISKCTL_JOB_PARALLELISM": "2",
        "RISKCTL_JOB_LATENESS_MS": "2000",
        "RISKCTL_JOB_IDLENESS_MS": "1000",
        "RISKCTL_JOB_CHECKPOINT_INTERVAL_MS": "1000",
        "RISKCTL_JOB_CHECKPOINT_DIR": (tmp / "chk").as_uri(),
        # the scenarios' event time (T0, in 2027) is ahead of the wall clock: allow it (ten years of skew),
        # and let it move event time (the watermark) past the clock
        "RISKCTL_JOB_MAX_CLOCK_SKEW_MS": str(10 * 365 * 24 * 3600 * 1000),
        "RISKCTL_JOB_EVENT_TIME_PAST_CLOCK": "true",
    }


def apply_rules(settings: Settings, table: str) -> None:
    from riskctl.store.connection import connect
    from riskctl.store.rules_store import RuleStore

    conn = connect(settings)
    try:
        store = RuleStore(conn, table)
        store.apply(store.plan(load_rules(PROJECT_ROOT / "rules")), author="tests")
    finally:
        conn.close()


def wait_status(job: Job, rule_id: str, version: int, timeout: float = 60) -> dict[str, Any]:
    recs = job.read(
        "status", lambda rs: any(r["rule_id"] == rule_id and r["version"] == version for r in rs), timeout
    )
    found = [r for r in recs if r["rule_id"] == rule_id and r["version"] == version]
    assert found, f"no status for {rule_id} v{version}: {recs[-5:]}"
    return found[-1]


def new_job(stack: Settings, tmp: Path) -> Job:
    """Fresh topics and rules table (rules/ applied) and the job's environment; the job is not started."""
    from riskctl.kafka_admin import ensure_topics

    suffix = uuid.uuid4().hex[:8]
    topics = {k: f"test-{k}-{suffix}" for k in ("events", "decisions", "alerts", "dead", "status")}
    ensure_topics(stack.kafka_bootstrap, topics.values(), partitions=2)
    table = f"t{suffix}_rules"
    apply_rules(stack, table)
    return Job(stack, _job_env(stack, topics, table, tmp, f"g-{suffix}"), table, topics)


def start_job(job: Job, log: Path, extra: dict[str, str] | None = None) -> JobProcess:
    """Run jobs/risk_job.py on the MiniCluster in its own process group (``JobProcess.stop`` kills it all)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "jobs" / "risk_job.py")],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **job.env, **(extra or {})},
            cwd=PROJECT_ROOT,
        )
    job.proc = JobProcess(proc, log)
    return job.proc


def spawn_serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``riskctl serve`` with the environment ``env`` (all of it), its output appended to ``log``. Not waited
    for."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "riskctl.cli.main", "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=PROJECT_ROOT,
        )


def wait_rules(job: Job, timeout: float = 240) -> None:
    """Until the job reports every rule of rules/ accepted."""
    n_rules = len(load_rules(PROJECT_ROOT / "rules"))
    recs = job.read(
        "status", lambda rs: len({r["rule_id"] for r in rs if r["state"] == "accepted"}) >= n_rules, timeout
    )
    assert len({r["rule_id"] for r in recs if r["state"] == "accepted"}) >= n_rules, recs


def rule_store(job: Job) -> Any:
    """The job's rules table as a RuleStore on a connection of its own (the caller closes ``store.conn``)."""
    from riskctl.store.connection import connect
    from riskctl.store.rules_store import RuleStore

    return RuleStore(connect(job.settings), job.rules_table)


def edit_velocity(job: Job, limit: int) -> tuple[int, float]:
    """Write a new version of transfer_velocity with another limit; return (version, commit wall time)."""
    store = rule_store(job)
    try:
        current = store.require("transfer_velocity")
        doc = json.loads(json.dumps(current.document))
        doc["when"] = f"transfer_sum_5m > {limit}"
        from riskctl.core.rules import RuleSet, parse_rule

        others = [parse_rule(r.document) for r in store.current() if r.rule_id != "transfer_velocity"]
        plan = store.plan(RuleSet([*others, parse_rule(doc)]))
        changes = store.apply(plan, author="tests", comment=f"limit {limit}")
        committed = time.time()
    finally:
        store.conn.close()
    (change,) = [c for c in changes if c.rule_id == "transfer_velocity"]
    return change.version, committed
