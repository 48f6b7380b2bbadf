"""Kafka administration used by the jobs, the CLI and the tests (kafka-python, no JVM)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from riskctl.errors import ServiceError

SERVICE = "kafka"


#: how long :func:`ensure_topics` waits for the topics it created to be listed by the broker
VISIBLE_WAIT_S = 10.0


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int = 2,
    *,
    configs: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet, with ``configs`` if given; return the names created.

    A Flink KafkaSource fails on a topic that does not exist, so jobs call this before they start. Returns
    once the broker lists the created topics (at most :data:`VISIBLE_WAIT_S`): the controller accepts a
    creation before the broker's metadata has it, and a client asking at once was told that the topic did
    not exist (``riskctl demo`` on a broker just started: "topic(s) ... do not exist", exit 3).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, NoBrokersAvailable, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    except NoBrokersAvailable:
        msg = f"no broker answers at {bootstrap}: run 'riskctl stack up' (or set RISKCTL_KAFKA_BOOTSTRAP)"
        raise ServiceError(SERVICE, msg) from None
    try:
        existing = set(admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                new = [NewTopic(t, partitions, 1, topic_configs=dict(configs or {})) for t in missing]
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # created concurrently: fine
            except KafkaError as exc:
                msg = f"creating topics {missing} failed: {exc}"
                raise ServiceError(SERVICE, msg) from exc
            deadline = time.monotonic() + VISIBLE_WAIT_S
            while not set(missing) <= set(admin.list_topics()) and time.monotonic() < deadline:
                time.sleep(0.05)
        return missing
    finally:
        admin.close()


def seek_to_window(consumer: Any, parts: list[Any], since_ms: int) -> tuple[dict[Any, int], set[Any]]:
    """Assign ``parts`` to a kafka-python ``consumer`` and seek each to its first record at or after
    ``since_ms`` (its end when there is none); return the end offsets as they are now and the partitions that
    have records up to them. A window read ends when :func:`drop_finished` has emptied that set."""
    consumer.assign(parts)
    starts = consumer.offsets_for_times(dict.fromkeys(parts, since_ms))
    ends: dict[Any, int] = consumer.end_offsets(parts)
    remaining = set()
    for tp in parts:
        found = starts.get(tp)
        start = found.offset if found is not None else ends[tp]
        consumer.seek(tp, start)
        if start < ends[tp]:
            remaining.add(tp)
    return ends, remaining


def drop_finished(consumer: Any, remaining: set[Any], ends: dict[Any, int]) -> None:
    """Remove from ``remaining`` the partitions whose position reached their end offset (records past a
    transaction marker or compacted away never arrive, so the position, not the last record, says when)."""
    for tp in list(remaining):
        if consumer.position(tp) >= ends[tp]:
            remaining.discard(tp)
