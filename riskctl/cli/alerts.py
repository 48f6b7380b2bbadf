"""``riskctl alerts run`` and ``riskctl alerts check``: deliver alerts to reviewers (docs/alerts.md).

``run`` reads the job's alerts topic (``job.alerts_topic``) and, when the file says ``review_decisions:
true``, the REVIEW decisions of ``job.decisions_topic``, in consumer group ``alerts.group_id``; it stops on
SIGINT/SIGTERM after committing what was delivered. ``check`` validates the file and prints it without
secrets. Exit code 3 for a configuration error (every ``field: reason`` listed) or when Kafka does not
answer, as riskctl.cli.common maps ConfigError and ServiceError.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from dataclasses import asdict
from typing import Any

import click

from riskctl.config import load_settings
from riskctl.errors import ConfigError, ServiceError

#: as riskctl.cli.common (issue 12) maps ConfigError and ServiceError: not configured / unavailable
EXIT_CONFIG = 3
EXIT_UNAVAILABLE = 3
_CTX = {"help_option_names": ["-h", "--help"], "show_default": True}


def _load(config_path: str | None) -> tuple[Any, Any]:
    from riskctl.alerts.settings import load_config

    try:
        settings = load_settings()
        config = load_config(config_path or settings.alerts.config, os.environ)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    return settings, config


@click.group(context_settings=_CTX)
def alerts() -> None:
    """Deliver the job's alerts (and REVIEW decisions) to webhooks, DingTalk, Slack and e-mail."""


@alerts.command(context_settings=_CTX)
@click.option(
    "--config", "config_path", default=None, help="The alerts file [default: alerts.config setting]."
)
@click.option("--json", "as_json", is_flag=True, help="The configuration as JSON.")
def check(config_path: str | None, as_json: bool) -> None:
    """Validate the alerts file and show it without secrets."""
    _, config = _load(config_path)
    described = config.describe()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    click.echo(f"ok: {len(config.channels)} channel(s), {len(config.routes)} route(s)")
    for ch in described["channels"]:
        click.echo(f"  channel {ch['name']}: {ch['type']} {ch.get('url', ch.get('host', ''))}")
    for i, r in enumerate(described["routes"]):
        stop = " (stop)" if r["stop"] else ""
        click.echo(f"  route {i}: {r['match'] or 'any'} -> {', '.join(r['channels']) or 'nowhere'}{stop}")


@alerts.command(context_settings=_CTX)
@click.option(
    "--config", "config_path", default=None, help="The alerts file [default: alerts.config setting]."
)
@click.option("--group-id", default=None, help="Kafka consumer group [default: alerts.group_id setting].")
@click.option(
    "--idle-exit", type=float, default=None, help="Stop after S seconds with nothing read or in flight."
)
@click.option("--json", "as_json", is_flag=True, help="Print the final counts as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Log every delivery attempt.")
def run(
    config_path: str | None, group_id: str | None, idle_exit: float | None, as_json: bool, verbose: bool
) -> None:
    """Read alerts from Kafka and deliver them until stopped (SIGINT/SIGTERM)."""
    from riskctl.alerts.dispatcher import Dispatcher, run_kafka
    from riskctl.kafka_admin import ensure_topics

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kafka-python logs every refused connection as an ERROR; what matters is reported by riskctl itself
    logging.getLogger("kafka").setLevel(logging.WARNING if verbose else logging.CRITICAL)
    settings, config = _load(config_path)
    topics = [settings.job.alerts_topic]
    if config.review_decisions:
        topics.append(settings.job.decisions_topic)
    try:
        ensure_topics(settings.kafka_bootstrap, [*topics, settings.alerts.dead_letter_topic])
    except ServiceError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def unused_produce(topic: str, key: bytes | None, value: bytes) -> None:
        msg = "run_kafka sets the producer"
        raise RuntimeError(msg)

    dispatcher = Dispatcher(
        config, dead_letter_topic=settings.alerts.dead_letter_topic, produce=unused_produce
    )
    dispatcher.stop_event = stop
    click.echo(
        f"riskctl alerts: reading {', '.join(topics)} as group {group_id or settings.alerts.group_id}; "
        f"{len(config.channels)} channel(s)",
        err=True,
    )
    from kafka.errors import KafkaError

    try:
        stats = run_kafka(
            dispatcher,
            bootstrap=settings.kafka_bootstrap,
            topics=topics,
            group_id=group_id or settings.alerts.group_id,
            stop=stop,
            delivered_topic=settings.alerts.delivered_topic,
            idle_exit_s=idle_exit,
        )
    except (ServiceError, KafkaError) as exc:
        click.echo(f"error: kafka at {settings.kafka_bootstrap}: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if as_json:
        click.echo(json.dumps(asdict(stats)))
    else:
        click.echo(
            f"read {stats.read}, delivered {stats.delivered}, digests {stats.digests} "
            f"({stats.digested_items} alerts), dead-lettered {stats.dead_lettered}, "
            f"duplicates {stats.deduplicated}, retries {stats.retries}"
        )
