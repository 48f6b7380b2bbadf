"""Outages end cleanly (issue 11, item 7): MySQL away for 30 s, a broker restart, dead stack services.

These tests stop or kill the session's shared MariaDB and Kafka, so they live in their own module and bring
every service back before they end (in ``finally``), whatever happened. Recovery times are printed (run with
``-s`` to see them) and asserted against the targets: a rule edit reaches the job within 5 s of MySQL being
back; decisions flow within 5 s of the broker being back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import PROJECT_ROOT, Settings
from riskctl.stack.services import FlinkCluster, Kafka, MariaDB, Service
from riskctl.store.migrations import quote, table_names
from tests.integration.support import (
    Job,
    S,
    connect_mysql,
    consume_until,
    edit_velocity,
    ev,
    new_job,
    produce,
    start_job,
    wait_rules,
    wait_status,
)

pytestmark = pytest.mark.integration

OUTAGE_S = 30.0
TARGET_S = 5.0
#: exactly-once: decisions become visible when a checkpoint commits their transaction, and a restarted
#: broker takes transactions again only once its coordinator has reloaded its state; measured 5.8-17 s from
#: the broker answering (2-9 s of which the coordinator), so the bound here is looser (docs/operations.md)
TARGET_EXACTLY_ONCE_S = 20.0


def _bring_back(svc: Service) -> float:
    """Start ``svc`` again (if it is not running); the wall time at which it answered."""
    svc.start(timeout=180)
    return time.time()


@pytest.fixture
def mariadb(stack: Settings) -> Iterator[MariaDB]:
    svc = MariaDB(stack)
    yield svc
    _bring_back(svc)


@pytest.fixture
def kafka(stack: Settings) -> Iterator[Kafka]:
    svc = Kafka(stack)
    yield svc
    _bring_back(svc)


def _job(stack: Settings, tmp_path: Path, **extra: str) -> Job:
    job = new_job(stack, tmp_path)
    # the MiniCluster's own log in the test's folder (the default is shared with every other job of the venv)
    env = {"RISKCTL_JOB_PARALLELISM": "1", "FLINK_LOG_DIR": str(tmp_path / "flink-log"), **extra}
    start_job(job, tmp_path / "job.log", env)
    try:
        wait_rules(job)
    except BaseException:
        assert job.proc is not None
        job.proc.stop()
        raise
    return job


def _velocity_pair(job: Job) -> dict[str, Any]:
    """Two transfers of 6,000 for a new user; the decision of the second (REVIEW once the limit is 10,000)."""
    u = job.user("out")
    events = [ev(f"{u}-1", u, "transfer", 0, amount=6_000), ev(f"{u}-2", u, "transfer", S, amount=6_000)]
    job.send(events)
    return job.decisions_for([e["event_id"] for e in events], timeout=60)[f"{u}-2"]


def test_rule_edit_reaches_the_job_within_5s_of_mysql_back_after_a_30s_outage(
    stack: Settings, mariadb: MariaDB, tmp_path: Path
) -> None:
    job = _job(stack, tmp_path)
    assert job.proc is not None
    try:
        # an edit before the outage: the CDC source has left its snapshot phase and reads the binlog (it
        # switches after the first checkpoint that follows the snapshot; that switch itself needs MySQL)
        before, _ = edit_velocity(job, 40_000)
        wait_status(job, "transfer_velocity", before, timeout=60)
        assert mariadb.stop(), "the session's MariaDB was not ours to stop"
        time.sleep(OUTAGE_S)
        job.proc.check_alive()
        back = _bring_back(mariadb)
        version, committed = edit_velocity(job, 10_000)
        status = wait_status(job, "transfer_velocity", version, timeout=90)
        assert status["state"] == "accepted"
        applied = status["seen_at_ms"] / 1000
        second = _velocity_pair(job)
        assert second["action"] == "REVIEW"
        (fired,) = [r for r in second["rules"] if r["id"] == "transfer_velocity"]
        assert fired["version"] == version
        # the status reached MySQL too (what `riskctl rules apply --wait` reads)
        conn = connect_mysql(stack)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT state FROM {quote(table_names(job.rules_table).status)} "  # noqa: S608
                    "WHERE rule_id = %s AND version = %s",
                    ("transfer_velocity", version),
                )
                assert cur.fetchone() == ("accepted",)
        finally:
            conn.close()
        print(
            f"\nMySQL outage {OUTAGE_S:.0f} s: edit committed {committed - back:.2f} s after MySQL was back, "
            f"applied by the job {applied - back:.2f} s after"
        )
        assert applied - back < TARGET_S
        job.proc.check_alive()
    finally:
        job.proc.stop()


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_decisions_flow_within_5s_of_the_broker_back(
    stack: Settings, kafka: Kafka, tmp_path: Path, delivery: str
) -> None:
    job = _job(stack, tmp_path, RISKCTL_JOB_DELIVERY=delivery)
    isolation = "read_committed" if delivery == "exactly-once" else "read_uncommitted"
    assert job.proc is not None
    try:
        _velocity_pair(job)  # flowing before
        assert kafka.stop(), "the session's Kafka was not ours to stop"
        time.sleep(10)
        job.proc.check_alive()
        back = _bring_back(kafka)
        # A restarted broker answers metadata requests before its transaction coordinator has reloaded
        # __transaction_state (2-3 s more on this machine); exactly-once sinks wait for that, then for a
        # checkpoint to commit. Measured from both moments.
        ready = _transactions_ready(stack) if delivery == "exactly-once" else back
        u = job.user("after")
        events = [ev(f"{u}-{i}", u, "login", i * S, success=True) for i in range(3)]
        job.send(events)
        sent = time.time()
        wanted = {e["event_id"] for e in events}
        recs = consume_until(
            stack,
            job.topics["decisions"],
            lambda rs: wanted <= {r["event_id"] for r in rs},
            timeout=60,
            job=job.proc,
            isolation_level=isolation,
        )
        arrived = time.time()
        assert wanted <= {r["event_id"] for r in recs}
        print(
            f"\nbroker restart ({delivery}): events sent {sent - back:.2f} s after the broker was back "
            f"(transactions {ready - back:.2f} s after), decided and read {arrived - back:.2f} s after "
            f"({arrived - ready:.2f} s after transactions were back)"
        )
        assert arrived - back < (TARGET_S if delivery == "at-least-once" else TARGET_EXACTLY_ONCE_S)
        job.proc.check_alive()
    finally:
        job.proc.stop()


def test_serve_answers_through_a_broker_restart_and_decides_again_within_5s(
    stack: Settings, kafka: Kafka, tmp_path: Path
) -> None:
    """``riskctl serve`` while the broker restarts: every request gets its fallback within its timeout during
    the outage, and the job's decision again within seconds of the broker being back (docs/operations.md)."""
    import json

    from riskctl.kafka_admin import ensure_topics
    from tests.integration.test_serve import start_instance

    job = new_job(stack, tmp_path)
    job.topics["replies"] = f"test-replies-{uuid.uuid4().hex[:8]}"
    ensure_topics(stack.kafka_bootstrap, [job.topics["replies"]], partitions=2)
    job.env["RISKCTL_SERVE_REPLIES_TOPIC"] = job.topics["replies"]
    start_job(job, tmp_path / "job.log", {"RISKCTL_JOB_PARALLELISM": "1"})
    assert job.proc is not None
    api = None
    try:
        wait_rules(job)
        api = start_instance(job, "api-outage", 0, tmp_path, timeout_ms="200")
        u = job.user("serve")
        n = 0

        def ask(timeout_ms: int) -> tuple[float, dict[str, Any]]:
            nonlocal n
            n += 1
            event = {"event_id": f"{u}-{n}", "user_id": u, "type": "login", "ts": int(time.time() * 1000)}
            body = json.dumps({**event, "success": True})
            t0 = time.monotonic()
            status, out = api.post(body.encode(), query=f"?timeout_ms={timeout_ms}")
            assert status == 200, out
            return time.monotonic() - t0, out

        deadline = time.monotonic() + 30
        while ask(1000)[1]["source"] != "job":  # the first decisions may wait for the job's warm-up
            assert time.monotonic() < deadline, "no decision from the job before the outage"
        assert kafka.stop(), "the session's Kafka was not ours to stop"
        down = time.time()
        slowest = 0.0
        while time.time() - down < 10:  # the outage: each request gets its fallback within its timeout
            took, out = ask(200)
            assert out["source"] == "fallback" and out["degraded"] == "timeout", out
            slowest = max(slowest, took)
            time.sleep(0.2)
        back = _bring_back(kafka)
        decided = None
        while decided is None and time.time() - back < 60:
            took, out = ask(1000)
            assert took < 2.0, f"{took:.2f} s for a request of timeout_ms=1000: {out}"
            if out["source"] == "job":
                decided = time.time()
        assert decided is not None, f"no decision from the job within 60 s of the broker back:\n{api.log}"
        print(
            f"\nserve through a broker restart: fallbacks within {slowest * 1000:.0f} ms (timeout 200 ms), "
            f"decided again {decided - back:.2f} s after the broker was back"
        )
        assert slowest < 1.0
        assert decided - back < TARGET_S
        job.proc.check_alive()
    finally:
        if api is not None:
            api.stop()
        job.proc.stop()


def test_alerts_are_delivered_and_dead_lettered_within_5s_of_the_broker_back_after_a_40s_outage(
    stack: Settings, kafka: Kafka
) -> None:
    """The alerts dispatcher's Kafka clients wait at most 1 s between two connection attempts: with
    kafka-python's default (doubling up to 30 s), an alert sent as the broker came back from a 40 s outage was
    delivered, and a hostile record dead-lettered, 30 s after the broker answered."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from kafka import KafkaConsumer

    from riskctl.alerts.dispatcher import Dispatcher, run_kafka
    from riskctl.alerts.settings import parse_config
    from riskctl.kafka_admin import ensure_topics

    suffix = uuid.uuid4().hex[:8]
    alerts_t, dlq = f"test-alerts-{suffix}", f"test-alerts-dlq-{suffix}"
    ensure_topics(stack.kafka_bootstrap, [alerts_t, dlq], partitions=2)
    delivered: list[float] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            delivered.append(time.time())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {
        "delivery": {"attempts": 3, "backoff_ms": 50, "max_backoff_ms": 200, "timeout_ms": 2000},
        "channels": {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{server.server_address[1]}/"}},
        "default_channels": ["hook"],
    }
    dispatcher = Dispatcher(parse_config(config, {}), dead_letter_topic=dlq, produce=lambda *a: None)
    thread = threading.Thread(
        target=run_kafka,
        args=(dispatcher,),
        kwargs={"bootstrap": stack.kafka_bootstrap, "topics": [alerts_t], "group_id": f"test-{suffix}"},
        daemon=True,
    )
    thread.start()

    def alert(i: int) -> dict[str, Any]:
        return {
            "kind": "alert",
            "alert_id": f"transfer_velocity:1:rule_alert:{suffix}-{i}",
            "user_id": f"user{i}",
            "reason": "rule_alert",
            "ts": 1_700_000_000_000 + i,
            "rule": {"id": "transfer_velocity", "version": 1, "action": "REJECT", "evidence": {}},
            "shadow": False,
            "event_id": f"e{i}",
            "trigger_event_id": f"e{i}",
            "ruleset_version": "rs-1",
        }

    def key(v: Any) -> bytes | None:
        return str(v["alert_id"]).encode() if isinstance(v, dict) else None

    def until(cond: Any, timeout: float, what: str) -> float:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)
        return time.time()

    try:
        produce(stack, alerts_t, [alert(0)], key=key)
        until(lambda: len(delivered) == 1, 60, "the alert before the outage")
        assert kafka.stop(), "the session's Kafka was not ours to stop"
        time.sleep(40)
        back = _bring_back(kafka)
        produce(stack, alerts_t, [alert(1), b"not json"], key=key)
        arrived = until(lambda: len(delivered) == 2, 90, "the alert after the outage")
        consumer = KafkaConsumer(
            dlq,
            bootstrap_servers=stack.kafka_bootstrap,
            auto_offset_reset="earliest",
            consumer_timeout_ms=1000,
        )
        try:
            letters: list[Any] = []
            until(lambda: letters.extend(consumer) or bool(letters), 60, "the dead letter")
        finally:
            consumer.close()
        written = letters[0].timestamp / 1000
        assert json.loads(letters[0].value)["reason"].startswith("the record is not JSON")
        print(
            f"\nalerts after a 40 s broker outage: delivered {arrived - back:.2f} s, dead-lettered "
            f"{written - back:.2f} s after the broker was back"
        )
        assert arrived - back < TARGET_S
        assert written - back < TARGET_S
    finally:
        dispatcher.stop_event.set()
        thread.join(30)
        server.shutdown()
    assert not thread.is_alive(), "the dispatcher did not stop"


def test_the_simulator_s_producer_and_consumer_resume_within_5s_of_the_broker_back_after_a_40s_outage(
    stack: Settings, kafka: Kafka
) -> None:
    """riskctl sim / demo send with :func:`riskctl.sim.kafka_io.producer`, and riskctl decisions follows a
    topic with :func:`riskctl.sim.kafka_io.consumer`: both, created before the outage, send and read again
    within seconds of the broker being back (kafka-python's default reconnect backoff grows to 30 s)."""
    from riskctl.kafka_admin import ensure_topics
    from riskctl.sim.kafka_io import close_producer, consumer, poll, producer, send_paced

    name = f"test-sim-{uuid.uuid4().hex[:8]}"
    ensure_topics(stack.kafka_bootstrap, [name], partitions=2)
    prod = producer(stack.kafka_bootstrap)
    cons = consumer(stack.kafka_bootstrap, [name], from_beginning=True)
    seen: list[tuple[float, str]] = []

    def read_until(eid: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen.extend((time.time(), str(m.value.get("event_id"))) for m in poll(cons, 200))
            found = [t for t, e in seen if e == eid]
            if found:
                return found[0]
        raise AssertionError(f"{eid} not read within {timeout:.0f} s")

    try:
        assert send_paced(prod, name, [ev("before", "u1", "login", 0)], start_ts=0, paced=False) == 1
        read_until("before", 60)
        assert kafka.stop(), "the session's Kafka was not ours to stop"
        time.sleep(40)
        back = _bring_back(kafka)
        assert send_paced(prod, name, [ev("after", "u1", "login", S)], start_ts=0, paced=False) == 1
        sent = time.time()
        read = read_until("after", 60)
        print(
            f"\nsimulator after a 40 s broker outage: delivered {sent - back:.2f} s, "
            f"read {read - back:.2f} s after the broker was back"
        )
        assert sent - back < TARGET_S
        assert read - back < TARGET_S
    finally:
        close_producer(prod)
        cons.close()


def _transactions_ready(stack: Settings, timeout: float = 60) -> float:
    """The wall time at which the broker's transaction coordinator accepts a new transactional producer."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap,
        transactional_id=f"probe-{uuid.uuid4().hex[:8]}",
        max_block_ms=int(timeout * 1000),
    )
    try:
        producer.init_transactions()
    finally:
        producer.close()
    return time.time()


def _stack_up(stack: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "riskctl.cli.main", "stack", "up", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=400,
        check=False,
    )


def _kill9(pid_file: Path) -> int:
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    return pid


def test_stack_up_restarts_a_killed_broker_and_mariadb(
    stack: Settings, kafka: Kafka, mariadb: MariaDB
) -> None:
    """kill -9 leaves stale pid files behind; `riskctl stack up` starts the services again."""
    for svc in (kafka, mariadb):
        old = _kill9(svc.pid_files[0])
        assert svc.status().state == "stopped"
        res = _stack_up(stack)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"{svc.name}" in res.stdout and "started in" in res.stdout, res.stdout
        assert svc.status().state == "running" and svc.pids() != [old]


@pytest.mark.cluster
def test_stack_up_restarts_a_killed_taskmanager_and_jobmanager(
    stack: Settings, flink_cluster: FlinkCluster
) -> None:
    flink_cluster.start(timeout=180)  # whole, whatever an earlier test killed
    tm_file = flink_cluster.pid_files[1]
    jm_file = flink_cluster.pid_files[0]
    jm = int(jm_file.read_text())
    _kill9(tm_file)
    t0 = time.monotonic()
    res = _stack_up(stack, "--flink")
    assert res.returncode == 0, res.stdout + res.stderr
    tm_s = time.monotonic() - t0
    assert "flink" in res.stdout and "started in" in res.stdout, res.stdout
    assert int(jm_file.read_text()) == jm  # the JobManager (and its jobs) left alone
    assert flink_cluster.healthy()

    _kill9(jm_file)
    t0 = time.monotonic()
    res = _stack_up(stack, "--flink")  # before: waited 240 s, then gave up
    assert res.returncode == 0, res.stdout + res.stderr
    jm_s = time.monotonic() - t0
    assert int(jm_file.read_text()) != jm and flink_cluster.healthy()
    print(
        f"\nstack up: dead TaskManager back in {tm_s:.1f} s, dead JobManager (whole cluster) in {jm_s:.1f} s"
    )


def test_a_real_checkpoint_of_the_job_is_recognised_by_submit(stack: Settings, tmp_path: Path) -> None:
    """The checkpoint guard on a checkpoint the job really wrote (its _metadata names the events topic)."""
    from riskctl.flink.checkpoints import NewerCheckpointError, check_start, completed_checkpoints

    job = _job(stack, tmp_path)
    assert job.proc is not None
    try:
        _velocity_pair(job)
        time.sleep(3)  # checkpoints every second
    finally:
        job.proc.stop()
    chk_dir = job.env["RISKCTL_JOB_CHECKPOINT_DIR"]
    found = completed_checkpoints(chk_dir, job.topics["events"])
    assert found, f"no completed checkpoint of the job found in {chk_dir}"
    assert completed_checkpoints(chk_dir, job.topics["events"] + "-other") == []
    assert completed_checkpoints(chk_dir, f"test-events-{uuid.uuid4().hex[:8]}") == []
    with pytest.raises(NewerCheckpointError, match=found[-1].path.as_uri()):
        check_start(chk_dir, job.topics["events"], "", from_empty=False)
    assert check_start(chk_dir, job.topics["events"], found[-1].path.as_uri(), from_empty=False) is None
