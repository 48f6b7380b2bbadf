"""The backtest's limits: a run that would take hours stops at its time limit and says where."""

from __future__ import annotations

import json
import time

import pytest

from riskctl.console.backtest import TimeLimitError, backtest
from riskctl.console.replay_user import replay_user

#: features whose cost per event grows with the user's history: a distinct count over 400 days in 1,000
#: buckets (the most the core allows; max_values 25, so that the four stay within MAX_FEATURE_READS) of 4
#: values each: 0.24 ms an event and feature once the window is full,
#: so 32 of them over 100,000 lines, a backtest's limit, took about 13 minutes for each version
SLOW = {
    "id": "slow",
    "action": "REVIEW",
    "features": {
        f"amounts{k}": {
            "kind": "distinct_count",
            "field": "amount",
            "window": "400d",
            "granularity": 34_560_000 + k,
            "max_values": 25,
        }
        for k in range(4)
    },
    "when": " or ".join(f"amounts{k} > 0" for k in range(4)),
}


def _lines(n: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "event_id": f"e{i}",
                "user_id": "u",
                "type": "t",
                "ts": 800_000_000_000 + i * 8_640_000,
                "amount": i,
            }
        ).encode()
        for i in range(n)
    ]


def test_a_backtest_stops_at_its_time_limit() -> None:
    """A backtest had no time limit: a draft as above over 100,000 lines held its thread and one of the two
    backtest slots (MAX_HEAVY) for half an hour, and the console's other users waited on the GIL meanwhile."""
    started = time.monotonic()
    with pytest.raises(TimeLimitError, match=r"time limit \(0.5 s\) on line \d+ of 20000 \(the draft\)"):
        backtest(SLOW, None, b"\n".join(_lines(20_000)), seconds=0.5)
    assert time.monotonic() - started < 5
    quick = backtest(SLOW, SLOW, b"\n".join(_lines(100)), seconds=30)
    assert quick["draft"]["hits"] == quick["current"]["hits"] == 100


def test_a_user_replay_stops_at_its_time_limit() -> None:
    started = time.monotonic()
    with pytest.raises(TimeLimitError, match=r"\(0.3 s\) on line \d+ of 2000 \(the (rules|feature values)\)"):
        replay_user([{**SLOW, "id": f"slow{i}"} for i in range(8)], _lines(2000), seconds=0.3)
    assert time.monotonic() - started < 5
    assert len(replay_user([SLOW], _lines(50), seconds=30)) == 50


def test_kafka_lost_in_the_middle_of_a_topic_read_is_a_service_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kafka lost after the consumer connected: offsets_for_times waited kafka-python's default request
    timeout (305 s) holding a heavy slot, then raised KafkaTimeoutError, which no handler took: a 500 for the
    backtest and the user replay. Now each request waits the read's timeout and the error is a ServiceError
    (503 for a backtest, the message under a replay)."""
    import kafka
    from kafka.errors import KafkaTimeoutError

    from riskctl.console.backtest import read_topic_window
    from riskctl.errors import ServiceError

    made: list[dict[str, object]] = []

    class Lost:
        def __init__(self, **config: object) -> None:
            made.append(config)

        def partitions_for_topic(self, topic: str) -> set[int]:
            return {0}

        def assign(self, parts: object) -> None:
            pass

        def offsets_for_times(self, timestamps: object) -> None:
            msg = "Failed to get offsets by timestamps in 305000.0 ms"
            raise KafkaTimeoutError(msg)

        def close(self) -> None:
            pass

    monkeypatch.setattr(kafka, "KafkaConsumer", Lost)
    with pytest.raises(ServiceError, match="reading 'events' from k:9092 failed: KafkaTimeoutError"):
        read_topic_window("k:9092", "events", 60_000, timeout_s=10)
    assert made[0]["request_timeout_ms"] == 10_000


def test_two_users_events_with_one_event_id_are_two_hits() -> None:
    """Event ids are unique only within a user (the sender's): hits were counted by ``event:<event_id>``, so
    two users' events with one id were one hit, and the lists of events one version alone hit named neither's
    user. Counted by (user, id) now, named ``<len(user)>:<user>:event:<id>``."""
    big = {"id": "big", "action": "REVIEW", "when": "event.amount > 10"}
    bigger = {"id": "big", "action": "REVIEW", "when": "event.amount > 100"}
    events = [
        {"event_id": "e1", "user_id": user, "type": "t", "ts": 800_000_000_000, "amount": amount}
        for user, amount in (("alice", 50), ("bob", 500), ("u1:event:e1", 50))
    ]
    result = backtest(big, bigger, b"\n".join(json.dumps(e).encode() for e in events), seconds=30)
    assert result["draft"]["hits"] == 3 and result["current"]["hits"] == 1
    assert result["only_draft"] == ["11:u1:event:e1:event:e1", "5:alice:event:e1"]
    assert result["only_draft_count"] == 2 and result["only_current"] == []


def test_a_backtest_decides_as_the_job_does() -> None:
    """A backtest ran the engine's defaults (no lateness): a login arriving 2 s behind its user's newest was
    too late and counted by no feature, so a draft the job fires on (at the fourth login) showed no hit.
    Now it decides by the job's settings (lateness 5 s by default), and says which."""
    import dataclasses

    from riskctl.cli.replay import JOB_DEFAULTS

    draft = {
        "id": "fails",
        "action": "REVIEW",
        "features": {"n": {"kind": "count", "window": "10m", "filter": "event.type == 'login'"}},
        "when": "n >= 4",
    }
    lines = [
        json.dumps(
            {"event_id": f"e{i}", "user_id": "u", "type": "login", "ts": 1_700_000_000_000 + t}
        ).encode()
        for i, t in enumerate((0, 3000, 1000, 4000))
    ]
    data = b"\n".join(lines)
    result = backtest(draft, None, data)
    assert result["draft"]["hits"] == 1
    assert result["settings"]["lateness_ms"] == 5000 and result["settings"]["too_late_action"] == "PASS"
    strict = backtest(draft, None, data, settings=dataclasses.replace(JOB_DEFAULTS, lateness=0))
    assert strict["draft"]["hits"] == 0 and strict["settings"]["lateness_ms"] == 0
