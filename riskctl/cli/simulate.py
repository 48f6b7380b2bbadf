"""``riskctl simulate``: realistic traffic with labelled attacks, to Kafka or a JSONL file; and its report.

::

    riskctl simulate --users 2000 --rate 200 --duration 60                 # to the events topic, paced
    riskctl simulate --users 500 --rate 100 --duration 30 --seed 7 --output events.jsonl
    riskctl replay --rules rules/ events.jsonl > decisions.jsonl
    riskctl simulate report --events events.jsonl --decisions decisions.jsonl
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from riskctl.cli.common import (
    CONTEXT_SETTINGS,
    ExitCode,
    emit_json,
    fail,
    fail_on,
    handles_errors,
    json_option,
    printable,
    progress_option,
)
from riskctl.config import load_settings
from riskctl.core.events import MAX_TS
from riskctl.errors import RiskctlError
from riskctl.sim.generator import ATTACKS, SimConfig, Simulator
from riskctl.sim.report import ReportBuilder, format_report

R = TypeVar("R")

#: at most this many simulated users at the start: each costs about 1 kB of memory before the first event
MAX_USERS = 1_000_000
#: at most this many events per second of event time (the generator makes ~160,000 a second on one core)
MAX_RATE = 1_000_000.0
#: at most this many events in a run (``--rate`` x ``--duration``): users registered during the run stay in
#: memory (~4 per 100 events, ~1 kB each), so a run of this size holds about 1 GB
MAX_EVENTS = 30_000_000


def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A float option's value, NaN and infinities refused: NaN passes click's ranges (no comparison holds
    with it), an unbounded range takes inf."""
    if value is not None and not math.isfinite(value):
        msg = f"{value} is not a finite number"
        raise click.BadParameter(msg, ctx=ctx, param=param)
    return value


@dataclass(frozen=True)
class Traffic:
    """The traffic options of ``riskctl simulate`` and ``riskctl demo`` (see :func:`traffic_options`)."""

    users: int
    rate: float
    duration: float
    attack_fraction: float
    seed: int | None

    def config(self, *, start_ts: int, now_ms: int, **more: Any) -> SimConfig:
        """The simulator's configuration starting at ``start_ts``; without ``--seed``, the seed comes from
        the clock (``now_ms``) and is printed, so a run can be repeated. ``more``: other SimConfig fields."""
        seed = self.seed if self.seed is not None else now_ms % 1_000_000
        if self.rate * self.duration > MAX_EVENTS:
            msg = (
                f"{self.rate:g} events/s for {self.duration:g} s is {self.rate * self.duration:.3g} events, "
                f"more than {MAX_EVENTS:,} (the users a run registers stay in memory): lower one of them"
            )
            raise click.BadParameter(msg, param_hint="'--rate' x '--duration'")
        try:
            return SimConfig(
                users=self.users,
                rate=self.rate,
                duration_s=self.duration,
                attack_fraction=self.attack_fraction,
                seed=seed,
                start_ts=start_ts,
                **more,
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None


def traffic_options(
    *, users: int, rate: float, duration: click.FloatRange, attack_fraction: float
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """--users, --rate, --duration, --attack-fraction and --seed with these defaults (``duration``: the type,
    with its bounds), handed to the command as one parameter, ``traffic`` (a :class:`Traffic`)."""

    def decorate(func: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> R:
            fields = ("users", "rate", "duration", "attack_fraction", "seed")
            traffic = Traffic(*(kwargs.pop(name) for name in fields))
            return func(*args, traffic=traffic, **kwargs)

        options = (
            click.option(
                "--users",
                type=click.IntRange(min=1, max=MAX_USERS),
                default=users,
                help="Simulated users at the start (more register).",
            ),
            click.option(
                "--rate",
                type=click.FloatRange(min=0, min_open=True, max=MAX_RATE),
                default=rate,
                callback=finite,
                help=f"Events per second (--rate x --duration: at most {MAX_EVENTS:,} events).",
            ),
            click.option(
                "--duration",
                type=duration,
                default=60.0,
                callback=finite,
                help="Seconds of simulated traffic.",
            ),
            click.option(
                "--attack-fraction",
                type=click.FloatRange(0, 1),
                callback=finite,
                default=attack_fraction,
                help="Probability that a session is an attack.",
            ),
            click.option(
                "--seed",
                type=int,
                default=None,
                help="Random seed (default: from the clock); same seed, same run.",
            ),
        )
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


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


def _attack_kinds(value: str) -> tuple[str, ...]:
    """``--attacks``: known kinds, at least one (refused naming the option, as the other options)."""
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in ATTACKS]
    if unknown or not kinds:
        what = f"unknown attack kind(s) {printable(', '.join(unknown))}" if unknown else "no attack kind"
        msg = f"{what}: choose among {', '.join(ATTACKS)}"
        raise click.BadParameter(msg, param_hint="'--attacks'")
    return kinds


def _default_start(now_ms: int, duration_s: float, output: str | None, pace: bool) -> int:
    """Paced to Kafka, events are sent at their event time: start now. Written to a file or sent unpaced, the
    whole run exists at once: it ends now, so no event is more than the allowed clock skew ahead of the wall
    clock (``job.max_clock_skew_ms``), which the job and ``riskctl replay`` dead-letter."""
    if output is None and pace:
        return now_ms
    return now_ms - int(duration_s * 1000)


@click.group(
    invoke_without_command=True,
    context_settings=CONTEXT_SETTINGS,
    short_help="Simulate traffic with attacks; report what was caught.",
)
@traffic_options(
    users=1000, rate=100.0, duration=click.FloatRange(min=0, min_open=True), attack_fraction=0.02
)
@click.option(
    "--attacks",
    default=",".join(ATTACKS),
    callback=lambda ctx, param, value: _attack_kinds(value),
    help="Attack kinds to mix in (comma-separated).",
)
@click.option(
    "--zipf",
    type=click.FloatRange(0, 5),
    default=0.0,
    callback=finite,
    help="Skew of user activity: 0 uniform; s > 0 weights the user of rank k by 1/k**s (Zipf).",
)
@click.option(
    "--start-ts",
    type=click.IntRange(min=0, max=MAX_TS),
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
@progress_option(True, "A progress line on stderr.")
@json_option("The summary (events, users, seed, attacks per kind) as JSON on stdout.")
@click.pass_context
@handles_errors
def simulate(
    ctx: click.Context,
    traffic: Traffic,
    attacks: tuple[str, ...],
    zipf: float,
    start_ts: int | None,
    output: str | None,
    topic: str | None,
    pace: bool,
    progress: bool,
    as_json: bool,
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
    now_ms = int(time.time() * 1000)
    duration = traffic.duration
    first_ts = start_ts if start_ts is not None else _default_start(now_ms, duration, output, pace)
    config = traffic.config(start_ts=first_ts, now_ms=now_ms, attacks=attacks, zipf=zipf)
    sim = Simulator(config)
    show = progress
    meter = _Progress(show, duration, config.start_ts)
    if output:
        from riskctl.sim.kafka_io import write_jsonl

        try:
            out = open(output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            fail(ExitCode.USAGE, f"--output: cannot write {printable(output)!r}: {exc.strerror}")
        with out:
            for event in sim:
                write_jsonl(out, event)
                meter(event)
    else:
        from riskctl.sim.kafka_io import close_producer, producer, send_paced

        settings = load_settings()
        target = topic or settings.job.events_topic
        from riskctl.kafka_admin import ensure_topics

        prod = producer(settings.kafka_bootstrap)  # a ServiceError ends the command: exit 3
        ensure_topics(settings.kafka_bootstrap, [target])
        try:
            send_paced(
                prod, target, sim, start_ts=config.start_ts, paced=pace and start_ts is None, on_sent=meter
            )
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
        finally:
            close_producer(prod)
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
    if as_json:
        emit_json(
            {
                "events": meter.sent,
                "attack_events": meter.attack_events,
                "users": len(sim.users),
                "seed": config.seed,
                "start_ts": config.start_ts,
                "to": where,
                "attacks": kinds_count,
            }
        )


@simulate.command(
    "report", context_settings=CONTEXT_SETTINGS, short_help="What the engine caught of a simulated run."
)
@click.option(
    "--events",
    "events_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The simulated events, labelled, as JSON lines (what 'riskctl simulate --output FILE' wrote).",
)
@click.option(
    "--decisions",
    "decisions_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Decisions and alerts as JSON lines (riskctl replay's output, 'decisions tail --json'); "
    "default: read the decisions and alerts topics.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    callback=finite,
    help="From the topics: stop after this many seconds without a record of the run's events or users "
    "(other traffic on the topics does not count).",
)
@json_option("The report as JSON on stdout.")
@handles_errors
def report(events_path: str, decisions_path: str | None, timeout: float, as_json: bool) -> None:
    """What the engine caught of a simulated run: attacks caught per scenario and by which rule, missed
    attacks, legitimate users hit (false positives).

    Both files are streamed: memory grows with the number of events (about 8 bytes each) and users, not
    with the files' size. An event line over job.max_event_bytes (the job dead-letters it) and a decision
    line over 1,000,000 bytes (the largest record the job writes) are skipped, counted and reported."""
    from riskctl.core.decisions import MAX_RECORD_BYTES
    from riskctl.sim.kafka_io import iter_jsonl
    from riskctl.sim.report import ReportBuilder

    builder = ReportBuilder()

    def counter(name: str) -> Callable[[int, int], None]:
        def over(lineno: int, size: int) -> None:
            builder.skipped[name] += 1

        return over

    max_event_bytes = load_settings().job.max_event_bytes
    for event in iter_jsonl(
        events_path,
        max_line_bytes=max_event_bytes,
        over_limit=counter("events_over_max_event_bytes"),
        required=("event_id", "user_id"),
    ):
        builder.add_event(event)
    if decisions_path:
        records = iter_jsonl(
            decisions_path,
            max_line_bytes=MAX_RECORD_BYTES,
            over_limit=counter("records_over_max_record_bytes"),
        )
    else:
        records = _records_from_topics(timeout, builder)
    for record in records:
        builder.add_record(record)
    result = builder.result()
    if as_json:
        emit_json(result)
    else:
        click.echo(format_report(result))


def _records_from_topics(idle_timeout: float, builder: ReportBuilder) -> Iterator[dict[str, Any]]:
    """The decisions of the events ``builder`` read and the alerts of their users, read from the topics'
    beginning until none came for ``idle_timeout`` seconds, one at a time. Only those are handed on, and only
    they keep the read going: the topics may hold other runs and live traffic, which would otherwise never
    let it end."""
    from riskctl.sim.kafka_io import consumer, poll

    settings = load_settings()
    try:
        c = consumer(
            settings.kafka_bootstrap,
            [settings.job.decisions_topic, settings.job.alerts_topic],
            from_beginning=True,
        )
    except RiskctlError as exc:
        fail_on(exc)
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_timeout:
            for m in poll(c, 500):
                r = m.value
                wanted = (
                    builder.knows_user(r.get("user_id"))
                    if r.get("kind") == "alert"
                    else builder.knows_event(r.get("event_id"))
                )
                if wanted:  # any shape may be on the topics
                    yield r
                    last = time.monotonic()
    finally:
        c.close()
