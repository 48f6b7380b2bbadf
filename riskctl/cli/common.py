"""What every ``riskctl`` command shares: context settings, exit codes, JSON and error output, common options.

Conventions, so that a new command behaves like the others without copying them:

- results go to stdout; errors, progress and summaries meant for a human go to stderr, so that stdout can be
  piped. An error is one line, ``error: <message>``, never a traceback.
- ``--json`` prints the result as one JSON document on stdout (``indent=2``). With ``--json`` an error is a
  JSON document too, ``{"ok": false, "error": {"type": ..., "message": ..., <the error's details>}}``, on
  stdout, so a script reads one document whatever happened; the exit code still says what went wrong.
- an exit code is an :class:`ExitCode`, never a bare number; the code of each error class is decided in
  one table, :data:`EXIT_CODES` (the error classes themselves are listed in :mod:`riskctl.errors`), with one
  rule before it: a setting refused when the settings load (a bad value or an unknown name in riskctl.toml, a
  ``RISKCTL_<SECTION>_*`` variable or a ``--set``) is bad usage, exit 2, whichever command loads them
  (:data:`REFUSED_SETTING`).
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NoReturn, ParamSpec, TextIO, TypeVar

import click

from riskctl.config.checks import is_refused
from riskctl.config.loading import ConfigWarning
from riskctl.errors import (
    ConfigError,
    NewerCheckpointError,
    RiskctlError,
    RuleNotFoundError,
    RuleSetError,
    ServiceError,
    StoreBusyError,
    StoreQueryError,
    VersionConflictError,
    VersionNotFoundError,
    printable,
)

P = ParamSpec("P")
R = TypeVar("R")

#: click's ``context_settings`` of every command and group: ``-h`` as well as ``--help``, defaults shown
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True}


class ExitCode(IntEnum):
    """The exit codes of every ``riskctl`` command."""

    OK = 0
    ERROR = 1  # invalid rules, unknown rule or version, any other error
    USAGE = 2  # bad usage: click's own, a setting refused (file, RISKCTL_*, --set), a start check refusing
    UNAVAILABLE = 3  # a service (Kafka, MySQL) does not answer, is not configured (no MySQL password), or
    # MySQL's row locks kept a rules write from being written (lock wait timeout, deadlocks past the retries)
    CONFLICT = 4  # someone else changed the rule (rules store)
    REFUSED = 5  # the job refused a rule version (rules ... --wait)
    TIMEOUT = 6  # the job did not report in time (rules ... --wait)
    INTERRUPTED = 130  # Ctrl-C or SIGTERM (demo), as a shell reports SIGINT


@dataclass(frozen=True)
class ErrorExit:
    """How an error class ends a command: its exit code and the ``type`` of its ``--json`` error document."""

    code: ExitCode
    kind: str


#: error class -> how it ends a command; an error takes the entry of its nearest class in this table
EXIT_CODES: Mapping[type[RiskctlError], ErrorExit] = {
    VersionConflictError: ErrorExit(ExitCode.CONFLICT, "conflict"),
    RuleNotFoundError: ErrorExit(ExitCode.ERROR, "unknown_rule"),
    VersionNotFoundError: ErrorExit(ExitCode.ERROR, "unknown_version"),
    StoreBusyError: ErrorExit(ExitCode.UNAVAILABLE, "busy"),
    StoreQueryError: ErrorExit(ExitCode.ERROR, "mysql"),
    RuleSetError: ErrorExit(ExitCode.ERROR, "invalid_rule"),
    NewerCheckpointError: ErrorExit(ExitCode.USAGE, "checkpoint"),
    ConfigError: ErrorExit(ExitCode.UNAVAILABLE, "config"),  # not configured; a refused setting: below
    ServiceError: ErrorExit(ExitCode.UNAVAILABLE, "unavailable"),
    RiskctlError: ErrorExit(ExitCode.ERROR, "error"),
}


#: how a setting refused when the settings load ends a command (a ConfigError marked by
#: :func:`riskctl.config.checks.refused`): bad usage, as a bad option, in every command; the same ``type`` in
#: ``--json`` as any other ConfigError
REFUSED_SETTING = ErrorExit(ExitCode.USAGE, "config")


def error_exit(exc: RiskctlError) -> ErrorExit:
    """How ``exc`` ends a command: :data:`REFUSED_SETTING` for a refused setting, else the :data:`EXIT_CODES`
    entry of the first class of its MRO that has one."""
    if is_refused(exc):
        return REFUSED_SETTING
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_CODES[RiskctlError]  # not reached: every RiskctlError has RiskctlError in its MRO


# -- output --------------------------------------------------------------------------------------------------
def emit_json(payload: Any, *, err: bool = False, indent: int | None = 2) -> None:
    """``payload`` as JSON on stdout (stderr with ``err``); ``indent=None``: on one line."""
    click.echo(json.dumps(payload, indent=indent, ensure_ascii=False, default=str), err=err)


def echo_error(message: str) -> None:
    """One error line on stderr: ``error: <message>``, each of its lines made :func:`printable`: a message
    quotes what it was given (a rule id read from MySQL, a file name, a setting's value), which must not
    drive the terminal. (The line breaks a message has are its own: one that quotes text which may hold one
    quotes it with ``repr`` or :func:`printable`.)"""
    click.echo("error: " + "\n".join(printable(line) for line in message.split("\n")), err=True)


def show_config_warnings() -> None:
    """Print each :class:`riskctl.config.loading.ConfigWarning` as one line on stderr, ``warning: <message>``
    made :func:`printable`, as an error is ``error: <message>``. Python's own format began with the line of
    riskctl's code that happened to load the settings (``.../riskctl/cli/common.py:157: SecretFileWarning:``)
    and added that line's source on a second one; a settings file named with a line break made a line of its
    own. Other warnings are shown as before. Installed once per process by the commands and the job."""
    previous = warnings.showwarning
    if getattr(previous, "riskctl_config", False):
        return

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, ConfigWarning):
            click.echo("warning: " + printable(str(message)), err=True)
        else:
            previous(message, category, filename, lineno, file, line)

    show.riskctl_config = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def fail(
    code: ExitCode, message: str, *, as_json: bool = False, kind: str = "error", **extra: Any
) -> NoReturn:
    """End the command with ``code``: the message as an error line on stderr, or (``as_json``) as the error
    document on stdout with ``kind`` and ``extra`` (see the module's docstring)."""
    if as_json:
        emit_json({"ok": False, "error": {"type": kind, "message": message, **extra}})
    else:
        echo_error(message)
    sys.exit(code)


def fail_on(exc: RiskctlError, *, as_json: bool = False) -> NoReturn:
    """End the command on ``exc``: its message and details, the exit code of its class
    (:data:`EXIT_CODES`)."""
    how = error_exit(exc)
    fail(how.code, str(exc), as_json=as_json, kind=how.kind, **exc.details())


def handles_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command so that a :class:`~riskctl.errors.RiskctlError` ends it through :func:`fail_on`
    (an error line or, when the command was given ``--json``, the error document) instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except RiskctlError as exc:
            fail_on(exc, as_json=bool(kwargs.get("as_json", False)))

    return wrapper


# -- common options ------------------------------------------------------------------------------------------
def json_option(help: str = "Print one JSON document, for scripts.") -> Callable[[Callable[P, R]], Any]:  # noqa: A002
    """``--json`` (parameter ``as_json``): structured output for scripts; ``help`` says what it holds."""
    return click.option("--json", "as_json", is_flag=True, help=help)


#: ``--set SECTION.KEY=VALUE`` (parameter ``overrides``, repeatable): a setting for this run only
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a setting, e.g. --set job.parallelism=2 --set job.rules_source=file (repeatable).",
)


def progress_option(default: bool | None, help: str) -> Callable[[Callable[P, R]], Any]:  # noqa: A002
    """``--progress/--no-progress`` (parameter ``progress``): a progress line on stderr."""
    return click.option("--progress/--no-progress", default=default, help=help)
