"""riskctl serve's replies consumer after a broker outage (riskctl/serve/kafka_bus.py).

An assigned librdkafka consumer may stay silent after a broker restart although the broker is back
(confluentinc/librdkafka#5153): CI saw every request of the next 60 s get its fallback while the job decided
them. When the health check sees the broker answer again after it did not, the replies thread replaces the
consumer by a new one at the old one's position. Fakes stand in for librdkafka here; the real path is
tests/integration/test_outages.py::test_serve_answers_through_a_broker_restart_and_decides_again_within_5s."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from confluent_kafka import KafkaException, TopicPartition

from riskctl.serve import kafka_bus
from riskctl.serve.kafka_bus import KafkaBus


class FakeConsumer:
    made: list[FakeConsumer] = []

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.assigned: list[TopicPartition] = []
        self.closed = False
        self.at = 42  # the next offset it would read
        FakeConsumer.made.append(self)

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.at) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return 0, 99

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = tps

    def poll(self, timeout: float) -> None:
        time.sleep(min(timeout, 0.01))

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        return []

    def close(self) -> None:
        self.closed = True


class FakeMeta:
    def __init__(self, topic: str, partitions: int) -> None:
        part = type("T", (), {"error": None, "partitions": dict.fromkeys(range(partitions))})()
        self.topics = {topic: part}


class FakeProducer:
    """Its metadata requests fail while ``down`` is set (the broker away)."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.meta = FakeMeta(topic, partitions)
        self.down = threading.Event()

    def list_topics(self, topic: str, timeout: float) -> FakeMeta:
        if self.down.is_set():
            raise KafkaException("broker transport failure")
        return self.meta


def _bus(monkeypatch: pytest.MonkeyPatch) -> tuple[KafkaBus, FakeProducer]:
    FakeConsumer.made.clear()
    monkeypatch.setattr(kafka_bus, "Consumer", FakeConsumer)
    bus = KafkaBus("127.0.0.1:9", "events", "replies", "api-0")
    bus.partition, bus.partitions = 1, 2
    bus.producer = producer = FakeProducer("replies", 2)
    bus.consumer = FakeConsumer()
    bus.kafka_ok = True
    bus._loop = asyncio.new_event_loop()  # noqa: SLF001 - nothing is delivered: no replies come
    bus._on_decision = lambda doc: None  # noqa: SLF001
    return bus, producer


@contextmanager
def _running(bus: KafkaBus) -> Iterator[None]:
    """The bus's health and replies threads, running while the block runs, stopped and joined after it."""
    threads = [threading.Thread(target=t, daemon=True) for t in (bus._health, bus._consume)]  # noqa: SLF001
    for t in threads:
        t.start()
    try:
        yield
    finally:
        bus._stop.set()  # noqa: SLF001
        for t in threads:
            t.join(5)


def _wait(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_the_broker_back_after_an_outage_gives_the_replies_a_new_consumer_at_the_same_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bus, producer = _bus(monkeypatch)
    first = bus.consumer
    with _running(bus):
        time.sleep(1.5)  # healthy: nothing renewed
        assert bus.renewals == 0 and bus.consumer is first
        producer.down.set()
        assert _wait(lambda: not bus.kafka_ok, 5)
        assert bus.consumer is first  # not while the broker is away
        producer.down.clear()
        assert _wait(lambda: bus.renewals == 1, 5)
    fresh = bus.consumer
    assert fresh is not first and first.closed and not fresh.closed
    assert [(tp.topic, tp.partition, tp.offset) for tp in fresh.assigned] == [("replies", 1, 42)]
    assert bus.kafka_ok and bus.renewals == 1


def test_a_consumer_that_cannot_be_replaced_is_kept_and_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    bus, _producer = _bus(monkeypatch)
    first = bus.consumer
    failing = [True]

    class Refusing(FakeConsumer):
        def assign(self, tps: list[TopicPartition]) -> None:
            if failing[0]:
                failing[0] = False
                raise KafkaException("assign failed")
            super().assign(tps)

    monkeypatch.setattr(kafka_bus, "Consumer", Refusing)
    bus._renew.set()  # noqa: SLF001 - as the health thread does when the broker is back
    thread = threading.Thread(target=bus._consume, daemon=True)  # noqa: SLF001
    thread.start()
    try:
        assert _wait(lambda: bus.renewals == 1, 5)
    finally:
        bus._stop.set()  # noqa: SLF001
        thread.join(5)
    made = FakeConsumer.made
    assert made[1].closed and not made[2].closed and bus.consumer is made[2]  # the refused one closed
    assert first.closed


def test_a_consumer_that_never_read_is_replaced_at_the_offset_it_was_assigned_not_the_end_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its position is unknown (-1001) until it reads: the end now would skip the replies of the outage."""

    class Unread(FakeConsumer):
        high = 7  # the partition's end

        def __init__(self, config: dict[str, Any] | None = None) -> None:
            super().__init__(config)
            self.at = -1001  # librdkafka's OFFSET_INVALID: nothing read yet

        def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
            return 0, Unread.high

    bus, _producer = _bus(monkeypatch)
    monkeypatch.setattr(kafka_bus, "Consumer", Unread)
    first = Unread()
    bus.consumer = first
    assert bus._assign(first, kafka_bus.OFFSET_END, timeout=1) == 7  # noqa: SLF001 - as at start
    Unread.high = 20  # replies produced during the outage: 7..19
    bus._renew_consumer()  # noqa: SLF001
    assert [(tp.partition, tp.offset) for tp in bus.consumer.assigned] == [(1, 7)]
    assert bus.consumer is not first and first.closed
