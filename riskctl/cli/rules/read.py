"""``riskctl rules list | show | history | diff``: read the rules store, and the job's report on each
version."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

import click
import yaml

from riskctl.cli.common import CONTEXT_SETTINGS, emit_json, handles_errors, json_option, printable
from riskctl.cli.rules.mysql import open_store
from riskctl.cli.rules.wait import status_line


def _display(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document with ``id``, ``version``, ``status`` first (how it reads best, and diffs best)."""
    head = {k: document[k] for k in ("id", "version", "status") if k in document}
    return {**head, **{k: v for k, v in document.items() if k not in head}}


def to_yaml(document: Mapping[str, Any]) -> str:
    """A rule document as YAML, in a stable key order. A document holding a character that must not reach
    a terminal as it is (see :func:`printable`; YAML writes C1 controls and bidi marks raw) is written in
    ASCII, every other character escaped: still a valid rule file, with the same values."""
    shown = _display(document)
    text = json.dumps(shown, ensure_ascii=False, default=str)
    return yaml.safe_dump(shown, sort_keys=False, allow_unicode=printable(text) == text, width=110)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


@click.command(
    "list", context_settings=CONTEXT_SETTINGS, short_help="The current rules and the job's report."
)
@json_option()
@handles_errors
def list_rules(as_json: bool) -> None:
    """The current rules in MySQL, with the job's report on each current version (from rule_status)."""
    with open_store() as store:
        rules = store.current()
        job = store.job_status((r.rule_id, r.version) for r in rules)
        rows = []
        for rule in rules:
            row = rule.to_dict()
            del row["document"]
            status = job.get((rule.rule_id, rule.version))
            row["job"] = status.to_dict() if status else None
            rows.append(row)
        if as_json:
            emit_json({"ok": True, "table": store.names.rules, "rules": rows})
            return
        if not rows:
            click.echo(f"no rules in table {store.names.rules!r} (add some with 'riskctl rules apply DIR')")
            return
        width = max(len(printable(r["id"])) for r in rows)
        click.echo(
            f"{'ID':<{width}}  {'VERSION':>7}  {'STATUS':<8}  {'ACTION':<6}  {'JOB':<8}  {'UPDATED':<23}  BY"
        )
        for rule, row in zip(rules, rows, strict=True):
            job_state = row["job"]["state"] if row["job"] else "-"
            line = (
                f"{printable(rule.rule_id):<{width}}  {rule.version:>7}  {rule.status:<8}  "
                f"{rule.action or '-':<6}  {job_state:<8}  {_when(rule.updated_at):<23}  "
                f"{rule.updated_by or '-'}"
            )
            click.echo(printable(line))


@click.command(
    "show", context_settings=CONTEXT_SETTINGS, short_help="Print a rule (or a past version) as YAML."
)
@click.argument("rule_id", metavar="ID")
@click.option(
    "--version",
    "-v",
    "version",
    type=click.IntRange(min=1),
    default=None,
    help="A past version (default: the current one).",
)
@json_option()
@handles_errors
def show(rule_id: str, version: int | None, as_json: bool) -> None:
    """Print a rule's document as YAML (the current version, or --version N from its history)."""
    with open_store() as store:
        if version is None:
            rule = store.require(rule_id)
            document, ver, status = rule.document, rule.version, rule.status
            meta = f"{_when(rule.updated_at)} by {rule.updated_by or '-'}"
            payload: dict[str, Any] = {"ok": True, "current": True, **rule.to_dict()}
        else:
            entry = store.version(rule_id, version)
            assert entry.document is not None
            current = store.get(rule_id)
            document, ver, status = entry.document, entry.version, entry.status
            meta = f"{entry.change}, {_when(entry.created_at)} by {entry.author or '-'}"
            if entry.comment:
                meta += f": {entry.comment}"
            is_current = current is not None and current.version == entry.version
            payload = {"ok": True, "current": is_current, **entry.to_dict()}
        job = store.job_status([(rule_id, ver)]).get((rule_id, ver))
        payload["job"] = job.to_dict() if job else None
        if as_json:
            emit_json(payload)
            return
        click.echo(printable(f"# rule {rule_id}, version {ver} ({status}), {meta}"))
        if job:
            click.echo(f"# job: {status_line(job)}")
        click.echo(to_yaml(document), nl=False)


#: how many versions ``history`` shows unless told (--limit): the newest
HISTORY_LIMIT = 20


@click.command(
    "history",
    context_settings=CONTEXT_SETTINGS,
    short_help=f"The versions of a rule (the newest {HISTORY_LIMIT}), oldest first.",
)
@click.argument("rule_id", metavar="ID")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=0),
    default=HISTORY_LIMIT,
    metavar="N",
    help="Show the newest N versions; 0: every version.",
)
@json_option()
@handles_errors
def history(rule_id: str, limit: int, as_json: bool) -> None:
    """The newest versions of a rule (--limit, 20 by default), oldest first: status, change, author, time,
    comment; then how many older versions were not shown."""
    # Bounded: a rule written thousands of times (by a script, by SQL) printed every version, read each with
    # its document (found in review). latest_history reads the newest N on the history's key.
    with open_store() as store:
        entries, older = store.latest_history(rule_id, limit or None)
        current = store.get(rule_id)
        if as_json:
            emit_json(
                {
                    "ok": True,
                    "id": rule_id,
                    "current_version": current.version if current else None,
                    "limit": limit or None,
                    "older_not_shown": older,
                    "versions": [e.to_dict() for e in entries],
                }
            )
            return
        click.echo(f"{'VERSION':>7}  {'STATUS':<8}  {'CHANGE':<9}  {'TIME':<23}  {'AUTHOR':<12}  COMMENT")
        for e in entries:
            mark = "*" if current is not None and current.version == e.version else " "
            line = (
                f"{e.version:>6}{mark}  {e.status:<8}  {e.change:<9}  {_when(e.created_at):<23}  "
                f"{e.author or '-':<12}  {e.comment or ''}"
            )
            click.echo(printable(line.rstrip()))
        if older:
            versions = "version" if older == 1 else "versions"
            click.echo(
                f"{older} older {versions} not shown (the newest {limit} are): --limit N shows more, "
                "--limit 0 every version",
                err=True,
            )
        click.echo("* current version" if current else printable(f"rule {rule_id!r} is deleted"), err=True)


@click.command("diff", context_settings=CONTEXT_SETTINGS)
@click.argument("rule_id", metavar="ID")
@click.argument("a", type=click.IntRange(min=1))
@click.argument("b", type=click.IntRange(min=1))
@json_option()
@handles_errors
def diff(rule_id: str, a: int, b: int, as_json: bool) -> None:
    """Unified diff of the YAML of versions A and B of a rule."""
    with open_store() as store:
        old, new = store.version(rule_id, a), store.version(rule_id, b)
        assert old.document is not None and new.document is not None
        lines = difflib.unified_diff(
            to_yaml(old.document).splitlines(keepends=True),
            to_yaml(new.document).splitlines(keepends=True),
            fromfile=printable(f"{rule_id} v{a}"),
            tofile=printable(f"{rule_id} v{b}"),
        )
        text = "".join(lines)
        if as_json:
            emit_json({"ok": True, "id": rule_id, "from": a, "to": b, "identical": not text, "diff": text})
            return
        if text:
            click.echo(text, nl=False)
        else:
            same = f"versions {a} and {b} of {rule_id} have the same document (apart from the version)"
            click.echo(printable(same), err=True)
