"""``riskctl simulate`` to Kafka when the broker goes away during the run (found in review).

Before: with a private KRaft broker stopped 6 s into a paced run of 120 s, ``simulate`` went on for 250 s and
said "6,180 events ... to topic riskctl.events", exit 0, though the broker had taken the first few hundred
only: kafka-python buffers what it cannot send and reports it only to the send's future, which nobody read.
Now :func:`send_paced` watches every send's future and bounds its final flush: an event not delivered is a
ServiceError (exit 3) that says how many were sent (measured on the same broker: exit 3, the final flush
giving up 30 s after the run). The producer's close, which then raised KafkaTimeoutError over it (a
traceback), drops what it could not deliver (:func:`close_producer`).
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from kafka.errors import KafkaTimeoutError

from riskctl.cli.main import cli
from riskctl.errors import ServiceError
from riskctl.sim import kafka_io


class Future:
    def __init__(self) -> None:
        self.errbacks: list[Any] = []

    def add_errback(self, fn: Any) -> Future:
        self.errbacks.append(fn)
        return self


class GoneProducer:
    """Takes the first ``ok`` events; the others' batches expire (their futures fail) at the next send."""

    def __init__(self, ok: int) -> None:
        self.ok = ok
        self.futures: list[Future] = []

    def send(self, topic: str, value: Any, key: str) -> Future:
        for f in self.futures[self.ok :]:
            for fn in f.errbacks:
                fn(KafkaTimeoutError("Batch expired: 120 seconds have passed since batch creation"))
            f.errbacks.clear()
        self.futures.append(Future())
        return self.futures[-1]

    def flush(self, timeout: float | None = None) -> None:
        self.send("", None, "")

    def close(self, timeout: float | None = None) -> None:
        # as kafka-python's: a flush first, which gives up with KafkaTimeoutError while events are buffered
        if len(self.futures) > self.ok:
            raise KafkaTimeoutError("Timeout waiting for future")
        self._sender.force_close()

    class _sender:  # noqa: N801 - kafka-python's attribute
        stopped = False

        @classmethod
        def force_close(cls) -> None:
            cls.stopped = True


def events(n: int) -> list[dict[str, Any]]:
    return [{"event_id": f"e{i}", "user_id": "u1", "type": "login", "ts": i} for i in range(n)]


def test_an_event_not_delivered_is_a_service_error_naming_how_many_were_sent() -> None:
    with pytest.raises(ServiceError, match=r"not delivered \(KafkaTimeoutError: Batch expired.*after 4 sent"):
        kafka_io.send_paced(GoneProducer(ok=2), "t", events(100), start_ts=0, paced=False)


def test_every_event_delivered_is_counted() -> None:
    assert kafka_io.send_paced(GoneProducer(ok=100), "t", events(100), start_ts=0, paced=False) == 100


def test_simulate_ends_with_exit_3_when_the_broker_goes_away(monkeypatch: pytest.MonkeyPatch) -> None:
    from riskctl import kafka_admin

    monkeypatch.setattr(kafka_io, "producer", lambda bootstrap: GoneProducer(ok=10))
    monkeypatch.setattr(kafka_admin, "ensure_topics", lambda bootstrap, topics: [])
    res = CliRunner().invoke(cli, ["simulate", "--duration", "5", "--no-pace", "--no-progress"])
    assert res.exit_code == 3, (res.output, res.exception)
    assert res.stderr.startswith("error: kafka: events to ") and "not delivered" in res.stderr, res.stderr


def test_closing_a_producer_with_undelivered_events_drops_them_without_a_traceback() -> None:
    prod = GoneProducer(ok=0)
    prod.send("t", {}, "u")
    kafka_io.close_producer(prod)
    assert prod._sender.stopped and prod._closed  # type: ignore[attr-defined]
