"""``riskctl decisions stats``: a window reaching back before 1970, its memory, and --timeout (found in
review).

Before: ``--window 100000d`` (to mean "everything") asked Kafka for the offsets of a negative time and ended
with kafka-python's ValueError and a traceback (real Kafka); the records of the whole window were held in a
list before being counted (a 15-minute window at 10,000 decisions/s is 9 million dicts); ``--timeout nan``
read nothing and printed "0 decisions" as if the topic were empty.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from kafka import TopicPartition

from riskctl.cli import decisions as cmd
from riskctl.cli.main import cli

TS = 1_700_000_000_000


class FakeConsumer:
    """One partition of ``n`` decision records, read ``batch`` at a time, as kafka-python's consumer."""

    def __init__(self, topic: str, n: int, batch: int = 1000) -> None:
        self.tp = TopicPartition(topic, 0)
        self.n, self.batch, self.pos = n, batch, 0
        self.asked: list[int] = []

    def unsubscribe(self) -> None: ...
    def close(self) -> None: ...
    def assign(self, parts: list[Any]) -> None: ...
    def seek(self, tp: Any, offset: int) -> None:
        self.pos = offset

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def offsets_for_times(self, times: dict[Any, int]) -> dict[Any, Any]:
        for tp, ts in times.items():
            if ts < 0:  # as kafka-python does
                msg = f"The target time for partition {tp} is {ts}. The target time cannot be negative."
                raise ValueError(msg)
            self.asked.append(ts)
        return {tp: SimpleNamespace(offset=0) for tp in times}

    def end_offsets(self, parts: list[Any]) -> dict[Any, int]:
        return {tp: self.n for tp in parts}

    def position(self, tp: Any) -> int:
        return self.pos

    def poll(self, timeout_ms: int) -> dict[Any, list[Any]]:
        out = []
        for offset in range(self.pos, min(self.n, self.pos + self.batch)):
            value = {
                "kind": "decision", "event_id": f"e{offset}", "user_id": f"user-{offset}", "type": "login",
                "ts": TS + offset, "action": "PASS" if offset % 2 else "REVIEW", "late": False,
                "rules": [{"id": "r1", "version": 1, "action": "REVIEW"}] * (offset % 2 == 0),
                "shadow": [], "ruleset_version": "x" * 12, "padding": "p" * 500,
            }  # fmt: skip
            out.append(
                SimpleNamespace(value=json.dumps(value).encode(), offset=offset, timestamp=TS + offset + 7)
            )
        self.pos += len(out)
        return {self.tp: out} if out else {}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeConsumer]:
    consumer = FakeConsumer("riskctl.decisions", 20_000)
    monkeypatch.setattr(cmd, "_connect", lambda topics, from_beginning: consumer)
    monkeypatch.delenv("RISKCTL_JOB_DECISIONS_TOPIC", raising=False)
    yield consumer


def test_a_window_reaching_back_before_1970_reads_the_whole_topic(fake: FakeConsumer) -> None:
    res = CliRunner().invoke(cli, ["decisions", "stats", "--window", "100000d", "--json"])
    assert res.exit_code == 0, res.output
    assert fake.asked == [0]
    out = json.loads(res.stdout)
    assert out["decisions"] == 20_000 and out["actions"] == {"REVIEW": 10_000, "PASS": 10_000}
    assert out["latency_ms"]["max"] == 7 and out["rules"] == {"r1": 10_000}


def test_the_window_is_counted_as_it_is_read(fake: FakeConsumer) -> None:
    tracemalloc.start()
    try:
        result = cmd.summarize(cmd._read_window("riskctl.decisions", 60_000, None, 30.0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["decisions"] == 20_000
    # 20,000 records of ~800 bytes held at once weigh well over 20 MB; counted as read, a batch and the
    # latencies (an int each)
    assert peak < 8_000_000, peak


def test_max_stops_the_read(fake: FakeConsumer) -> None:
    assert cmd.summarize(cmd._read_window("riskctl.decisions", 60_000, 1500, 30.0))["decisions"] == 1500


@pytest.mark.parametrize("command", ["stats", "tail"])
@pytest.mark.parametrize("value", ["nan", "-1"])
def test_a_timeout_that_is_not_a_number_of_seconds_is_bad_usage(
    fake: FakeConsumer, command: str, value: str
) -> None:
    res = CliRunner().invoke(cli, ["decisions", command, "--timeout", value])
    assert res.exit_code == 2, res.output
    assert "--timeout" in res.output
