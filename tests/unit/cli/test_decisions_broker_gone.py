"""``riskctl decisions tail`` when the broker goes away (found in review).

Before: with the broker stopped under it (a real KRaft broker of a private stack, stopped after 4 s), ``tail``
printed nothing and never ended (still running 60 s later): a consumer's ``poll`` returns nothing for ever,
whether the topic is quiet or the broker gone. Now, while nothing is shown, ``tail`` asks the broker for its
end offsets every ``PROBE_EVERY_S``; no answer within ``REQUEST_TIMEOUT_MS`` is a ServiceError, exit 3
(measured on the same broker: exit 3, 12 s after it stopped).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from riskctl.cli import decisions as cmd
from riskctl.cli.main import cli


def fake_consumer(end_offsets: Any) -> SimpleNamespace:
    part = TopicPartition("riskctl.decisions", 0)
    return SimpleNamespace(
        poll=lambda timeout_ms: {},
        close=lambda: None,
        assignment=lambda: {part},
        subscription=lambda: {part.topic},
        partitions_for_topic=lambda topic: {0},
        end_offsets=end_offsets,
    )


def gone(parts: list[TopicPartition]) -> dict[TopicPartition, int]:
    raise KafkaTimeoutError("Failed to get offsets by timestamps in 10000 ms")


def test_tail_ends_with_exit_3_when_the_broker_stops_answering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cmd, "PROBE_EVERY_S", 0.1)
    monkeypatch.setattr(cmd, "_connect", lambda topics, from_beginning: fake_consumer(gone))
    res = CliRunner().invoke(cli, ["decisions", "tail", "--timeout", "3"])
    assert res.exit_code == 3, (res.output, res.exception)
    assert res.stderr.startswith("error: kafka: the broker at ") and "stopped answering" in res.stderr


def test_tail_goes_on_while_the_broker_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[TopicPartition]] = []
    monkeypatch.setattr(cmd, "PROBE_EVERY_S", 0.1)
    consumer = fake_consumer(lambda parts: asked.append(parts) or {p: 0 for p in parts})
    monkeypatch.setattr(cmd, "_connect", lambda topics, from_beginning: consumer)
    res = CliRunner().invoke(cli, ["decisions", "tail", "--timeout", "1"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert asked and asked[0] == [TopicPartition("riskctl.decisions", 0)]
