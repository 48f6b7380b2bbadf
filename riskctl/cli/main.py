"""Entry point of the ``riskctl`` command.

Command groups live in their own modules and are registered here. Imports are lazy so that ``riskctl --help``
and the pure-core commands do not pay for importing PyFlink.
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command or group
_COMMANDS: dict[str, str] = {
    "stack": "riskctl.cli.stack:stack",
    "replay": "riskctl.cli.replay:replay",
    "rules": "riskctl.cli.rules:rules",
    "run": "riskctl.cli.job:run",
    "submit": "riskctl.cli.job:submit",
    "simulate": "riskctl.cli.simulate:simulate",
    "decisions": "riskctl.cli.decisions:decisions",
    "demo": "riskctl.cli.demo:demo",
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


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="riskctl")
def cli() -> None:
    """riskctl: real-time risk decisions on Kafka events, rules in MySQL, run by Flink."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
