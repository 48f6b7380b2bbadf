"""``riskctl serve``: the synchronous decision API in front of the running job (docs/api.md)."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from riskctl.config import load_settings

_SET_HELP = "Override a setting, e.g. --set serve.port=8089 --set serve.fallback=reject (repeatable)."


@click.command()
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help=_SET_HELP)
@click.option("--host", default=None, help="Listen address [default: serve.host].")
@click.option("--port", type=int, default=None, help="Listen port [default: serve.port].")
@click.option("--instance", default=None, help="This instance's name [default: serve.instance, or host-pid].")
def serve(overrides: tuple[str, ...], host: str | None, port: int | None, instance: str | None) -> None:
    """Serve POST /v1/decisions: produce one event, answer with the job's decision (needs the job running
    with the same events and replies topics). Stops gracefully on SIGTERM / Ctrl-C."""
    from riskctl.errors import RiskctlError
    from riskctl.flink.main import apply_overrides
    from riskctl.serve.app import serve as run_api

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = apply_overrides(load_settings(), list(overrides))
        if host is not None:
            settings.serve.host = host
        if port is not None:
            settings.serve.port = port
        if instance is not None:
            settings.serve.instance = instance
        asyncio.run(run_api(settings))
    except (RiskctlError, ValueError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
