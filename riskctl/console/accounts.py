"""Console accounts, sessions and the audit log in MySQL (migration 2 of :mod:`riskctl.store.migrations`).

``conn`` is a pymysql connection with autocommit off (:func:`riskctl.store.connect`); every public method is
one transaction. Names of tables come from :meth:`riskctl.store.migrations.TableNames.console`, so tests use
uuid-named copies like the rules store's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from riskctl.console.security import (
    DUMMY_HASH,
    ROLES,
    hash_password,
    new_token,
    token_hash,
    verify_password,
)
from riskctl.store.connection import refusal
from riskctl.store.migrations import case_key, migrate, table_names
from riskctl.store.rules_store import retry_deadlocks, transaction

USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
#: how long a session lasts after login
SESSION_TTL = timedelta(hours=8)
LABELS = ("fraud", "legitimate")
LOG = logging.getLogger("riskctl.console")
T = TypeVar("T")


class AccountError(ValueError):
    """A user that cannot be created (bad name, unknown role, bad password)."""


@dataclass(frozen=True)
class Session:
    """A logged-in user: name, role and the CSRF token of this session."""

    username: str
    role: str
    csrf: str


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # MySQL TIMESTAMP in a UTC session: naive UTC


class AccountStore:
    """Users, sessions and the audit log of one rules store."""

    def __init__(self, conn: Any, rules_table: str = "rules", *, auto_migrate: bool = True) -> None:
        self.conn = conn
        self.t = table_names(rules_table).quoted()
        if auto_migrate:
            migrate(conn, rules_table)

    def _run(self, sql: str, params: tuple[Any, ...] = (), *, what: str = "the change") -> list[Any]:
        """``sql`` in a transaction of its own (:meth:`_transaction`); its rows."""

        def statement(cur: Any) -> list[Any]:
            cur.execute(sql.format(**self.t), params)
            return list(cur.fetchall())

        return self._transaction(what, statement)

    def _transaction(self, what: str, body: Callable[[Any], T]) -> T:
        """``body(cursor)`` in one :func:`~riskctl.store.rules_store.transaction` (committed, or rolled back
        on any error), through the rules store's :func:`~riskctl.store.rules_store.retry_deadlocks`: run
        again when MySQL ends it as a deadlock's victim (1213; rolled back whole, so safe to run again: it
        was not retried, and a deadlock between two analysts' labels was a 503 for one of them), and kept out
        by the row locks (a lock wait timeout 1205, or a deadlock on each try) a
        :class:`~riskctl.errors.StoreBusyError` naming ``what``, which the console answers 503 with
        Retry-After (as the driver's error it was a 500 with a traceback). Any other error goes on
        unchanged."""

        def once() -> T:
            with transaction(self.conn) as cur:
                return body(cur)

        return retry_deadlocks(self.conn, what, once)

    # -- users ---------------------------------------------------------------------------------------------
    def add_user(self, username: str, role: str, password: str, *, by: str | None = None) -> bool:
        """Create ``username`` (or, if it exists, set its role and password); True when created."""
        if not USERNAME_RE.fullmatch(username):
            msg = f"invalid user name {username!r}: 1-64 letters, digits, '_', '.', '@' or '-'"
            raise AccountError(msg)
        if role not in ROLES:
            msg = f"unknown role {role!r}: one of {', '.join(ROLES)}"
            raise AccountError(msg)
        try:
            hashed = hash_password(password)
        except ValueError as exc:
            raise AccountError(str(exc)) from None
        existed = bool(self._run("SELECT 1 FROM {users} WHERE username = %s", (username,)))
        self._run(
            "INSERT INTO {users} (username, role, password_hash) VALUES (%s, %s, %s) "
            "ON DUPLICATE KEY UPDATE role = VALUES(role), password_hash = VALUES(password_hash)",
            (username, role, hashed),
            what=f"user {username!r}",
        )
        if existed:  # a changed password ends every session of the user
            self._run("DELETE FROM {sessions} WHERE username = %s", (username,), what=f"user {username!r}")
        audit_written(
            self, by, "user_update" if existed else "user_add", username, f"role={role}", kind="user"
        )
        return not existed

    def users(self) -> list[tuple[str, str]]:
        """(name, role) of every user, by name."""
        return [
            (str(u), str(r)) for u, r in self._run("SELECT username, role FROM {users} ORDER BY username")
        ]

    def check_login(self, username: str, password: str) -> str | None:
        """The role of ``username`` when ``password`` is right, else None (as slow for an unknown name).

        Only a name as it was created logs in: MySQL compares ``'ann '`` equal to ``'ann'`` (trailing spaces
        are ignored, PAD SPACE), so without the check each spelling would log in as ``ann`` under another
        name (the author of its changes) and count apart in the login rate limiter."""
        if not USERNAME_RE.fullmatch(username):
            verify_password(password, DUMMY_HASH)
            return None
        rows = self._run("SELECT role, password_hash FROM {users} WHERE username = %s", (username,))
        if not rows:
            verify_password(password, DUMMY_HASH)
            return None
        role, stored = rows[0]
        return str(role) if verify_password(password, str(stored)) else None

    # -- sessions ------------------------------------------------------------------------------------------
    def open_session(self, username: str, *, detail: str | None = None) -> str:
        """A new session of ``username`` and the audit row of its login (``detail``: where from), in one
        transaction; returns the token for the cookie (only its hash is stored).

        Both or neither: a login is let in only with its audit row (the console's policy, see
        :meth:`riskctl.console.app.Console.login`), and an audit row says ``login`` only of a session that
        was opened. They were two transactions, the audit row first: a session MySQL then refused or kept
        out (a trigger, a lock wait) left a ``login`` in the audit log that let nobody in, though the answer
        said nothing was written. A lock's message names it ``the login of <username>``, as the console names
        the audit row of a failed login (so that a lock does not tell whether the password was right)."""
        token = new_token()
        now = _utc_now()
        statements = (
            ("DELETE FROM {sessions} WHERE expires_at < %s", (now,)),
            (
                "INSERT INTO {audit} (username, action, target, detail) VALUES (%s, 'login', NULL, %s)",
                (username, detail),
            ),
            (
                "INSERT INTO {sessions} (token_hash, username, csrf, expires_at) VALUES (%s, %s, %s, %s)",
                (token_hash(token), username, new_token(), now + SESSION_TTL),
            ),
        )

        def write(cur: Any) -> None:
            for sql, params in statements:
                cur.execute(sql.format(**self.t), params)

        self._transaction(f"the login of {username!r}", write)
        return token

    def session(self, token: str | None) -> Session | None:
        """The live session of a cookie's token (with the user's current role), or None."""
        if not token or len(token) > 128:
            return None
        rows = self._run(
            "SELECT s.username, u.role, s.csrf FROM {sessions} s JOIN {users} u ON u.username = s.username "
            "WHERE s.token_hash = %s AND s.expires_at > %s",
            (token_hash(token), _utc_now()),
        )
        if not rows:
            return None
        username, role, csrf = rows[0]
        return Session(str(username), str(role), str(csrf))

    def close_session(self, token: str) -> None:
        """End the session of ``token`` (logout)."""
        self._run("DELETE FROM {sessions} WHERE token_hash = %s", (token_hash(token),), what="the logout")

    # -- audit ---------------------------------------------------------------------------------------------
    def audit(
        self,
        username: str | None,
        action: str,
        target: str | None,
        detail: str | None = None,
        *,
        what: str | None = None,
    ) -> None:
        """Record who did what to what (the time is MySQL's). ``what``: the write a lock's message names
        (else the audit entry of ``action``)."""
        self._run(
            "INSERT INTO {audit} (username, action, target, detail) VALUES (%s, %s, %s, %s)",
            (username, action[:32], None if target is None else target[:255], detail),
            what=what or f"the audit entry of {action[:32]!r}",
        )

    def audit_log(self, target: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest audit entries (of ``target`` when given), newest first."""
        where, params = ("WHERE target = %s", (target,)) if target is not None else ("", ())
        rows = self._run(
            "SELECT at, username, action, target, detail FROM {audit} "  # noqa: S608 - a fixed WHERE
            + where
            + " ORDER BY id DESC LIMIT %s",
            (*params, int(limit)),
        )
        return [
            {"at": at, "user": user, "action": action, "target": tgt, "detail": detail}
            for at, user, action, tgt, detail in rows
        ]

    # -- review labels -------------------------------------------------------------------------------------
    def label_case(
        self,
        case_id: str,
        rules: tuple[str, ...],
        shadow: tuple[str, ...],
        user_id: str,
        label: str,
        note: str | None,
        by: str,
    ) -> None:
        """Label a case ``fraud`` or ``legitimate`` (again: replaces the label), once per rule that hit it.
        Its audit row is the caller's to write, after: the label is committed by then, and an audit row
        refused afterwards must not make the label look unwritten (the console logs it instead)."""
        if label not in LABELS:
            msg = f"label must be one of {', '.join(LABELS)}, got {label!r}"
            raise AccountError(msg)
        # one row per rule id as the column keeps it (64 characters), active before shadow: a case naming a
        # rule twice (another producer's record) was a duplicate key (a 500), and the shadow ids were looked
        # for in the tuple of active ones (50,000 of each: 2.5 billion comparisons in a worker thread)
        marks: dict[str, bool] = {}
        for rule in rules:
            marks.setdefault(rule[:64], False)
        for rule in shadow:
            marks.setdefault(rule[:64], True)
        rows = list(marks.items())
        if not rows:
            msg = f"case {case_id!r} names no rule"
            raise AccountError(msg)
        key = case_key(user_id, case_id)

        def write(cur: Any) -> None:
            # table names: checked identifiers (migrations.quote); values: parameters
            cur.execute("DELETE FROM {labels} WHERE case_id = %s".format(**self.t), (key,))  # noqa: S608
            cur.executemany(
                "INSERT INTO {labels} (case_id, rule_id, shadow, user_id, label, note, labelled_by) "  # noqa: S608
                "VALUES (%s, %s, %s, %s, %s, %s, %s)".format(**self.t),
                [(key, rule, sh, user_id[:255], label, note, by) for rule, sh in rows],
            )

        self._transaction(f"the label of case {case_id[:255]!r} of user {user_id[:255]!r}", write)

    def labels(self, user_id: str, case_ids: list[str]) -> dict[str, tuple[str, str | None, str]]:
        """case id -> (label, note, by) for the labelled ones among ``user_id``'s ``case_ids``."""
        return self.labels_by_key({case_key(user_id, c): c for c in case_ids})

    def labels_by_key(self, keys: dict[str, str]) -> dict[str, tuple[str, str | None, str]]:
        """Like :meth:`labels`, by the cases' keys (:func:`case_key`): ``keys`` maps each key to what the
        answer names it by."""
        if not keys:
            return {}
        marks = ", ".join(["%s"] * len(keys))
        rows = self._run(
            "SELECT DISTINCT case_id, label, note, labelled_by FROM {labels} WHERE case_id IN ("  # noqa: S608
            + marks
            + ")",
            tuple(keys),
        )
        return {keys[str(c)]: (str(label), note, str(by)) for c, label, note, by in rows if str(c) in keys}

    def precision(self, rule_id: str) -> dict[str, Any]:
        """The rule's labelled cases: fraud and legitimate counts and precision, active hits and shadow hits
        apart (precision None while nothing is labelled)."""
        rows = self._run(
            "SELECT shadow, label, COUNT(*) FROM {labels} WHERE rule_id = %s GROUP BY shadow, label",
            (rule_id,),
        )
        out: dict[str, Any] = {}
        for mode in ("active", "shadow"):
            counts = {label: 0 for label in LABELS}
            for shadow, label, n in rows:
                if bool(shadow) == (mode == "shadow") and label in counts:
                    counts[str(label)] = int(n)
            total = sum(counts.values())
            out[mode] = {**counts, "labelled": total, "precision": counts["fraud"] / total if total else None}
        return out


def audit_written(
    accounts: AccountStore,
    who: str | None,
    action: str,
    target: str | None,
    detail: str | None,
    *,
    kind: str = "rule",
    done: str = "written",
) -> None:
    """The audit row of a change already committed: a rule's (by the rules store), a case's label, a
    logout's end of session, a user added or changed (``riskctl console user add``); or of a backtest
    already run and shown (``done="run"``: it writes nothing else). If MySQL refuses it or is lost before
    it, the change stands (a rule's history records its author, version and comment as well; a label its
    author), so the page (or the command) must not say "nothing was written", as it did: logged as an error
    instead, with the change. ``kind``: what ``target`` is, for the log line (``"the session"`` without a
    target); ``done``: what became of the action (``... was written, but its audit row was not``)."""
    try:
        accounts.audit(who, action, target, detail)
    except Exception as exc:  # noqa: BLE001 - whatever MySQL or the network raised, the write is done
        LOG.error(  # noqa: TRY400 - the reason is in the line; no traceback per failed audit row
            "console: %s of %s by %s was %s, but its audit row was not (%s): %s",
            action,
            kind if target is None else f"{kind} {target[:255]!r}",
            who,
            done,
            refusal(exc) or exc,
            (detail or "")[:1000],
        )
