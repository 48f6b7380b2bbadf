"""``riskctl stack up | down | status``: the local Kafka, MariaDB and (optionally) Flink cluster."""

from __future__ import annotations

import json
import sys
import time

import click

from riskctl.config import load_settings
from riskctl.errors import RiskctlError
from riskctl.stack.services import FlinkCluster, Service, services

_PORT_HELP = (
    "Ports and the data folder come from riskctl.toml [stack] or RISKCTL_STACK_* variables, e.g. "
    "RISKCTL_STACK_KAFKA_PORT=19092 RISKCTL_STACK_MYSQL_PORT=13306 RISKCTL_STACK_FLINK_REST_PORT=18081 "
    "RISKCTL_STACK_DIR=.stack"
)


@click.group(
    help=f"Run the local stack on 127.0.0.1: Kafka (KRaft), MariaDB with binlog, Flink. {_PORT_HELP}"
)
def stack() -> None:
    pass


def _all(flink: bool) -> list[Service]:
    return services(load_settings(), flink=flink)


@stack.command()
@click.option(
    "--flink/--no-flink",
    default=False,
    show_default=True,
    help="Also start a standalone Flink cluster (JobManager + TaskManager, thread mode).",
)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for each service.")
def up(flink: bool, timeout: float) -> None:
    """Start the services (those already running are left alone) and wait until each answers."""
    for svc in _all(flink):
        t0 = time.monotonic()
        try:
            started = svc.start(timeout=timeout)
        except RiskctlError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        what = f"started in {time.monotonic() - t0:.1f} s" if started else "already running"
        click.echo(f"{svc.name:8} {svc.address:22} {what}")


@stack.command()
def down() -> None:
    """Stop every service of the stack (Flink too, if it runs) and leave no process behind."""
    for svc in reversed(_all(flink=True)):
        stopped = svc.stop()
        click.echo(f"{svc.name:8} {'stopped' if stopped else 'was not running'}")


@stack.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(as_json: bool) -> None:
    """Show each service, its address and state. Exit 0 when Kafka and MariaDB run, 3 otherwise."""
    statuses = [svc.status() for svc in _all(flink=True)]
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
    else:
        for s in statuses:
            pid = f"pid {s.pid}" if s.pid else ""
            click.echo(f"{s.name:8} {s.address:22} {s.state:10} {pid:11} {s.detail or s.log}")
    core_up = all(s.state == "running" for s in statuses if s.name != FlinkCluster.name)
    sys.exit(0 if core_up else 3)
