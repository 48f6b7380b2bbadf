"""What ``riskctl serve`` logs while Kafka is away (riskctl/serve/kafka_bus.py): the start and the end of the
outage, and librdkafka's own lines at most once a minute each (KAFKA_LOG_LIMIT, a riskctl.lograte.OncePer),
not the 20 a second librdkafka wrote to stderr (a connection attempt every 50 ms, each logged), and the count
of the last of them once their minute is over or serve stops."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

import pytest
from confluent_kafka import TopicPartition

from riskctl.lograte import OncePer
from riskctl.serve import app, kafka_bus
from riskctl.serve.kafka_bus import KAFKA_LOG, KAFKA_LOG_LIMIT, KafkaBus
from tests.unit.serve.fakes import FakeBus, settings_for_tests
from tests.unit.serve.test_kafka_bus_renewal import _bus, _running, _wait


def record(text: str) -> logging.LogRecord:
    args = ("FAIL", "rdkafka#consumer-1", text)  # as confluent-kafka logs librdkafka's lines
    return logging.LogRecord("x", logging.ERROR, __file__, 1, "%s [%s] %s", args, None)


def like_kafka_log_limit(clock: Callable[[], float]) -> OncePer:
    """A filter as :data:`KAFKA_LOG_LIMIT` is, on ``clock`` and without its background flush."""
    limit = KAFKA_LOG_LIMIT
    return OncePer(limit.every_s, clock, key=limit.key, max_level=limit.max_level, wording=limit.wording)


def test_a_line_of_each_shape_passes_once_per_interval_then_says_how_many_were_left_out() -> None:
    now = [0.0]
    repeats = like_kafka_log_limit(lambda: now[0])
    refused = "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after {}ms)"
    assert repeats.filter(record(refused.format(0)))
    now[0] += 0.05
    assert not repeats.filter(record(refused.format(1)))  # the same shape, other numbers
    assert repeats.filter(record("GroupCoordinator: Disconnected"))  # another shape
    for _ in range(100):
        now[0] += 0.5
        assert not repeats.filter(record(refused.format(0)))
    now[0] += 10.0  # 60 s after the first one passed
    again = record(refused.format(0))
    assert repeats.filter(again)
    assert again.getMessage().endswith("(101 more like it left out)")
    quiet = record(refused.format(0))
    now[0] += 61
    assert repeats.filter(quiet) and "left out" not in quiet.getMessage()


def test_the_shapes_remembered_are_bounded() -> None:
    repeats = like_kafka_log_limit(lambda: 0.0)
    for i in range(OncePer.MAX_KEYS * 3):
        repeats.filter(record(f"line {chr(65 + i % 26)}{'x' * (i // 26)}"))
    assert len(repeats._seen) <= OncePer.MAX_KEYS  # noqa: SLF001


#: librdkafka's line for a refused connection: one shape per host, whatever its numbers
REFUSED = (
    "{host}:9092/1: Connect to ipv4#10.0.0.1:9092 failed: Connection refused (after {n}ms in state CONNECT)"
)


def test_the_count_of_a_stopped_flood_of_librdkafka_lines_is_logged_once_its_minute_is_over() -> None:
    """The count of the lines left out was logged only with the next line of their kind: the last of an
    outage that ended (or of the last one before serve stopped) never was."""
    lines = Lines()
    KAFKA_LOG.addHandler(lines)
    every_s, KAFKA_LOG_LIMIT.every_s = KAFKA_LOG_LIMIT.every_s, 0.3  # a minute, shortened
    try:
        for n in range(50):  # the kind's background flush runs in real time
            KAFKA_LOG.error(
                "%s [%s] %s", "FAIL", "rdkafka#producer-1", REFUSED.format(host="kafka-a", n=n % 10)
            )
        deadline = time.monotonic() + 5
        while len(lines.lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # nothing more
    finally:
        KAFKA_LOG_LIMIT.every_s = every_s
        KAFKA_LOG.removeHandler(lines)
    assert _seconds_out(lines.lines) == [
        "FAIL [rdkafka#producer-1] " + REFUSED.format(host="kafka-a", n=0),
        "FAIL [rdkafka#producer-1] "
        + REFUSED.format(host="kafka-a", n=9)
        + " (the last of 49 like it left out in the N s before)",
    ]


def test_the_counts_of_librdkafka_lines_still_held_are_logged_when_serve_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = Lines()

    class Bus(FakeBus):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__()

        def start(self, loop: object, on_decision: object) -> None:
            for n in range(3):  # the broker away while serve runs
                KAFKA_LOG.error(
                    "%s [%s] %s", "FAIL", "rdkafka#producer-1", REFUSED.format(host="kafka-b", n=n)
                )

        def close(self) -> None:
            pass

    monkeypatch.setattr(kafka_bus, "KafkaBus", Bus)
    stop = asyncio.Event()
    KAFKA_LOG.addHandler(lines)
    try:
        asyncio.run(app.serve(settings_for_tests(), stop=stop, on_ready=lambda _port: stop.set()))
    finally:
        KAFKA_LOG.removeHandler(lines)
    mine = [line for line in lines.lines if "kafka-b" in line]
    assert _seconds_out(mine) == [
        "FAIL [rdkafka#producer-1] " + REFUSED.format(host="kafka-b", n=0),
        "FAIL [rdkafka#producer-1] "
        + REFUSED.format(host="kafka-b", n=2)
        + " (the last of 2 like it left out in the N s before)",
    ]


def _seconds_out(lines: list[str]) -> list[str]:
    """The lines with the seconds a summary covers as N: on a loaded machine the flush, or serve's stop, comes
    a second later (a run of the unit suite beside CI read '1 s before')."""
    return [re.sub(r"in the \d+ s before\)$", "in the N s before)", line) for line in lines]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, rec: logging.LogRecord) -> None:
        self.lines.append(rec.getMessage())


def test_the_replies_consumer_with_the_broker_away_logs_a_few_lines_not_twenty_a_second(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The real librdkafka consumer of the replies, as KafkaBus makes it, with no broker at its address:
    its lines go through riskctl.serve.librdkafka, each kind once. Before, it wrote about 60 lines in these
    3 s to stderr, one per connection attempt."""
    lines = Lines()
    KAFKA_LOG.addHandler(lines)
    bus = KafkaBus("127.0.0.1:9", "events", "replies", "api-0")
    bus.partition = 0
    consumer = bus._new_consumer()  # noqa: SLF001
    try:
        consumer.assign([TopicPartition("replies", 0, 0)])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            consumer.poll(0.1)
    finally:
        consumer.close()
        KAFKA_LOG.removeHandler(lines)
    assert "%3|" not in capfd.readouterr().err  # none of librdkafka's own stderr lines
    assert len(lines.lines) <= 4, lines.lines  # each kind once (two brokers: bootstrap and coordinator)


def test_the_health_thread_says_when_kafka_stops_answering_and_when_it_is_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bus, producer = _bus(monkeypatch)
    caplog.set_level(logging.WARNING, logger=kafka_bus.LOG.name)
    with _running(bus):
        producer.down.set()
        assert _wait(lambda: not bus.kafka_ok, 5)
        producer.down.clear()
        assert _wait(lambda: bus.renewals == 1, 5)
    said = [r.getMessage() for r in caplog.records if r.name == kafka_bus.LOG.name]
    assert said[0] == "serve api-0: kafka: broker transport failure (/readyz answers 503)", said
    assert said[1].startswith("serve api-0: the broker answers again"), said
