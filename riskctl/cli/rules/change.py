"""``riskctl rules enable | disable | shadow | rollback | delete``: change one rule, each change a new
version written in one locked transaction (see :class:`riskctl.store.rules_store.RuleStore`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from riskctl.cli.common import CONTEXT_SETTINGS, emit_json, handles_errors, json_option
from riskctl.cli.rules.mysql import (
    author_option,
    comment_option,
    default_author,
    expect_option,
    open_store,
    wait_option,
)
from riskctl.cli.rules.wait import finish_write
from riskctl.store.rules_store import Change, RuleStore


@dataclass(frozen=True)
class Write:
    """The options every single-rule write takes, handed to the command as one parameter."""

    author: str
    comment: str | None
    expect_version: int | None
    wait_s: float
    as_json: bool

    def store_args(self) -> dict[str, Any]:
        """The keyword arguments of the store's write methods (set_status, rollback, delete)."""
        return {"author": self.author, "comment": self.comment, "expect_version": self.expect_version}


def _single_rule_write(
    name: str,
    short_help: str,
    *options: Callable[[Any], Any],
    help: str | None = None,  # noqa: A002
) -> Callable[[Callable[..., None]], click.Command]:
    """The command ``name`` on one rule ID with ``options``, then the options every single-rule write takes
    (--author, --comment, --expect-version, --wait, --json), given to the command as ``write`` (a
    :class:`Write`); its errors end through :func:`handles_errors`."""

    def decorate(func: Callable[..., None]) -> click.Command:
        @functools.wraps(func)
        def command(
            *args: Any,
            author: str | None,
            comment: str | None,
            expect_version: int | None,
            wait_s: float,
            as_json: bool,
            **kwargs: Any,
        ) -> None:
            write = Write(author or default_author(), comment, expect_version, wait_s, as_json)
            func(*args, write=write, **kwargs)

        decorated: Callable[..., None] = handles_errors(command)
        common = (author_option, comment_option, expect_option, wait_option, json_option())
        for option in reversed((*options, *common)):
            decorated = option(decorated)
        decorated = click.argument("rule_id", metavar="ID")(decorated)
        return click.command(name, context_settings=CONTEXT_SETTINGS, help=help, short_help=short_help)(
            decorated
        )

    return decorate


def _report(store: RuleStore, change: Change | None, rule_id: str, unchanged: str, write: Write) -> None:
    """Print what a single-rule write did (or that it had nothing to write), then :func:`finish_write`."""
    out: dict[str, Any] = {"ok": True, "id": rule_id, "change": change.to_dict() if change else None}
    if change is None:
        if write.as_json:
            emit_json(out)
        else:
            click.echo(f"{rule_id}: {unchanged}: nothing written")
        return
    if not write.as_json:
        if change.change == "delete":
            click.echo(
                f"{rule_id}: deleted (was v{change.from_version}; the history keeps every version: "
                f"'riskctl rules rollback {rule_id} --to {change.from_version}' restores it)"
            )
        else:
            before = f"v{change.from_version}" if change.from_version is not None else "deleted"
            click.echo(f"{rule_id}: {before} -> v{change.version} ({change.status}, {change.change})")
    finish_write(store, [change], write.wait_s, out, as_json=write.as_json)


def _status_command(name: str, status: str, short_help: str, help: str) -> click.Command:  # noqa: A002
    @_single_rule_write(name, short_help, help=help)
    def command(rule_id: str, write: Write) -> None:
        with open_store() as store:
            change = store.set_status(rule_id, status, **write.store_args())
            _report(store, change, rule_id, f"already {status}", write)

    return command


enable = _status_command(
    "enable", "active", "Make a rule active.", "A new version of the rule with status active."
)
disable = _status_command(
    "disable",
    "disabled",
    "Disable a rule (the job skips it).",
    "A new version of the rule with status disabled (the job skips it, frees its state).",
)
shadow = _status_command(
    "shadow",
    "shadow",
    "Run a rule in shadow (recorded, never acted on).",
    "A new version of the rule with status shadow (decisions record it, never act on it).",
)


@_single_rule_write(
    "rollback",
    "Go back to the document of version N.",
    click.option("--to", "to", type=click.IntRange(min=1), required=True, help="The version to go back to."),
)
def rollback(rule_id: str, to: int, write: Write) -> None:
    """A new version whose document is version N's (restores a deleted rule too)."""
    with open_store() as store:
        change = store.rollback(rule_id, to, **write.store_args())
        same = f"the current version already has the document of version {to}"
        _report(store, change, rule_id, same, write)


@_single_rule_write("delete", "Remove a rule (its history stays).")
def delete(rule_id: str, write: Write) -> None:
    """Remove the rule from the current rules (the job drops it); its history stays, so it can be restored."""
    with open_store() as store:
        change = store.delete(rule_id, **write.store_args())
        _report(store, change, rule_id, "", write)
