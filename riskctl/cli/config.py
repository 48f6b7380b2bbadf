"""``riskctl config show``: the effective settings, where each value came from, secrets masked.

The text output is TOML (each value followed by a comment naming its source), so a copy of it is a valid
``riskctl.toml``; ``--json`` gives the same for scripts. The settings are loaded, and so validated, exactly as
every other command loads them (:func:`riskctl.config.resolve`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from riskctl.config import Resolved, resolve
from riskctl.errors import ConfigError

# the same context, option names and exit code (2: bad configuration) as the other commands; the shared CLI
# module of issue 12 replaces these three definitions
_CTX = {"help_option_names": ["-h", "--help"], "show_default": True}
_SET_HELP = "Override a setting, e.g. --set job.parallelism=2 --set job.rules_source=file (repeatable)."
_EXIT_CONFIG = 2


@click.group(context_settings=_CTX, short_help="Show the effective settings and where each came from.")
def config() -> None:
    """The settings riskctl runs with: defaults, riskctl.toml, RISKCTL_* variables, --set (docs/config.md)."""


@config.command(context_settings=_CTX)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Settings file (TOML).  [default: $RISKCTL_CONFIG, else ./riskctl.toml if present]",
)
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help=_SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: file, settings, sources, derived.")
def show(config_file: str | None, overrides: tuple[str, ...], as_json: bool) -> None:
    """Print every setting's effective value and its source (default, the file's path, the environment
    variable's name or --set), passwords masked; a bad setting is an error naming key, value and source."""
    try:
        resolved = resolve(config_file, overrides=overrides)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_EXIT_CONFIG)
    if as_json:
        click.echo(json.dumps(as_dict(resolved), indent=2))
    else:
        click.echo(as_text(resolved), nl=False)


def as_dict(resolved: Resolved) -> dict[str, Any]:
    """The JSON of ``config show --json``: ``settings`` and ``sources`` have the same sections and keys."""
    values = resolved.settings.redacted()
    return {
        "file": str(resolved.file) if resolved.file else None,
        "settings": values,
        "sources": {
            section: {key: resolved.sources[f"{section}.{key}"] for key in keys}
            for section, keys in values.items()
        },
        "derived": resolved.settings.derived(),
    }


def as_text(resolved: Resolved) -> str:
    """The settings as TOML, one ``key = value  # source`` line each, then the derived values as comments."""
    data = as_dict(resolved)
    lines = [f"# settings file: {data['file'] or 'none'}"]
    for section, values in data["settings"].items():
        assignments = [f"{key} = {_toml(value)}" for key, value in values.items()]
        width = min(max(map(len, assignments)), 70)
        lines += ["", f"[{section}]"]
        lines += [
            f"{line.ljust(width)}  # {data['sources'][section][key]}"
            for line, key in zip(assignments, values, strict=True)
        ]
    lines += ["", "# derived: what clients connect to when a setting above is empty"]
    lines += [f"# {key} = {_toml(value)}" for key, value in data["derived"].items()]
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    """A TOML literal: JSON's strings and numbers are TOML's too (the settings hold no NaN or infinity)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)
