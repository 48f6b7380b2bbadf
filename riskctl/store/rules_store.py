"""The rules store: current rules (read by the job through CDC) plus an append-only history.

Every change is a new version (``current + 1``, or one more than any version the rule ever had, so a version
number is never reused, even after a delete), written in one transaction to both tables. Writes are
optimistic: each says which version it expects and raises :class:`VersionConflictError` when MySQL holds
another one, so a concurrent edit is never silently overwritten. Invalid documents never reach MySQL: every
document is validated by the core's :func:`~riskctl.core.rules.parse_rule` before it is written.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from riskctl.core.errors import RuleSetError, suggest
from riskctl.core.jsondoc import load_json_document
from riskctl.core.rules import MAX_VERSION, RuleSet, document_digest, is_rule_id, parse_rule
from riskctl.errors import (
    RuleNotFoundError,
    StoreBusyError,
    StoreQueryError,
    VersionConflictError,
    VersionNotFoundError,
)
from riskctl.store.migrations import migrate, table_names

#: ``rule_status.state`` values that end a wait, per kind of change
FINAL_STATES = {"create": ("accepted", "refused"), "update": ("accepted", "refused"), "delete": ("deleted",)}
_COLUMNS = "rule_id, version, status, document, updated_at, updated_by"
_HISTORY_COLUMNS = "rule_id, version, status, `change`, author, comment, document, digest, created_at"
#: The store's session sql_mode: strict (too long, out of range, not a valid value: an error, never a silent
#: change), and no other mode of the server's that changes what its SQL means.
SQL_MODE = "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
_DUPLICATE_KEY = 1062
_DEADLOCK = 1213
_LOCK_WAIT_TIMEOUT = 1205
T = TypeVar("T")


#: the codes of a statement that MySQL's row locks kept out (rolled back): :func:`busy_error` says so
LOCK_CODES = (_DEADLOCK, _LOCK_WAIT_TIMEOUT)


def busy_error(
    conn: Any, what: str, code: int, *, attempts: int = 1, rule_ids: Sequence[str] = ()
) -> StoreBusyError:
    """The one-line error of a write that MySQL's row locks kept out (``code``: one of :data:`LOCK_CODES`):
    what was not written, why, and what to do. The rules store's writes and the console's accounts
    (:class:`~riskctl.console.accounts.AccountStore`) say it alike."""
    if code == _DEADLOCK:
        tries = f" on each of its {attempts} tries" if attempts > 1 else ""
        each = " each time" if attempts > 1 else ""
        why = (
            f"it deadlocked with another MySQL session{tries} (error 1213, MySQL rolled it back{each}); "
            "retry it"
        )
    else:
        waited = _lock_wait_s(conn)
        wait = f"waited {waited} s" if waited is not None else "waited"
        why = (
            f"it {wait} for a row lock held by another MySQL session (error 1205, lock wait timeout: a "
            "transaction left open, or a long write); retry when that transaction has ended "
            "(information_schema.innodb_trx lists the open ones)"
        )
    message = f"MySQL: {what} was not written, nothing was: {why}"
    return StoreBusyError(message, code=code, rule_ids=list(rule_ids), attempts=attempts)


def _lock_wait_s(conn: Any) -> int | None:
    """The session's innodb_lock_wait_timeout, for a message (None when it cannot be read)."""
    try:
        with conn.cursor() as cur:  # a session variable: no table read, nothing to commit
            cur.execute("SELECT @@SESSION.innodb_lock_wait_timeout")
            row = cur.fetchone()
    except Exception:  # noqa: BLE001 - only a detail of a message about another error
        return None
    return int(row[0]) if row else None


@contextmanager
def transaction(conn: Any) -> Iterator[Any]:
    """A cursor for the statements of one transaction on ``conn``: committed when the block ends, rolled
    back on any error (the error goes on), so a change is written whole or not at all. The rules store's
    writes and the console's accounts (:class:`~riskctl.console.accounts.AccountStore`) use it alike.

    A connection that cannot roll back is gone (MySQL lost it, or pymysql closed it when Ctrl-C cut a
    read short): the server rolls back a transaction whose connection ends, so the error that ended the
    block goes on, not the rollback's. It went on as pymysql's ``InterfaceError(0, '')``: on the real
    MariaDB, a connection killed in the middle of 'riskctl rules apply', and Ctrl-C, both ended in
    'MySQL error: (0, '')' (found in review)."""
    try:
        with conn.cursor() as cur:
            yield cur
        conn.commit()
    except BaseException:
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001 - the connection is gone; the original error says why
            with suppress(Exception):
                conn.close()
        raise


#: the key of the stand-in document for a stored document that does not load (see :func:`_readable`)
UNREADABLE = "unreadable"
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false"}


def _readable(text: Any, source: str, rule_id: str) -> Any:
    """A stored document, through the bounded loader. A row that does not load (written around
    ``riskctl rules apply``: nested too deep, too large, duplicate keys, not JSON, JSON but not an object)
    reads as ``{"unreadable": "<reason>"}``, so listing, ``apply`` (which then replaces it) and ``rollback``
    still work: one hostile row never locks the CLI out of the table. The job refuses the same row with a
    status.
    """
    try:
        document = load_json_document(text, source=source, rule_id=rule_id)
    except RuleSetError as exc:
        return {UNREADABLE: "; ".join(e.reason for e in exc.errors)}
    if not isinstance(document, dict):  # '[1]', '"x"', 'null': JSON, but every reader expects an object
        kind = _JSON_KINDS.get(type(document), "null")
        return {UNREADABLE: f"the rule document is JSON but not an object (it is {kind})"}
    return document


def content_digest(document: Mapping[str, Any]) -> str:
    """The digest of a rule document without its ``version``: equal content, equal digest."""
    return document_digest({k: v for k, v in document.items() if k != "version"})


def _utc(value: Any) -> datetime | None:
    # The session time zone is UTC (see connect()), so naive TIMESTAMP values are UTC.
    if value is None:
        return None
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


#: A rule row named by exactly this text. The tables' collation pads with spaces (MariaDB's utf8mb4_bin is PAD
#: SPACE): 'r1 ' = 'r1' in SQL, so 'riskctl rules delete "r1 "' deleted rule r1 and wrote its deletion to the
#: history as rule 'r1 '. A row written by SQL under a text that is no rule id (a control character, 1,000
#: characters) is still found by its exact id, so 'apply --prune' and 'delete' can remove it (found in review:
#: its prune was a conflict, "MySQL has no rule", and nothing could remove it).
#: The same goes for the history: 'history r1' listed, as versions of r1, the rows of 'r1 ' (a row written by
#: SQL, then deleted by 'apply --prune'), and said "rule 'r1' was deleted" of a rule that never existed (found
#: in review). The first comparison reads the key (rule_id, ...) as before; the second keeps its exact rows.
#: Only a new version's number (_next_version) is still taken over the padded match: the history's unique key
#: (rule_id, version) pads too, so 'r1' and 'r1 ' share one sequence of versions.
_EXACT_ID = "rule_id = %s AND CAST(rule_id AS BINARY) = CAST(%s AS BINARY)"
_SELECT_EXACT = "SELECT {cols} FROM {rules} WHERE {exact}"
_LOCK_EXACT = _SELECT_EXACT + " FOR UPDATE"
#: How many times a write runs when MySQL ends it as a deadlock's victim (error 1213: MySQL has rolled the
#: whole transaction back, so running it again is safe), and the pause before the second try (doubled before
#: each further one, with jitter so that the two writers that deadlocked do not meet again in step)
DEADLOCK_ATTEMPTS = 3
DEADLOCK_BACKOFF_S = 0.05


def retry_deadlocks(conn: Any, what: str, transaction: Callable[[], T], *, rule_ids: Sequence[str] = ()) -> T:
    """``transaction()``, which runs one whole transaction on ``conn`` and rolls it back when it fails, run
    again when MySQL ends it as a deadlock's victim (error 1213: MySQL has rolled the whole transaction back,
    so running it again is safe), up to :data:`DEADLOCK_ATTEMPTS` times in all. A deadlock on the last try,
    or a row lock waited for longer than the session's ``innodb_lock_wait_timeout`` (error 1205: not
    retried, it has waited that long already), is the :func:`busy_error` that names ``what`` was not
    written. Any other error goes on. The rules store's writes and the console's accounts
    (:class:`~riskctl.console.accounts.AccountStore`) retry alike."""
    import pymysql

    attempt = 1
    while True:
        try:
            return transaction()
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            if code == _DEADLOCK and attempt < DEADLOCK_ATTEMPTS:
                time.sleep(DEADLOCK_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))  # noqa: S311
                attempt += 1
                continue
            if code not in LOCK_CODES:
                raise
            raise busy_error(conn, what, code, attempts=attempt, rule_ids=rule_ids) from None


@dataclass(frozen=True)
class StoredRule:
    """A row of the current rules table."""

    rule_id: str
    version: int
    status: str
    document: dict[str, Any]
    updated_at: datetime | None
    updated_by: str | None

    @property
    def action(self) -> str | None:
        action = self.document.get("action")
        return action if isinstance(action, str) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "version": self.version,
            "status": self.status,
            "action": self.action,
            "updated_at": _iso(self.updated_at),
            "updated_by": self.updated_by,
            "document": self.document,
        }


@dataclass(frozen=True)
class HistoryEntry:
    """A row of the history: one version of a rule, or its deletion (``change == 'delete'``, no document)."""

    rule_id: str
    version: int
    status: str
    change: str
    author: str | None
    comment: str | None
    document: dict[str, Any] | None
    digest: str | None
    created_at: datetime | None

    def to_dict(self, *, with_document: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.rule_id,
            "version": self.version,
            "status": self.status,
            "change": self.change,
            "author": self.author,
            "comment": self.comment,
            "time": _iso(self.created_at),
            "digest": self.digest,
        }
        if with_document:
            out["document"] = self.document
        return out


@dataclass(frozen=True)
class PlanItem:
    """What ``apply`` does to one rule: ``create``, ``update``, ``unchanged``, ``delete`` (``--prune``) or
    ``keep`` (in MySQL, not in the folder, left alone).
    """

    rule_id: str
    op: str
    from_version: int | None
    to_version: int | None
    document: dict[str, Any] | None = None
    source: str | None = None

    @property
    def changes(self) -> bool:
        return self.op in ("create", "update", "delete")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "op": self.op,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "source": self.source,
        }


@dataclass(frozen=True)
class Plan:
    """The changes ``apply`` would make, in rule-id order."""

    items: tuple[PlanItem, ...]

    @property
    def changes(self) -> list[PlanItem]:
        return [item for item in self.items if item.changes]

    def count(self, op: str) -> int:
        return sum(1 for item in self.items if item.op == op)

    def to_dict(self) -> dict[str, Any]:
        ops = ("create", "update", "unchanged", "delete", "keep")
        return {
            "summary": {op: self.count(op) for op in ops},
            "rules": [item.to_dict() for item in self.items],
        }


@dataclass(frozen=True)
class Change:
    """One version written: the rule, its new version, what kind of change it was."""

    rule_id: str
    change: str
    from_version: int | None
    version: int
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "change": self.change,
            "from_version": self.from_version,
            "version": self.version,
            "status": self.status,
        }


@dataclass(frozen=True)
class JobStatus:
    """A row of ``rule_status``: what the running job did with one rule version."""

    rule_id: str
    version: int
    state: str
    reason: str | None = None
    field: str | None = None
    seen_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "version": self.version,
            "state": self.state,
            "reason": self.reason,
            "field": self.field,
            "seen_at": _iso(self.seen_at),
        }


class RuleStore:
    """Rules in MySQL: read, plan, apply, change status, roll back, delete.

    ``conn`` is a pymysql connection with autocommit off (see :func:`riskctl.store.connect`). Each public
    method is one transaction: committed when it returns, rolled back when it raises.
    """

    def __init__(self, conn: Any, rules_table: str = "rules", *, auto_migrate: bool = True) -> None:
        self.conn = conn
        self.names = table_names(rules_table)
        self._t = {**self.names.quoted(), "cols": _COLUMNS, "hcols": _HISTORY_COLUMNS, "exact": _EXACT_ID}
        with conn.cursor() as cur:
            # No gap locks: two writers creating the same rule meet on the primary key (a clear duplicate,
            # reported as a conflict), not in a deadlock.
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            # A value MySQL cannot store is an error, whatever the server's sql_mode: on a server without a
            # strict mode (sql_mode = '', common on older installs) an author of 200 characters or a comment
            # over 64 KiB given to the store from Python was cut to the column's size and committed, without
            # a word, into the history that says who changed what (found in review).
            cur.execute("SET SESSION sql_mode = %s", (SQL_MODE,))
        if auto_migrate:
            migrate(conn, rules_table)

    # -- reading -------------------------------------------------------------------------------------------
    def _sql(self, text: str) -> str:
        # Table names are checked identifiers, back-quoted (migrations.quote); values always go as parameters.
        return text.format(**self._t)

    def _read(self, text: str, params: Sequence[Any] | None = None) -> list[Any]:
        """The rows of one SELECT, in a transaction of its own: committed at once, so the next read sees
        what other writers committed since (under READ COMMITTED a snapshot lasts one statement anyway)."""
        with self.conn.cursor() as cur:
            cur.execute(self._sql(text), params)
            rows = list(cur.fetchall())
        self.conn.commit()
        return rows

    def _transaction(self) -> AbstractContextManager[Any]:
        """A cursor for the writes of one public method (:func:`transaction` on the store's connection)."""
        return transaction(self.conn)

    def current(self) -> list[StoredRule]:
        """Every current rule, by id."""
        return [self._stored(row) for row in self._read("SELECT {cols} FROM {rules} ORDER BY rule_id")]

    def get(self, rule_id: str) -> StoredRule | None:
        """The current rule named by exactly ``rule_id``, or None (see :data:`_SELECT_EXACT`)."""
        rows = self._read(_SELECT_EXACT, (rule_id, rule_id))
        return self._stored(rows[0]) if rows else None

    def require(self, rule_id: str) -> StoredRule:
        """The current rule, or :class:`RuleNotFoundError` (with a did-you-mean, or how to restore it)."""
        rule = self.get(rule_id)
        if rule is None:
            raise self._not_found(rule_id)
        return rule

    def history(self, rule_id: str) -> list[HistoryEntry]:
        """Every version of the rule named by exactly ``rule_id``, oldest first; :class:`RuleNotFoundError`
        when it never existed."""
        entries, _older = self.latest_history(rule_id, None)
        return entries

    def latest_history(self, rule_id: str, limit: int | None) -> tuple[list[HistoryEntry], int]:
        """The newest ``limit`` versions of the rule named by exactly ``rule_id`` (None: every version),
        oldest first, with their documents; and how many older versions it has besides. One read bounded by
        ``limit`` on the history's (rule_id, version) key, then a count of the older ones on the same key
        (versions below the oldest returned: a version written meanwhile does not change it).
        :class:`RuleNotFoundError` when the rule never existed."""
        if limit is not None and limit < 1:
            msg = f"limit must be None (every version) or at least 1, got {limit}"
            raise ValueError(msg)
        newest = "SELECT {hcols} FROM {history} WHERE {exact} ORDER BY version DESC"
        if limit is None:
            rows = self._read(newest, (rule_id, rule_id))
        else:
            rows = self._read(newest + " LIMIT %s", (rule_id, rule_id, limit))
        entries = [self._entry(row) for row in reversed(rows)]
        older = 0
        if entries and limit is not None and len(entries) == limit:
            counted = self._read(
                "SELECT COUNT(*) FROM {history} WHERE {exact} AND version < %s",
                (rule_id, rule_id, entries[0].version),
            )
            older = int(counted[0][0])
        if not entries:
            current = self.get(rule_id)
            if current is None:
                raise self._not_found(rule_id)
            # A row written to the rules table by hand, without history: show it as its only version.
            entries = [
                HistoryEntry(
                    current.rule_id,
                    current.version,
                    current.status,
                    "external",
                    current.updated_by,
                    None,
                    current.document,
                    content_digest(current.document),
                    current.updated_at,
                )
            ]
        return entries, older

    def history_page(
        self, rule_id: str, *, before: int | None = None, limit: int = 50
    ) -> tuple[list[HistoryEntry], int | None]:
        """Up to ``limit`` versions of the rule, newest first, older than version ``before`` (None: from the
        newest), without their documents (``document`` is None: a version holds one unless its ``change`` is
        ``delete``); and the ``before`` of the next, older page (None: none older). One bounded read on the
        history's (rule_id, version) key: a rule written thousands of times (by a script, by SQL) read every
        version with its document, for a page that showed none of them. :class:`RuleNotFoundError` when the
        rule never existed."""
        cols = "rule_id, version, status, `change`, author, comment, NULL, digest, created_at"
        where = "{exact}" + (" AND version < %s" if before is not None else "")
        params: list[Any] = [rule_id, rule_id] if before is None else [rule_id, rule_id, before]
        rows = self._read(
            f"SELECT {cols} FROM {{history}} WHERE {where} ORDER BY version DESC LIMIT %s",  # noqa: S608
            [*params, limit + 1],
        )
        entries = [self._entry(row) for row in rows[:limit]]
        if not entries and before is None:  # no history: the rule's own row (history() says), or not found
            return [
                HistoryEntry(e.rule_id, e.version, e.status, e.change, e.author, e.comment, None, e.digest,
                             e.created_at)
                for e in self.history(rule_id)
            ], None  # fmt: skip
        return entries, (entries[-1].version if len(rows) > limit else None)

    def version(self, rule_id: str, version: int) -> HistoryEntry:
        """One version of the rule, with its document; :class:`VersionNotFoundError` when there is none.
        One row read (diff and rollback ask for two versions of a rule that may have thousands)."""
        rows = self._read(
            "SELECT {hcols} FROM {history} WHERE {exact} AND version = %s",
            (rule_id, rule_id, version),
        )
        if rows and rows[0][6] is not None:
            return self._entry(rows[0])
        # not found, or a deletion: the reason names the versions the rule has (its history, read whole)
        entries = self.history(rule_id)
        for entry in entries:
            if entry.version == version:
                if entry.document is None:
                    previous = [e.version for e in entries if e.document is not None and e.version < version]
                    reason = "is a deletion and holds no document"
                    if previous:
                        reason += f"; the last document is version {previous[-1]}"
                    raise VersionNotFoundError(rule_id, version, [e.version for e in entries], reason=reason)
                return entry
        raise VersionNotFoundError(rule_id, version, [e.version for e in entries])

    def known_ids(self) -> list[str]:
        """Every rule id, current or in history."""
        rows = self._read("SELECT rule_id FROM {rules} UNION SELECT DISTINCT rule_id FROM {history}")
        return sorted(str(row[0]) for row in rows)

    def job_status(self, pairs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], JobStatus]:
        """The job's ``rule_status`` rows for these (rule id, version) pairs (missing pairs: not seen yet)."""
        wanted = sorted(set(pairs))
        if not wanted:
            return {}
        # The table's collation pads with spaces: its key (rule_id, version) holds one row for 'r1' and 'r1 '
        # (a row written by SQL under an id that is no rule id; the job reports it too), and the job's
        # ON DUPLICATE KEY UPDATE keeps the rule_id the row was first written with. That row is the report on
        # each pair asked that it matches, under the id asked: it was returned under the other id, which
        # ended '--wait' in a KeyError traceback, or kept it waiting for a report MySQL had (found in review).
        padded: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for rule_id, version in wanted:
            padded.setdefault((rule_id.rstrip(" "), version), []).append((rule_id, version))
        found: dict[tuple[str, int], JobStatus] = {}
        chunk = 200
        with self.conn.cursor() as cur:
            for start in range(0, len(wanted), chunk):
                part = wanted[start : start + chunk]
                where = " OR ".join(["(rule_id = %s AND version = %s)"] * len(part))
                params = [value for pair in part for value in pair]
                cur.execute(
                    self._sql("SELECT rule_id, version, state, reason, field, seen_at FROM {status} WHERE ")
                    + where,
                    params,
                )
                for rid, ver, state, reason, fld, seen in cur.fetchall():
                    for key in padded.get((str(rid).rstrip(" "), int(ver)), ()):
                        found[key] = JobStatus(key[0], key[1], state, reason, fld, _utc(seen))
        self.conn.commit()
        return found

    # -- apply ---------------------------------------------------------------------------------------------
    def plan(self, ruleset: RuleSet, *, prune: bool = False) -> Plan:
        """Compare a validated rule set with MySQL: which rules would be created, updated, left unchanged,
        deleted (``prune``) or kept (in MySQL only). A file's ``version`` is ignored: MySQL numbers versions.
        """
        current = {rule.rule_id: rule for rule in self.current()}
        latest = self._latest_versions()
        items: list[PlanItem] = []
        for rule in sorted(ruleset.rules, key=lambda r: r.id):
            document = dict(rule.document)
            stored = current.get(rule.id)
            last = max(latest.get(rule.id.rstrip(" "), 0), stored.version if stored else 0)
            if stored is None:
                items.append(PlanItem(rule.id, "create", None, last + 1, document, rule.source))
            elif content_digest(document) != content_digest(stored.document):
                items.append(PlanItem(rule.id, "update", stored.version, last + 1, document, rule.source))
            else:
                items.append(
                    PlanItem(rule.id, "unchanged", stored.version, stored.version, None, rule.source)
                )
        for rule_id in sorted(set(current) - {rule.id for rule in ruleset.rules}):
            stored = current[rule_id]
            if prune:
                last = max(latest.get(rule_id.rstrip(" "), 0), stored.version)
                items.append(PlanItem(rule_id, "delete", stored.version, last + 1))
            else:
                items.append(PlanItem(rule_id, "keep", stored.version, stored.version))
        items.sort(key=lambda item: item.rule_id)
        return Plan(tuple(items))

    def apply(self, plan: Plan, *, author: str | None = None, comment: str | None = None) -> list[Change]:
        """Write every change of ``plan`` in one transaction: all of them, or (on any error) none.

        Each write expects the version the plan saw; a rule changed since raises
        :class:`VersionConflictError` and nothing is written.
        """

        def write(cur: Any) -> list[Change]:
            changes: list[Change] = []
            for item in plan.changes:
                if item.op == "delete":
                    changes.append(self._delete(cur, item.rule_id, item.from_version, author, comment))
                else:
                    assert item.document is not None
                    changes.append(
                        self._write(
                            cur, item.rule_id, item.from_version, item.document, item.op, author, comment
                        )
                    )
            return changes

        items = plan.changes
        shown = ", ".join(f"{item.op} {item.rule_id!r}" for item in items[:5])
        more = f" and {len(items) - 5} more" if len(items) > 5 else ""
        what = f"apply's {len(items)} change(s) ({shown}{more})"
        return self._write_transaction(what, [item.rule_id for item in items], write)

    # -- single-rule changes -------------------------------------------------------------------------------
    def set_status(
        self,
        rule_id: str,
        status: str,
        *,
        author: str | None = None,
        comment: str | None = None,
        expect_version: int | None = None,
    ) -> Change | None:
        """A new version with ``status`` (``active``, ``shadow`` or ``disabled``); None when the rule already
        has it.
        """
        change_name = {"active": "enable", "disabled": "disable", "shadow": "shadow"}[status]

        def write(cur: Any) -> Change | None:
            current = self._lock_current(cur, rule_id, expect_version)
            if current.status == status and current.document.get("status", "active") == status:
                return None  # nothing written: the commit only releases the row lock
            document = dict(current.document)
            document["status"] = status
            return self._write(cur, rule_id, current.version, document, change_name, author, comment)

        return self._write_transaction(f"the {change_name} of rule {rule_id!r}", [rule_id], write)

    def rollback(
        self,
        rule_id: str,
        to: int,
        *,
        author: str | None = None,
        comment: str | None = None,
        expect_version: int | None = None,
    ) -> Change | None:
        """A new version whose document is version ``to``'s (restores a deleted rule too); None when the
        current document already equals it.
        """
        target = self.version(rule_id, to)
        assert target.document is not None

        def write(cur: Any) -> Change | None:
            current = self._select_current(cur, rule_id, lock=True)
            actual = current.version if current else None
            if expect_version is not None and actual != expect_version:
                raise VersionConflictError(rule_id, expect_version, actual)
            if current is not None and content_digest(current.document) == target.digest:
                return None  # nothing written: the commit only releases the row lock
            note = comment or f"rollback to version {to}"
            assert target.document is not None
            return self._write(cur, rule_id, actual, dict(target.document), "rollback", author, note)

        return self._write_transaction(f"the rollback of rule {rule_id!r} to version {to}", [rule_id], write)

    def delete(
        self,
        rule_id: str,
        *,
        author: str | None = None,
        comment: str | None = None,
        expect_version: int | None = None,
    ) -> Change:
        """Remove the current rule (the job drops it); the history keeps every version and the deletion."""

        def write(cur: Any) -> Change:
            current = self._lock_current(cur, rule_id, expect_version)
            return self._delete(cur, rule_id, current.version, author, comment)

        return self._write_transaction(f"the deletion of rule {rule_id!r}", [rule_id], write)

    def _write_transaction(self, what: str, rule_ids: list[str], write: Callable[[Any], T]) -> T:
        """``write(cursor)`` in one :func:`transaction`, run again when MySQL ends it as a deadlock's victim,
        and a :class:`StoreBusyError` that names ``what`` was not written when the row locks keep it out
        (:func:`retry_deadlocks`). Both were a driver's error before: a traceback from Python, 'MySQL error
        1205' (exit 1) from the CLI, or, when they hit the INSERT of a new version, a conflict saying someone
        else had changed the rule, which nobody had (found in review)."""

        def once() -> T:
            with self._transaction() as cur:
                return write(cur)

        return retry_deadlocks(self.conn, what, once, rule_ids=rule_ids)

    # -- internals -----------------------------------------------------------------------------------------
    def _stored(self, row: Sequence[Any]) -> StoredRule:
        rule_id, version, status, document, updated_at, updated_by = row
        doc = _readable(document, f"{self.names.rules}:{rule_id}", rule_id)
        return StoredRule(rule_id, int(version), status, doc, _utc(updated_at), updated_by)

    def _entry(self, row: Sequence[Any]) -> HistoryEntry:
        rule_id, version, status, change, author, comment, document, digest, created_at = row
        source = f"{self.names.history}:{rule_id}:{version}"
        doc = _readable(document, source, rule_id) if document is not None else None
        return HistoryEntry(
            rule_id, int(version), status, change, author, comment, doc, digest, _utc(created_at)
        )

    def _latest_versions(self) -> dict[str, int]:
        """The last version number taken, by rule id without its trailing spaces: the numbers that
        :meth:`_next_version` goes on from (the padded match, as the history's unique key). Keyed by the
        exact id, the plan showed 'create r1 -> v1' and wrote v3 after a row 'r1 ' had taken 1 and 2."""
        rows = self._read("SELECT rule_id, MAX(version) FROM {history} GROUP BY rule_id")
        latest: dict[str, int] = {}
        for rid, ver in rows:
            key = str(rid).rstrip(" ")
            latest[key] = max(latest.get(key, 0), int(ver))
        return latest

    def _not_found(self, rule_id: str) -> RuleNotFoundError:
        if not is_rule_id(rule_id):  # e.g. 'r1 ': the history of 'r1' is not its history (see get)
            hint = suggest(rule_id, self.known_ids())
            return RuleNotFoundError(rule_id, table=self.names.rules, suggestion=hint)
        found = self._read(
            "SELECT version, `change` FROM {history} WHERE {exact} ORDER BY version",
            (rule_id, rule_id),
        )
        rows = [(int(v), c) for v, c in found]
        if rows and rows[-1][1] == "delete":
            with_doc = [v for v, c in rows if c != "delete"]
            return RuleNotFoundError(
                rule_id,
                table=self.names.rules,
                deleted_version=rows[-1][0],
                last_version=with_doc[-1] if with_doc else None,
            )
        hint = suggest(rule_id, self.known_ids())
        return RuleNotFoundError(rule_id, table=self.names.rules, suggestion=hint)

    def _select_current(self, cur: Any, rule_id: str, *, lock: bool) -> StoredRule | None:
        cur.execute(self._sql(_LOCK_EXACT if lock else _SELECT_EXACT), (rule_id, rule_id))
        row = cur.fetchone()
        return self._stored(row) if row else None

    def _lock_current(self, cur: Any, rule_id: str, expect_version: int | None) -> StoredRule:
        current = self._select_current(cur, rule_id, lock=True)
        if current is None and expect_version is not None:
            # The caller saw a version that someone else has deleted since: that is a conflict, not a typo.
            raise VersionConflictError(rule_id, expect_version, None)
        if current is None:
            self.conn.rollback()
            raise self._not_found(rule_id)
        if expect_version is not None and current.version != expect_version:
            raise VersionConflictError(rule_id, expect_version, current.version)
        return current

    def _next_version(self, cur: Any, rule_id: str, current: int | None) -> int:
        # The padded match on purpose (see _EXACT_ID): the history's unique key (rule_id, version) holds one
        # sequence of versions for 'r1' and 'r1 ', so the next version is one more than either's last.
        cur.execute(self._sql("SELECT MAX(version) FROM {history} WHERE rule_id = %s"), (rule_id,))
        row = cur.fetchone()
        last = max(int(row[0] or 0) if row else 0, current or 0)
        if last >= MAX_VERSION:
            # Versions are MySQL INTs. Only SQL writes one this large; the next did not fit: 'disable' was a
            # rule error on a field nobody wrote ("version must be <= 2147483647, got 2147483648") and
            # 'delete' "MySQL error: (1264, 'Out of range value ...')" (found in review).
            msg = (
                f"rule {rule_id!r} has reached version {last} in table {self.names.rules!r} or "
                f"{self.names.history!r}, the largest a version can be (MySQL INT): no new version can be "
                "written, so riskctl cannot change or delete it. A version this large was written by SQL; "
                "see docs/rules-store.md (Versions) for how to renumber it"
            )
            raise StoreQueryError(msg)
        return last + 1

    def _check_expected(self, cur: Any, rule_id: str, expected: int | None) -> None:
        current = self._select_current(cur, rule_id, lock=True)
        actual = current.version if current else None
        if actual != expected:
            raise VersionConflictError(rule_id, expected, actual)

    def _write(
        self,
        cur: Any,
        rule_id: str,
        expected: int | None,
        document: dict[str, Any],
        change: str,
        author: str | None,
        comment: str | None,
    ) -> Change:
        """Write a new version of ``rule_id`` whose current version must be ``expected`` (None: absent)."""
        self._check_expected(cur, rule_id, expected)
        version = self._next_version(cur, rule_id, expected)
        document = {**document, "id": rule_id, "version": version}
        document.setdefault("status", "active")
        # Validate what is written, whatever path it came by (never an invalid rule in MySQL).
        document = dict(parse_rule(document, source=f"{self.names.rules}:{rule_id}").document)
        status = str(document["status"])
        text = json.dumps(document, ensure_ascii=False)
        with self._raced(rule_id, expected):
            if expected is None:
                cur.execute(
                    self._sql(
                        "INSERT INTO {rules} (rule_id, version, status, document, updated_by) "
                        "VALUES (%s, %s, %s, %s, %s)"
                    ),
                    (rule_id, version, status, text, author),
                )
            else:
                cur.execute(
                    self._sql(
                        "UPDATE {rules} SET version = %s, status = %s, document = %s, updated_by = %s "
                        "WHERE rule_id = %s AND version = %s"
                    ),
                    (version, status, text, author, rule_id, expected),
                )
                if cur.rowcount != 1:
                    raise VersionConflictError(rule_id, expected, self._actual(rule_id))
            cur.execute(
                self._sql(
                    "INSERT INTO {history} "
                    "(rule_id, version, status, `change`, author, comment, document, digest) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                ),
                (rule_id, version, status, change, author, comment, text, content_digest(document)),
            )
        return Change(rule_id, change, expected, version, status)

    def _delete(
        self, cur: Any, rule_id: str, expected: int | None, author: str | None, comment: str | None
    ) -> Change:
        self._check_expected(cur, rule_id, expected)
        version = self._next_version(cur, rule_id, expected)
        with self._raced(rule_id, expected):
            cur.execute(
                self._sql("DELETE FROM {rules} WHERE rule_id = %s AND version = %s"), (rule_id, expected)
            )
            if cur.rowcount != 1:
                raise VersionConflictError(rule_id, expected, self._actual(rule_id))
            cur.execute(
                self._sql(
                    "INSERT INTO {history} "
                    "(rule_id, version, status, `change`, author, comment, document, digest) "
                    "VALUES (%s, %s, 'deleted', 'delete', %s, %s, NULL, NULL)"
                ),
                (rule_id, version, author, comment),
            )
        return Change(rule_id, "delete", expected, version, "deleted")

    @contextmanager
    def _raced(self, rule_id: str, expected: int | None) -> Iterator[None]:
        """A duplicate key (a concurrent writer created the rule, or took the version, first) as the
        :class:`VersionConflictError` it means; any other error goes on unchanged (a deadlock or a lock wait
        timeout is no conflict: :meth:`_write_transaction` answers them)."""
        import pymysql

        try:
            yield
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            if code == _DUPLICATE_KEY:
                raise VersionConflictError(rule_id, expected, self._actual(rule_id)) from None
            raise

    def _actual(self, rule_id: str) -> int | None:
        """The version MySQL holds now (for a conflict's message). The transaction is rolled back first (the
        conflict ends it anyway): read inside it, this was the version it had itself just written."""
        self.conn.rollback()
        with self.conn.cursor() as cur:
            cur.execute(self._sql("SELECT version FROM {rules} WHERE {exact}"), (rule_id, rule_id))
            row = cur.fetchone()
        return int(row[0]) if row else None
