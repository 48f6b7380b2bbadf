"""``riskctl replay``: run the engine over a JSON-lines file of events, the backtest before publishing a rule.

Events are decided in file order with in-memory state, exactly as the Flink job decides them per key, and by
the job's settings (:class:`ReplaySettings`: ``job.lateness_ms``, ``job.state_ttl_ms``, ``job.dedup``,
``job.dedup_window_ms``, ``job.too_late_action``, ``job.event_time_past_clock`` and the door's limits; a flag
overrides one). Event time drives everything: the watermark is ``max ts seen - lateness``; the engine's
timers (absence patterns, cleanup, state TTL) fire when the watermark passes them, and every remaining timer
fires at the end of the input (as Flink does with its final watermark). Output: one JSON record per line
(decisions, alerts and dead letters) on stdout or ``--output``; a summary on stderr (with ``--json``, as one
JSON line: stdout holds the records).
``--summary-json``, its former name, is kept as a hidden alias so that existing scripts go on working.

Every line gets the job's outcome: a decision, or a dead letter (``"kind": "dead_letter"``, the same reason,
field, exception type and rule id as the job's, with ``"line"`` instead of Kafka coordinates). Lines are read
as bytes and held to the door's limits (``riskctl.core.door``; the ``job.*`` limits of the configuration, so
replay and job agree). "Now", for the clock-skew check, is ``--now`` (ms since the epoch or ISO-8601) if
given, else the wall clock when the replay starts: an event more than ``job.max_clock_skew_ms`` ahead of it is
dead-lettered and does not move event time, and event time moves at most to "now", as the job's moves at
most to its clock; an event stamped ahead of "now" is decided at "now", as the job decides one stamped ahead
of its clock at its clock (unless ``job.event_time_past_clock``). Replay cannot know when each event reached
the job: an event ahead of its neighbours but behind "now" is taken at its own ``ts`` (docs/engine.md). A
dead-lettered line still moves event time when the job's Java side would read its ``ts``
(``riskctl.core.door.watermark_ts``). An exception while deciding one
line dead-letters that line and the replay goes on; a failing timer is counted (``timer_errors``) and
skipped. One difference with the job remains: after an internal error the job's state of that user falls back
to its last committed value, while replay keeps whatever the failed call left (it keeps no copy per event).

Memory: the output is streamed; what grows is the per-user state (bounded per user, see
``docs/engine.md``) and one pending cleanup timer per user.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from riskctl.cli.common import (
    CONTEXT_SETTINGS,
    ExitCode,
    echo_error,
    emit_json,
    fail,
    fail_on,
    json_option,
    printable,
    progress_option,
)
from riskctl.config.settings import JobSettings, engine_dedup
from riskctl.core import jsoncodec
from riskctl.core.decisions import Alert, Decision
from riskctl.core.door import DEFAULT_LIMITS, Limits, dead_letter, internal_error_reason, watermark_ts
from riskctl.core.engine import Engine
from riskctl.core.errors import EventError, ExpressionError, RuleSetError
from riskctl.core.events import parse_event
from riskctl.core.expr import duration_ms
from riskctl.core.runner import LocalRunner, tune_gc

if TYPE_CHECKING:
    from riskctl.core.rules import RuleSet

MAX_REPORTED_BAD_LINES = 50
_PROGRESS_EVERY = 4096  # lines between two looks at the clock


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A duration flag in ms: None when not given (the job's setting applies), 0 for none."""
    if value is None:
        return None
    if value.lower() in ("none", "off", "0"):
        return 0
    try:
        # isdigit() is also true of '²' and other scripts' digits, which int() refuses: ASCII digits only
        return duration_ms(int(value) if value.isascii() and value.isdigit() else value)
    except ExpressionError as exc:
        raise click.BadParameter(exc.reason) from None


def _now(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """``--now``: milliseconds since the epoch, or an ISO-8601 time (UTC when it names no zone)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        msg = f"expected milliseconds since the epoch or an ISO-8601 time, got {value!r}"
        raise click.BadParameter(msg) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class ReplaySettings:
    """How the job decides, for a replay of its events: the engine's settings and the door's limits.

    :meth:`of` takes them from the job's settings (``job.*``), so that ``riskctl replay`` and the console's
    backtests and user replays decide as the job does; a replay's flags override single values
    (``dataclasses.replace``). ``state_ttl`` None: no TTL; ``dedup``: ``api``, ``all`` or ``off`` (as
    ``job.dedup``).
    """

    lateness: int
    state_ttl: int | None
    dedup: str
    dedup_window: int
    too_late_action: str
    event_time_past_clock: bool
    limits: Limits

    @classmethod
    def of(cls, job: JobSettings) -> ReplaySettings:
        """The job's own (its limits refused as :meth:`JobSettings.limits` refuses them)."""
        return cls(
            lateness=job.lateness_ms,
            state_ttl=job.state_ttl_ms,
            dedup=job.dedup,
            dedup_window=job.dedup_window_ms,
            too_late_action=job.too_late_action,
            event_time_past_clock=job.event_time_past_clock,
            limits=job.limits(),
        )

    def engine(self, rules: RuleSet | Iterable[Any]) -> Engine:
        """An engine deciding with ``rules`` as the job would."""
        dedup_window, dedup_all = engine_dedup(self.dedup, self.dedup_window)
        return Engine(
            rules,
            lateness=self.lateness,
            state_ttl=self.state_ttl,
            dedup_window=dedup_window,
            dedup_all=dedup_all,
            too_late_action=self.too_late_action,
        )

    def replay(
        self, rules: RuleSet | Iterable[Any], out: IO[str], *, now: int, only_hits: bool = False
    ) -> Replay:
        """A :class:`Replay` of ``rules`` by these settings, ``now`` its clock."""
        run = Replay(
            self.engine(rules),
            out,
            only_hits=only_hits,
            limits=self.limits,
            now=now,
            event_time_past_clock=self.event_time_past_clock,
        )
        run.settings = self
        return run

    def to_dict(self) -> dict[str, Any]:
        """What a replay's reader needs to know it decided as the job does."""
        return {
            "lateness_ms": self.lateness,
            "state_ttl_ms": self.state_ttl,
            "dedup": self.dedup,
            "dedup_window_ms": self.dedup_window,
            "too_late_action": self.too_late_action,
            "event_time_past_clock": self.event_time_past_clock,
        }


#: the job's settings left at their defaults
JOB_DEFAULTS = ReplaySettings.of(JobSettings())


class Replay:
    """The replay loop without click (tests, notebooks): feed lines, records are written to ``out``.

    ``now`` (ms since the epoch) is the time of the clock-skew check (None: no check).
    """

    def __init__(
        self,
        engine: Engine,
        out: IO[str],
        *,
        only_hits: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        now: int | None = None,
        event_time_past_clock: bool = False,
    ) -> None:
        self.engine = engine
        self.runner = LocalRunner(engine)
        self.out = out
        self.only_hits = only_hits
        self.limits = limits
        self.now = now
        #: event time moves at most to ``now``, as the job's to its clock, and an event stamped ahead of it is
        #: decided at ``now`` (job.event_time_past_clock false)
        self.clock = None if event_time_past_clock else now
        self.events = 0
        self.bad_lines = 0
        self.internal_errors = 0
        self.dead_reasons: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.fired: Counter[str] = Counter()
        self.shadow: Counter[str] = Counter()
        self.alerts: Counter[str] = Counter()
        self.bad_reported: list[str] = []
        #: what it decides by, when made by :meth:`ReplaySettings.replay` (in the summary)
        self.settings: ReplaySettings | None = None

    def feed(self, line: bytes | str, lineno: int) -> None:
        """Decide one line (an event), then fire the timers the new watermark passed.

        Never raises for what the line holds: a line refused at the door or failing in the engine gets a dead
        letter, as in the job.
        """
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogatepass")
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if not line.strip():
            return
        try:
            event = parse_event(line, self.limits, self.now)
        except EventError as exc:
            self._dead(line, lineno, exc.reason, exc.field)
            # the job's Java side reads ts before (and whatever) Python decides: move event time alike
            now = self.now if self.now is not None else 2**62
            self._advance(watermark_ts(line, self.limits, now))
            return
        user = event["user_id"]
        try:
            result = self.engine.process(self.runner.store.for_key(user), event, self.clock)
            records = list(self.runner.accept(result, user))
            texts = [jsoncodec.dumps(r.to_dict()) for r in records]
        except Exception as exc:  # noqa: BLE001 - the guard: one event's failure never stops the replay
            self.internal_errors += 1
            self._dead(
                line,
                lineno,
                internal_error_reason(exc),
                None,
                error=type(exc).__name__,
                rule_id=self.engine.current_rule,
            )
        else:
            self.events += 1
            self._emit(records, texts)
        self._advance(event["ts"])

    def _advance(self, ts: int) -> None:
        """Event time has seen ``ts`` (at most the clock, ``now``, unless job.event_time_past_clock): fire the
        timers the watermark passed."""
        clock = self.clock
        self._write(self.runner.advance(ts if clock is None or ts <= clock else clock))

    def feed_oversized(self, head: bytes, size: int, lineno: int) -> None:
        """A line of ``size`` bytes, over ``max_event_bytes``, of which ``head`` is the beginning: a dead
        letter, as the job gives a record over the limit (the job's Java side may still read a ``ts`` from
        such a record; replay does not look for one in a line it did not keep)."""
        reason = f"record of {size} bytes is larger than max_event_bytes ({self.limits.max_event_bytes})"
        self._dead(head, lineno, reason, None, raw_bytes=size)

    def _dead(
        self,
        line: bytes,
        lineno: int,
        reason: str,
        field: str | None,
        *,
        error: str | None = None,
        rule_id: str | None = None,
        raw_bytes: int | None = None,
    ) -> None:
        self.bad_lines += 1
        self.dead_reasons[error or field or "(record)"] += 1
        where = f"{field}: " if field else ""
        if len(self.bad_reported) < MAX_REPORTED_BAD_LINES:
            # printable: a field path is the event's keys, an attacker's text (escape sequences, line breaks)
            text = printable(f"line {lineno}: {where}{reason}")[:300]
            self.bad_reported.append(text)
            click.echo(f"riskctl replay: {text} (dead letter)", err=True)
        doc = dead_letter(
            line,
            reason=reason,
            field=field,
            error=error,
            rule_id=rule_id,
            coordinates={"line": lineno},
            limits=self.limits,
            raw_bytes=raw_bytes,
        )
        self.out.write(doc)
        self.out.write("\n")

    def finish(self) -> None:
        """End of the input: fire every remaining timer."""
        self._write(self.runner.finish())

    def _write(self, records: Iterable[Decision | Alert]) -> None:
        records = list(records)
        if not records:  # most events fire no timer
            return
        texts = []
        for record in records:
            try:
                texts.append(jsoncodec.dumps(record.to_dict()))
            except Exception as exc:  # noqa: BLE001 - an alert that cannot be written is counted, not fatal
                self.runner.timer_errors += 1
                self.runner.last_timer_error = f"alert not written: {type(exc).__name__}: {exc}"[:1000]
                texts.append("")
        self._emit(records, texts)

    def _emit(self, records: list[Decision | Alert], texts: list[str]) -> None:
        write = self.out.write
        for record, text in zip(records, texts, strict=True):
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
            if text:
                write(text)
                write("\n")

    def summary(self, elapsed: float) -> dict[str, Any]:
        """Counts by action, rule and alert reason, and the rate."""
        return {
            "events": self.events,
            "bad_lines": self.bad_lines,
            "dead_letters": dict(self.dead_reasons.most_common()),
            "internal_errors": self.internal_errors,
            "timer_errors": self.runner.timer_errors,
            "too_late": self.engine.too_late,
            "duplicates": self.engine.duplicates,
            "now": self.now,
            "users_with_state": len(self.runner.store),
            "actions": dict(self.actions),
            "rules_fired": dict(self.fired.most_common()),
            "shadow_hits": dict(self.shadow.most_common()),
            "alerts": dict(self.alerts),
            "ruleset_version": self.engine.ruleset.version,
            "pattern_overflow": self.engine.pattern_overflow,
            "late_rechecks_skipped": self.engine.rechecks_skipped,
            "settings": self.settings.to_dict() if self.settings is not None else None,
            "seconds": round(elapsed, 3),
            "events_per_second": round(self.events / elapsed) if elapsed > 0 else None,
        }


@click.command("replay", context_settings=CONTEXT_SETTINGS, short_help="Backtest rules on a file of events.")
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
    default=None,
    callback=_duration,
    help="Allowed lateness: watermark = max event time - lateness (0 for none). Default: job.lateness_ms "
    "(5 s unless configured).",
)
@click.option(
    "--state-ttl",
    default=None,
    callback=_duration,
    help="A user silent this long loses their state ('none' to keep it until features expire). Default: "
    "job.state_ttl_ms (24 h unless configured).",
)
@click.option(
    "--dedup",
    type=click.Choice(["api", "all", "off"]),
    default=None,
    help="Events decided as duplicates when seen again: those sent through riskctl serve, all, or none. "
    "Default: job.dedup (api unless configured).",
)
@click.option(
    "--dedup-window",
    default=None,
    callback=_duration,
    help="How long (event time) an event is remembered as decided (at least --lateness). Default: "
    "job.dedup_window_ms (10 min unless configured).",
)
@click.option("--only-hits", is_flag=True, help="Write only decisions where a rule fired, and alerts.")
@progress_option(None, "Progress on stderr (default: when stderr is a terminal).")
@json_option("Print the summary on stderr as one JSON line.")
@click.option("--summary-json", is_flag=True, hidden=True, help="The former name of --json (deprecated).")
@click.option(
    "--now",
    default=None,
    callback=_now,
    help="'Now' for the clock-skew check: ms since the epoch or ISO-8601 (default: the wall clock at start).",
)
@click.option(
    "--default-gc",
    is_flag=True,
    help="Keep CPython's default GC thresholds (by default raised, see riskctl.core.runner.tune_gc).",
)
def replay(
    rules_path: str,
    events: str,
    output: str | None,
    lateness: int | None,
    state_ttl: int | None,
    dedup: str | None,
    dedup_window: int | None,
    only_hits: bool,
    progress: bool | None,
    as_json: bool,
    summary_json: bool,
    now: int | None,
    default_gc: bool,
) -> None:
    """Decide every event of EVENTS (JSON lines, in file order) with the rules of --rules."""
    from riskctl.config import load_settings
    from riskctl.core.rules import load_rules
    from riskctl.errors import ConfigError

    try:
        settings = ReplaySettings.of(load_settings().job)
    except ConfigError as exc:
        fail_on(exc)
    # a flag given overrides the job's setting
    if lateness is not None:
        settings = dataclasses.replace(settings, lateness=lateness)
    if dedup is not None:
        settings = dataclasses.replace(settings, dedup=dedup)
    if dedup_window is not None:
        settings = dataclasses.replace(settings, dedup_window=dedup_window)
    if state_ttl is not None:
        settings = dataclasses.replace(settings, state_ttl=state_ttl or None)  # 0: none
    if now is None:
        now = int(time.time() * 1000)
    try:
        ruleset = load_rules(rules_path)
    except RuleSetError as exc:
        for err in exc.errors:
            echo_error(str(err))
        fail(ExitCode.ERROR, f"{len(exc.errors)} rule error(s); nothing replayed")
    if not default_gc:
        tune_gc()
    show = sys.stderr.isatty() if progress is None else progress
    if output and events != "-" and Path(output).exists() and Path(output).samefile(events):
        # opening the output for writing would empty the file before a line of it is read
        fail(
            ExitCode.USAGE, f"--output {printable(output)!r} is the events file: write the records elsewhere"
        )
    if events != "-" and _is_device(events):
        # /dev/zero is one endless line: skipped 1 MiB at a time for ever, without a word (found in review)
        fail(ExitCode.USAGE, f"{printable(events)!r} is a device, not a JSON-lines file (stdin: '-')")
    try:
        source: IO[bytes] = sys.stdin.buffer if events == "-" else open(events, "rb")  # noqa: SIM115
    except OSError as exc:
        fail(ExitCode.USAGE, f"cannot read {printable(events)!r}: {exc.strerror}")
    try:
        out: IO[str] = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    except OSError as exc:
        fail(ExitCode.USAGE, f"--output: cannot write {printable(output)!r}: {exc.strerror}")
    total = Path(events).stat().st_size if events != "-" else 0
    run = settings.replay(ruleset, out, now=now, only_hits=only_hits)
    started = time.perf_counter()
    last_shown = started - 1.0  # the first checkpoint always shows
    done_bytes = 0
    try:
        for lineno, (line, size) in enumerate(_lines(source, settings.limits.max_event_bytes), 1):
            done_bytes += size
            if size > len(line):
                run.feed_oversized(line, size, lineno)
            else:
                run.feed(line, lineno)
            if show and lineno % _PROGRESS_EVERY == 0:
                tick = time.perf_counter()
                if tick - last_shown >= 0.5:
                    last_shown = tick
                    _progress(run.events, done_bytes, total, tick - started)
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
    if as_json or summary_json:
        emit_json(summary, err=True, indent=None)
    else:
        _print_summary(summary)


def _is_device(path: str) -> bool:
    import stat

    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False  # open() says why
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _lines(source: IO[bytes], max_bytes: int) -> Iterable[tuple[bytes, int]]:
    """(line, its length in bytes) of ``source``; a line over ``max_bytes`` (+ its line break) is returned
    as its first ``max_bytes + 2`` bytes with the length of the whole record (without its line break), and
    is never held whole in memory."""
    cap = max_bytes + 2
    while True:
        line = source.readline(cap)
        if not line:
            return
        if len(line) < cap or line.endswith(b"\n"):
            yield line, len(line)
            continue
        size = len(line)
        while True:  # skip the rest of the long line, counting it
            more = source.readline(1 << 20)
            size += len(more)
            if not more or more.endswith(b"\n"):
                size -= len(more[-1:]) if more.endswith(b"\n") else 0  # the record, without its line break
                break
        yield line, size


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
    if s["settings"]:
        echo("decided by: " + ", ".join(f"{k} {v}" for k, v in s["settings"].items()), err=True)
    if s["bad_lines"]:
        echo(
            "dead letters by field or error: "
            + ", ".join(f"{printable(k)[:300]} {n:,}" for k, n in s["dead_letters"].items()),
            err=True,
        )
    if s["too_late"]:
        echo(f"too late (decided, recorded by no feature or sequence): {s['too_late']:,}", err=True)
    if s["duplicates"]:
        echo(f"duplicates (the first one's action, nothing recorded): {s['duplicates']:,}", err=True)
    if s["timer_errors"]:
        echo(f"timer errors: {s['timer_errors']} (counted and skipped)", err=True)
    for title, key in (("rules fired", "rules_fired"), ("shadow hits", "shadow_hits"), ("alerts", "alerts")):
        if s[key]:
            echo(f"{title}: " + ", ".join(f"{k} {n:,}" for k, n in s[key].items()), err=True)
