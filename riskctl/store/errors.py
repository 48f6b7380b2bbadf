"""Errors of the rules store. Each names the rule (and versions) it is about, and what to do."""

from __future__ import annotations

from riskctl.errors import RiskctlError


class StoreError(RiskctlError):
    """Base class of the rules store's errors."""


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
        text = (
            f"conflict on rule {rule_id!r}: expected {exp}, but MySQL has {act}; someone else changed it. "
            "Nothing was written: look at 'riskctl rules history "
            f"{rule_id}' and retry"
        )
        super().__init__(text)
