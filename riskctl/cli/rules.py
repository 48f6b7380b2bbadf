"""``riskctl rules``: work with rule documents.

One click group; each subcommand is a small function. ``validate`` works on a folder of YAML files; the MySQL
subcommands (apply, list, ...) are added to the same group by their own module (see ``register``).
"""

from __future__ import annotations

import json
import sys

import click

from riskctl.core.errors import RuleSetError
from riskctl.core.rules import load_rules


@click.group("rules", context_settings={"help_option_names": ["-h", "--help"]})
def rules() -> None:
    """Validate and manage rule documents."""


@rules.command("validate")
@click.argument("path", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def validate(path: str, as_json: bool) -> None:
    """Check every rule under PATH (a folder or a file); print every error, exit 1 if there is any."""
    try:
        ruleset = load_rules(path)
    except RuleSetError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "errors": [e.to_dict() for e in exc.errors]}, indent=2))
        else:
            for err in exc.errors:
                click.echo(f"error: {err}", err=False)
            n = len(exc.errors)
            click.echo(f"{n} error{'s' if n != 1 else ''} in {path}", err=True)
        sys.exit(1)
    summary = [
        {"id": r.id, "version": r.version, "status": r.status, "action": r.action, "source": r.source}
        for r in ruleset.rules
    ]
    if as_json:
        click.echo(json.dumps({"ok": True, "ruleset_version": ruleset.version, "rules": summary}, indent=2))
        return
    for r in summary:
        click.echo(f"ok  {r['id']} v{r['version']}  {r['status']:<8} {r['action']:<6} {r['source']}")
    click.echo(f"{len(summary)} rules valid, rule-set version {ruleset.version}", err=True)


def register(command: click.Command) -> None:
    """Add a subcommand to the ``rules`` group (for the modules that manage rules in MySQL)."""
    rules.add_command(command)


def _register_store_commands() -> None:
    # apply, list, show, history, diff, enable, disable, shadow, rollback, delete: the rules store in MySQL
    from riskctl.cli.rules_store import COMMANDS

    for command in COMMANDS:
        register(command)


_register_store_commands()
