"""``riskctl alerts`` against real Kafka (the shared stack, fresh topics per test), local HTTP receivers
(``http.server``) and a local SMTP receiver (a minimal one below), including receivers that fail and recover.

Each test runs the dispatcher (:func:`riskctl.alerts.dispatcher.run_kafka`) in a thread with its own consumer
group; the last one runs the real ``riskctl alerts run`` command. Kafka I/O helpers live here (kafka-python)
so that this file depends on no other test module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from riskctl.alerts.dispatcher import Dispatcher, Stats, run_kafka
from riskctl.alerts.settings import parse_config
from riskctl.config import PROJECT_ROOT, Settings
from tests.helpers import free_port, run_riskctl
from tests.integration.support import consume_until

pytestmark = pytest.mark.integration

SECRET = "SECintegration"


# ------------------------------------------------------------------------------------------- receivers
class HttpReceiver:
    """A local HTTP endpoint recording every POST; ``status`` is what it answers (500 to fail). ``down()``
    closes the socket (connections are refused), ``up()`` listens again on the same port.
    """

    def __init__(self, answer: Callable[[dict[str, Any]], tuple[int, bytes]] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.answer = answer
        self.lock = threading.Lock()
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None
        self.up()

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                req = {
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": body,
                    "status": receiver.status,
                }
                if receiver.answer is not None and receiver.status == 200:
                    status, answer = receiver.answer(req)
                else:
                    status, answer = receiver.status, b"ok" if receiver.status == 200 else b"failing"
                req["status"] = status
                with receiver.lock:
                    receiver.requests.append(req)
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?access_token=tok"

    def ok(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["status"] == 200]

    def failed(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["status"] != 200]


class SmtpReceiver:
    """Just enough SMTP (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) to receive messages; refuses
    connections while down.
    """

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()
        self.port = free_port()
        self.server: socketserver.ThreadingTCPServer | None = None

    def up(self) -> None:
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"220 test ESMTP\r\n")
                sender, rcpts = "", []
                while True:
                    line = self.rfile.readline(4096)
                    if not line:
                        return
                    cmd = line.decode("ascii", "replace").strip()
                    verb = cmd[:4].upper()
                    if verb in ("EHLO", "HELO"):
                        self.wfile.write(b"250 test\r\n")
                    elif verb == "MAIL":
                        sender, rcpts = cmd.partition(":")[2].strip(" <>"), []
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == "RCPT":
                        rcpts.append(cmd.partition(":")[2].strip(" <>"))
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == "DATA":
                        self.wfile.write(b"354 go on\r\n")
                        data = b""
                        while not data.endswith(b"\r\n.\r\n"):
                            chunk = self.rfile.readline(65536)
                            if not chunk:
                                return
                            data += chunk
                        with receiver.lock:
                            receiver.messages.append((sender, rcpts, data[:-5]))
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:  # RSET, NOOP
                        self.wfile.write(b"250 ok\r\n")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def dingtalk_answer(req: dict[str, Any]) -> tuple[int, bytes]:
    """Checks the signature as DingTalk does; answers errcode 310000 when it does not match."""
    q = parse_qs(urlsplit(req["path"]).query)
    ts = q.get("timestamp", [""])[0]
    want = base64.b64encode(
        hmac.new(SECRET.encode(), f"{ts}\n{SECRET}".encode(), hashlib.sha256).digest()
    ).decode()
    if q.get("sign", [""])[0] != want or abs(int(ts or 0) - time.time() * 1000) > 3_600_000:
        return 200, b'{"errcode":310000,"errmsg":"sign not match"}'
    return 200, b'{"errcode":0,"errmsg":"ok"}'


TWILIO_SID = "AC" + "1" * 32
TWILIO_TOKEN = "twilio-token"


def twilio_answer(req: dict[str, Any]) -> tuple[int, bytes]:
    """Twilio's Messages endpoint: 201 for this account with its basic auth, 401 otherwise."""
    auth = "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    if (
        req["path"] != f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
        or req["headers"].get("Authorization") != auth
    ):
        return 401, b'{"code": 20003, "message": "Authenticate"}'
    return 201, b'{"sid": "SM1", "status": "queued"}'


# --------------------------------------------------------------------------------------------- Kafka
def produce(settings: Settings, topic: str, values: list[bytes | dict[str, Any]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, linger_ms=0, max_request_size=2_000_000
    )
    try:
        for v in values:
            raw = json.dumps(v).encode() if isinstance(v, dict) else v
            key = str(v.get("alert_id") or v.get("event_id")).encode() if isinstance(v, dict) else None
            producer.send(topic, raw, key=key)
        producer.flush()
    finally:
        producer.close()


def read_all(settings: Settings, topic: str, want: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The records of ``topic`` once ``want`` are there; with ``want=0``, whatever came in 1.5 s."""
    if want == 0:
        return consume_until(settings, topic, lambda rs: False, timeout=1.5)
    return consume_until(settings, topic, lambda rs: len(rs) >= want, timeout=timeout)


def committed(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        offsets = admin.list_consumer_group_offsets(group)
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
    finally:
        admin.close()


def end_offsets(settings: Settings, topic: str) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {(tp.topic, tp.partition): off for tp, off in consumer.end_offsets(parts).items() if off}
    finally:
        consumer.close()


def wait_committed(settings: Settings, group: str, topic: str, timeout: float = 15) -> None:
    """Until ``group`` has committed every offset of ``topic`` (its end offsets)."""
    want = end_offsets(settings, topic)
    wait_until(lambda: committed(settings, group) == want, timeout, f"every offset of {topic} committed")


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alert(i: int, action: str = "REJECT", rule: str = "transfer_velocity", **over: Any) -> dict[str, Any]:
    doc = {
        "kind": "alert",
        "alert_id": f"{rule}:1:rule_alert:e{i}",
        "user_id": f"user{i}",
        "reason": "rule_alert",
        "ts": 1_700_000_000_000 + i,
        "rule": {
            "id": rule,
            "version": 1,
            "action": action,
            "evidence": {"features": {"sum_5m": 50_000 + i}},
        },
        "shadow": False,
        "event_id": f"e{i}",
        "trigger_event_id": f"e{i}",
        "ruleset_version": "rs-1",
    }
    doc.update(over)
    return doc


class Running:
    def __init__(
        self, dispatcher: Dispatcher, thread: threading.Thread, group: str, errors: list[BaseException]
    ) -> None:
        self.dispatcher = dispatcher
        self.thread = thread
        self.group = group
        self.errors = errors

    def stop(self) -> Stats:
        self.dispatcher.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the dispatcher did not stop"
        assert not self.errors, f"the dispatcher failed: {self.errors[0]!r}"
        return self.dispatcher.stats


@pytest.fixture
def dispatch(stack: Settings) -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def start(
        doc: dict[str, Any],
        topics: list[str],
        dead_letter_topic: str,
        group: str | None = None,
        delivered_topic: str = "",
    ) -> Running:
        group = group or f"test-alerts-{uuid.uuid4().hex[:8]}"
        d = Dispatcher(parse_config(doc, {}), dead_letter_topic=dead_letter_topic, produce=lambda *a: None)
        errors: list[BaseException] = []

        def target() -> None:
            try:
                run_kafka(
                    d,
                    bootstrap=stack.kafka_bootstrap,
                    topics=topics,
                    group_id=group,
                    delivered_topic=delivered_topic,
                )
            except BaseException as exc:
                errors.append(exc)
                raise

        t = threading.Thread(target=target, daemon=True)
        t.start()
        r = Running(d, t, group, errors)
        running.append(r)
        return r

    yield start
    for r in running:
        if r.thread.is_alive():
            r.stop()


FAST = {"attempts": 3, "backoff_ms": 50, "max_backoff_ms": 200, "timeout_ms": 2000}


def one_webhook(url: str) -> dict[str, Any]:
    """A dispatcher's configuration: every alert to the one webhook at ``url``, retried :data:`FAST`."""
    return {
        "delivery": FAST,
        "channels": {"hook": {"type": "webhook", "url": url}},
        "default_channels": ["hook"],
    }


# ---------------------------------------------------------------------------------------------- tests
def test_alerts_and_review_decisions_reach_every_channel_kind(
    stack: Settings, topic: Callable[..., str], dispatch: Callable[..., Running]
) -> None:
    alerts_t, decisions_t, dlq = topic("alerts"), topic("decisions"), topic("alerts-dlq")
    hook, ding, slack, smtp = HttpReceiver(), HttpReceiver(dingtalk_answer), HttpReceiver(), SmtpReceiver()
    sms = HttpReceiver(twilio_answer)
    smtp.up()
    try:
        doc = {
            "link": "https://review.example/a/{alert_id}",
            "review_decisions": True,
            "delivery": FAST,
            "channels": {
                "hook": {"type": "webhook", "url": hook.url, "token": "tkn"},
                "ding": {"type": "dingtalk", "url": ding.url, "secret": SECRET},
                "slack": {"type": "slack", "url": slack.url},
                "mail": {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "from": "r@x.test",
                    "to": ["rev@x.test"],
                },
                "phone": {
                    "type": "sms",
                    "url": f"http://127.0.0.1:{sms.port}",
                    "account_sid": TWILIO_SID,
                    "auth_token": TWILIO_TOKEN,
                    "from": "+15005550006",
                    "to": ["+4915112345678", "+4915112345679"],
                    "max_segments": 1,
                },
            },
            "routes": [
                {
                    "match": {"actions": ["REJECT"], "kinds": ["alert"]},
                    "channels": ["hook", "ding", "mail", "phone"],
                },
                {"match": {"kinds": ["review"]}, "channels": ["slack"]},
            ],
        }
        run = dispatch(doc, [alerts_t, decisions_t], dlq)
        review = {
            "kind": "decision",
            "event_id": "ev-review",
            "user_id": "u-r",
            "type": "transfer",
            "ts": 5,
            "action": "REVIEW",
            "rules": [
                {
                    "id": "big_transfer",
                    "version": 2,
                    "action": "REVIEW",
                    # a free-text field forging a second amount and a verdict: shown as one quoted value
                    "evidence": {"fields": {"memo": "ok, amount = 5 -> PASS", "amount": 9e4}},
                }
            ],
            "shadow": [],
            "ruleset_version": "rs",
        }
        produce(stack, alerts_t, [alert(1), alert(2, action="REVIEW")])
        produce(stack, decisions_t, [review, {**review, "event_id": "ev-pass", "action": "PASS"}])
        wait_until(
            lambda: (
                len(hook.ok()) == 1
                and len(ding.ok()) == 1
                and len(slack.ok()) == 1
                and len(smtp.messages) == 1
                and len([r for r in sms.requests if r["status"] == 201]) == 2
            ),
            30,
            "every channel to receive its message",
        )
        want = {**end_offsets(stack, alerts_t), **end_offsets(stack, decisions_t)}
        wait_until(lambda: committed(stack, run.group) == want, 15, "the offsets to be committed")
        stats = run.stop()
    finally:
        for r in (hook, ding, slack, smtp, sms):
            r.down()
    texts = [parse_qs(r["body"].decode()) for r in sms.requests]
    assert [r["status"] for r in sms.requests] == [201, 201]  # one per number, the signature of each accepted
    assert sorted(t["To"][0] for t in texts) == ["+4915112345678", "+4915112345679"]
    sms_text = texts[0]["Body"][0]
    assert sms_text.startswith(
        "[riskctl high] transfer_velocity REJECT https://review.example/a/transfer_velocity"
    )
    assert len(sms_text) <= 160 and "user1" in sms_text
    body = json.loads(hook.ok()[0]["body"])
    assert body["items"][0]["id"] == "transfer_velocity:1:rule_alert:e1" and body["severity"] == "high"
    assert (
        "sum_5m = 50001" in body["text"]
        and "https://review.example/a/transfer_velocity%3A1%3Arule_alert%3Ae1" in body["text"]
    )
    assert hook.ok()[0]["headers"]["Authorization"] == "Bearer tkn"
    ding_body = json.loads(ding.ok()[0]["body"])
    assert ding_body["msgtype"] == "markdown" and "user1" in ding_body["markdown"]["text"]
    assert ding.failed() == []  # the signature was accepted by the receiver's check
    slack_text = json.loads(slack.ok()[0]["body"])["text"]
    assert "big_transfer" in slack_text and "u-r" in slack_text
    assert 'memo = "ok, amount = 5 -&gt; PASS", amount = 90000.0' in slack_text
    sender, rcpts, data = smtp.messages[0]
    mail = message_from_bytes(data)
    assert (sender, rcpts) == ("r@x.test", ["rev@x.test"])
    assert mail["Subject"] == "[riskctl high] transfer_velocity: REJECT for user user1"
    assert "sum_5m = 50001" in mail.get_payload()
    assert read_all(stack, dlq, 0, timeout=1) == []
    # delivered: the REJECT alert on its 4 channels, the review on 1
    assert (stats.read, stats.delivered, stats.skipped, stats.unrouted) == (4, 5, 1, 1)


def test_a_failing_receiver_recovers_delivers_once_and_never_blocks_the_others(
    stack: Settings, topic: Callable[..., str], dispatch: Callable[..., Running]
) -> None:
    alerts_t, dlq = topic("alerts"), topic("alerts-dlq")
    flaky, refused, healthy, smtp = HttpReceiver(), HttpReceiver(), HttpReceiver(), SmtpReceiver()
    flaky.status = 500  # answers 500
    refused.down()  # refuses connections
    # smtp is not listening yet: refused too
    try:
        doc = {
            "delivery": {"attempts": 100, "backoff_ms": 100, "max_backoff_ms": 400, "timeout_ms": 2000},
            "channels": {
                "flaky": {"type": "webhook", "url": flaky.url},
                "refused": {"type": "slack", "url": refused.url},
                "healthy": {"type": "webhook", "url": healthy.url},
                "mail": {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "from": "r@x.test",
                    "to": ["a@x.test"],
                },
            },
            "default_channels": ["flaky", "refused", "healthy", "mail"],
        }
        run = dispatch(doc, [alerts_t], dlq)
        produce(stack, alerts_t, [alert(i) for i in range(5)])
        wait_until(lambda: len(healthy.ok()) == 5, 30, "the healthy channel to get all 5 alerts")
        wait_until(lambda: len(flaky.failed()) >= 3, 10, "the flaky channel to be retried")
        assert committed(stack, run.group) == {}, (
            "nothing may be committed while channels still owe deliveries"
        )
        flaky.status = 200
        refused.up()
        smtp.up()
        wait_until(
            lambda: len(flaky.ok()) == 5 and len(refused.ok()) == 5 and len(smtp.messages) == 5,
            60,
            "every channel to deliver after recovery",
        )
        wait_committed(stack, run.group, alerts_t)
        time.sleep(1.0)  # nothing is sent twice afterwards
        stats = run.stop()
    finally:
        for r in (flaky, refused, healthy, smtp):
            r.down()
    ids = {f"transfer_velocity:1:rule_alert:e{i}" for i in range(5)}
    for receiver in (flaky, healthy):
        got = [json.loads(r["body"])["items"][0]["id"] for r in receiver.ok()]
        assert sorted(got) == sorted(ids), "each alert delivered exactly once"
    assert len(smtp.messages) == 5 and len(refused.ok()) == 5
    assert read_all(stack, dlq, 0, timeout=1) == []
    assert stats.delivered == 20 and stats.retries >= 3


def test_undeliverable_and_hostile_records_go_to_the_dead_letter_topic_with_the_reason(
    stack: Settings, topic: Callable[..., str], dispatch: Callable[..., Running]
) -> None:
    alerts_t, dlq = topic("alerts"), topic("alerts-dlq")
    down, healthy = HttpReceiver(), HttpReceiver()
    down.status = 503
    try:
        doc = {
            "delivery": FAST,
            "channels": {
                "down": {"type": "webhook", "url": down.url},
                "healthy": {"type": "webhook", "url": healthy.url},
            },
            "default_channels": ["down", "healthy"],
            # below the default (1 MiB, the job's sink limit, which this test's producer cannot exceed), so
            # that the 300 KB record is refused as too large
            "max_record_bytes": 65_536,
        }
        run = dispatch(doc, [alerts_t], dlq)
        hostile: list[bytes | dict[str, Any]] = [
            b"not json at all",
            b"\xff\xfe\x00",
            json.dumps(alert(9, user_id="u" * 300_000)).encode(),
            {**alert(8), "rule": None},
            b"[" * 5000 + b"]" * 5000,
        ]
        produce(stack, alerts_t, [alert(1), *hostile])
        letters = read_all(stack, dlq, 6, timeout=30)
        wait_committed(stack, run.group, alerts_t)
        run.stop()
    finally:
        down.down()
        healthy.down()
    assert len(letters) == 6
    by_reason = sorted(x["reason"] for x in letters)
    assert "channel down: undeliverable after 3 attempt(s): HTTP 503: failing" in by_reason
    assert any(r.startswith("the record is not JSON") for r in by_reason)
    assert "the record is not valid UTF-8 (byte 0)" in by_reason
    assert any(r.startswith("the record is too large") for r in by_reason)
    assert any(r.startswith("the record is nested deeper than 20 levels") for r in by_reason)
    fields = {x["field"] for x in letters}
    assert "rule" in fields
    undeliverable = next(x for x in letters if x["reason"].startswith("channel down"))
    assert (
        undeliverable["channel"] == "down"
        and undeliverable["alert_id"] == "transfer_velocity:1:rule_alert:e1"
    )
    assert undeliverable["topic"] == alerts_t and isinstance(undeliverable["offset"], int)
    assert json.loads(undeliverable["raw"])["user_id"] == "user1"
    assert len(down.requests) == 3 and len(healthy.ok()) == 1


def test_beyond_the_rate_limit_alerts_arrive_as_one_digest(
    stack: Settings, topic: Callable[..., str], dispatch: Callable[..., Running]
) -> None:
    alerts_t, dlq = topic("alerts", partitions=1), topic("alerts-dlq")
    hook = HttpReceiver()
    try:
        doc = {
            "delivery": FAST,
            "channels": {
                "hook": {"type": "webhook", "url": hook.url, "rate_limit": {"max": 2, "window_s": 2}}
            },
            "default_channels": ["hook"],
        }
        run = dispatch(doc, [alerts_t], dlq)
        produce(stack, alerts_t, [alert(i) for i in range(7)])
        wait_until(lambda: len(hook.ok()) == 3, 30, "two alerts and one digest")
        wait_committed(stack, run.group, alerts_t)
        stats = run.stop()
    finally:
        hook.down()
    bodies = [json.loads(r["body"]) for r in hook.ok()]
    assert [len(b["items"]) for b in bodies] == [1, 1, 5]
    digest = bodies[2]
    assert digest["title"] == "[riskctl] 5 alerts on hook (rate limit reached)"
    assert all(f"user{i}" in digest["text"] for i in range(2, 7))
    assert (stats.delivered, stats.digests, stats.digested_items) == (2, 1, 5)


def test_after_a_restart_what_was_in_flight_is_delivered_and_nothing_is_sent_twice(
    stack: Settings, topic: Callable[..., str], dispatch: Callable[..., Running]
) -> None:
    alerts_t, dlq = topic("alerts"), topic("alerts-dlq")
    delivered_t = f"test-alerts-delivered-{uuid.uuid4().hex[:10]}"  # created compacted by the dispatcher
    healthy, down = HttpReceiver(), HttpReceiver()
    down.down()
    group = f"test-alerts-{uuid.uuid4().hex[:8]}"
    doc = {
        "delivery": {"attempts": 100, "backoff_ms": 100, "max_backoff_ms": 200, "timeout_ms": 2000},
        "channels": {
            "healthy": {"type": "webhook", "url": healthy.url},
            "down": {"type": "slack", "url": down.url},
        },
        "default_channels": ["healthy", "down"],
    }
    try:
        first = dispatch(doc, [alerts_t], dlq, group=group, delivered_topic=delivered_t)
        produce(stack, alerts_t, [alert(i) for i in range(3)])
        wait_until(lambda: len(healthy.ok()) == 3, 30, "the healthy channel to get 3 alerts")
        first.stop()  # "down" still owes 3: nothing was committed
        assert committed(stack, group) == {}
        down.up()
        second = dispatch(doc, [alerts_t], dlq, group=group, delivered_topic=delivered_t)
        wait_until(lambda: len(down.ok()) == 3, 30, "the recovered channel to get the 3 alerts")
        wait_committed(stack, group, alerts_t)
        time.sleep(0.5)
        stats = second.stop()
    finally:
        healthy.down()
        down.down()
    assert len(healthy.ok()) == 3, "the restart read the 3 records again but sent none twice"
    assert stats.read == 3 and stats.deduplicated == 3
    texts = sorted(json.loads(r["body"])["text"] for r in down.ok())
    assert all("transfer_velocity" in t for t in texts) and len(set(texts)) == 3


def test_an_alert_shed_while_a_channel_is_down_is_dead_lettered_once_across_a_restart(
    stack: Settings, topic: Callable[..., str], dispatch: Callable[..., Running]
) -> None:
    """A channel down for long sheds an alert ("backlog full"), and a copy of it arrives (the job's sink is
    at-least-once); the dispatcher restarts while the channel still owes the first alert, so nothing is
    committed and the shed records are read again. A shed dead letter was not remembered: the copy was
    dead-lettered too, and after the restart the alert was retried on the channel and sent to it once it
    recovered (a dead letter, then a delivery). Now one dead letter, remembered in the delivered topic."""
    alerts_t, dlq = topic("alerts", partitions=1), topic("alerts-dlq")
    delivered_t = f"test-alerts-delivered-{uuid.uuid4().hex[:10]}"
    healthy, down = HttpReceiver(), HttpReceiver()
    down.status = 503
    group = f"test-alerts-{uuid.uuid4().hex[:8]}"
    doc = {
        "delivery": {"attempts": 100, "backoff_ms": 100, "max_backoff_ms": 200, "timeout_ms": 2000},
        "channels": {
            "healthy": {"type": "webhook", "url": healthy.url},
            "down": {"type": "webhook", "url": down.url},
        },
        "default_channels": ["healthy", "down"],
        "max_backlog": 1,
    }
    try:
        first = dispatch(doc, [alerts_t], dlq, group=group, delivered_topic=delivered_t)
        produce(stack, alerts_t, [alert(0)])
        wait_until(lambda: len(down.failed()) >= 1, 30, '"down" to fail alert 0')
        produce(stack, alerts_t, [alert(1), alert(1)])
        wait_until(lambda: len(healthy.ok()) == 2, 30, "the healthy channel to get 2 alerts")
        wait_until(lambda: first.dispatcher.stats.read == 3, 30, "the 3 records read")
        first.stop()
        assert committed(stack, group) == {}
        second = dispatch(doc, [alerts_t], dlq, group=group, delivered_topic=delivered_t)
        wait_until(lambda: second.dispatcher.stats.read == 3, 30, "the 3 records read again")
        down.status = 200
        wait_until(lambda: len(down.ok()) >= 1, 30, '"down" to get alert 0 once it recovered')
        wait_committed(stack, group, alerts_t)
        time.sleep(0.5)
        second.stop()
        letters = read_all(stack, dlq, 0)
    finally:
        healthy.down()
        down.down()
    assert [(x["alert_id"], x["channel"], x["reason"].split(":")[1].strip()) for x in letters] == [
        ("transfer_velocity:1:rule_alert:e1", "down", "backlog full (1 waiting)")
    ]
    assert [json.loads(r["body"])["items"][0]["id"] for r in down.ok()] == [
        "transfer_velocity:1:rule_alert:e0"
    ]
    assert len(healthy.ok()) == 2


def test_another_users_alert_of_a_delivered_id_is_delivered_after_a_restart(
    stack: Settings, topic: Callable[..., str], dispatch: Callable[..., Running]
) -> None:
    """Event ids are the sender's, unique only per user: an attacker's event carrying a victim's event id
    fired the rule first, its alert was delivered and written to the delivered topic under the alert id
    alone, and the victim's real alert, read by the dispatcher restarted from that topic, was dropped as its
    duplicate. The key holds the user now; a copy of the attacker's own alert is still a duplicate."""
    alerts_t, dlq = topic("alerts", partitions=1), topic("alerts-dlq")
    delivered_t = f"test-alerts-delivered-{uuid.uuid4().hex[:10]}"
    hook = HttpReceiver()
    group = f"test-alerts-{uuid.uuid4().hex[:8]}"
    doc = one_webhook(hook.url)
    try:
        first = dispatch(doc, [alerts_t], dlq, group=group, delivered_topic=delivered_t)
        produce(stack, alerts_t, [alert(0, user_id="attacker")])
        wait_until(lambda: len(hook.ok()) == 1, 30, "the attacker's alert delivered")
        wait_committed(stack, group, alerts_t)
        first.stop()
        second = dispatch(doc, [alerts_t], dlq, group=group, delivered_topic=delivered_t)
        produce(stack, alerts_t, [alert(0, user_id="victim"), alert(0, user_id="attacker")])
        wait_until(lambda: len(hook.ok()) == 2, 30, "the victim's alert delivered")
        wait_committed(stack, group, alerts_t)
        time.sleep(0.5)
        stats = second.stop()
    finally:
        hook.down()
    items = [json.loads(r["body"])["items"][0] for r in hook.ok()]
    assert [(i["user_id"], i["id"]) for i in items] == [
        ("attacker", "transfer_velocity:1:rule_alert:e0"),
        ("victim", "transfer_velocity:1:rule_alert:e0"),
    ]
    assert stats.read == 2 and stats.deduplicated == 1  # the attacker's copy, known from the delivered topic


def test_at_start_only_the_newest_dedup_size_delivered_ids_are_read(stack: Settings) -> None:
    # every delivery is a key of its own: the topic holds all of its retention (7 days), and reading it all
    # at start took longer than the 60 s allowed beyond about 5 million records (80,000 a second here), so
    # the dispatcher refused to start; what it keeps is the newest dedup_size keys anyway
    from kafka import KafkaProducer

    from riskctl.alerts.delivered_log import DeliveredLog, ensure_topic, key_of

    delivered_t = f"test-alerts-delivered-{uuid.uuid4().hex[:10]}"
    ensure_topic(stack.kafka_bootstrap, delivered_t)
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=5)
    try:
        sent = [producer.send(delivered_t, b"1", key=key_of("ding", f"a{i}")) for i in range(500)]
        sent.append(producer.send(delivered_t, b"garbage", key=b"\xff no separator"))  # skipped
        for future in sent:
            future.get(timeout=30)
    finally:
        producer.close()
    added: list[tuple[str, str]] = []
    log = DeliveredLog(stack.kafka_bootstrap, delivered_t, added.append, keep=100)
    try:
        loaded = log.start()
    finally:
        log.close()
    assert loaded == 99 and added == [("ding", f"a{i}") for i in range(401, 500)]


def group_state(settings: Settings, group: str) -> tuple[str, int]:
    """(state, members) of a consumer group."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        (info,) = admin.describe_consumer_groups([group])
        return str(info.state), len(info.members)
    finally:
        admin.close()


def test_two_instances_in_one_group_share_the_partitions_and_deliver_each_alert_once(
    stack: Settings, topic: Callable[..., str], dispatch: Callable[..., Running]
) -> None:
    alerts_t, dlq = topic("alerts", partitions=2), topic("alerts-dlq")
    delivered_t = f"test-alerts-delivered-{uuid.uuid4().hex[:10]}"
    hook = HttpReceiver()
    group = f"test-alerts-{uuid.uuid4().hex[:8]}"
    doc = one_webhook(hook.url)
    try:
        a = dispatch(doc, [alerts_t], dlq, group=group, delivered_topic=delivered_t)
        b = dispatch(doc, [alerts_t], dlq, group=group, delivered_topic=delivered_t)
        wait_until(lambda: group_state(stack, group) == ("Stable", 2), 60, "both instances in the group")
        produce(stack, alerts_t, [alert(i) for i in range(20)])
        wait_until(lambda: len(hook.ok()) >= 20, 30, "20 deliveries")
        wait_committed(stack, group, alerts_t)
        time.sleep(0.5)
        stats_a, stats_b = a.stop(), b.stop()
    finally:
        hook.down()
    ids = [json.loads(r["body"])["items"][0]["id"] for r in hook.ok()]
    assert sorted(ids) == sorted(f"transfer_velocity:1:rule_alert:e{i}" for i in range(20))
    assert stats_a.read > 0 and stats_b.read > 0 and stats_a.read + stats_b.read == 20


def test_reading_stays_paused_across_rebalances_while_a_busy_channel_holds_the_records(
    stack: Settings, topic: Callable[..., str], dispatch: Callable[..., Running]
) -> None:
    """A receiver that takes its time holds the records in flight, so reading pauses. Another member joins
    the group and leaves: each rebalance revokes the partitions and gives them back unpaused, and the ledger
    forgets the revoked offsets although the channel still holds their records. Reading must stay paused
    (before: it read every partition again after each rebalance, one more copy of the backlog in memory per
    rebalance). Once the receiver answers, each alert is delivered once and every offset committed."""
    from kafka import KafkaConsumer

    alerts_t, dlq = topic("alerts", partitions=2), topic("alerts-dlq")
    N = 1_500  # noqa: N806 (more than a poll returns)
    gate = threading.Event()

    def slow(req: dict[str, Any]) -> tuple[int, bytes]:
        gate.wait(60)
        return 200, b"ok"

    hook = HttpReceiver(slow)
    group = f"test-alerts-{uuid.uuid4().hex[:8]}"
    doc = {
        "delivery": {"attempts": 3, "backoff_ms": 50, "max_backoff_ms": 200, "timeout_ms": 60_000},
        "channels": {"hook": {"type": "webhook", "url": hook.url}},
        "default_channels": ["hook"],
        "max_in_flight": 10,
    }
    try:
        produce(stack, alerts_t, [alert(i) for i in range(N)])
        a = dispatch(doc, [alerts_t], dlq, group=group)
        wait_until(lambda: a.dispatcher.stats.read >= 10, 30, "a first read")
        time.sleep(1.0)
        read = a.dispatcher.stats.read
        assert read <= 500, "reading did not pause"  # a poll returns at most 500 records
        other = KafkaConsumer(
            alerts_t, bootstrap_servers=stack.kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        try:
            deadline = time.monotonic() + 60
            while not other.assignment() and time.monotonic() < deadline:
                other.poll(timeout_ms=200, max_records=1)
            assert other.assignment(), "the second member got no partition"
        finally:
            other.close(autocommit=False)
        wait_until(lambda: group_state(stack, group) == ("Stable", 1), 60, "the group back to one member")
        time.sleep(2.0)
        assert a.dispatcher.stats.read == read, "the rebalances resumed reading"
        gate.set()
        wait_committed(stack, group, alerts_t, 60)
        time.sleep(0.5)
        stats = a.stop()
    finally:
        gate.set()
        hook.down()
    ids = [json.loads(r["body"])["items"][0]["id"] for r in hook.ok()]
    assert sorted(ids) == sorted(f"transfer_velocity:1:rule_alert:e{i}" for i in range(N))
    assert stats.abandoned > 0 and stats.dead_lettered == 0


def test_the_command_delivers_commits_and_a_second_run_sends_nothing_again(
    stack: Settings, topic: Callable[..., str], tmp_path: Path
) -> None:
    alerts_t, dlq = topic("alerts"), topic("alerts-dlq")
    hook = HttpReceiver()
    config = tmp_path / "alerts.yaml"
    config.write_text(
        "channels:\n  hook:\n    type: webhook\n    url: {env: TEST_ALERTS_HOOK_URL}\n"
        "default_channels: [hook]\n"
    )
    group = f"test-alerts-cli-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "TEST_ALERTS_HOOK_URL": hook.url,
        "RISKCTL_JOB_ALERTS_TOPIC": alerts_t,
        "RISKCTL_ALERTS_DEAD_LETTER_TOPIC": dlq,
        "RISKCTL_ALERTS_CONFIG": str(config),
        "RISKCTL_ALERTS_GROUP_ID": group,
        "RISKCTL_ALERTS_DELIVERED_TOPIC": f"test-alerts-delivered-{uuid.uuid4().hex[:10]}",
    }

    def run_cli() -> dict[str, Any]:
        res = run_riskctl("alerts", "run", "--idle-exit", "3", "--json", env=env, timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        return dict(json.loads(res.stdout.strip().splitlines()[-1]))

    try:
        produce(stack, alerts_t, [alert(i) for i in range(4)])
        first = run_cli()
        second = run_cli()
        bad = run_riskctl("alerts", "run", env={**env, "TEST_ALERTS_HOOK_URL": ""}, timeout=60)
    finally:
        hook.down()
    assert (first["read"], first["delivered"]) == (4, 4)
    assert (second["read"], second["delivered"]) == (0, 0)
    assert len(hook.ok()) == 4
    assert bad.returncode == 3
    assert "channels.hook.url: the environment variable TEST_ALERTS_HOOK_URL is not set" in bad.stderr
