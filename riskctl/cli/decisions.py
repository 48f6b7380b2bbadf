"""``riskctl decisions tail`` and ``riskctl decisions stats``: read what the running job decided.

Both read the decisions topic (``job.decisions_topic``) with a group-less consumer: nothing is committed, any
number of them can run next to the job. Exit code 3 when Kafka does not answer (with what to start).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import click

from riskctl.cli.common import (
    CONTEXT_SETTINGS,
    emit_json,
    fail_on,
    handles_errors,
    json_option,
    printable,
)
from riskctl.config import load_settings
from riskctl.core.stats import percentile
from riskctl.errors import RiskctlError

#: seconds between two checks that the broker still answers, while ``tail`` shows nothing
PROBE_EVERY_S = 5.0
#: how long a request to the broker may take before it is taken for gone (exit 3)
REQUEST_TIMEOUT_MS = 10_000


def _connect(topics: list[str], from_beginning: bool) -> Any:
    from riskctl.sim.kafka_io import consumer

    settings = load_settings()
    try:
        return consumer(
            settings.kafka_bootstrap,
            topics,
            from_beginning=from_beginning,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
    except RiskctlError as exc:
        fail_on(exc)  # Kafka does not answer: exit 3


#: the latest ``ts`` shown as a time (9999-12-31T23:59:59.999Z); anything else is shown as "?"
_MAX_TS = 253_402_300_799_999
#: characters of one value in a line of ``tail``
_MAX_SHOWN = 300


# The records come from a topic: the job writes them, but their ids and types are the events' (an attacker's),
# and anyone who can write the topic can put anything there. So every field is read as it may be: a record of
# another shape is shown (or counted) as far as it goes, never a traceback, and text is made printable.
def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _shown(value: Any) -> str:
    """A record's value in a line for a terminal: printable, at most :data:`_MAX_SHOWN` characters."""
    text = printable(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def rule_ids(record: dict[str, Any]) -> list[str]:
    """The rules named by a decision (fired and shadow) or an alert."""
    if record.get("kind") == "alert":
        return [str(_dict(record.get("rule")).get("id"))]
    return [str(r.get("id")) for r in _dicts(record.get("rules")) + _dicts(record.get("shadow"))]


def matches(record: dict[str, Any], actions: tuple[str, ...], user: str | None, rule: str | None) -> bool:
    """Whether a record passes the tail filters (an alert's action is its rule's)."""
    action = record.get("action") or _dict(record.get("rule")).get("action")
    if actions and action not in actions:
        return False
    if user is not None and record.get("user_id") != user:
        return False
    return rule is None or rule in rule_ids(record)


def pretty(record: dict[str, Any], record_ts: int | None = None) -> str:
    """One line per decision or alert."""
    raw_ts = record.get("ts")
    ts: int | None = raw_ts if type(raw_ts) is int and 0 <= raw_ts <= _MAX_TS else None
    when = (
        datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
        if ts is not None
        else "??:??:??.???"
    )
    lag = f" +{record_ts - ts}ms" if record_ts is not None and ts is not None else ""
    if record.get("kind") == "alert":
        rule = _dict(record.get("rule"))
        return (
            f"{when} ALERT  {_shown(rule.get('action', '?')):<6} user={_shown(record.get('user_id'))} "
            f"rule={_shown(rule.get('id'))} v{_shown(rule.get('version'))} "
            f"reason={_shown(record.get('reason'))} "
            f"event={_shown(record.get('event_id'))}{lag}"
        )
    fired = ", ".join(
        f"{_shown(r.get('id'))} v{_shown(r.get('version'))}" for r in _dicts(record.get("rules"))
    )
    shadow = ", ".join(_shown(r.get("id")) for r in _dicts(record.get("shadow")))
    return (
        f"{when} {_shown(record.get('action', '?')):<6} user={_shown(record.get('user_id'))} "
        f"{_shown(record.get('type'))} event={_shown(record.get('event_id'))}"
        + (f" rules=[{fired}]" if fired else "")
        + (f" shadow=[{shadow}]" if shadow else "")
        + (" late" if record.get("late") else "")
        + (" duplicate" if record.get("duplicate") is True else "")
        + lag
    )


def _seconds(value: float | None) -> float | None:
    """--timeout: NaN passes click's range (no comparison holds) and read nothing, silently: refused."""
    if value is not None and math.isnan(value):
        msg = "NaN is not a number of seconds"
        raise click.BadParameter(msg, param_hint="--timeout")
    return value


@click.group(context_settings=CONTEXT_SETTINGS)
def decisions() -> None:
    """Read the decisions the running job writes (tail, stats)."""


@decisions.command(context_settings=CONTEXT_SETTINGS, short_help="Follow the decisions topic, filtered.")
@click.option(
    "--action",
    "actions",
    multiple=True,
    type=click.Choice(["PASS", "REVIEW", "REJECT"], case_sensitive=False),
    help="Only these actions (repeatable).",
)
@click.option("--user", default=None, help="Only this user id.")
@click.option("--rule", default=None, help="Only records naming this rule id (fired or shadow).")
@click.option("--alerts/--no-alerts", default=False, help="Also tail the alerts topic.")
@click.option(
    "--from-beginning", is_flag=True, help="Start at the oldest record (default: new records only)."
)
@click.option(
    "--max", "max_records", type=click.IntRange(min=1), default=None, help="Stop after N records shown."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    callback=lambda ctx, param, value: _seconds(value),
    help="Stop after S seconds without a new record shown.",
)
@json_option("One JSON record per line (as in the topic).")
@handles_errors
def tail(
    actions: tuple[str, ...],
    user: str | None,
    rule: str | None,
    alerts: bool,
    from_beginning: bool,
    max_records: int | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Follow the decisions topic, one line per decision (and alert with --alerts), until Ctrl-C, --max or
    --timeout. The (+N ms) at the end of a line is the record's Kafka timestamp minus the event time."""
    from riskctl.sim.kafka_io import check_alive, poll

    settings = load_settings()
    topics = [settings.job.decisions_topic] + ([settings.job.alerts_topic] if alerts else [])
    c = _connect(topics, from_beginning)
    wanted = tuple(a.upper() for a in actions)
    shown = 0
    last = probed = time.monotonic()
    try:
        while timeout is None or time.monotonic() - last < timeout:
            if time.monotonic() - max(last, probed) >= PROBE_EVERY_S:
                check_alive(c, settings.kafka_bootstrap)  # a broker gone: exit 3, instead of waiting for ever
                probed = time.monotonic()
            for msg in poll(c, 200):
                if not matches(msg.value, wanted, user, rule):
                    continue
                line = (
                    json.dumps(msg.value, separators=(",", ":"))
                    if as_json
                    else pretty(msg.value, msg.timestamp)
                )
                click.echo(line)
                shown += 1
                last = time.monotonic()
                if max_records is not None and shown >= max_records:
                    return
    except KeyboardInterrupt:
        pass
    finally:
        c.close()


#: ``stats``: the most latencies kept; past it, a uniform sample of this many (a reservoir) gives the
#: percentiles (count and max stay exact): 8 MB whatever the window holds
MAX_LATENCIES = 1_000_000
#: ``stats``: the most distinct actions, and rule ids, counted each; later ones count as OTHER
MAX_NAMES = 10_000
OTHER = "(other)"


def _count(counter: Counter[str], name: str) -> None:
    counter[name if name in counter or len(counter) < MAX_NAMES else OTHER] += 1


def summarize(records: Iterable[tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """Counts by action and rule and latency percentiles of (decision, Kafka record timestamp) pairs.

    ``records`` is consumed as it comes, and what is kept is bounded whatever the topic holds: at most
    :data:`MAX_LATENCIES` latencies (8 bytes each; past it a uniform sample, ``"sampled": true``) and
    :data:`MAX_NAMES` actions and rule ids per count (later ones under ``(other)``)."""
    import random
    from array import array

    actions: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    shadow: Counter[str] = Counter()
    lat = array("q")
    seen = 0
    top: int | None = None
    pick = random.Random(0).randrange  # noqa: S311 - a sample, not a secret
    for value, record_ts in records:
        if value.get("kind", "decision") != "decision":
            continue
        _count(actions, str(value.get("action")))
        for r in _dicts(value.get("rules")):
            _count(rules, str(r.get("id")))
        for r in _dicts(value.get("shadow")):
            _count(shadow, str(r.get("id")))
        if type(value.get("ts")) is int and record_ts >= 0:
            latency = record_ts - value["ts"]
            if not -(2**63) <= latency < 2**63:
                continue  # a ts beyond 64 bits: no latency
            seen += 1
            top = latency if top is None else max(top, latency)
            if len(lat) < MAX_LATENCIES:
                lat.append(latency)
            else:
                slot = pick(seen)
                if slot < MAX_LATENCIES:
                    lat[slot] = latency
    ordered = sorted(lat)
    return {
        "decisions": sum(actions.values()),
        "actions": dict(actions.most_common()),
        "rules": dict(rules.most_common()),
        "shadow": dict(shadow.most_common()),
        "latency_ms": {
            "count": seen,
            **{f"p{q}": percentile(ordered, q) for q in (50, 90, 99)},
            "max": top,
            **({"sampled": True} if seen > len(lat) else {}),
        },
    }


@decisions.command(
    context_settings=CONTEXT_SETTINGS, short_help="Counts by action and rule, latency percentiles."
)
@click.option(
    "--window", default="15m", help="Decisions of the last window of wall-clock time (e.g. 30s, 15m, 2h)."
)
@click.option("--max", "max_records", type=click.IntRange(min=1), default=None, help="At most N decisions.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    callback=lambda ctx, param, value: _seconds(value),
    help="Give up reading after S seconds.",
)
@json_option("The stats as JSON.")
@handles_errors
def stats(window: str, max_records: int | None, timeout: float, as_json: bool) -> None:
    """Counts by action and by rule, and latency percentiles, over the decisions of a window.

    Latency is the Kafka timestamp of the decision record (when the job's sink produced it) minus the
    event's own time (its "ts"): time spent before the event reached Kafka, waiting in the topic, and in the
    job. It is meaningful when producers stamp events with the wall clock at send time (as 'riskctl
    simulate' does when paced); replayed or back-dated events show their age instead.
    """
    from riskctl.core.errors import ExpressionError
    from riskctl.core.expr import duration_ms

    try:
        window_ms = duration_ms(window)
    except ExpressionError as exc:
        raise click.BadParameter(exc.reason, param_hint="--window") from None
    settings = load_settings()
    topic = settings.job.decisions_topic
    result = {
        "topic": topic,
        "window": window,
        **summarize(_read_window(topic, window_ms, max_records, timeout)),
    }
    if as_json:
        emit_json(result)
        return
    lat = result["latency_ms"]
    click.echo(f"{result['decisions']:,} decisions on {topic} in the last {window}")
    # actions and rule ids as the records on the topic hold them: shown escaped, as tail shows them
    click.echo("by action: " + (", ".join(f"{_shown(k)} {v:,}" for k, v in result["actions"].items()) or "-"))
    click.echo("by rule:   " + (", ".join(f"{_shown(k)} {v:,}" for k, v in result["rules"].items()) or "-"))
    if result["shadow"]:
        click.echo("shadow:    " + ", ".join(f"{_shown(k)} {v:,}" for k, v in result["shadow"].items()))
    if lat["count"]:
        click.echo(
            f"latency event time -> decision in Kafka (ms): p50 {lat['p50']}, p90 {lat['p90']}, "
            f"p99 {lat['p99']}, max {lat['max']}"
        )


def _read_window(
    topic: str, window_ms: int, max_records: int | None, timeout: float
) -> Iterator[tuple[dict[str, Any], int]]:
    """The records of ``topic`` produced in the last ``window_ms`` (up to the end offsets at the start), as
    they are read: a window of millions of decisions is never held in memory. A window reaching back before
    1970 reads the whole topic (Kafka refuses a negative time)."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    from riskctl.kafka_admin import drop_finished, seek_to_window
    from riskctl.sim.kafka_io import kafka_down, poll

    c = _connect([topic], from_beginning=True)
    read = 0
    try:
        c.unsubscribe()
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
        try:
            ends, remaining = seek_to_window(c, parts, max(0, int(time.time() * 1000) - window_ms))
        except KafkaError:  # the broker went away since _connect (REQUEST_TIMEOUT_MS): exit 3
            raise kafka_down(load_settings().kafka_bootstrap) from None
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for msg in poll(c, 200):
                tp = TopicPartition(msg.topic, msg.partition)
                if tp not in remaining:
                    continue
                yield msg.value, msg.timestamp
                read += 1
                if msg.offset + 1 >= ends[tp]:
                    remaining.discard(tp)
                if max_records is not None and read >= max_records:
                    return
            drop_finished(c, remaining, ends)
    finally:
        c.close()
