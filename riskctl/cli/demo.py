"""``riskctl demo``: the whole engine on this machine in one command.

1. starts the local stack (Kafka + MariaDB) unless it runs; 2. applies ``rules/`` to the MySQL rules table;
3. starts the risk job on the embedded MiniCluster as a child process in its own process group, with fresh
uuid-named topics (repeated demos never mix), and waits until it reports every rule accepted; 4. runs the
simulator into the events topic in real time while a consumer reads decisions and alerts, with a live
progress line and the REVIEW/REJECT decisions as they come (the traffic is stamped 5 min 15 s behind the
clock, and the lines show its event times); 5. advances event time past the absence window (clock events,
not ahead of the clock: the job's event time moves at most to it), waits for the last decisions and prints
the summary: attacks caught per scenario, missed,
false positives, latency p50/p99 (produce -> decision record in Kafka).

Ctrl-C (or SIGTERM) at any point stops what the demo started: the job's process group, the stack services
it started (not those that already ran, and none with ``--keep-stack``); its topics are deleted when the
stack stays up.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import click

from riskctl.cli.common import (
    CONTEXT_SETTINGS,
    ExitCode,
    echo_error,
    emit_json,
    error_exit,
    handles_errors,
    json_option,
)
from riskctl.cli.simulate import Traffic, finite, traffic_options
from riskctl.config import PROJECT_ROOT, Settings, load_settings
from riskctl.errors import DemoError, RiskctlError

#: how far past the last event the clock events are: the 5-minute absence window of new_device_without_2fa,
#: the demo job's lateness (2 s) and a margin
CLOCK_ADVANCE_MS = 5 * 60 * 1000 + 10_000
#: how far behind the wall clock the traffic is stamped: the clock events, that far past the last event, are
#: then behind the clock too when they are sent
TRAFFIC_BEHIND_MS = CLOCK_ADVANCE_MS + 5_000


def clock_wait_s(last_ts: int, now_s: float) -> float:
    """Seconds to wait before sending the clock events (0 or less: none): until their time is no longer ahead
    of the wall clock. Event time moves at most to the job's clock (``job.event_time_past_clock`` false, the
    default): clock events stamped ahead of it would release no absence alert until the clock caught up with
    them. The traffic is stamped :data:`TRAFFIC_BEHIND_MS` behind the clock, so there is nothing to wait for
    unless sending fell that far behind."""
    return (last_ts + CLOCK_ADVANCE_MS) / 1000 - now_s


@dataclass
class Collector:
    """Reads decisions and alerts in a thread; keeps them with their Kafka timestamps."""

    bootstrap: str
    topics: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    record_ts: dict[str, int] = field(default_factory=dict)  # event id -> decision's Kafka timestamp
    actions: Counter[str] = field(default_factory=Counter)
    alerts: int = 0
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> threading.Thread:
        from riskctl.sim.kafka_io import consumer

        self._consumer = consumer(self.bootstrap, self.topics, from_beginning=True)
        thread = threading.Thread(target=self._run, name="demo-collector", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        from riskctl.cli.decisions import pretty
        from riskctl.sim.kafka_io import poll

        try:
            while not self.stop.is_set():
                for msg in poll(self._consumer, 200):
                    v = msg.value
                    with self._lock:
                        self.records.append(v)
                        if v.get("kind") == "alert":
                            self.alerts += 1
                            self.recent.append(pretty(v))
                        elif v.get("event_id") not in self.record_ts:
                            self.record_ts[str(v.get("event_id"))] = msg.timestamp
                            self.actions[str(v.get("action"))] += 1
                            if v.get("action") != "PASS":
                                self.recent.append(pretty(v))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
        finally:
            self._consumer.close()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self.record_ts), self.alerts

    def snapshot(self) -> tuple[int, Counter[str], int, list[str]]:
        with self._lock:
            lines = list(self.recent)
            self.recent.clear()
            return len(self.record_ts), Counter(self.actions), self.alerts, lines


def _percentile(values: list[int], q: float) -> int | None:
    from riskctl.cli.decisions import percentile

    return percentile(sorted(values), q)


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so both run the same cleanup. SIGINT is set too, as `serve`, `alerts` and
    the console set theirs: a shell without job control starts a background command with SIGINT ignored, and
    Python then leaves it ignored (a CI runner's test of Ctrl-C went unheard that way)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Demo:
    """The steps of one demo and what they started (services, the job's process group, topics), so that
    :meth:`stop` undoes exactly that, whatever step failed or was interrupted.

    Topics are named after a fresh uuid suffix, so two demos, or a demo and a running job, never share one.
    """

    def __init__(self, settings: Settings, *, keep_stack: bool, out: Any) -> None:
        self.settings = settings
        self.keep_stack = keep_stack
        self.say = out
        self.suffix = uuid.uuid4().hex[:8]
        self.topics = {
            k: f"demo-{k}-{self.suffix}"
            for k in ("events", "decisions", "alerts", "dead-letter", "rule-status")
        }
        self.started: list[Any] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False
        self.tmp = Path(tempfile.mkdtemp(prefix=f"riskctl-demo-{self.suffix}-"))
        self.log = self.tmp / "job.log"

    # -- steps ---------------------------------------------------------------------------------------------
    def stack_up(self) -> None:
        from riskctl.stack.services import Kafka, MariaDB

        for svc in (Kafka(self.settings), MariaDB(self.settings)):
            if svc.start(timeout=180):
                self.started.append(svc)
                self.say(f"started {svc.name} on {svc.address}")
            else:
                self.say(f"{svc.name} already running on {svc.address}")

    def apply_rules(self, rules_dir: Path) -> int:
        from riskctl.core.rules import load_rules
        from riskctl.store.connection import connect
        from riskctl.store.rules_store import RuleStore

        ruleset = load_rules(rules_dir)
        conn = connect(self.settings)
        try:
            store = RuleStore(conn, self.settings.job.rules_table)
            changes = store.apply(store.plan(ruleset), author="riskctl demo", comment="riskctl demo")
        finally:
            conn.close()
        self.say(
            f"rules: {len(ruleset)} from {rules_dir} in table {self.settings.job.rules_table} "
            f"({len(changes)} new version(s))"
        )
        return len(ruleset)

    def start_job(self) -> None:
        from riskctl.kafka_admin import ensure_topics

        ensure_topics(self.settings.kafka_bootstrap, self.topics.values(), partitions=2)
        server_id = 7000 + uuid.uuid4().int % 2000
        env = {
            **os.environ,
            "RISKCTL_JOB_EVENTS_TOPIC": self.topics["events"],
            "RISKCTL_JOB_DECISIONS_TOPIC": self.topics["decisions"],
            "RISKCTL_JOB_ALERTS_TOPIC": self.topics["alerts"],
            "RISKCTL_JOB_DEAD_LETTER_TOPIC": self.topics["dead-letter"],
            "RISKCTL_JOB_RULE_STATUS_TOPIC": self.topics["rule-status"],
            "RISKCTL_JOB_GROUP_ID": f"demo-{self.suffix}",
            "RISKCTL_JOB_RULES_SOURCE": "cdc",
            "RISKCTL_JOB_CDC_SERVER_ID": f"{server_id}-{server_id + 3}",
            "RISKCTL_JOB_STARTING_OFFSETS": "earliest",
            "RISKCTL_JOB_LATENESS_MS": "2000",
            "RISKCTL_JOB_IDLENESS_MS": "1000",
            "RISKCTL_JOB_CHECKPOINT_DIR": (self.tmp / "checkpoints").as_uri(),
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(PROJECT_ROOT / "jobs" / "risk_job.py")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: the MiniCluster JVM goes with it
                env=env,
                cwd=PROJECT_ROOT,
            )
        self.say(f"job starting on the MiniCluster (pid {self.proc.pid}, log {self.log})")

    def check_job(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
            msg = f"the job exited with code {self.proc.returncode} (log {self.log}):\n{tail}"
            raise DemoError(msg)

    def wait_rules_accepted(self, n_rules: int, timeout: float) -> float:
        from riskctl.sim.kafka_io import consumer, poll

        started = time.monotonic()
        c = consumer(self.settings.kafka_bootstrap, [self.topics["rule-status"]], from_beginning=True)
        accepted: set[str] = set()
        try:
            while len(accepted) < n_rules:
                if time.monotonic() - started > timeout:
                    msg = f"the job did not accept the rules within {timeout:.0f} s (log {self.log})"
                    raise DemoError(msg)
                self.check_job()
                for record in poll(c, 500):
                    status = record.value
                    if status.get("state") == "accepted":
                        accepted.add(str(status.get("rule_id")))
                    elif status.get("state") == "refused":
                        self.say(f"rule refused by the job: {status}")
        finally:
            c.close()
        waited = time.monotonic() - started
        self.say(f"job ready: {len(accepted)} rules accepted after {waited:.0f} s")
        return waited

    def stop(self) -> None:
        """Stop everything this demo started (safe to call twice). Each step is bounded (a minute at most
        in all) and says how long it took, so a slow one shows in the output."""
        if self.stopped:
            return
        self.stopped = True
        started = time.monotonic()
        if self.proc is not None:
            # The job's process group: its Python client and the MiniCluster JVM, which may outlive the
            # client for a moment. SIGTERM, then SIGKILL for whatever is left after 10 s; return only once
            # the group is empty (so no process of the demo survives it).
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            if not _group_gone(self.proc, 10.0):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                _group_gone(self.proc, 10.0)
            self.say(f"job stopped in {time.monotonic() - started:.1f} s")
        if self.keep_stack or not self.started:
            at = time.monotonic()
            # in a thread, so that a broker that does not answer cannot hold the demo's exit
            deleting = threading.Thread(target=self._delete_topics, name="delete-topics", daemon=True)
            deleting.start()
            deleting.join(15.0)
            left = " (gave up waiting: they stay)" if deleting.is_alive() else ""
            self.say(f"demo topics deleted in {time.monotonic() - at:.1f} s{left}")
        if not self.keep_stack:
            for svc in reversed(self.started):
                svc.stop()
                self.say(f"stopped {svc.name}")
            self.started = []
        shutil.rmtree(self.tmp / "checkpoints", ignore_errors=True)

    def _delete_topics(self) -> None:
        try:
            from kafka import KafkaAdminClient

            admin = KafkaAdminClient(
                bootstrap_servers=self.settings.kafka_bootstrap,
                request_timeout_ms=5000,
                api_version_auto_timeout_ms=5000,
            )
            try:
                admin.delete_topics(list(self.topics.values()))
            finally:
                admin.close()
        except Exception:  # noqa: BLE001, S110 - best effort: leftover topics are harmless
            pass


def _group_gone(leader: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until no process is left in the process group of ``leader`` (reaped meanwhile: a zombie still
    counts as a member of its group)."""
    deadline = time.monotonic() + timeout
    while True:
        leader.poll()
        try:
            os.killpg(leader.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _clock_events(last_ts: int, partitions: int) -> list[tuple[int, dict[str, Any]]]:
    """One event per partition, past the absence window, so that event time (the watermark) moves on."""
    ts = last_ts + CLOCK_ADVANCE_MS
    return [
        (p, {"event_id": f"clock-{p}-{ts}", "user_id": f"sim-clock-{p}", "type": "heartbeat", "ts": ts,
             "sim": {"role": "clock"}})
        for p in range(partitions)
    ]  # fmt: skip


@click.command(context_settings=CONTEXT_SETTINGS, short_help="Run the whole engine locally, with attacks.")
@traffic_options(users=2000, rate=200.0, duration=click.FloatRange(min=1), attack_fraction=0.03)
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=PROJECT_ROOT / "rules",
    help="Rules applied to MySQL before the job starts.",
)
@click.option("--keep-stack", is_flag=True, help="Leave Kafka and MariaDB running at the end.")
@click.option(
    "--startup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    callback=finite,
    help="Seconds to wait for the job to start.",
)
@json_option("The summary as JSON on stdout (progress on stderr).")
@handles_errors
def demo(
    traffic: Traffic,
    rules_dir: Path,
    keep_stack: bool,
    startup_timeout: float,
    as_json: bool,
) -> None:
    """Run the whole engine locally: stack, rules in MySQL, the job on the MiniCluster, simulated traffic
    with attacks, live decisions, then a summary (attacks caught per scenario, false positives, latency).

    Latency is measured from the moment the demo produced an event to the Kafka timestamp of its decision.
    Ctrl-C stops everything the demo started.
    """

    def say(text: str) -> None:
        click.echo(text, err=as_json)

    settings = load_settings()
    run = Demo(settings, keep_stack=keep_stack, out=say)
    code: int = ExitCode.OK
    try:
        with _signals_as_interrupt():
            summary = _run(run, traffic, rules_dir, startup_timeout, say)
        if as_json:
            emit_json(summary)
        else:
            _print_summary(summary, say)
    except KeyboardInterrupt:
        say("\ninterrupted: stopping what the demo started")
        code = ExitCode.INTERRUPTED
    except RiskctlError as exc:
        echo_error(str(exc))
        code = error_exit(exc).code
    finally:
        with _signals_as_interrupt():
            run.stop()
    sys.exit(code)


def _run(run: Demo, traffic: Traffic, rules_dir: Path, startup_timeout: float, say: Any) -> dict[str, Any]:
    """Steps 1 to 5 of the module's docstring; returns the summary (``--json`` prints it as it is)."""
    from riskctl.sim.generator import Simulator
    from riskctl.sim.kafka_io import close_producer, producer, send_paced
    from riskctl.sim.report import build_report

    run.stack_up()
    n_rules = run.apply_rules(rules_dir)
    run.start_job()
    startup_s = run.wait_rules_accepted(n_rules, startup_timeout)

    bootstrap = run.settings.kafka_bootstrap
    collector = Collector(bootstrap, [run.topics["decisions"], run.topics["alerts"]])
    thread = collector.start()
    # stamped behind the clock, so that the clock events after the traffic are not ahead of it (clock_wait_s)
    start_ts = int(time.time() * 1000) - TRAFFIC_BEHIND_MS
    config = traffic.config(start_ts=start_ts, now_ms=start_ts)
    sim = Simulator(config)
    users, rate, duration = traffic.users, traffic.rate, traffic.duration
    sent_events: list[dict[str, Any]] = []
    sent_at: dict[str, int] = {}
    last_shown = [0.0]
    wall0 = time.monotonic()

    def progress() -> None:
        decided, actions, alerts, lines = collector.snapshot()
        for line in lines[-3:]:
            say(f"  {line}")
        elapsed = time.monotonic() - wall0
        counts = " ".join(f"{a} {actions.get(a, 0):,}" for a in ("PASS", "REVIEW", "REJECT"))
        say(
            f"[{elapsed:5.0f}s] sent {len(sent_events):,} ({len(sent_events) / max(elapsed, 1e-9):,.0f}/s), "
            f"decided {decided:,}: {counts}, alerts {alerts}"
        )

    def on_sent(event: dict[str, Any], wall: float) -> None:
        sent_events.append(event)
        sent_at[event["event_id"]] = int(wall * 1000)
        now = time.monotonic()
        if now - last_shown[0] >= 2.0:
            last_shown[0] = now
            run.check_job()
            if collector.error is not None:
                raise collector.error
            progress()

    prod = producer(bootstrap)
    try:
        say(f"simulating {users:,} users at {rate:,.0f} events/s for {duration:,.0f} s (seed {config.seed})")
        send_paced(prod, run.topics["events"], sim, start_ts=start_ts, on_sent=on_sent)
        last_ts = max(e["ts"] for e in sent_events) if sent_events else start_ts
        wait_s = clock_wait_s(last_ts, time.time())
        if wait_s > 0:
            say(f"waiting {wait_s:.0f} s to move event time past the absence window (not ahead of the clock)")
            time.sleep(wait_s)
        for partition, clock in _clock_events(last_ts, 2):
            prod.send(run.topics["events"], clock, key=clock["user_id"], partition=partition)
            sent_events.append(clock)
        prod.flush()
    finally:
        close_producer(prod)

    # the last decisions, and the absence alerts the clock events release
    expected = len(sent_events)
    deadline = time.monotonic() + max(30.0, duration)
    quiet_since = time.monotonic()
    seen = -1
    while time.monotonic() < deadline:
        decided, alerts = collector.counts()
        if decided + alerts != seen:
            seen, quiet_since = decided + alerts, time.monotonic()
        if decided >= expected and time.monotonic() - quiet_since > 3.0:
            break
        run.check_job()
        time.sleep(0.5)
    progress()
    collector.stop.set()
    thread.join(timeout=10)

    report = build_report(sent_events, collector.records)
    latencies = [
        ts - sent_at[eid]
        for eid, ts in collector.record_ts.items()
        if eid in sent_at and not eid.startswith("clock-")
    ]
    return {
        "duration_s": duration,
        "rate": rate,
        "users": users,
        "seed": config.seed,
        "topics": run.topics,
        "job_startup_s": round(startup_s, 1),
        "sent": len(sent_events),
        "sent_rate": round(len(sent_events) / max(time.monotonic() - wall0, 1e-9), 1),
        "latency_ms": {
            "count": len(latencies),
            "p50": _percentile(latencies, 50),
            "p99": _percentile(latencies, 99),
            "max": max(latencies) if latencies else None,
        },
        "report": report,
    }


def _print_summary(summary: dict[str, Any], say: Any) -> None:
    from riskctl.sim.report import format_report

    lat = summary["latency_ms"]
    say("")
    say(f"summary (seed {summary['seed']}, job ready in {summary['job_startup_s']} s)")
    say(format_report(summary["report"]))
    say(
        f"latency produce -> decision in Kafka: p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms"
    )
