"""``riskctl console``: the web console over the rules store (docs/console.md), and its accounts."""

from __future__ import annotations

import os

import click

from riskctl.cli.common import CONTEXT_SETTINGS, ExitCode, fail, handles_errors

PASSWORD_ENV = "RISKCTL_CONSOLE_PASSWORD"  # noqa: S105 - the name of the variable, not a password


@click.group(
    "console",
    context_settings=CONTEXT_SETTINGS,
    invoke_without_command=True,
    short_help="Serve the web console (rules, edits, backtests).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    help="Address to listen on; cookies are Secure on any other than loopback (put TLS in front).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8787, help="Port to listen on.")
@click.pass_context
@handles_errors
def console(ctx: click.Context, host: str, port: int) -> None:
    """Serve the web console on HOST:PORT (the rules store of the configuration's MySQL)."""
    if ctx.invoked_subcommand is not None:
        return

    from riskctl.config import load_settings
    from riskctl.config.settings import parse_trusted_proxies
    from riskctl.console.app import create_app, is_loopback, mysql_backend
    from riskctl.console.server import Server, flush_logs, server_config

    settings = load_settings()
    backend = mysql_backend(settings)
    with backend.open():  # fail now, with what to start, when MySQL does not answer; migrates the tables
        pass
    from riskctl.console.feed import Feed, KafkaTail

    feed = Feed()
    topics = [settings.job.decisions_topic, settings.job.alerts_topic]
    KafkaTail(feed, settings.kafka_bootstrap, topics).start()  # a daemon thread; Kafka down: pages say so
    from riskctl.console.backtest import read_topic_window

    def events(window_ms: int) -> bytes:
        return read_topic_window(settings.kafka_bootstrap, settings.job.events_topic, window_ms)

    from riskctl.cli.replay import ReplaySettings

    decides = ReplaySettings.of(settings.job)  # backtests and replays decide as the job does
    app = create_app(
        backend, secure_cookies=not is_loopback(host), feed=feed, events=events, replay_settings=decides
    )
    click.echo(f"riskctl console on http://{host}:{port}/ (Ctrl-C to stop)", err=True)
    # bounded connections and slow clients (riskctl/console/server.py, docs/console.md)
    try:
        proxies = parse_trusted_proxies(settings.console.trusted_proxies)
        Server(server_config(app, host, port, trusted_proxies=proxies)).run()
    finally:  # the counts of lines held back (a flood that ended within the last LOG_EVERY_S)
        flush_logs()


@console.group("user", context_settings=CONTEXT_SETTINGS, short_help="Console accounts.")
def user() -> None:
    """Console accounts."""


@user.command("add", context_settings=CONTEXT_SETTINGS, short_help="Create a user, or reset one.")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["viewer", "analyst", "approver"]),
    required=True,
    help="What the user may do.",
)
@handles_errors
def add(name: str, role: str) -> None:
    """Create user NAME (or set its role and password): the password comes from
    $RISKCTL_CONSOLE_PASSWORD, else a prompt (never an argument, which would show in the process
    list and the shell history)."""
    from riskctl.cli.rules.mysql import default_author
    from riskctl.config import load_settings
    from riskctl.console.accounts import AccountError, AccountStore
    from riskctl.store.connection import connect

    password = os.environ.get(PASSWORD_ENV) or click.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    settings = load_settings()
    conn = connect(settings)
    try:
        created = AccountStore(conn, settings.job.rules_table).add_user(
            name, role, password, by=default_author()
        )
    except AccountError as exc:
        fail(ExitCode.USAGE, str(exc))
    finally:
        conn.close()
    click.echo(f"{'created' if created else 'updated'} user {name} ({role})")
