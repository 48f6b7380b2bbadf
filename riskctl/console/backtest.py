"""Backtest of a draft rule over a JSON-lines file of events, next to the current version of the same rule.

Both versions run through :class:`riskctl.cli.replay.Replay`, the machinery of ``riskctl replay`` (the job's
door limits, dead letters, event-time timers), each alone in its rule set and as ``active`` whatever its
status, so "hits" means "events (or timers) on which this rule fired". They decide by the job's settings
(:class:`~riskctl.cli.replay.ReplaySettings`: its lateness, state TTL, deduplication, too-late action and
door limits), as ``riskctl replay`` does: with other settings than the job's, a backtest would count what the
job does not (an event a second out of order is too late with no lateness, and no sum counts it). The
result: hits and users of each, the events only one of them hit, and the settings they ran by.

Limits (hostile uploads): at most :data:`MAX_UPLOAD_BYTES` bytes and :data:`MAX_LINES` lines; a line over the
door's ``max_event_bytes`` is a dead letter like in the job; invalid UTF-8, bad JSON, missing fields: dead
letters with their reason, counted and listed (the first :data:`MAX_LISTED` of them).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from riskctl.cli.replay import JOB_DEFAULTS, ReplaySettings
from riskctl.core.decisions import user_key
from riskctl.core.rules import parse_rule

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_LINES = 100_000
MAX_LISTED = 50
#: seconds the engine may run for one backtest (both versions) or one user's replay: a rule's cost per event
#: grows with the user's history (32 distinct_count features over 400 days in 1,000 buckets: 0.24 ms an event
#: and feature, 13 minutes a version over 100,000 lines of one user), and a run cannot be interrupted from
#: outside its thread
MAX_SECONDS = 60.0


class BacktestError(ValueError):
    """An upload the backtest refuses whole (too large, too many lines)."""


class TimeLimitError(BacktestError):
    """A backtest or a replay that ran out of :data:`MAX_SECONDS` (stopped at a line, its result dropped)."""


class Budget:
    """The time a run started now may take: ``seconds``, or :data:`MAX_SECONDS` (read at the start)."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = MAX_SECONDS if seconds is None else seconds
        self.deadline = time.monotonic() + self.seconds

    def check(self, lineno: int, total: int, what: str) -> None:
        """Raise :class:`TimeLimitError` when the time is up, before line ``lineno`` of ``total``."""
        if time.monotonic() > self.deadline:
            msg = (
                f"stopped at the time limit ({self.seconds:g} s) on line {lineno} of {total} ({what}): "
                "try a shorter window or a smaller file (a feature with a long window in small buckets costs "
                "more the more events a user has)"
            )
            raise TimeLimitError(msg)


@dataclass
class Side:
    """What one version of the rule did over the events."""

    hits: set[str]
    users: dict[str, int]
    summary: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        top = sorted(self.users.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_LISTED]
        return {
            "hits": len(self.hits),
            "users": len(self.users),
            "top_users": [{"user": u, "hits": n} for u, n in top],
            "events": self.summary["events"],
            "bad_lines": self.summary["bad_lines"],
            "dead_letters": self.summary["dead_letters"],
        }


def _run(
    document: Mapping[str, Any],
    lines: list[bytes],
    settings: ReplaySettings,
    now: int,
    budget: Budget,
    what: str,
) -> Side:
    doc = {**document, "status": "active"}
    rule = parse_rule(doc, source="backtest")
    out = io.StringIO()
    run = settings.replay([rule], out, now=now, only_hits=True)
    limits = settings.limits
    for lineno, line in enumerate(lines, 1):
        budget.check(lineno, len(lines), what)
        if len(line) > limits.max_event_bytes:
            run.feed_oversized(line[: limits.max_event_bytes], len(line), lineno)
        else:
            run.feed(line, lineno)
    run.finish()
    hits: set[str] = set()
    users: dict[str, int] = {}
    for text in out.getvalue().splitlines():
        record = json.loads(text)
        kind = record.get("kind")
        # keyed by user and id (user_key): event ids are unique only within a user (the sender's), so two
        # users' events with one id were counted as one hit, and a hit of one as the other's
        if kind == "decision" and record["rules"]:
            key = user_key(record["user_id"], f"event:{record['event_id']}")
        elif kind == "alert" and record.get("reason") != "rule_alert":
            # a timer's alert (absence patterns): a hit with no event
            key = user_key(record["user_id"], f"alert:{record['alert_id']}")
        else:
            continue
        hits.add(key)
        users[record["user_id"]] = users.get(record["user_id"], 0) + 1
    return Side(hits, users, run.summary(1.0))


def split_lines(data: bytes) -> list[bytes]:
    """The lines of an upload, within :data:`MAX_UPLOAD_BYTES` and :data:`MAX_LINES`."""
    if len(data) > MAX_UPLOAD_BYTES:
        msg = f"file too large: {len(data)} bytes, at most {MAX_UPLOAD_BYTES}"
        raise BacktestError(msg)
    lines = [line for line in data.splitlines() if line.strip()]
    if len(lines) > MAX_LINES:
        msg = f"too many lines: {len(lines)}, at most {MAX_LINES}"
        raise BacktestError(msg)
    return lines


def backtest(
    draft: Mapping[str, Any],
    current: Mapping[str, Any] | None,
    data: bytes,
    *,
    settings: ReplaySettings = JOB_DEFAULTS,
    now: int | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Run ``draft`` (and ``current``, the current document of the rule, if any) over ``data``'s lines, as
    the job decides by ``settings``; both within ``seconds`` (:data:`MAX_SECONDS`), else
    :class:`TimeLimitError`. ``now``: the replay's clock (default: the wall clock)."""
    lines = split_lines(data)
    at = int(time.time() * 1000) if now is None else now
    started = time.perf_counter()
    budget = Budget(seconds)
    new = _run(draft, lines, settings, at, budget, "the draft")
    result: dict[str, Any] = {
        "lines": len(lines),
        "settings": settings.to_dict(),
        "draft": new.to_dict(),
        "current": None,
    }
    if current is not None:
        old = _run(current, lines, settings, at, budget, "the current version")
        result["current"] = old.to_dict()
        result["only_draft"] = sorted(new.hits - old.hits)[:MAX_LISTED]
        result["only_current"] = sorted(old.hits - new.hits)[:MAX_LISTED]
        result["only_draft_count"] = len(new.hits - old.hits)
        result["only_current_count"] = len(old.hits - new.hits)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def read_topic_window(bootstrap: str, topic: str, window_ms: int, *, timeout_s: float = 10.0) -> bytes:
    """The raw records of ``topic`` produced in the last ``window_ms`` (up to its end offsets when the read
    starts), as JSON lines, at most :data:`MAX_LINES` records and :data:`MAX_UPLOAD_BYTES` bytes (the newest
    window is cut at the limit: the result says how many lines it ran on). Kafka down (also in the middle of
    the read: each request waits ``timeout_s`` at most) or no such topic:
    :class:`~riskctl.errors.ServiceError`."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from riskctl.errors import ServiceError
    from riskctl.kafka_admin import drop_finished, seek_to_window
    from riskctl.sim.kafka_io import SERVICE, kafka_down

    try:
        c = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            api_version_auto_timeout_ms=5000,
            # kafka-python's default is 305 s: a broker lost after the connection held the request that long
            request_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaError:
        raise kafka_down(bootstrap) from None
    out: list[bytes] = []
    size = 0
    try:
        partitions = c.partitions_for_topic(topic)
        if not partitions:
            msg = f"topic {topic!r} does not exist on {bootstrap}"
            raise ServiceError(SERVICE, msg)
        parts = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends, remaining = seek_to_window(c, parts, int(time.time() * 1000) - window_ms)
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for tp, records in c.poll(timeout_ms=200).items():
                for rec in records:
                    if tp not in remaining or rec.offset >= ends[tp]:
                        continue
                    value = rec.value or b""
                    size += len(value) + 1
                    if len(out) >= MAX_LINES or size > MAX_UPLOAD_BYTES:
                        return b"\n".join(out)
                    out.append(value.replace(b"\n", b" "))
                    if rec.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            drop_finished(c, remaining, ends)
    except KafkaError as exc:  # lost in the middle (offsets, end offsets, metadata): a 500 before
        msg = f"reading {topic!r} from {bootstrap} failed: {type(exc).__name__}: {exc}"
        raise ServiceError(SERVICE, msg) from None
    finally:
        c.close()
    return b"\n".join(out)
