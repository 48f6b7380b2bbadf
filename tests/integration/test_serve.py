"""``riskctl serve`` end to end: the real job (MiniCluster) on Kafka, two API instances as real processes.

One job for the module (its own topics, replies topic with 4 partitions, rules table with rules/); instance A
reads replies partition 0, instance B partition 1. Each scenario uses its own users. The job is stopped by
the last test (fail-open / fail-closed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from riskctl.client import AsyncDecisionClient, DecisionClient, RequestRefused
from riskctl.config import Settings
from tests.helpers import free_port
from tests.integration.support import Job, consume_until, new_job, spawn_serve, start_job, wait_rules

pytestmark = pytest.mark.integration
REPLY_PARTITIONS = 4


@dataclass
class Instance:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def post(self, body: bytes, content_type: str = "application/json", query: str = "") -> tuple[int, Any]:
        req = urllib.request.Request(
            self.url + "/v1/decisions" + query,
            data=body,
            method="POST",
            headers={"Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def _spawn(job: Job, name: str, partition: int, log_dir: Path, serve: dict[str, str]) -> Instance:
    """``riskctl serve`` as instance ``name`` on a free port, reading replies partition ``partition``, with
    the RISKCTL_SERVE_* settings ``serve``; output to ``log_dir/serve-{name}.log``. Not waited for."""
    port = free_port()
    env = {
        **os.environ,
        **job.env,
        "RISKCTL_SERVE_REPLIES_TOPIC": job.topics["replies"],
        "RISKCTL_SERVE_PORT": str(port),
        "RISKCTL_SERVE_INSTANCE": name,
        "RISKCTL_SERVE_REPLY_PARTITION": str(partition),
        **{f"RISKCTL_SERVE_{k.upper()}": v for k, v in serve.items()},
    }
    log = log_dir / f"serve-{name}.log"
    proc = spawn_serve(env, log)
    return Instance(name, f"http://127.0.0.1:{port}", proc, log)


def start_instance(job: Job, name: str, partition: int, log_dir: Path, **serve: str) -> Instance:
    inst = _spawn(job, name, partition, log_dir, {"probe_interval_ms": "500", **serve})
    proc, log = inst.proc, inst.log
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve {name} exited:\n{log.read_text()[-3000:]}"
        try:
            if inst.get("/readyz")[0] == 200:  # Kafka reachable and a probe round-tripped through the job
                return inst
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"serve {name} not ready in 60 s:\n{log.read_text()[-3000:]}\n{inst.get('/readyz')}")


@pytest.fixture(scope="module")
def job(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    from riskctl.kafka_admin import ensure_topics

    tmp = tmp_path_factory.mktemp("serve")
    j = new_job(stack, tmp)
    j.topics["replies"] = f"test-replies-{uuid.uuid4().hex[:8]}"
    ensure_topics(stack.kafka_bootstrap, [j.topics["replies"]], partitions=REPLY_PARTITIONS)
    j.env["RISKCTL_SERVE_REPLIES_TOPIC"] = j.topics["replies"]
    j.env["RISKCTL_JOB_PARALLELISM"] = "1"  # 2 cores shared: the API's path is the same at any parallelism
    proc = start_job(j, tmp / f"job-{j.rules_table}.log")
    try:
        wait_rules(j)
        yield j
    finally:
        proc.stop()
        if j.proc is not None:  # the job restarted by the last test
            j.proc.stop()


@pytest.fixture(scope="module")
def apis(job: Job, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Instance]]:
    log_dir = tmp_path_factory.mktemp("serve-logs")
    started: dict[str, Instance] = {}
    try:
        started["a"] = start_instance(job, "api-a", 0, log_dir, timeout_ms="3000")
        started["b"] = start_instance(job, "api-b", 1, log_dir, timeout_ms="3000")
        yield started
    finally:
        for inst in started.values():
            inst.stop()


def ev(user: str, n: int, etype: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{user}-{n}",
        "user_id": user,
        "type": etype,
        "ts": int(time.time() * 1000),
        **fields,
    }


def test_reject_round_trip_with_rule_version_and_evidence(job: Job, apis: dict[str, Instance]) -> None:
    u = job.user("bf")
    with DecisionClient(apis["a"].url, timeout_ms=3000) as client:
        fails = [
            client.decide(ev(u, i, "login", success=False, device_id="d", city="Paris")) for i in range(3)
        ]
        last = client.decide(ev(u, 3, "login", success=True, device_id="d", city="Paris"))
    assert [r.action for r in fails] == ["PASS", "PASS", "PASS"]
    assert last.action == "REJECT" and last.degraded is None and last.source == "job"
    fired = {r["id"]: r for r in last.rules}
    assert fired["brute_force_login"]["version"] == 1
    assert fired["brute_force_login"]["evidence"]["match"]["steps"]["success"] == [f"{u}-3"]
    assert last.ruleset_version and 0 < last.elapsed_ms < 3000


def test_pass_round_trip_with_a_shadow_hit(job: Job, apis: dict[str, Instance]) -> None:
    u = job.user("sh")
    status, out = apis["b"].post(json.dumps(ev(u, 0, "transfer", amount=20_000)).encode())
    assert status == 200 and out["action"] == "PASS" and out["rules"] == []
    assert [s["id"] for s in out["shadow"]] == ["large_transfer_reject"]
    assert out["degraded"] is None and out["event_id"] == f"{u}-0"


def test_idempotent_retry_is_produced_once_and_gets_the_same_decision(
    job: Job, apis: dict[str, Instance]
) -> None:
    u = job.user("idem")
    body = json.dumps(ev(u, 0, "transfer", amount=60_000)).encode()  # REVIEW: velocity over 50,000
    s1, first = apis["a"].post(body)
    s2, again = apis["a"].post(body)
    assert s1 == s2 == 200 and first["action"] == again["action"] == "REVIEW"
    assert [r["id"] for r in first["rules"]] == [r["id"] for r in again["rules"]] == ["transfer_velocity"]
    assert (first["replay"], again["replay"]) == (False, True)
    status, conflict = apis["a"].post(json.dumps(ev(u, 0, "transfer", amount=1)).encode())
    assert status == 409 and conflict["error"]["field"] == "event_id"
    events = consume_until(job.settings, job.topics["events"], lambda rs: False, timeout=3)
    assert sum(1 for r in events if r.get("event_id") == f"{u}-0") == 1


def test_a_retry_through_the_other_instance_is_decided_once_by_the_job(
    job: Job, apis: dict[str, Instance]
) -> None:
    u = job.user("idem2")
    body = json.dumps(ev(u, 0, "transfer", amount=30_000)).encode()
    s1, first = apis["a"].post(body)
    s2, again = apis["b"].post(body)  # B never saw it: produced again, recognised by the job
    assert s1 == s2 == 200 and first["action"] == again["action"] == "PASS"
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert again["replay"] is False and again["source"] == "job" and again["rules"] == []
    # counted once: 30,000 + 15,000 stays under transfer_velocity's 50,000 (twice it would be 75,000)
    s3, third = apis["a"].post(json.dumps(ev(u, 1, "transfer", amount=15_000)).encode())
    assert s3 == 200 and third["action"] == "PASS" and third["duplicate"] is False, third
    # a rejected success sent again through the other instance is rejected again, not passed
    v = job.user("idem-bf")
    for i in range(3):
        assert apis["a"].post(json.dumps(ev(v, i, "login", success=False, device_id="d")).encode())[0] == 200
    success = json.dumps(ev(v, 3, "login", success=True, device_id="d")).encode()
    _, rejected = apis["a"].post(success)
    _, retried = apis["b"].post(success)
    assert rejected["action"] == "REJECT" and not rejected["duplicate"]
    assert retried["action"] == "REJECT" and retried["duplicate"] and retried["source"] == "job"


@pytest.mark.parametrize(
    ("body", "ctype", "query", "status", "field"),
    [
        (b"{not json", "application/json", "", 400, None),
        (b'{"event_id": "x"}', "text/plain", "", 415, "Content-Type"),
        (b'{"event_id": "x", "type": "t", "ts": 1}', "application/json", "", 422, "user_id"),
        (
            b'{"event_id": "x", "user_id": "u", "type": "t", "ts": 1, "amount": 1e300}',
            "application/json",
            "",
            422,
            "amount",
        ),
        (
            b'{"event_id": "x", "user_id": "u", "type": "t", "ts": 1, "n": "' + b"a" * 70_000 + b'"}',
            "application/json",
            "",
            413,
            None,
        ),
        (
            b'{"event_id": "x", "user_id": "u", "type": "t", "ts": 1}',
            "application/json",
            "?timeout_ms=0",
            422,
            "timeout_ms",
        ),
    ],
)
def test_bad_requests_are_refused_with_the_field_and_never_produced(
    job: Job, apis: dict[str, Instance], body: bytes, ctype: str, query: str, status: int, field: str | None
) -> None:
    got, out = apis["b"].post(body, ctype, query)
    assert got == status and out["error"]["field"] == field and out["error"]["reason"]


def test_two_instances_each_read_only_their_own_replies(job: Job, apis: dict[str, Instance]) -> None:
    import asyncio

    users = {name: job.user(f"two-{name}") for name in apis}

    async def burst(name: str) -> list[str]:
        async with AsyncDecisionClient(apis[name].url, timeout_ms=3000) as client:
            # one user per event: ten events of one user within a second is bot_cadence (REVIEW)
            results = await asyncio.gather(
                *(client.decide(ev(f"{users[name]}-{i}", i, "order")) for i in range(10))
            )
        assert all(r.source == "job" and r.action == "PASS" for r in results)
        return [r.event_id for r in results]

    async def both() -> dict[str, list[str]]:
        a, b = await asyncio.gather(burst("a"), burst("b"))
        return {"a": a, "b": b}

    sent = asyncio.run(both())
    # the replies topic, partition by partition: A's in 0 only, B's in 1 only
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=job.settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        seen: dict[int, set[str]] = {}
        for p in range(REPLY_PARTITIONS):
            tp = TopicPartition(job.topics["replies"], p)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            end = consumer.end_offsets([tp])[tp]
            ids: set[str] = set()
            while consumer.position(tp) < end:
                for recs in consumer.poll(timeout_ms=1000).values():
                    ids.update(json.loads(r.value)["event_id"] for r in recs)
            seen[p] = ids
    finally:
        consumer.close()
    assert set(sent["a"]) <= seen[0] and not set(sent["a"]) & (seen[1] | seen[2] | seen[3])
    assert set(sent["b"]) <= seen[1] and not set(sent["b"]) & (seen[0] | seen[2] | seen[3])
    for name in apis:
        status, stats = apis[name].get("/v1/stats")
        assert status == 200 and stats["reply_partition"] == {"a": 0, "b": 1}[name]


def test_callers_with_keys_on_all_addresses_get_the_job_s_decisions_and_own_their_event_ids(
    job: Job, tmp_path: Path
) -> None:
    """The production shape: serve on 0.0.0.0 with API keys, two business services as callers."""
    key_a, key_b = "checkout-" + uuid.uuid4().hex, "login-svc-" + uuid.uuid4().hex
    inst = start_instance(
        job,
        "api-k",
        2,
        tmp_path,
        host="0.0.0.0",
        api_keys=f"checkout:{key_a},login:{key_b}",
        timeout_ms="3000",
    )
    try:
        u = job.user("keys")
        body = json.dumps(ev(u, 0, "transfer", amount=60_000)).encode()
        status, out = inst.post(body)
        assert status == 401 and out["error"]["field"] == "Authorization"
        with DecisionClient(inst.url, api_key=key_a) as client:
            first = client.decide(body)
        assert first.action == "REVIEW" and first.source == "job" and first.fired == ["transfer_velocity"]
        with DecisionClient(inst.url, api_key=key_b) as other, pytest.raises(RequestRefused) as info:
            other.decide(body)  # another caller's event_id: a conflict, not the first caller's decision
        assert info.value.status == 409 and info.value.field == "event_id"
        with DecisionClient(inst.url, api_key=key_b) as other:
            assert other.decide(ev(u, 1, "login", success=True, device_id="d", city="Paris")).source == "job"
        req = urllib.request.Request(inst.url + "/v1/stats", headers={"Authorization": f"Bearer {key_a}"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            stats = json.loads(resp.read())
        assert stats["unauthorized"] == 1
        assert stats["callers"]["checkout"]["requests"] == 1 and stats["callers"]["login"]["requests"] == 2
        assert key_a not in inst.log.read_text() and key_b not in inst.log.read_text()
        events = consume_until(job.settings, job.topics["events"], lambda rs: False, timeout=3)
        assert sum(1 for r in events if r.get("event_id") == f"{u}-0") == 1
    finally:
        assert inst.stop() == 0


def test_fail_open_and_fail_closed_with_the_job_stopped(
    job: Job, apis: dict[str, Instance], tmp_path: Path
) -> None:
    assert job.proc is not None
    job.proc.stop()
    closed = start_instance_unready(job, "api-closed", 2, tmp_path, fallback="reject", timeout_ms="200")
    try:
        u = job.user("down")
        sent_a = json.dumps(ev(u, 0, "transfer", amount=5)).encode()
        sent_closed = json.dumps(ev(u, 1, "transfer", amount=5)).encode()
        status, opened = apis["a"].post(sent_a, query="?timeout_ms=200")
        assert status == 200 and opened["action"] == "PASS" and opened["degraded"] == "timeout"
        assert opened["source"] == "fallback" and 200 <= opened["elapsed_ms"] < 1000
        status, shut = closed.post(sent_closed)
        assert status == 200 and shut["action"] == "REJECT" and shut["degraded"] == "timeout"
        # the events are in the events topic: the job decides them when it is back
        events = consume_until(
            job.settings,
            job.topics["events"],
            lambda rs: {f"{u}-0", f"{u}-1"} <= {r.get("event_id") for r in rs},
            timeout=15,
        )
        assert {f"{u}-0", f"{u}-1"} <= {r.get("event_id") for r in events}
        # no round trip any more: not ready
        deadline = time.monotonic() + 20
        while apis["a"].get("/readyz")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert apis["a"].get("/readyz")[0] == 503
        # the job comes back (from its last checkpoint) and decides both events; each decision reaches the
        # instance that sent the event, and a retry now gets the job's decision instead of the fallback
        chk = _latest_checkpoint(Path(job.env["RISKCTL_JOB_CHECKPOINT_DIR"].removeprefix("file://")))
        assert chk is not None, "no completed checkpoint was retained"
        start_job(job, tmp_path / "job-restored.log", {"RISKCTL_JOB_RESTORE_FROM": chk.as_uri()})
        retried = {}
        deadline = time.monotonic() + 240
        while len(retried) < 2 and time.monotonic() < deadline:
            assert job.proc is not None
            job.proc.check_alive()
            for name, inst, body in (("a", apis["a"], sent_a), ("closed", closed, sent_closed)):
                if name not in retried:
                    status, out = inst.post(body, query="?timeout_ms=2000")
                    assert status == 200 and out["replay"] is True
                    if out["source"] == "job":
                        retried[name] = out
        assert set(retried) == {"a", "closed"}, "the restored job's decisions did not come back"
        assert retried["a"]["action"] == retried["closed"]["action"] == "PASS"
        assert retried["closed"]["degraded"] is None
        assert apis["a"].get("/readyz")[0] == 200
    finally:
        code = closed.stop()
    assert code == 0, closed.log.read_text()[-2000:]  # SIGTERM: a clean, graceful exit


def _latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("*/chk-*/_metadata"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def start_instance_unready(job: Job, name: str, partition: int, log_dir: Path, **serve: str) -> Instance:
    """An instance that cannot become ready (the job is down): wait until it listens."""
    inst = _spawn(job, name, partition, log_dir, serve)
    proc, log = inst.proc, inst.log
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if inst.get("/healthz")[0] == 200:
                return inst
        except OSError:
            time.sleep(0.2)
    raise AssertionError(log.read_text()[-3000:])
