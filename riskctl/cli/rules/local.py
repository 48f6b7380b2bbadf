"""``riskctl rules validate``: check rule files on disk, without MySQL or Flink."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from riskctl.cli.common import CONTEXT_SETTINGS, ExitCode, echo_error, emit_json, json_option
from riskctl.core.errors import RuleError, RuleSetError
from riskctl.core.rules import RuleSet, load_rules


def load_checked(
    path: str,
    *,
    as_json: bool,
    summary: Callable[[int], str],
    document: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> RuleSet:
    """The rules under ``path``; when any is invalid, report every error and end the command with exit 1.

    Shared by ``validate`` and ``apply`` (which checks every rule before it touches MySQL): one ``error:``
    line per error on stderr, then ``summary(number of errors)``; with ``--json`` instead, ``document(the
    errors as dicts)`` on stdout.
    """
    errors = linked_folders(path)
    try:
        ruleset = load_rules(path)
    except RuleSetError as exc:
        errors += exc.errors
    else:
        if not errors:
            return ruleset
    if as_json:
        emit_json(document([e.to_dict() for e in errors]))
    else:
        for err in errors:
            echo_error(str(err))
        click.echo(summary(len(errors)), err=True)
    sys.exit(ExitCode.ERROR)


def linked_folders(path: str) -> list[RuleError]:
    """An error for each link to a folder under ``path``. The loader does not follow them (nor does the
    job's file source), so the rules under one were skipped without a word, and 'apply --prune' deleted
    them from MySQL; a link that loops back read as a folder without rules (found in review)."""
    root = Path(path)
    if not root.is_dir():
        return []
    errors = []
    for folder, names, _files in os.walk(root):  # does not descend into links (followlinks=False)
        for name in sorted(names):
            linked = Path(folder, name)
            if linked.is_symlink():
                reason = (
                    "a link to a folder: rule folders are read without following links, so its rules would "
                    "be skipped (and 'apply --prune' would delete them); copy the folder in, or give it "
                    "to the command on its own"
                )
                errors.append(RuleError(reason, source=str(linked.relative_to(root))))
    return errors


@click.command(
    "validate", context_settings=CONTEXT_SETTINGS, short_help="Check rule files; print every error."
)
@click.argument("path", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@json_option("Print the result as one JSON document.")
def validate(path: str, as_json: bool) -> None:
    """Check every rule under PATH (a folder or a file); print every error, exit 1 if there is any."""
    ruleset = load_checked(
        path,
        as_json=as_json,
        summary=lambda n: f"{n} error{'s' if n != 1 else ''} in {path}",
        document=lambda errors: {"ok": False, "errors": errors},
    )
    summary = [
        {"id": r.id, "version": r.version, "status": r.status, "action": r.action, "source": r.source}
        for r in ruleset.rules
    ]
    if as_json:
        emit_json({"ok": True, "ruleset_version": ruleset.version, "rules": summary})
        return
    for r in summary:
        click.echo(f"ok  {r['id']} v{r['version']}  {r['status']:<8} {r['action']:<6} {r['source']}")
    click.echo(f"{len(summary)} rules valid, rule-set version {ruleset.version}", err=True)
