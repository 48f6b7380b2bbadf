"""``riskctl alerts run`` and ``riskctl alerts check``: deliver alerts to reviewers (docs/alerts.md).

``run`` reads the job's alerts topic (``job.alerts_topic``) and, when the file says ``review_decisions:
true``, the REVIEW decisions of ``job.decisions_topic``, in consumer group ``alerts.group_id``; it stops on
SIGINT/SIGTERM after committing what was delivered. ``check`` validates the file and prints it without
secrets. Errors end through :mod:`riskctl.cli.common`: exit code 3 for a configuration error (every
``field: reason`` listed) or when Kafka does not answer.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import asdict
from typing import Any

import click

from riskctl.cli.common import CONTEXT_SETTINGS, emit_json, fail_on, handles_errors, json_option, set_option
from riskctl.config import Settings, load_settings
from riskctl.errors import ServiceError


def _load(config_path: str | None, overrides: tuple[str, ...] = ()) -> tuple[Settings, Any]:
    from riskctl.alerts.settings import load_config

    settings = load_settings(overrides=overrides)
    return settings, load_config(config_path or settings.alerts.config, os.environ)


@click.group(context_settings=CONTEXT_SETTINGS)
def alerts() -> None:
    """Deliver alerts to reviewers: chat, e-mail, SMS, webhooks."""


@alerts.command(context_settings=CONTEXT_SETTINGS)
@click.option("--config", "config_path", default=None, help="The alerts file [default: alerts.config].")
@set_option
@json_option("The configuration (without secrets) as JSON.")
@handles_errors
def check(config_path: str | None, overrides: tuple[str, ...], as_json: bool) -> None:
    """Validate the alerts file and show it without secrets."""
    _, config = _load(config_path, overrides)
    described = config.describe()
    if as_json:
        emit_json(described)
        return
    click.echo(f"ok: {len(config.channels)} channel(s), {len(config.routes)} route(s)")
    for ch in described["channels"]:
        click.echo(f"  channel {ch['name']}: {ch['type']} {ch.get('url', ch.get('host', ''))}")
    for i, r in enumerate(described["routes"]):
        stop = " (stop)" if r["stop"] else ""
        click.echo(f"  route {i}: {r['match'] or 'any'} -> {', '.join(r['channels']) or 'nowhere'}{stop}")


@alerts.command(context_settings=CONTEXT_SETTINGS)
@click.option("--config", "config_path", default=None, help="The alerts file [default: alerts.config].")
@click.option("--group-id", default=None, help="Kafka consumer group [default: alerts.group_id].")
@click.option("--idle-exit", type=float, default=None, help="Stop after S seconds with nothing to do.")
@set_option
@json_option("The final counts as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Log every delivery attempt.")
@handles_errors
def run(
    config_path: str | None,
    group_id: str | None,
    idle_exit: float | None,
    overrides: tuple[str, ...],
    as_json: bool,
    verbose: bool,
) -> None:
    """Deliver alerts from Kafka until stopped.

    Stops on SIGINT/SIGTERM after committing what was delivered.
    """
    from kafka.errors import KafkaError

    from riskctl.alerts.dispatcher import Dispatcher, run_kafka
    from riskctl.kafka_admin import ensure_topics

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kafka-python logs every refused connection as an ERROR; what matters is reported by riskctl itself
    logging.getLogger("kafka").setLevel(logging.WARNING if verbose else logging.CRITICAL)
    settings, config = _load(config_path, overrides)
    topics = [settings.job.alerts_topic]
    if config.review_decisions:
        topics.append(settings.job.decisions_topic)
    ensure_topics(settings.kafka_bootstrap, [*topics, settings.alerts.dead_letter_topic])
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def no_producer_yet(topic: str, key: bytes | None, value: bytes) -> None:
        msg = "run_kafka sets the producer"
        raise RuntimeError(msg)

    dispatcher = Dispatcher(
        config, dead_letter_topic=settings.alerts.dead_letter_topic, produce=no_producer_yet
    )
    dispatcher.stop_event = stop
    group = group_id or settings.alerts.group_id
    click.echo(
        f"riskctl alerts: reading {', '.join(topics)} as group {group}; {len(config.channels)} channel(s)",
        err=True,
    )
    try:
        stats = run_kafka(
            dispatcher,
            bootstrap=settings.kafka_bootstrap,
            topics=topics,
            group_id=group,
            stop=stop,
            delivered_topic=settings.alerts.delivered_topic,
            idle_exit_s=idle_exit,
        )
    except KafkaError as exc:
        fail_on(ServiceError("kafka", f"{settings.kafka_bootstrap}: {exc}"), as_json=as_json)
    if as_json:
        emit_json(asdict(stats), indent=None)
    else:
        click.echo(
            f"read {stats.read}, delivered {stats.delivered}, digests {stats.digests} "
            f"({stats.digested_items} alerts), dead-lettered {stats.dead_lettered}, "
            f"duplicates {stats.deduplicated}, retries {stats.retries}, abandoned {stats.abandoned}"
        )
