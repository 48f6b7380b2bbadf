"""``riskctl rules apply DIR``: a folder of rules to MySQL, every rule checked first, written in one
transaction."""

from __future__ import annotations

from typing import Any

import click

from riskctl.cli.common import CONTEXT_SETTINGS, emit_json, handles_errors, json_option, printable
from riskctl.cli.rules.local import load_checked
from riskctl.cli.rules.mysql import author_option, comment_option, default_author, open_store, wait_option
from riskctl.cli.rules.wait import finish_write
from riskctl.store.rules_store import Plan

_LABELS = {
    "create": "to create",
    "update": "to update",
    "unchanged": "unchanged",
    "delete": "to delete",
    "keep": "kept",
}


def _print_plan(plan: Plan, directory: str, table: str) -> None:
    click.echo(f"plan: {directory} -> MySQL table {table!r}")
    width = max((len(printable(item.rule_id)) for item in plan.items), default=10)
    for item in plan.items:
        if item.op == "create":
            versions = f"   -> v{item.to_version}"
        elif item.op in ("update", "delete"):
            versions = f"v{item.from_version} -> v{item.to_version}"
        else:
            versions = f"v{item.from_version}"
        note = item.source or ""
        if item.op == "keep":
            note = f"in MySQL, not in {directory}: left alone (--prune deletes it)"
        elif item.op == "delete":
            note = f"in MySQL, not in {directory}: deleted (--prune)"
        line = f"  {item.op:<10} {printable(item.rule_id):<{width}}  {versions:<12}  {note}"
        click.echo(printable(line.rstrip()))
    counts = [
        f"{plan.count(op)} {label}"
        for op, label in _LABELS.items()
        if plan.count(op) or op in ("create", "update", "unchanged")
    ]
    click.echo(", ".join(counts))


@click.command(
    "apply",
    context_settings=CONTEXT_SETTINGS,
    short_help="Publish a folder of rules to MySQL in one transaction.",
)
@click.argument("directory", metavar="DIR", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--dry-run", is_flag=True, help="Print the plan, write nothing.")
@click.option("--prune", is_flag=True, help="Also delete rules that are in MySQL but not in DIR.")
@click.option(
    "--allow-empty",
    is_flag=True,
    help="With --prune, accept a DIR that holds no rule (it deletes every rule in MySQL).",
)
@author_option
@comment_option
@wait_option
@json_option()
@handles_errors
def apply(
    directory: str,
    dry_run: bool,
    prune: bool,
    allow_empty: bool,
    author: str | None,
    comment: str | None,
    wait_s: float,
    as_json: bool,
) -> None:
    """Validate every rule in DIR, print the plan, and write new versions of the changed rules in one
    transaction (all or nothing). Unchanged rules keep their version; a rule's `version` in a file is ignored
    (MySQL numbers the versions).
    """
    ruleset = load_checked(  # nothing touches MySQL before every rule is valid
        directory,
        as_json=as_json,
        summary=lambda n: f"{n} error(s) in {directory}: nothing written to MySQL",
        document=lambda errors: {
            "ok": False,
            "error": {
                "type": "invalid_rules",
                "message": f"{len(errors)} invalid rule(s): nothing written",
                "errors": errors,
            },
        },
    )
    if prune and not ruleset.rules and not allow_empty:
        # An empty folder, a folder of files with another extension, a symlink loop or a mount that is not
        # there: the plan deleted every rule in MySQL, exit 0 (found in review).
        msg = (
            f"{directory} holds no rule (rule files end in .yaml, .yml or .json): --prune would delete every "
            "rule in MySQL; give --allow-empty as well if that is what you mean"
        )
        raise click.UsageError(msg)
    author = author or default_author()
    with open_store() as store:
        plan = store.plan(ruleset, prune=prune)
        out: dict[str, Any] = {"ok": True, "table": store.names.rules, "dry_run": dry_run, **plan.to_dict()}
        if not as_json:
            _print_plan(plan, directory, store.names.rules)
        if dry_run or not plan.changes:
            out["applied"] = []
            if as_json:
                emit_json(out)
            else:
                click.echo("dry run: nothing written" if dry_run else "nothing to apply: MySQL is up to date")
            return
        changes = store.apply(plan, author=author, comment=comment)
        out["applied"] = [c.to_dict() for c in changes]
        if not as_json:
            click.echo(f"applied {len(changes)} change(s) in one transaction (author {author})")
        finish_write(store, changes, wait_s, out, as_json=as_json)
