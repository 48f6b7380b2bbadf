"""Every riskctl error, in one hierarchy, importable from here.

The root class and the pure core's errors are defined in :mod:`riskctl.core.errors` (the core imports nothing
outside itself) and re-exported here; the errors of the outer layers (configuration, services, the rules
store, the checkpoint guard, the demo) are defined here. Each error carries its context as attributes and
as :meth:`~RiskctlError.details` (JSON-ready), and its message says what is wrong and, where there is one,
what to do. Which exit code each class gives on the command line is decided in one table,
:data:`riskctl.cli.common.EXIT_CODES`.

::

    RiskctlError
    ├── RuleError(ValueError)             one problem in one rule (rule_id, field, reason, suggestion)
    │   └── ExpressionError               a condition that does not parse/compile (adds the column)
    ├── RuleSetError(ValueError)          every RuleError of a folder or a rule set (errors)
    ├── EventError(ValueError)            a raw event that cannot be decided (reason, field)
    ├── ConfigError(ValueError)           a setting missing or invalid (the message names it)
    │   └── NewerCheckpointError          the job would start from older state than a checkpoint of it holds
    ├── ServiceError                      Kafka, MariaDB or Flink down, not starting, port taken (service)
    ├── StoreError                        the rules store in MySQL
    │   ├── RuleNotFoundError(LookupError)     no current rule with this id (suggestion, deleted_version)
    │   ├── VersionNotFoundError(LookupError)  no such version of the rule (versions)
    │   ├── VersionConflictError               the rule changed since it was read (expected, actual)
    │   ├── StoreBusyError                     a write gave up on MySQL's row locks: lock wait timeout,
    │   │                                      or deadlocks past its retries (code, rule_ids, attempts)
    │   └── StoreQueryError                    MySQL refused a statement (code)
    └── DemoError                         a step of ``riskctl demo`` failed
"""

from __future__ import annotations

import re
from typing import Any

from riskctl.core.errors import (
    EventError,
    ExpressionError,
    RiskctlError,
    RuleError,
    RuleSetError,
)

__all__ = [
    "ConfigError",
    "DemoError",
    "EventError",
    "ExpressionError",
    "NewerCheckpointError",
    "RiskctlError",
    "RuleError",
    "RuleNotFoundError",
    "RuleSetError",
    "ServiceError",
    "StoreBusyError",
    "StoreError",
    "StoreQueryError",
    "VersionConflictError",
    "VersionNotFoundError",
    "printable",
]


#: what must not reach a terminal as it is: C0/C1 controls (escape sequences, line breaks that forge a line),
#: the bidirectional and zero-width format characters (text that reads otherwise than it is), lone surrogates
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def printable(value: object) -> str:
    """``value`` as text for a human's terminal or log: what :data:`_UNPRINTABLE` matches is written as its
    escape (``\\x1b``, ``\\n``, ``\\u202e``). For text that came from events (ids, field names): an attacker's
    user id must not move the cursor, recolour the screen or add a line of its own to the output; and for
    what a message quotes as given (a settings file's path, a key of it), so that the message stays its own
    lines. Here, below every layer that writes a message (the configuration's errors, the commands' output:
    :func:`riskctl.cli.common.echo_error`)."""
    text = value if isinstance(value, str) else str(value)
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


class ConfigError(RiskctlError, ValueError):
    """A configuration value is missing or invalid; the message names the setting and how to set it."""


class NewerCheckpointError(ConfigError):
    """The job would start from older state (or none) than a completed checkpoint of it holds
    (:mod:`riskctl.flink.checkpoints`)."""


class ServiceError(RiskctlError):
    """A service (Kafka, MariaDB, Flink) is down, failed to start, or its port is taken.

    The message names the service, its address and its log file, and says what to start.
    """

    def __init__(self, service: str, message: str, *, log: str | None = None) -> None:
        self.service = service
        self.log = log
        text = f"{service}: {message}"
        if log:
            text += f" (log: {log})"
        super().__init__(text)

    def details(self) -> dict[str, Any]:
        return {"service": self.service}


class StoreError(RiskctlError):
    """Base class of the rules store's errors. Each names the rule (and versions) it is about, and what to
    do."""


class RuleNotFoundError(StoreError, LookupError):
    """No current rule with this id (it never existed, or it was deleted)."""

    def __init__(
        self,
        rule_id: str,
        *,
        table: str,
        suggestion: str | None = None,
        deleted_version: int | None = None,
        last_version: int | None = None,
    ) -> None:
        self.rule_id = rule_id
        self.table = table
        self.suggestion = suggestion
        self.deleted_version = deleted_version
        self.last_version = last_version
        if deleted_version is not None:
            text = f"rule {rule_id!r} was deleted (version {deleted_version})"
            if last_version is not None:
                text += f"; restore it with 'riskctl rules rollback {rule_id} --to {last_version}'"
        else:
            text = f"no rule {rule_id!r} in table {table!r}"
            if suggestion:
                text += f" (did you mean {suggestion!r}?)"
        super().__init__(text)

    def details(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "suggestion": self.suggestion,
            "deleted_version": self.deleted_version,
        }


class VersionNotFoundError(StoreError, LookupError):
    """The rule exists (or existed) but has no such version, or that version holds no document."""

    def __init__(self, rule_id: str, version: int, versions: list[int], *, reason: str | None = None) -> None:
        self.rule_id = rule_id
        self.version = version
        self.versions = versions
        if reason:
            text = f"rule {rule_id!r} version {version}: {reason}"
        else:
            known = ", ".join(str(v) for v in versions) or "none"
            text = f"rule {rule_id!r} has no version {version} (versions: {known})"
        super().__init__(text)

    def details(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "version": self.version, "versions": self.versions}


class VersionConflictError(StoreError):
    """Someone else changed the rule since it was read: the write expected another version. Nothing was
    written; read the rule again and retry.
    """

    def __init__(self, rule_id: str, expected: int | None, actual: int | None) -> None:
        self.rule_id = rule_id
        self.expected = expected
        self.actual = actual
        exp = f"version {expected}" if expected is not None else "no rule (a new one)"
        act = f"version {actual}" if actual is not None else "no rule (deleted)"
        # the id may come from a row written by SQL: quoted (escaped) unless it is plain text
        shown = rule_id if rule_id.isprintable() else repr(rule_id)
        text = (
            f"conflict on rule {rule_id!r}: expected {exp}, but MySQL has {act}; someone else changed it. "
            "Nothing was written: look at 'riskctl rules history "
            f"{shown}' and retry"
        )
        super().__init__(text)

    def details(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "expected": self.expected, "actual": self.actual}


class StoreBusyError(StoreError):
    """A write that MySQL's row locks kept from being written, rolled back whole: it waited longer than the
    session's lock wait timeout for a row another session holds (error 1205), or it was a deadlock's victim
    on every try (error 1213; the store retries a deadlock, which MySQL has already rolled back). Nothing of
    it was written; the message names what was not, and ends with what to do."""

    def __init__(self, message: str, *, code: int, rule_ids: list[str], attempts: int) -> None:
        self.code = code
        self.rule_ids = rule_ids
        self.attempts = attempts
        super().__init__(message)

    def details(self) -> dict[str, Any]:
        # not "code": the JSON error document's keys are the keyword arguments of cli.common.fail
        return {"mysql_error": self.code, "rule_ids": self.rule_ids, "attempts": self.attempts}


class StoreQueryError(StoreError):
    """MySQL answered a statement of the rules store with an error (a trigger refusing a row, a privilege
    missing, ...): the driver's code and message, instead of the driver's exception."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class DemoError(RiskctlError):
    """A step of ``riskctl demo`` failed (the message says which, and where the log is)."""
