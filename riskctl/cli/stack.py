"""``riskctl stack up | down | status``: the local Kafka, MariaDB and (optionally) Flink cluster."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

from riskctl.cli.common import (
    CONTEXT_SETTINGS,
    ExitCode,
    echo_error,
    emit_json,
    fail,
    handles_errors,
    json_option,
    printable,
)
from riskctl.config import load_settings
from riskctl.errors import RiskctlError
from riskctl.stack.process import ALIVE
from riskctl.stack.services import STOP_TIMEOUT, FlinkCluster, Service, services

_PORT_HELP = (
    "Ports and the data folder come from riskctl.toml [stack] or RISKCTL_STACK_* variables, e.g. "
    "RISKCTL_STACK_KAFKA_PORT=19092 RISKCTL_STACK_MYSQL_PORT=13306 RISKCTL_STACK_FLINK_REST_PORT=18081 "
    "RISKCTL_STACK_DIR=.stack"
)


@click.group(
    context_settings=CONTEXT_SETTINGS,
    short_help="Start, stop, inspect the local Kafka, MariaDB, Flink.",
    help=f"Run the local stack on 127.0.0.1: Kafka (KRaft), MariaDB with binlog, Flink. {_PORT_HELP}",
)
def stack() -> None:
    pass


def _all(flink: bool, *, err: bool = False) -> list[Service]:
    """The services; each prints a line (on stderr when ``err``) when the command has to wait for its lock."""
    out = services(load_settings(), flink=flink)
    for svc in out:
        svc.on_wait = _waiting_line(svc.name, err=err)
    return out


def _waiting_line(name: str, *, err: bool) -> Callable[[str], None]:
    def echo(text: str) -> None:
        click.echo(printable(f"{name:8} {text}"), err=err)

    return echo


@stack.command(context_settings=CONTEXT_SETTINGS, short_help="Start the services, wait until each answers.")
@click.option(
    "--flink/--no-flink",
    default=False,
    help="Also start a standalone Flink cluster (JobManager + TaskManager, thread mode).",
)
@click.option("--timeout", default=120.0, help="Seconds to wait for each service.")
@json_option("Print what was started as JSON (progress lines on stderr).")
@handles_errors
def up(flink: bool, timeout: float, as_json: bool) -> None:
    """Start the services (those already running are left alone) and wait until each answers."""
    results: list[dict[str, Any]] = []
    for svc in _all(flink, err=as_json):
        t0 = time.monotonic()
        try:
            started = svc.start(timeout=timeout)
        except RiskctlError as exc:
            # a service that fails to start is an error of this command (1); one merely down is 3 (status)
            fail(ExitCode.ERROR, str(exc), as_json=as_json, kind="start", service=svc.name)
        seconds = round(time.monotonic() - t0, 1)
        what = f"started in {seconds:.1f} s" if started else "already running"
        click.echo(f"{svc.name:8} {svc.address:22} {what}", err=as_json)
        results.append({"name": svc.name, "address": svc.address, "started": started, "seconds": seconds})
    if as_json:
        emit_json(results)


@stack.command(context_settings=CONTEXT_SETTINGS, short_help="Stop every service, leave no process behind.")
@click.option(
    "--timeout",
    default=STOP_TIMEOUT,
    show_default=True,
    help="Seconds each process gets to stop on SIGTERM before it is killed (SIGKILL).",
)
@json_option("Print what was stopped as JSON.")
@handles_errors
def down(timeout: float, as_json: bool) -> None:
    """Stop every service of the stack (Flink too, if it runs) and leave no process behind.

    A service that did not stop on SIGTERM is killed, and said so: it may need recovery at its next start.
    A process of this stack's that lost its pid file is found by its owner mark and stopped too. Exit 1 when
    a process still runs after SIGKILL."""
    reports = []
    for svc in reversed(_all(flink=True, err=as_json)):
        report = svc.shut_down(timeout)
        if not as_json:
            click.echo(f"{svc.name:8} {report.summary()}")
        reports.append(report)
    if as_json:
        emit_json([r.to_dict() for r in reports])
    left = [f"{r.name} (pid {', '.join(map(str, r.pids(ALIVE)))})" for r in reports if r.pids(ALIVE)]
    if left:
        if not as_json:
            echo_error(f"still running after SIGKILL: {'; '.join(left)}")
        sys.exit(ExitCode.ERROR)


@stack.command(context_settings=CONTEXT_SETTINGS)
@json_option("Print JSON for scripts.")
@handles_errors
def status(as_json: bool) -> None:
    """Show each service, its address and state. Exit 0 when Kafka and MariaDB run, 3 otherwise."""
    statuses = [svc.status() for svc in _all(flink=True)]
    if as_json:
        emit_json([s.to_dict() for s in statuses])
    else:
        for s in statuses:
            pid = f"pid {s.pid}" if s.pid else ""
            click.echo(f"{s.name:8} {s.address:22} {s.state:10} {pid:11} {s.detail or s.log}")
    core_up = all(s.state == "running" for s in statuses if s.name != FlinkCluster.name)
    sys.exit(ExitCode.OK if core_up else ExitCode.UNAVAILABLE)
