"""``riskctl replay``: run the engine over a JSON-lines file of events, the backtest before publishing a rule.

Events are decided in file order with in-memory state, exactly as the Flink job decides them per key. Event
time
drives everything: the watermark is ``max ts seen - lateness``; the engine's timers (absence patterns,
cleanup,
state TTL) fire when the watermark passes them, and every remaining timer fires at the end of the input (as
Flink does with its final watermark). Output: one JSON record per line (decisions and alerts) on stdout or
``--output``; a summary on stderr; bad lines are reported with their line number and skipped.

Memory: the output is streamed; what grows is the per-user state (bounded per user, see ``docs/engine.md``)
and one pending cleanup timer per user.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import click

from riskctl.core import jsoncodec
from riskctl.core.decisions import Alert, Decision
from riskctl.core.engine import Engine
from riskctl.core.errors import EventError, ExpressionError, RuleSetError
from riskctl.core.events import parse_event
from riskctl.core.expr import duration_ms
from riskctl.core.runner import LocalRunner, tune_gc

MAX_REPORTED_BAD_LINES = 50
_PROGRESS_EVERY = 4096  # lines between two looks at the clock


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    if value.lower() in ("none", "off", "0"):
        return None if param.name == "state_ttl" else 0
    try:
        return duration_ms(value if not value.isdigit() else int(value))
    except ExpressionError as exc:
        raise click.BadParameter(exc.reason) from None


class Replay:
    """The replay loop without click (tests, notebooks): feed lines, records are written to ``out``."""

    def __init__(self, engine: Engine, out: IO[str], *, only_hits: bool = False) -> None:
        self.engine = engine
        self.runner = LocalRunner(engine)
        self.out = out
        self.only_hits = only_hits
        self.events = 0
        self.bad_lines = 0
        self.actions: Counter[str] = Counter()
        self.fired: Counter[str] = Counter()
        self.shadow: Counter[str] = Counter()
        self.alerts: Counter[str] = Counter()
        self.bad_reported: list[str] = []

    def feed(self, line: bytes | str, lineno: int) -> None:
        """Decide one line (an event), then fire the timers the new watermark passed."""
        if not line.strip():
            return
        try:
            event = parse_event(line)
        except EventError as exc:
            self.bad_lines += 1
            if len(self.bad_reported) < MAX_REPORTED_BAD_LINES:
                self.bad_reported.append(f"line {lineno}: {exc}")
                click.echo(f"riskctl replay: line {lineno}: {exc} (skipped)", err=True)
            return
        self.events += 1
        self._write(self.runner.feed(event))

    def finish(self) -> None:
        """End of the input: fire every remaining timer."""
        self._write(self.runner.finish())

    def _write(self, records: Iterable[Decision | Alert]) -> None:
        write = self.out.write
        for record in records:
            if isinstance(record, Decision):
                self.actions[record.action] += 1
                for r in record.rules:
                    self.fired[r.id] += 1
                for r in record.shadow:
                    self.shadow[r.id] += 1
                if self.only_hits and not record.rules and not record.shadow:
                    continue
            else:
                self.alerts[record.reason] += 1
            write(jsoncodec.dumps(record.to_dict()))
            write("\n")

    def summary(self, elapsed: float) -> dict[str, Any]:
        """Counts by action, rule and alert reason, and the rate."""
        return {
            "events": self.events,
            "bad_lines": self.bad_lines,
            "users_with_state": len(self.runner.store),
            "actions": dict(self.actions),
            "rules_fired": dict(self.fired.most_common()),
            "shadow_hits": dict(self.shadow.most_common()),
            "alerts": dict(self.alerts),
            "ruleset_version": self.engine.ruleset.version,
            "pattern_overflow": self.engine.pattern_overflow,
            "seconds": round(elapsed, 3),
            "events_per_second": round(self.events / elapsed) if elapsed > 0 else None,
        }


@click.command("replay")
@click.option(
    "--rules",
    "rules_path",
    required=True,
    type=click.Path(exists=True),
    help="Folder (or file) of YAML rules.",
)
@click.argument("events", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write records here instead of stdout.")
@click.option(
    "--lateness",
    default="5s",
    show_default=True,
    callback=_duration,
    help="Allowed lateness: watermark = max event time - lateness (0 for none).",
)
@click.option(
    "--state-ttl",
    default="24h",
    show_default=True,
    callback=_duration,
    help="A user silent this long loses their state ('none' to keep it until features expire).",
)
@click.option("--only-hits", is_flag=True, help="Write only decisions where a rule fired, and alerts.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress on stderr (default: when stderr is a terminal).",
)
@click.option("--summary-json", is_flag=True, help="Print the summary on stderr as JSON.")
@click.option(
    "--default-gc",
    is_flag=True,
    help="Keep CPython's default GC thresholds (by default raised, see riskctl.core.runner.tune_gc).",
)
def replay(
    rules_path: str,
    events: str,
    output: str | None,
    lateness: int,
    state_ttl: int | None,
    only_hits: bool,
    progress: bool | None,
    summary_json: bool,
    default_gc: bool,
) -> None:
    """Decide every event of EVENTS (JSON lines, in file order) with the rules of --rules."""
    from riskctl.core.rules import load_rules

    try:
        ruleset = load_rules(rules_path)
    except RuleSetError as exc:
        for err in exc.errors:
            click.echo(f"error: {err}", err=True)
        msg = f"{len(exc.errors)} rule error(s); nothing replayed"
        raise click.ClickException(msg) from None
    engine = Engine(ruleset, lateness=lateness, state_ttl=state_ttl)
    if not default_gc:
        tune_gc()
    show = sys.stderr.isatty() if progress is None else progress
    out: IO[str] = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    source: IO[bytes] = sys.stdin.buffer if events == "-" else open(events, "rb")  # noqa: SIM115
    total = Path(events).stat().st_size if events != "-" else 0
    run = Replay(engine, out, only_hits=only_hits)
    started = time.perf_counter()
    last_shown = started - 1.0  # the first checkpoint always shows
    done_bytes = 0
    try:
        for lineno, line in enumerate(source, 1):
            done_bytes += len(line)
            run.feed(line, lineno)
            if show and lineno % _PROGRESS_EVERY == 0:
                now = time.perf_counter()
                if now - last_shown >= 0.5:
                    last_shown = now
                    _progress(run.events, done_bytes, total, now - started)
        run.finish()
    finally:
        if source is not sys.stdin.buffer:
            source.close()
        if out is not sys.stdout:
            out.close()
        else:
            out.flush()
    elapsed = time.perf_counter() - started
    if show:
        click.echo("", err=True)
    summary = run.summary(elapsed)
    if summary_json:
        click.echo(json.dumps(summary), err=True)
    else:
        _print_summary(summary)


def _progress(events: int, done: int, total: int, elapsed: float) -> None:
    rate = events / elapsed if elapsed else 0.0
    pct = f" {100 * done / total:5.1f}%" if total else ""
    eta = ""
    if total and done and rate:
        eta = f", eta {elapsed * (total - done) / done:,.0f}s"
    click.echo(f"\r{events:,} events{pct}, {rate:,.0f} events/s{eta}   ", err=True, nl=False)


def _print_summary(s: dict[str, Any]) -> None:
    echo = click.echo
    echo(
        f"{s['events']:,} events in {s['seconds']:.2f}s ({s['events_per_second'] or 0:,} events/s), "
        f"{s['bad_lines']} bad lines, rule set {s['ruleset_version']}",
        err=True,
    )
    echo("decisions: " + ", ".join(f"{a} {n:,}" for a, n in sorted(s["actions"].items())), err=True)
    for title, key in (("rules fired", "rules_fired"), ("shadow hits", "shadow_hits"), ("alerts", "alerts")):
        if s[key]:
            echo(f"{title}: " + ", ".join(f"{k} {n:,}" for k, n in s[key].items()), err=True)
