"""``riskctl serve`` with its broker gone: the producer's queue stays within serve.producer_queue_max_bytes.

librdkafka holds each event up to ``serve.produce_timeout_ms`` while the broker is away, and its own bound was
1 GiB: an instance grew by that much. Here a real serve process talks to a private broker of this module (its
own folder and ports: the session's shared broker is never stopped), which is stopped once the instance runs.
No job runs: nothing would decide the events anyway while the broker is away.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import Settings
from riskctl.stack.services import Kafka
from tests.helpers import free_port
from tests.integration.support import spawn_serve

pytestmark = pytest.mark.integration

QUEUE_BYTES = 1 << 20  # the least the setting takes: about 17 events of 60 KB
REQUESTS = 1_000  # 60 MB of events, which librdkafka's own bound (1 GiB) would all have held


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    base = Settings()
    stack = dataclasses.replace(
        base.stack,
        dir=str(tmp_path_factory.mktemp("stack")),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
    )
    svc = Kafka(dataclasses.replace(base, stack=stack))
    svc.start(timeout=180)
    try:
        yield svc
    finally:
        svc.stop()


def _call(url: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _event(n: int) -> bytes:
    """An event of about 60 KB (the job's limits: 64 KB an event, 4,096 characters a string)."""
    doc = {
        "event_id": f"q-{n}",
        "user_id": f"u{n % 50}",
        "type": "note",
        "ts": int(time.time() * 1000),
        "lines": ["x" * 4000] * 15,
    }
    return json.dumps(doc).encode()


def test_with_the_broker_away_events_beyond_the_queue_get_the_fallback_at_once_and_memory_stays_bounded(
    private_kafka: Kafka, tmp_path: Path
) -> None:
    from riskctl.kafka_admin import ensure_topics

    bootstrap = private_kafka.address
    ensure_topics(bootstrap, ["q-events", "q-replies"], partitions=1)
    port = free_port()
    env = {
        **os.environ,
        "RISKCTL_KAFKA_BOOTSTRAP": bootstrap,
        "RISKCTL_JOB_EVENTS_TOPIC": "q-events",
        "RISKCTL_SERVE_REPLIES_TOPIC": "q-replies",
        "RISKCTL_SERVE_PORT": str(port),
        "RISKCTL_SERVE_INSTANCE": "queue",
        "RISKCTL_SERVE_PROBE_INTERVAL_MS": "0",
        "RISKCTL_SERVE_FALLBACK": "review",
        "RISKCTL_SERVE_PRODUCER_QUEUE_MAX_BYTES": str(QUEUE_BYTES),
        # the held events stay held for the whole test (none is reported lost meanwhile)
        "RISKCTL_SERVE_PRODUCE_TIMEOUT_MS": "120000",
    }
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    proc = spawn_serve(env, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"serve exited:\n{log.read_text()[-3000:]}"
            try:
                if _call(url + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"serve not up in 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        assert private_kafka.stop(), "the private broker was not running"
        before = _rss_mb(proc.pid)
        answers: list[dict[str, Any]] = []
        for n in range(REQUESTS):
            status, body = _call(url + "/v1/decisions?timeout_ms=20", _event(n))
            assert status == 200, body
            answers.append(body)
        grew = _rss_mb(proc.pid) - before
        refused = [a for a in answers if a["degraded"] == "produce_failed: the producer's queue is full"]
        held = [a for a in answers if a["degraded"] == "timeout"]
        print(f"\n{len(held)} held, {len(refused)} refused at once; the instance grew by {grew:.1f} MB")
        assert len(held) + len(refused) == REQUESTS
        assert 1 <= len(held) <= QUEUE_BYTES // 60_000 + 1
        assert all(a["action"] == "REVIEW" and a["source"] == "fallback" for a in answers)
        # refused at once, not after the request's timeout
        assert sorted(a["elapsed_ms"] for a in refused)[len(refused) // 2] < 10
        # 60 MB of events went by: the queue held 1 MiB of them (and the process's own churn)
        assert grew < 30, f"the instance grew by {grew:.1f} MB"
        # not remembered as produced: the retry is produced again (and refused again), not a replay
        first = refused[0]["event_id"]
        status, again = _call(url + "/v1/decisions?timeout_ms=20", _event(int(first.split("-")[1])))
        assert status == 200 and again["replay"] is False
        assert again["degraded"] == "produce_failed: the producer's queue is full"
        status, stats = _call(url + "/v1/stats")
        assert status == 200 and stats["produce_failures"] == len(refused) + 1, stats
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
