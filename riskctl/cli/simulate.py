"""``riskctl simulate``: realistic traffic with labelled attacks, to Kafka or a JSONL file; and its report.

::

    riskctl simulate --users 2000 --rate 200 --duration 60                 # to the events topic, paced
    riskctl simulate --users 500 --rate 100 --duration 30 --seed 7 --output events.jsonl
    riskctl replay --rules rules/ events.jsonl > decisions.jsonl
    riskctl simulate report --events events.jsonl --decisions decisions.jsonl
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from riskctl.config import load_settings
from riskctl.errors import RiskctlError
from riskctl.sim.generator import ATTACKS, SimConfig, Simulator
from riskctl.sim.report import build_report, format_report

_CTX = {"help_option_names": ["-h", "--help"], "show_default": True}


class _Progress:
    def __init__(self, show: bool, duration_s: float, start_ts: int) -> None:
        self.show = show
        self.start_ts = start_ts
        self.event_s = 0.0
        self.duration_s = duration_s
        self.started = time.monotonic()
        self.last = 0.0
        self.sent = 0
        self.attack_events = 0

    def __call__(self, event: dict[str, Any], _wall: float = 0.0) -> None:
        self.sent += 1
        self.event_s = max(self.event_s, (event["ts"] - self.start_ts) / 1000)
        if "sim" in event:
            self.attack_events += 1
        now = time.monotonic()
        if self.show and now - self.last >= 0.5:
            self.last = now
            self.line(now)

    def line(self, now: float | None = None) -> None:
        if not self.show:
            return
        elapsed = (now or time.monotonic()) - self.started
        rate = self.sent / elapsed if elapsed > 0 else 0.0  # sent per wall-clock second
        click.echo(
            f"\r{self.sent:,} events ({self.attack_events:,} in attacks), {rate:,.0f}/s, "
            f"event time {self.event_s:,.0f}/{self.duration_s:,.0f}s   ",
            err=True,
            nl=False,
        )


def _default_start(now_ms: int, duration_s: float, output: str | None, pace: bool) -> int:
    """Paced to Kafka, events are sent at their event time: start now. Written to a file or sent unpaced, the
    whole run exists at once: it ends now, so no event is more than the allowed clock skew ahead of the wall
    clock (``job.max_clock_skew_ms``), which the job and ``riskctl replay`` dead-letter."""
    if output is None and pace:
        return now_ms
    return now_ms - int(duration_s * 1000)


@click.group(invoke_without_command=True, context_settings=_CTX)
@click.option("--users", type=click.IntRange(min=1), default=1000, help="Users at the start (more register).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=100.0, help="Events per second.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=60.0, help="Seconds.")
@click.option(
    "--attack-fraction",
    type=click.FloatRange(0, 1),
    default=0.02,
    help="Probability that a session is an attack.",
)
@click.option(
    "--attacks",
    default=",".join(ATTACKS),
    help="Attack kinds to mix in (comma-separated).",
)
@click.option(
    "--zipf",
    type=click.FloatRange(0, 5),
    default=0.0,
    help="Skew of user activity: 0 uniform; s > 0 weights the user of rank k by 1/k**s (Zipf).",
)
@click.option(
    "--seed", type=int, default=None, help="Random seed (default: from the clock); same seed, same run."
)
@click.option(
    "--start-ts",
    type=int,
    default=None,
    help="Event time of the start in ms (default: now when paced to Kafka; otherwise now - DURATION, so the "
    "traffic has already happened and no event is ahead of the clock: the job and replay refuse those).",
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), help="Write JSON lines here instead of Kafka."
)
@click.option("--topic", default=None, help="Kafka topic (default: job.events_topic).")
@click.option(
    "--pace/--no-pace",
    default=True,
    help="To Kafka: send each event at its event time (real time); --no-pace sends as fast as possible.",
)
@click.option("--progress/--no-progress", default=True, help="A progress line on stderr.")
@click.pass_context
def simulate(
    ctx: click.Context,
    users: int,
    rate: float,
    duration: float,
    attack_fraction: float,
    attacks: str,
    zipf: float,
    seed: int | None,
    start_ts: int | None,
    output: str | None,
    topic: str | None,
    pace: bool,
    progress: bool,
) -> None:
    """Generate traffic for USERS users at RATE events/s for DURATION seconds, attacks mixed in and labelled
    (an extra "sim" field the engine ignores), into the events topic (keyed by user id) or a JSONL file.

    Legitimate users log in (now and then failing once), pass 2FA on a new device, shop, pay, transfer
    (log-normal amounts), change passwords and register. Attacks: brute force, account takeover chain,
    transfer velocity, bot cadence, new-device login without 2FA, register then order within 3 s.
    Summary (events, attacks per kind) on stderr. See 'riskctl simulate report' for what was caught.
    """
    if ctx.invoked_subcommand is not None:
        return
    kinds = tuple(k.strip() for k in attacks.split(",") if k.strip())
    now_ms = int(time.time() * 1000)
    try:
        config = SimConfig(
            users=users,
            rate=rate,
            duration_s=duration,
            attack_fraction=attack_fraction,
            seed=seed if seed is not None else now_ms % 1_000_000,
            start_ts=start_ts if start_ts is not None else _default_start(now_ms, duration, output, pace),
            attacks=kinds,
            zipf=zipf,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    sim = Simulator(config)
    show = progress
    meter = _Progress(show, duration, config.start_ts)
    if output:
        from riskctl.sim.kafka_io import write_jsonl

        with open(output, "w", encoding="utf-8") as out:
            for event in sim:
                write_jsonl(out, event)
                meter(event)
    else:
        from riskctl.sim.kafka_io import producer, send_paced

        settings = load_settings()
        target = topic or settings.job.events_topic
        try:
            from riskctl.kafka_admin import ensure_topics

            prod = producer(settings.kafka_bootstrap)
            ensure_topics(settings.kafka_bootstrap, [target])
        except RiskctlError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(3)
        try:
            send_paced(
                prod, target, sim, start_ts=config.start_ts, paced=pace and start_ts is None, on_sent=meter
            )
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
        finally:
            prod.close(timeout=5)
    meter.line()
    if show:
        click.echo("", err=True)
    kinds_count: dict[str, int] = {}
    for a in sim.attacks.values():
        kinds_count[a["attack"]] = kinds_count.get(a["attack"], 0) + 1
    where = output or f"topic {topic or load_settings().job.events_topic}"
    click.echo(
        f"{meter.sent:,} events ({len(sim.users):,} users, seed {config.seed}) to {where}; "
        f"{len(sim.attacks)} attacks: " + ", ".join(f"{k} {n}" for k, n in kinds_count.items()),
        err=True,
    )


@simulate.command("report", context_settings=_CTX)
@click.option("--events", "events_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--decisions",
    "decisions_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Decisions and alerts as JSON lines (riskctl replay's output, 'decisions tail --json'); "
    "default: read the decisions and alerts topics.",
)
@click.option(
    "--timeout", type=float, default=10.0, help="From the topics: stop after this many idle seconds."
)
@click.option("--json", "as_json", is_flag=True, help="The report as JSON on stdout.")
def report(events_path: str, decisions_path: str | None, timeout: float, as_json: bool) -> None:
    """What the engine caught of a simulated run: attacks caught per scenario and by which rule, missed
    attacks, legitimate users hit (false positives)."""
    from riskctl.sim.kafka_io import read_jsonl

    events = read_jsonl(events_path)
    if decisions_path:
        records = read_jsonl(decisions_path)
    else:
        records = _records_from_topics(timeout)
    result = build_report(events, records)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_report(result))


def _records_from_topics(idle_timeout: float) -> list[dict[str, Any]]:
    from riskctl.sim.kafka_io import consumer, poll

    settings = load_settings()
    try:
        c = consumer(
            settings.kafka_bootstrap,
            [settings.job.decisions_topic, settings.job.alerts_topic],
            from_beginning=True,
        )
    except RiskctlError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    records: list[dict[str, Any]] = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_timeout:
            got = [m.value for m in poll(c, 500)]
            if got:
                records.extend(got)
                last = time.monotonic()
    finally:
        c.close()
    return records
