"""The producer's queue of ``riskctl serve`` is bounded by ``serve.producer_queue_max_bytes``.

While the broker is away librdkafka holds each event for ``serve.produce_timeout_ms``, bounded only by its own
defaults (1 GiB, 100,000 events): an instance grew by about 1 GiB, undocumented. The real librdkafka is used
here, with a bootstrap address nobody listens on, so that nothing is ever delivered; the path through a real
serve process and broker is tests/integration/test_serve_queue.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from riskctl.cli.main import cli
from riskctl.config import load_settings
from riskctl.config.checks import INT
from riskctl.core.door import Limits
from riskctl.errors import ConfigError
from riskctl.serve import kafka_bus
from riskctl.serve.app import serve
from riskctl.serve.kafka_bus import KafkaBus
from riskctl.serve.service import DecisionService

NOWHERE = "127.0.0.1:9"  # the discard port: nothing listens, nothing is delivered
NOW = 1_800_000_000_000


def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """librdkafka's refused connections, one line a minute each, are not this test's business."""
    monkeypatch.setattr(kafka_bus.KAFKA_LOG, "disabled", True)


class Recorded(Exception):
    pass


def test_the_setting_reaches_the_producer_as_whole_kib_and_the_count_follows_max_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From the settings as loaded, through ``serve()``, to the configuration librdkafka gets."""
    configs: list[dict[str, Any]] = []

    class RecordingProducer:
        def __init__(self, config: dict[str, Any]) -> None:
            configs.append(config)

        def list_topics(self, timeout: float) -> Any:
            raise Recorded

    monkeypatch.setattr(kafka_bus, "Producer", RecordingProducer)
    settings = load_settings(
        env={
            "RISKCTL_SERVE_PRODUCER_QUEUE_MAX_BYTES": str((3 << 20) + 1000),
            "RISKCTL_SERVE_MAX_IN_FLIGHT": "150000",
            "RISKCTL_SERVE_IDEMPOTENCY_MAX_ENTRIES": "150000",
        }
    )
    with pytest.raises(Recorded):
        asyncio.run(serve(settings))
    (config,) = configs
    assert config["queue.buffering.max.kbytes"] == 3 << 10  # rounded down: never more than the setting says
    assert config["queue.buffering.max.messages"] == 150_000
    # librdkafka's own count when serve.max_in_flight is lower
    default = KafkaBus(NOWHERE, "events", "replies", "api-0", max_in_flight=20_000).producer_config()
    assert default["queue.buffering.max.kbytes"] == 64 << 10
    assert default["queue.buffering.max.messages"] == 100_000


def test_librdkafka_accepts_the_bounds_of_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its range is 1..2^31-1 KiB (CONFIGURATION.md), and 0..2^31-1 events: a setting it refused would
    end ``riskctl serve`` at start with librdkafka's message instead of the setting's."""
    _quiet(monkeypatch)
    for queue_max_bytes, max_in_flight in ((1 << 20, 1), (INT << 10, INT)):
        bus = KafkaBus(
            NOWHERE, "e", "r", "api-0", queue_max_bytes=queue_max_bytes, max_in_flight=max_in_flight
        )
        Producer(bus.producer_config())
    with pytest.raises(Exception, match="outside allowed range"):  # one KiB more than it takes
        Producer(KafkaBus(NOWHERE, "e", "r", "api-0", queue_max_bytes=(INT + 1) << 10).producer_config())


@pytest.mark.parametrize("value", ["1000", str((INT << 10) + 1), "64MiB"])
def test_a_bad_queue_bound_is_refused_at_load_naming_the_setting_exit_2(value: str) -> None:
    res = CliRunner().invoke(cli, ["serve", "--set", f"serve.producer_queue_max_bytes={value}"])
    assert res.exit_code == 2, res.output
    assert (
        "--set serve.producer_queue_max_bytes must be an integer from 1048576 to 2199023254528, "
        f"got '{value}'" in res.stderr
    )


def test_a_queue_smaller_than_the_largest_event_is_refused_at_load_and_in_code() -> None:
    """A larger event would be refused by the producer every time, whatever the broker does."""
    res = CliRunner().invoke(
        cli,
        ["serve", "--set", "job.max_event_bytes=2000000", "--set", "serve.producer_queue_max_bytes=1048576"],
    )
    assert res.exit_code == 2, res.output
    assert (
        "--set serve.producer_queue_max_bytes must be >= job.max_event_bytes (2000000, from --set), "
        "got 1048576" in res.stderr
    )
    from riskctl.config import Settings
    from riskctl.serve.app import Api
    from tests.unit.serve.fakes import FakeBus

    settings = Settings()
    settings.job.max_event_bytes, settings.serve.producer_queue_max_bytes = 2_000_000, 1 << 20
    with pytest.raises(ConfigError, match="serve.producer_queue_max_bytes"):
        Api(settings, FakeBus(), instance="unit")  # type: ignore[arg-type]


def _request(eid: str, size: int, timeout_ms: int) -> Any:
    from riskctl.serve.request import parse_event_request

    doc = {
        "event_id": eid,
        "user_id": "u1",
        "type": "note",
        "ts": NOW,
        "lines": ["x" * 4000] * (size // 4000),
    }
    return parse_event_request(json.dumps(doc).encode(), Limits(max_event_bytes=400_000), NOW, timeout_ms)


def test_beyond_the_queue_a_request_gets_its_fallback_at_once_and_is_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real producer and KafkaBus.produce, the broker unreachable: with a queue of 1 MiB, three events of
    300 KB are held, the fourth is refused (BufferError) and answered with the fallback at once, and its
    retry is produced again, not replayed."""
    _quiet(monkeypatch)
    bus = KafkaBus(NOWHERE, "events", "replies", "api-0", queue_max_bytes=1 << 20, produce_timeout_ms=60_000)
    bus.reply_key = "api-0:0"
    bus.producer = Producer(bus.producer_config())

    async def go() -> None:
        bus._loop = asyncio.get_running_loop()  # noqa: SLF001 - start() would need a broker
        svc = DecisionService(bus, Limits(max_event_bytes=400_000), fallback="review")
        held = [asyncio.create_task(svc.decide(_request(f"h{i}", 300_000, 2_000))) for i in range(3)]
        await asyncio.sleep(0.05)
        assert len(bus.producer) >= 3 and svc.in_flight == 3
        loop = asyncio.get_running_loop()
        for attempt in (False, True):  # the request, then its retry
            t0 = loop.time()
            out = await svc.decide(_request("full", 300_000, 2_000))
            assert loop.time() - t0 < 0.5
            assert out["degraded"] == "produce_failed: the producer's queue is full"
            assert out["action"] == "REVIEW" and out["source"] == "fallback" and out["replay"] is False
            assert "full" not in svc.entries
            assert svc.stats.produce_failures == 1 + attempt
        for task in held:  # the held ones wait their own timeout, as usual
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        bus.producer.purge()  # their delivery reports (purged) come while the loop still runs
        bus.producer.flush(0)

    asyncio.run(go())
