"""``riskctl config show``: the effective settings, where each value came from, secrets masked.

The text output is TOML (each value followed by a comment naming its source), so a copy of it is a valid
``riskctl.toml``; ``--json`` gives the same for scripts. The settings are loaded, and so validated, exactly as
every other command loads them (:func:`riskctl.config.resolve`).
"""

from __future__ import annotations

import json
from typing import Any

import click

from riskctl.cli.common import CONTEXT_SETTINGS, emit_json, handles_errors, json_option, set_option
from riskctl.config import Resolved, resolve


@click.group(context_settings=CONTEXT_SETTINGS, short_help="Show the effective settings and their sources.")
def config() -> None:
    """The settings riskctl runs with: defaults, riskctl.toml, RISKCTL_* variables, --set (docs/config.md)."""


@config.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Settings file (TOML).  [default: $RISKCTL_CONFIG, else ./riskctl.toml if present]",
)
@set_option
@json_option("Print JSON: file, settings, sources, derived.")
@handles_errors
def show(config_file: str | None, overrides: tuple[str, ...], as_json: bool) -> None:
    """Print every setting's value and its source, passwords masked.

    The source is "default", the settings file's path, the environment variable's name or "--set"; a bad
    setting is an error naming key, value and source (exit 2, as in every command)."""
    resolved = resolve(config_file, overrides=overrides)
    if as_json:
        emit_json(as_dict(resolved))
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
