"""Fixtures for the integration tests: one real stack per test session.

Kafka and MariaDB are started for the session unless they already run, and stopped at the end only if this
session started them; the standalone Flink cluster likewise, only when a test asks for it. A service that
cannot start makes the tests that need it *fail* with the service's own message: nothing here skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import PROJECT_ROOT, Settings, load_settings
from riskctl.errors import RiskctlError
from riskctl.stack.services import FlinkCluster, Kafka, MariaDB, Service
from tests.integration.support import JobProcess, connect_mysql

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


@pytest.fixture
def mysql(stack: Settings) -> Iterator[Any]:
    conn = connect_mysql(stack)
    yield conn
    conn.close()


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
