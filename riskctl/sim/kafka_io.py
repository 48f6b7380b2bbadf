"""Kafka and file I/O for the simulator, ``riskctl decisions`` and the demo (kafka-python, no JVM).

Kept apart from :mod:`riskctl.sim.generator`, which stays pure. Every connection failure becomes a
:class:`~riskctl.errors.ServiceError` that says what to start, never a traceback.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from riskctl.errors import RiskctlError, ServiceError

SERVICE = "kafka"


def kafka_down(bootstrap: str) -> ServiceError:
    """The error for a broker that does not answer, with how to start one."""
    msg = (
        f"no Kafka broker answers at {bootstrap}: start the local stack with 'riskctl stack up' "
        "(or point RISKCTL_KAFKA_BOOTSTRAP at your broker)"
    )
    return ServiceError(SERVICE, msg)


#: the longest wait between two connection attempts to a broker. kafka-python doubles the wait after each
#: failed attempt up to its default of 30 s: after a broker restart, the simulator's producer and a
#: following consumer (riskctl decisions) stayed silent up to 30 s after the broker was back.
RECONNECT_BACKOFF_MAX_MS = 1000


def producer(bootstrap: str) -> Any:
    """A producer for JSON events keyed by user id; raises ServiceError when no broker answers."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap,
            linger_ms=5,
            acks=1,
            api_version_auto_timeout_ms=5000,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
            value_serializer=lambda v: json.dumps(v, separators=(",", ":")).encode(),
            key_serializer=lambda k: k.encode() if isinstance(k, str) else k,
        )
    except KafkaError:
        raise kafka_down(bootstrap) from None


@dataclass
class Message:
    """A JSON record read from a topic, with its coordinates and the broker's record timestamp (ms)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    value: dict[str, Any]


def consumer(
    bootstrap: str, topics: Iterable[str], *, from_beginning: bool, request_timeout_ms: int | None = None
) -> Any:
    """A group-less consumer (nothing committed) subscribed to ``topics``; ``request_timeout_ms``: how long
    a request (as :func:`check_alive`'s) waits for the broker (default: kafka-python's, 305 s)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    more = {} if request_timeout_ms is None else {"request_timeout_ms": request_timeout_ms}
    try:
        c = KafkaConsumer(
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest" if from_beginning else "latest",
            enable_auto_commit=False,
            group_id=None,
            api_version_auto_timeout_ms=5000,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
            **more,
        )
    except KafkaError:
        raise kafka_down(bootstrap) from None
    names = list(topics)
    existing = c.topics()
    missing = [t for t in names if t not in existing]
    if missing:
        c.close()
        msg = f"topic(s) {', '.join(missing)} do not exist on {bootstrap}: is the job running with them?"
        raise ServiceError(SERVICE, msg)
    c.subscribe(names)
    return c


def check_alive(c: Any, bootstrap: str) -> None:
    """Ask the broker for the end offsets of ``c``'s partitions; a :class:`~riskctl.errors.ServiceError` when
    it does not answer within the consumer's ``request_timeout_ms``. A consumer's ``poll`` does not tell a
    broker that went away from a topic where nothing is written: it returns nothing, for ever."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    parts = set(c.assignment()) or {
        TopicPartition(t, p) for t in c.subscription() or () for p in c.partitions_for_topic(t) or ()
    }
    try:
        c.end_offsets(list(parts))
    except KafkaError:
        msg = (
            f"the broker at {bootstrap} stopped answering: start the local stack with 'riskctl stack up' "
            "(or check the broker RISKCTL_KAFKA_BOOTSTRAP points at)"
        )
        raise ServiceError(SERVICE, msg) from None


def poll(c: Any, timeout_ms: int = 200) -> Iterator[Message]:
    """The JSON records of one poll (a record that is not a JSON object, or not JSON at all, is skipped)."""
    batches = c.poll(timeout_ms=timeout_ms)
    for tp, records in batches.items():
        for rec in records:
            try:
                value = json.loads(rec.value)
            except (ValueError, TypeError, RecursionError):  # a record nested ~1,000 deep: RecursionError
                continue
            if isinstance(value, dict):
                yield Message(tp.topic, tp.partition, rec.offset, rec.timestamp, value)


def iter_jsonl(
    path: str | Path,
    *,
    max_line_bytes: int,
    over_limit: Callable[[int, int], None],
    required: tuple[str, ...] = (),
) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, one at a time (blank lines and non-objects skipped); each object
    must have a string in the ``required`` fields.

    A line longer than ``max_line_bytes`` (without its line break) is skipped without being held (read 1 MiB
    at a time) and reported to ``over_limit(line number, its length)``. A file that is not JSON lines (a line
    that is not JSON, bytes that are not UTF-8, an object missing a required field) is a
    :class:`~riskctl.errors.RiskctlError` naming the file and the line, not a traceback; so is a device
    (``/dev/zero`` has no end: its one line would be skipped for ever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        msg = f"{path}: cannot read it: {exc.strerror or exc}"
        raise RiskctlError(msg) from None
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        msg = f"{path} is a device, not a JSON-lines file"
        raise RiskctlError(msg)
    with open(path, "rb") as fh:
        cap = max_line_bytes + 2  # the line, its line break (\r\n) and one byte more
        lineno = 0
        while raw := fh.readline(cap):
            lineno += 1
            if len(raw) == cap and not raw.endswith(b"\n"):
                size = len(raw)
                while more := fh.readline(1 << 20):  # the rest of the line, never held whole
                    size += len(more)
                    if more.endswith(b"\n"):
                        break
                else:
                    more = b""
                over_limit(lineno, size - (1 if more.endswith(b"\n") else 0))
                continue
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            if len(line) > max_line_bytes:
                over_limit(lineno, len(line))
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                msg = f"{path} line {lineno}: not valid UTF-8 (byte {exc.start}): is it a JSON-lines file?"
                raise RiskctlError(msg) from None
            except RecursionError:
                msg = f"{path} line {lineno}: nested too deep to decode"
                raise RiskctlError(msg) from None
            except ValueError as exc:
                msg = f"{path} line {lineno}: not valid JSON ({exc}): is it a JSON-lines file?"
                raise RiskctlError(msg) from None
            if not isinstance(obj, dict):
                continue
            for name in required:
                if not isinstance(obj.get(name), str):
                    got = type(obj[name]).__name__ if name in obj else "nothing"
                    msg = f"{path} line {lineno}: {name} must be a string, got {got}"
                    raise RiskctlError(msg)
            yield obj


def write_jsonl(out: IO[str], record: Mapping[str, Any]) -> None:
    """Write ``record`` as one line of compact JSON."""
    out.write(json.dumps(record, separators=(",", ":")))
    out.write("\n")


def send_paced(
    prod: Any,
    topic: str,
    events: Iterable[dict[str, Any]],
    *,
    start_ts: int,
    paced: bool = True,
    on_sent: Callable[[dict[str, Any], float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    flush_timeout_s: float = 30.0,
) -> int:
    """Send events keyed by user id; with ``paced``, each no sooner than its event time (relative to
    ``start_ts``, the wall clock when the call starts). Returns how many were sent.

    Raises :class:`~riskctl.errors.ServiceError` as soon as the producer reports an event it could not
    deliver (the broker went away: a batch expires after the producer's ``delivery_timeout_ms``), when a send
    blocks past ``max_block_ms``, or when the last events are not delivered within ``flush_timeout_s``: a
    producer buffers what it cannot send, so without this a run said it sent every event to a broker that
    had stopped."""
    from kafka.errors import KafkaError

    failed: list[BaseException] = []  # filled by the producer's I/O thread (list.append is atomic)
    wall0 = time.time()
    sent = 0
    for e in events:
        if should_stop is not None and should_stop():
            break
        if failed:
            raise _not_delivered(topic, sent, failed)
        if paced:
            delay = wall0 + (e["ts"] - start_ts) / 1000 - time.time()
            if delay > 0:
                time.sleep(delay)
        try:
            prod.send(topic, e, key=e["user_id"]).add_errback(failed.append)
        except KafkaError as exc:
            raise _not_delivered(topic, sent, [exc]) from None
        sent += 1
        if on_sent is not None:
            on_sent(e, time.time())
    try:
        prod.flush(timeout=flush_timeout_s)
    except KafkaError as exc:
        failed.append(exc)
    if failed:
        raise _not_delivered(topic, sent, failed)
    return sent


def close_producer(prod: Any, timeout: float = 5.0) -> None:
    """Close ``prod``, giving what it still holds ``timeout`` seconds to be delivered, then dropping it.

    kafka-python's ``close`` flushes first and, when the broker is gone, raises KafkaTimeoutError before it
    stops its I/O thread (a traceback after :func:`send_paced` said what was lost); stopped here as ``close``
    would have, and marked closed so that its ``__del__`` does not try again."""
    from kafka.errors import KafkaError

    try:
        prod.close(timeout=timeout)
    except KafkaError:
        sender = getattr(prod, "_sender", None)
        if sender is not None:
            sender.force_close()
        prod._closed = True


def _not_delivered(topic: str, sent: int, failed: list[BaseException]) -> ServiceError:
    first, name = failed[0], type(failed[0]).__name__
    what = str(first) if str(first).startswith(name) else f"{name}: {first}"  # KafkaError's str names it
    msg = (
        f"events to {topic} not delivered ({what}) after {sent:,} sent: "
        "is the broker still running? ('riskctl stack up' starts the local one)"
    )
    return ServiceError(SERVICE, msg)
