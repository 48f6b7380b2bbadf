"""Entry point of the ``riskctl`` command.

Each command or group lives in its own module of ``riskctl/cli/`` (a group with many subcommands, ``rules``,
in its own package) and is registered here by name, one line each. Imports are lazy so that ``riskctl
--help`` and the pure-core commands do not pay for importing PyFlink. What every command shares (context
settings, exit codes, JSON and error output, common options) is :mod:`riskctl.cli.common`.
"""

from __future__ import annotations

import importlib

import click

from riskctl.cli.common import CONTEXT_SETTINGS, show_config_warnings

# command name -> "module:attribute" of a click command or group
_COMMANDS: dict[str, str] = {
    "config": "riskctl.cli.config:config",
    "stack": "riskctl.cli.stack:stack",
    "replay": "riskctl.cli.replay:replay",
    "rules": "riskctl.cli.rules:rules",
    "run": "riskctl.cli.job:run",
    "submit": "riskctl.cli.job:submit",
    "warm": "riskctl.cli.job:warm",
    "simulate": "riskctl.cli.simulate:simulate",
    "decisions": "riskctl.cli.decisions:decisions",
    "demo": "riskctl.cli.demo:demo",
    "alerts": "riskctl.cli.alerts:alerts",
    "console": "riskctl.cli.console:console",
    "serve": "riskctl.cli.serve:serve",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="riskctl")
def cli() -> None:
    """riskctl: real-time risk decisions on Kafka events, rules in MySQL, run by Flink."""
    show_config_warnings()  # before any command loads the settings


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
