"""``riskctl simulate`` and ``riskctl decisions tail/stats`` as a user runs them (subprocesses, real Kafka).

The decisions topic is one the test fills itself with decision records (so filters and counts are exact);
the run against a real job is ``tests/integration/test_demo.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import Settings
from tests.helpers import free_port, run_riskctl
from tests.integration.support import consume_until, produce

pytestmark = pytest.mark.integration


def riskctl(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real command, with ``env`` set on top of this process's environment."""
    return run_riskctl(*args, env={**os.environ, **(env or {})}, timeout=timeout)


def decision(
    eid: str, user: str, action: str, rules: list[str], ts: int, shadow: tuple[str, ...] = ()
) -> dict[str, Any]:
    fired = [{"id": r, "version": 1, "action": action} for r in rules]
    return {
        "kind": "decision", "event_id": eid, "user_id": user, "type": "login", "ts": ts, "action": action,
        "late": False, "ruleset_version": "x", "rules": fired,
        "shadow": [{"id": r, "version": 1, "action": "REJECT"} for r in shadow],
    }  # fmt: skip


def test_kafka_down_is_one_clear_line_and_exit_3() -> None:
    env = {"RISKCTL_STACK_KAFKA_PORT": str(free_port())}
    for args in (
        ("decisions", "tail", "--timeout", "1"),
        ("decisions", "stats"),
        ("simulate", "--duration", "1", "--no-progress"),
    ):
        res = riskctl(*args, env=env)
        assert res.returncode == 3, (args, res.stdout, res.stderr)
        assert "no Kafka broker answers" in res.stderr and "riskctl stack up" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


def test_tail_filters_and_stats_counts(stack: Settings, topic: Callable[..., str]) -> None:
    decisions = topic("decisions", partitions=1)
    now = int(time.time() * 1000)
    records = [
        decision("e1", "alice", "PASS", [], now - 100),
        decision("e2", "alice", "REJECT", ["brute_force_login"], now - 200),
        decision("e3", "bob", "REVIEW", ["transfer_velocity"], now - 300, shadow=("large_transfer_reject",)),
        decision("e4", "bob", "REJECT", ["account_takeover_chain"], now - 400),
        decision("e5", "carol", "REVIEW", ["bot_cadence"], now - 500),
    ]
    produce(stack, decisions, records, key=lambda r: r["user_id"].encode())
    env = {"RISKCTL_JOB_DECISIONS_TOPIC": decisions}

    def tail(*args: str) -> list[str]:
        res = riskctl("decisions", "tail", "--from-beginning", "--timeout", "4", *args, env=env)
        assert res.returncode == 0, res.stderr
        return res.stdout.splitlines()

    rejects = [json.loads(x)["event_id"] for x in tail("--action", "REJECT", "--json")]
    assert rejects == ["e2", "e4"]
    assert [json.loads(x)["event_id"] for x in tail("--user", "bob", "--json")] == ["e3", "e4"]
    assert [json.loads(x)["event_id"] for x in tail("--rule", "large_transfer_reject", "--json")] == ["e3"]
    assert len(tail("--max", "2", "--json")) == 2
    (line,) = tail("--rule", "brute_force_login")
    assert "REJECT" in line and "user=alice" in line and "brute_force_login v1" in line and "event=e2" in line

    res = riskctl("decisions", "stats", "--window", "1h", "--json", env=env)
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout)
    assert stats["decisions"] == 5
    assert stats["actions"] == {"REJECT": 2, "REVIEW": 2, "PASS": 1}
    assert stats["rules"]["brute_force_login"] == 1 and stats["shadow"] == {"large_transfer_reject": 1}
    lat = stats["latency_ms"]
    assert lat["count"] == 5 and 100 <= lat["p50"] <= lat["p99"] <= lat["max"] < 60_000
    limited = json.loads(riskctl("decisions", "stats", "--max", "3", "--json", env=env).stdout)
    assert limited["decisions"] == 3
    text = riskctl("decisions", "stats", env=env).stdout
    assert "5 decisions" in text and "p50" in text


def test_simulate_to_kafka_sends_the_same_events_as_to_a_file(
    stack: Settings, topic: Callable[..., str], tmp_path: Path
) -> None:
    events = topic("events")
    common = [
        "--users",
        "40",
        "--rate",
        "40",
        "--duration",
        "3",
        "--seed",
        "9",
        "--start-ts",
        "1800000000000",
    ]
    res = riskctl("simulate", *common, "--topic", events, "--no-pace")
    assert res.returncode == 0, res.stderr
    assert "attacks" in res.stderr and "events" in res.stderr
    out = tmp_path / "events.jsonl"
    assert riskctl("simulate", *common, "--output", str(out), "--no-progress").returncode == 0
    expected = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(expected) > 60
    got = consume_until(stack, events, lambda rs: len(rs) >= len(expected), timeout=30)
    assert sorted(got, key=lambda e: e["event_id"]) == sorted(expected, key=lambda e: e["event_id"])


def test_report_from_the_topics_keeps_only_its_run_and_ends_under_live_traffic(
    stack: Settings, topic: Callable[..., str], tmp_path: Path
) -> None:
    """The topics hold other runs, live traffic and records of any shape. The report read (and kept) every
    record and stopped only after --timeout seconds without any: with traffic flowing it never ended, and it
    counted every alert of the topic as its run's."""
    import threading

    decisions, alerts = topic("decisions", partitions=1), topic("alerts", partitions=1)
    now = int(time.time() * 1000)
    events = [{"event_id": f"r{i}", "user_id": f"run-u{i % 2}", "type": "login", "ts": now} for i in range(3)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    alert = {"kind": "alert", "rule": {"id": "brute_force_login"}, "reason": "rule_alert", "ts": now}
    produce(
        stack,
        decisions,
        [
            decision("r0", "run-u0", "PASS", [], now),
            decision("r1", "run-u1", "REJECT", ["brute_force_login"], now),
            decision("r2", "run-u0", "PASS", [], now),
            decision("o1", "other", "REJECT", ["brute_force_login"], now),
            "[1, 2]",
            '{"kind": "decision", "event_id": ["r0"], "action": "REJECT"}',
        ],
    )
    produce(
        stack,
        alerts,
        [
            {**alert, "user_id": "run-u1"},
            {**alert, "user_id": "other"},
            '{"kind": "alert", "user_id": {"a": 1}}',
        ],
    )
    stop = threading.Event()

    def live_traffic() -> None:
        n = 0
        while not stop.wait(0.2) and n < 250:
            produce(stack, decisions, [decision(f"live{n}", "someone", "PASS", [], now)])
            n += 1

    feeder = threading.Thread(target=live_traffic, daemon=True)
    feeder.start()
    env = {"RISKCTL_JOB_DECISIONS_TOPIC": decisions, "RISKCTL_JOB_ALERTS_TOPIC": alerts}
    try:
        start = time.monotonic()
        args = ("simulate", "report", "--events", str(tmp_path / "events.jsonl"), "--timeout", "3", "--json")
        res = riskctl(*args, env=env, timeout=40)
        took = time.monotonic() - start
    finally:
        stop.set()
        feeder.join(5)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["decided"] == 3 and report["actions"] == {"PASS": 2, "REJECT": 1}
    assert report["alerts"] == 1 and report["false_positive_users"] == 1  # run-u1, not "other"
    assert took < 25, took
