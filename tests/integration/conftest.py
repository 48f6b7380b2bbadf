"""Fixtures for the integration tests: one real stack per test session.

Kafka and MariaDB are started for the session unless they already run, and stopped at the end only if this
session started them; the standalone Flink cluster likewise, only when a test asks for it. A service that
cannot start makes the tests that need it *fail* with the service's own message: nothing here skips.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import PROJECT_ROOT, Settings, load_settings
from riskctl.errors import RiskctlError
from riskctl.stack.services import FlinkCluster, Kafka, MariaDB, Service

PYTHON = sys.executable


def _start(svc: Service, started: list[Service]) -> None:
    try:
        if svc.start(timeout=180):
            started.append(svc)
    except RiskctlError as exc:
        pytest.fail(f"the integration stack could not start {svc.name}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Settings]:
    """Kafka and MariaDB, running for the whole session."""
    started: list[Service] = []
    for svc in (Kafka(settings), MariaDB(settings)):
        _start(svc, started)
    yield settings
    for svc in reversed(started):
        svc.stop()


@pytest.fixture(scope="session")
def flink_cluster(stack: Settings) -> Iterator[FlinkCluster]:
    """The standalone Flink cluster (JobManager + TaskManager), started on first use."""
    cluster = FlinkCluster(stack)
    started: list[Service] = []
    _start(cluster, started)
    yield cluster
    for svc in started:
        svc.stop()


@pytest.fixture
def topic(stack: Settings) -> Callable[..., str]:
    """Create a fresh, uuid-named topic per call, so tests never share topics.

    Created up front: a consumer that subscribes to a topic that does not exist yet only sees it at its
    next metadata refresh (minutes later).
    """
    from riskctl.kafka_admin import ensure_topics

    def make(prefix: str = "t", partitions: int = 2) -> str:
        name = f"test-{prefix}-{uuid.uuid4().hex[:10]}"
        ensure_topics(stack.kafka_bootstrap, [name], partitions=partitions)
        return name

    return make


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


@pytest.fixture
def mysql(stack: Settings) -> Iterator[Any]:
    conn = connect_mysql(stack)
    yield conn
    conn.close()


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
        consumer_timeout_ms=500,
        group_id=None,
        isolation_level=isolation_level,
    )
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in consumer:
                records.append(json.loads(msg.value))
            if done(records):
                return records
            if job is not None:
                job.check_alive()
    finally:
        consumer.close()
    return records


@dataclass
class JobProcess:
    """A Flink job run by a client process of its own (MiniCluster), killed with its JVM at the end."""

    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the job exited with {self.proc.returncode}:\n{self.log_tail()}")

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


@pytest.fixture
def run_job(tmp_path: Path) -> Iterator[Callable[..., JobProcess]]:
    """Start a job script on the embedded MiniCluster in its own process group."""
    jobs: list[JobProcess] = []

    def start(script: str, *args: str, env: dict[str, str] | None = None) -> JobProcess:
        log = tmp_path / f"{Path(script).stem}-{len(jobs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [PYTHON, str(PROJECT_ROOT / script), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=PROJECT_ROOT,
            )
        job = JobProcess(proc, log)
        jobs.append(job)
        return job

    yield start
    for job in jobs:
        job.stop()


@pytest.fixture
def submit_job(flink_cluster: FlinkCluster, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Submit a job script with ``flink run -d -py`` to the standalone cluster; cancel it at the end."""
    import urllib.request

    job_ids: list[str] = []

    def submit(script: str, *args: str, parallelism: int = 1) -> str:
        res = subprocess.run(
            [
                str(flink_cluster.flink_bin()),
                "run",
                "-d",
                "-p",
                str(parallelism),
                "-py",
                str(PROJECT_ROOT / script),
                *args,
            ],
            capture_output=True,
            text=True,
            env=flink_cluster.run_env(),
            cwd=PROJECT_ROOT,
            timeout=300,
            check=False,
        )
        out = res.stdout + res.stderr
        ids = [w for line in out.splitlines() if "JobID" in line for w in line.split() if len(w) == 32]
        assert res.returncode == 0 and ids, f"flink run failed ({res.returncode}):\n{out[-4000:]}"
        job_ids.append(ids[-1])
        return ids[-1]

    yield submit
    for job_id in job_ids:
        req = urllib.request.Request(f"{flink_cluster.rest_url}/jobs/{job_id}?mode=cancel", method="PATCH")
        try:
            urllib.request.urlopen(req, timeout=10).close()  # noqa: S310
        except OSError:
            pass
