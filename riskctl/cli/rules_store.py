"""``riskctl rules apply | list | show | history | diff | enable | disable | shadow | rollback | delete``.

The subcommands of ``riskctl rules`` that work on the rules store in MySQL (``riskctl.store``). They are
attached to the ``rules`` group of :mod:`riskctl.cli.rules` (see ``COMMANDS``). Every one takes ``--json``;
errors are one line on stderr (or one JSON document on stdout with ``--json``), never a traceback.

Exit codes: 0 ok; 1 invalid rules, unknown rule or version, or another error; 2 bad usage; 3 MySQL
unreachable or not configured; 4 version conflict (someone else changed the rule); 5 the job refused a
version (``--wait``); 6 timed out waiting for the job (``--wait``).
"""

from __future__ import annotations

import difflib
import functools
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
import yaml

from riskctl.config import load_settings
from riskctl.core.errors import RuleSetError
from riskctl.core.rules import load_rules
from riskctl.errors import ConfigError, ServiceError
from riskctl.store.connection import connect, describe_operational_error
from riskctl.store.errors import RuleNotFoundError, VersionConflictError, VersionNotFoundError
from riskctl.store.rules_store import Change, JobStatus, Plan, RuleStore

EXIT_ERROR = 1
EXIT_UNAVAILABLE = 3
EXIT_CONFLICT = 4
EXIT_REFUSED = 5
EXIT_TIMEOUT = 6

_POLL_S = 0.25
_CTX = {"help_option_names": ["-h", "--help"], "show_default": True}

P = ParamSpec("P")
R = TypeVar("R")


# -- output and errors ---------------------------------------------------------------------------------------
def _emit_json(payload: Mapping[str, Any]) -> None:
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def _fail(as_json: bool, code: int, kind: str, message: str, **extra: Any) -> NoReturn:
    if as_json:
        _emit_json({"ok": False, "error": {"type": kind, "message": message, **extra}})
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handles_store_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the store's errors into one clear line (or JSON) and an exit code; the command must take
    ``as_json``.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import pymysql

        as_json = bool(kwargs.get("as_json", False))
        try:
            return func(*args, **kwargs)
        except VersionConflictError as exc:
            _fail(
                as_json,
                EXIT_CONFLICT,
                "conflict",
                str(exc),
                rule_id=exc.rule_id,
                expected=exc.expected,
                actual=exc.actual,
            )
        except RuleNotFoundError as exc:
            _fail(
                as_json,
                EXIT_ERROR,
                "unknown_rule",
                str(exc),
                rule_id=exc.rule_id,
                suggestion=exc.suggestion,
                deleted_version=exc.deleted_version,
            )
        except VersionNotFoundError as exc:
            _fail(
                as_json,
                EXIT_ERROR,
                "unknown_version",
                str(exc),
                rule_id=exc.rule_id,
                version=exc.version,
                versions=exc.versions,
            )
        except RuleSetError as exc:
            errors = [e.to_dict() for e in exc.errors]
            _fail(as_json, EXIT_ERROR, "invalid_rule", str(exc), errors=errors)
        except ServiceError as exc:
            _fail(as_json, EXIT_UNAVAILABLE, "unavailable", str(exc), service=exc.service)
        except ConfigError as exc:
            _fail(as_json, EXIT_UNAVAILABLE, "config", str(exc))
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args else None
            if code in (2003, 2006, 2013):  # the server went away mid-command
                err = describe_operational_error(load_settings(), exc)
                _fail(as_json, EXIT_UNAVAILABLE, "unavailable", str(err), service=err.service)
            _fail(
                as_json,
                EXIT_ERROR,
                "mysql",
                f"MySQL error {code}: {exc.args[1] if len(exc.args) > 1 else exc}",
            )
        except pymysql.err.MySQLError as exc:
            _fail(as_json, EXIT_ERROR, "mysql", f"MySQL error: {exc}")

    return wrapper


@contextmanager
def open_store() -> Iterator[RuleStore]:
    """The rules store of ``settings.job.rules_table`` (migrated), its connection closed at the end."""
    settings = load_settings()
    conn = connect(settings)
    try:
        yield RuleStore(conn, settings.job.rules_table)
    finally:
        conn.close()


def default_author() -> str:
    """``$RISKCTL_AUTHOR``, else the login name."""
    if os.environ.get("RISKCTL_AUTHOR"):
        return os.environ["RISKCTL_AUTHOR"]
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _display(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document with ``id``, ``version``, ``status`` first (how it reads best, and diffs best)."""
    head = {k: document[k] for k in ("id", "version", "status") if k in document}
    return {**head, **{k: v for k, v in document.items() if k not in head}}


def to_yaml(document: Mapping[str, Any]) -> str:
    """A rule document as YAML, in a stable key order."""
    return yaml.safe_dump(_display(document), sort_keys=False, allow_unicode=True, width=110)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


# -- common options ------------------------------------------------------------------------------------------
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document, for scripts.")
author_option = click.option(
    "--author", default=None, show_default="$RISKCTL_AUTHOR or your login name", help="Who makes the change."
)
comment_option = click.option("--comment", "-m", default=None, help="Why: kept in the rule's history.")
expect_option = click.option(
    "--expect-version",
    type=click.IntRange(min=1),
    default=None,
    help="Write only if the rule is still at this version (else: a conflict, exit 4, nothing written).",
)
wait_option = click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="SECONDS",
    help="After writing, wait up to SECONDS for the running job to report each new version accepted or "
    "refused (table rule_status); 0: do not wait.",
)


# -- waiting for the job -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WaitTarget:
    """A version whose fate the job must report, and the states that end the wait for it."""

    rule_id: str
    version: int
    states: tuple[str, ...]


def wait_targets(changes: Sequence[Change]) -> list[WaitTarget]:
    """What to wait for after ``changes``: the new version of each written rule; for a deletion, the job's
    ``deleted`` report on the version it dropped.
    """
    targets = []
    for change in changes:
        if change.change == "delete":
            if change.from_version is not None:
                targets.append(WaitTarget(change.rule_id, change.from_version, ("deleted",)))
        else:
            targets.append(WaitTarget(change.rule_id, change.version, ("accepted", "refused")))
    return targets


def wait_for_job(
    store: RuleStore, targets: Sequence[WaitTarget], timeout_s: float, *, as_json: bool
) -> tuple[int, list[dict[str, Any]]]:
    """Poll ``rule_status`` until every target has a final state or ``timeout_s`` passed; print each result
    as it arrives. Returns the exit code (0, refused or timeout) and the results.
    """
    pending = {(t.rule_id, t.version): t for t in targets}
    results: dict[tuple[str, int], dict[str, Any]] = {}
    if not as_json:
        n = len(pending)
        click.echo(
            f"waiting up to {timeout_s:g} s for the job to report {n} version{'s' if n != 1 else ''}..."
        )
    deadline = time.monotonic() + timeout_s
    while pending:
        found = store.job_status(pending)
        for key, status in sorted(found.items()):
            target = pending[key]
            if status.state not in target.states:
                continue
            del pending[key]
            results[key] = status.to_dict()
            if not as_json:
                click.echo(_status_line(status))
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    for key, target in sorted(pending.items()):
        results[key] = {"id": target.rule_id, "version": target.version, "state": "timeout"}
    ordered = [results[k] for k in sorted(results)]
    refused = [r for r in ordered if r["state"] == "refused"]
    if pending:
        if not as_json:
            missing = ", ".join(f"{t.rule_id} v{t.version}" for t in pending.values())
            click.echo(
                f"error: timed out after {timeout_s:g} s: the job has not reported {missing} (is the job "
                f"running and reading table {store.names.rules!r}? it reports in {store.names.status!r})",
                err=True,
            )
        return EXIT_TIMEOUT, ordered
    if refused:
        if not as_json:
            click.echo(
                f"error: the job refused {len(refused)} version(s); it keeps running the previous ones",
                err=True,
            )
        return EXIT_REFUSED, ordered
    return 0, ordered


def _status_line(status: JobStatus) -> str:
    line = f"{status.state:<9} {status.rule_id} v{status.version}"
    if status.reason:
        line += f": {status.reason}"
    if status.field:
        line += f" (field {status.field!r})"
    return line


# -- apply ---------------------------------------------------------------------------------------------------
def _print_plan(plan: Plan, directory: str, table: str) -> None:
    click.echo(f"plan: {directory} -> MySQL table {table!r}")
    width = max((len(item.rule_id) for item in plan.items), default=10)
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
        click.echo(f"  {item.op:<10} {item.rule_id:<{width}}  {versions:<12}  {note}".rstrip())
    labels = {"create": "to create", "update": "to update", "unchanged": "unchanged", "delete": "to delete"}
    labels["keep"] = "kept"
    counts = [
        f"{plan.count(op)} {label}"
        for op, label in labels.items()
        if plan.count(op) or op in ("create", "update", "unchanged")
    ]
    click.echo(", ".join(counts))


@click.command("apply", context_settings=_CTX)
@click.argument("directory", metavar="DIR", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--dry-run", is_flag=True, help="Print the plan, write nothing.")
@click.option("--prune", is_flag=True, help="Also delete rules that are in MySQL but not in DIR.")
@author_option
@comment_option
@wait_option
@json_option
@handles_store_errors
def apply(
    directory: str,
    dry_run: bool,
    prune: bool,
    author: str | None,
    comment: str | None,
    wait_s: float,
    as_json: bool,
) -> None:
    """Validate every rule in DIR, print the plan, and write new versions of the changed rules in one
    transaction (all or nothing). Unchanged rules keep their version; a rule's `version` in a file is ignored
    (MySQL numbers the versions).
    """
    try:
        ruleset = load_rules(directory)  # nothing touches MySQL before every rule is valid
    except RuleSetError as exc:
        if as_json:
            _emit_json(
                {
                    "ok": False,
                    "error": {
                        "type": "invalid_rules",
                        "message": f"{len(exc.errors)} invalid rule(s): nothing written",
                        "errors": [e.to_dict() for e in exc.errors],
                    },
                }
            )
        else:
            for err in exc.errors:
                click.echo(f"error: {err}", err=True)
            click.echo(f"{len(exc.errors)} error(s) in {directory}: nothing written to MySQL", err=True)
        sys.exit(EXIT_ERROR)
    author = author or default_author()
    with open_store() as store:
        plan = store.plan(ruleset, prune=prune)
        out: dict[str, Any] = {"ok": True, "table": store.names.rules, "dry_run": dry_run, **plan.to_dict()}
        if not as_json:
            _print_plan(plan, directory, store.names.rules)
        if dry_run or not plan.changes:
            out["applied"] = []
            if as_json:
                _emit_json(out)
            else:
                click.echo("dry run: nothing written" if dry_run else "nothing to apply: MySQL is up to date")
            return
        changes = store.apply(plan, author=author, comment=comment)
        out["applied"] = [c.to_dict() for c in changes]
        if not as_json:
            click.echo(f"applied {len(changes)} change(s) in one transaction (author {author})")
        code = 0
        if wait_s > 0:
            code, results = wait_for_job(store, wait_targets(changes), wait_s, as_json=as_json)
            out["wait"] = {"timeout_s": wait_s, "results": results}
            out["ok"] = code == 0
        if as_json:
            _emit_json(out)
        if code:
            sys.exit(code)


# -- reading -------------------------------------------------------------------------------------------------
@click.command("list", context_settings=_CTX)
@json_option
@handles_store_errors
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
            _emit_json({"ok": True, "table": store.names.rules, "rules": rows})
            return
        if not rows:
            click.echo(f"no rules in table {store.names.rules!r} (add some with 'riskctl rules apply DIR')")
            return
        width = max(len(r["id"]) for r in rows)
        click.echo(
            f"{'ID':<{width}}  {'VERSION':>7}  {'STATUS':<8}  {'ACTION':<6}  {'JOB':<8}  {'UPDATED':<23}  BY"
        )
        for rule, row in zip(rules, rows, strict=True):
            job_state = row["job"]["state"] if row["job"] else "-"
            click.echo(
                f"{rule.rule_id:<{width}}  {rule.version:>7}  {rule.status:<8}  {rule.action or '-':<6}  "
                f"{job_state:<8}  {_when(rule.updated_at):<23}  {rule.updated_by or '-'}"
            )


@click.command("show", context_settings=_CTX)
@click.argument("rule_id", metavar="ID")
@click.option(
    "--version",
    "-v",
    "version",
    type=click.IntRange(min=1),
    default=None,
    help="A past version (default: the current one).",
)
@json_option
@handles_store_errors
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
            _emit_json(payload)
            return
        click.echo(f"# rule {rule_id}, version {ver} ({status}), {meta}")
        if job:
            click.echo(f"# job: {_status_line(job)}")
        click.echo(to_yaml(document), nl=False)


@click.command("history", context_settings=_CTX)
@click.argument("rule_id", metavar="ID")
@json_option
@handles_store_errors
def history(rule_id: str, as_json: bool) -> None:
    """Every version of a rule, oldest first: status, change, author, time, comment."""
    with open_store() as store:
        entries = store.history(rule_id)
        current = store.get(rule_id)
        if as_json:
            _emit_json(
                {
                    "ok": True,
                    "id": rule_id,
                    "current_version": current.version if current else None,
                    "versions": [e.to_dict() for e in entries],
                }
            )
            return
        click.echo(f"{'VERSION':>7}  {'STATUS':<8}  {'CHANGE':<9}  {'TIME':<23}  {'AUTHOR':<12}  COMMENT")
        for e in entries:
            mark = "*" if current is not None and current.version == e.version else " "
            click.echo(
                f"{e.version:>6}{mark}  {e.status:<8}  {e.change:<9}  {_when(e.created_at):<23}  "
                f"{e.author or '-':<12}  {e.comment or ''}".rstrip()
            )
        click.echo("* current version" if current else f"rule {rule_id!r} is deleted", err=True)


@click.command("diff", context_settings=_CTX)
@click.argument("rule_id", metavar="ID")
@click.argument("a", type=click.IntRange(min=1))
@click.argument("b", type=click.IntRange(min=1))
@json_option
@handles_store_errors
def diff(rule_id: str, a: int, b: int, as_json: bool) -> None:
    """Unified diff of the YAML of versions A and B of a rule."""
    with open_store() as store:
        old, new = store.version(rule_id, a), store.version(rule_id, b)
        assert old.document is not None and new.document is not None
        lines = difflib.unified_diff(
            to_yaml(old.document).splitlines(keepends=True),
            to_yaml(new.document).splitlines(keepends=True),
            fromfile=f"{rule_id} v{a}",
            tofile=f"{rule_id} v{b}",
        )
        text = "".join(lines)
        if as_json:
            _emit_json({"ok": True, "id": rule_id, "from": a, "to": b, "identical": not text, "diff": text})
            return
        if text:
            click.echo(text, nl=False)
        else:
            click.echo(
                f"versions {a} and {b} of {rule_id} have the same document (apart from the version)", err=True
            )


# -- single-rule changes -------------------------------------------------------------------------------------
def _report(
    store: RuleStore, change: Change | None, rule_id: str, unchanged: str, wait_s: float, as_json: bool
) -> None:
    out: dict[str, Any] = {"ok": True, "id": rule_id, "change": change.to_dict() if change else None}
    if change is None:
        if as_json:
            _emit_json(out)
        else:
            click.echo(f"{rule_id}: {unchanged}: nothing written")
        return
    if not as_json:
        if change.change == "delete":
            click.echo(
                f"{rule_id}: deleted (was v{change.from_version}; the history keeps every version: "
                f"'riskctl rules rollback {rule_id} --to {change.from_version}' restores it)"
            )
        else:
            before = f"v{change.from_version}" if change.from_version is not None else "deleted"
            click.echo(f"{rule_id}: {before} -> v{change.version} ({change.status}, {change.change})")
    code = 0
    if wait_s > 0:
        code, results = wait_for_job(store, wait_targets([change]), wait_s, as_json=as_json)
        out["wait"] = {"timeout_s": wait_s, "results": results}
        out["ok"] = code == 0
    if as_json:
        _emit_json(out)
    if code:
        sys.exit(code)


def _status_command(name: str, status: str, doc: str) -> click.Command:
    @click.command(name, context_settings=_CTX, help=doc)
    @click.argument("rule_id", metavar="ID")
    @author_option
    @comment_option
    @expect_option
    @wait_option
    @json_option
    @handles_store_errors
    def command(
        rule_id: str,
        author: str | None,
        comment: str | None,
        expect_version: int | None,
        wait_s: float,
        as_json: bool,
    ) -> None:
        with open_store() as store:
            change = store.set_status(
                rule_id,
                status,
                author=author or default_author(),
                comment=comment,
                expect_version=expect_version,
            )
            _report(store, change, rule_id, f"already {status}", wait_s, as_json)

    return command


enable = _status_command("enable", "active", "A new version of the rule with status active.")
disable = _status_command(
    "disable",
    "disabled",
    "A new version of the rule with status disabled (the job skips it, frees its state).",
)
shadow = _status_command(
    "shadow", "shadow", "A new version of the rule with status shadow (decisions record it, never act on it)."
)


@click.command("rollback", context_settings=_CTX)
@click.argument("rule_id", metavar="ID")
@click.option("--to", "to", type=click.IntRange(min=1), required=True, help="The version to go back to.")
@author_option
@comment_option
@expect_option
@wait_option
@json_option
@handles_store_errors
def rollback(
    rule_id: str,
    to: int,
    author: str | None,
    comment: str | None,
    expect_version: int | None,
    wait_s: float,
    as_json: bool,
) -> None:
    """A new version whose document is version N's (restores a deleted rule too)."""
    with open_store() as store:
        change = store.rollback(
            rule_id, to, author=author or default_author(), comment=comment, expect_version=expect_version
        )
        same = f"the current version already has the document of version {to}"
        _report(store, change, rule_id, same, wait_s, as_json)


@click.command("delete", context_settings=_CTX)
@click.argument("rule_id", metavar="ID")
@author_option
@comment_option
@expect_option
@wait_option
@json_option
@handles_store_errors
def delete(
    rule_id: str,
    author: str | None,
    comment: str | None,
    expect_version: int | None,
    wait_s: float,
    as_json: bool,
) -> None:
    """Remove the rule from the current rules (the job drops it); its history stays, so it can be restored."""
    with open_store() as store:
        change = store.delete(
            rule_id, author=author or default_author(), comment=comment, expect_version=expect_version
        )
        _report(store, change, rule_id, "", wait_s, as_json)


#: attached to the ``riskctl rules`` group by :mod:`riskctl.cli.rules`
COMMANDS: tuple[click.Command, ...] = (
    apply,
    list_rules,
    show,
    history,
    diff,
    enable,
    disable,
    shadow,
    rollback,
    delete,
)
