"""``riskctl serve``: the synchronous decision API in front of the running job (docs/api.md).

Errors end through :mod:`riskctl.cli.common`, one ``error: ...`` line, never a traceback: exit code 2 for a
setting refused as the settings load (a bad ``--set``, an unknown ``RISKCTL_SERVE_*`` variable), 3 for a
configuration the instance cannot serve with or when Kafka does not answer (or a topic is missing).
"""

from __future__ import annotations

import asyncio
import logging

import click

from riskctl.cli.common import CONTEXT_SETTINGS, handles_errors, set_option
from riskctl.config import load_settings


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--host", default=None, help="Listen address [default: serve.host].")
@click.option("--port", type=int, default=None, help="Listen port [default: serve.port].")
@click.option("--instance", default=None, help="This instance's name [default: serve.instance, or host-pid].")
@set_option
@handles_errors
def serve(host: str | None, port: int | None, instance: str | None, overrides: tuple[str, ...]) -> None:
    """The synchronous decision API (POST /v1/decisions).

    Each request's event goes to the events topic and its decision comes back from the job (which must run
    with the same events and replies topics). Stops gracefully on SIGTERM / Ctrl-C."""
    from riskctl.serve.app import serve as run_api

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pairs = list(overrides)
    for key, value in (("host", host), ("port", port), ("instance", instance)):
        if value is not None:
            pairs.append(f"serve.{key}={value}")  # checked like every other source
    settings = load_settings(overrides=pairs)
    asyncio.run(run_api(settings))
