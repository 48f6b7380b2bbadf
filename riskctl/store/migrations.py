"""The MySQL schema of the rules store, as idempotent, versioned migrations.

Three tables per rules table (names derived by :func:`table_names`, so tests can use uuid-named copies):

- ``rules`` — the *current* rules, read by the Flink job through CDC (a fixed contract with the job: the
  columns of migration 1 never change; later migrations may only add).
- ``rule_history`` — append-only, one row per version ever written (and one per deletion), with author, time,
  comment and the whole document, so any past version can be seen and restored.
- ``rule_status`` — written by the job: what it did with each rule version it saw (accepted, refused,
  deleted).

``schema_migrations`` (shared) records which migration ran for which rules table. ``migrate`` takes a
named lock (``GET_LOCK``) so concurrent callers (the job, the CLI, tests) apply each migration once; every
statement is itself idempotent (``IF NOT EXISTS``) because MySQL commits DDL implicitly and a crash between
the DDL and its bookkeeping row must not break the next run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from riskctl.core.decisions import user_key
from riskctl.errors import ConfigError, ServiceError

MIGRATIONS_TABLE = "schema_migrations"
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_LOCK_TIMEOUT_S = 30
_SERVICE = "MySQL"
_TABLE_EXISTS = (
    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s"
)
#: characters of ``console_labels.case_id``
MAX_CASE_KEY = 255
_HASHED = "#sha256:"


def _bounded(text: str) -> str:
    """``text`` if it fits :data:`MAX_CASE_KEY` and holds no ``#sha256:``, else a prefix of it and its
    SHA-256 (so it never equals a kept one). Two texts never share one (but for a SHA-256 collision)."""
    if len(text) <= MAX_CASE_KEY and _HASHED not in text:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text[: MAX_CASE_KEY - len(_HASHED) - len(digest)] + _HASHED + digest


def case_key(user_id: str, case_id: str) -> str:
    """The console's key of the case ``case_id`` (``decision:<event_id>``, ``alert:<alert_id>``) of
    ``user_id``: what its labels are stored under and the review page names it by, at most
    :data:`MAX_CASE_KEY` characters.

    A case id names a case only within its user (event ids are the sender's, unique per user; alert ids are
    built from them): keyed by the id alone, one user's event with another's event id made both cases one,
    and a label for either landed on whichever came last. The key is
    :func:`~riskctl.core.decisions.user_key` (``<len(user)>:<user>:<id>``, as the alert dispatcher's) of the
    user and the id bounded as it was keyed before (an event id may have 4,096 characters, another
    producer's a megabyte), itself bounded: a case of the job's is ``5:alice:decision:e1``, readable; a
    longer one keeps a readable prefix and a SHA-256. Built from the former key, not the whole id, so that
    migration 3 can rewrite every former key, the hashed ones too, from the ``user_id`` stored beside it.
    """
    return _user_case_key(user_id, _bounded(case_id))


def _user_case_key(user_id: str, former_key: str) -> str:
    """:func:`case_key` from a case's key of before migration 3 (its id, bounded)."""
    return _bounded(user_key(user_id, former_key))


@dataclass(frozen=True)
class TableNames:
    """The tables of one rules store. ``rules`` is ``settings.job.rules_table``; the others follow from it."""

    rules: str
    history: str
    status: str

    def quoted(self) -> dict[str, str]:
        """The names back-quoted, for ``str.format`` into SQL."""
        out = {"rules": quote(self.rules), "history": quote(self.history), "status": quote(self.status)}
        out.update({key: quote(name) for key, name in self.console().items()})
        return out

    def console(self) -> dict[str, str]:
        """The web console's tables (``riskctl console``, migration 2): accounts, sessions, audit, labels.
        Named like the status table: ``rules`` -> ``console_users``; ``t1_rules`` -> ``t1_console_users``;
        ``policies`` -> ``policies_console_users``; a prefix too long for MySQL's 64 characters becomes
        ``c<12 hex digits of the rules table's SHA-256>_``."""
        tail = "rule_status"
        prefix = self.status[: -len(tail)] if self.status.endswith(tail) else self.rules + "_"
        if len(prefix) > 64 - len("console_sessions"):  # a long rules table name: a short prefix of its own
            prefix = f"c{hashlib.sha256(self.rules.encode()).hexdigest()[:12]}_"
        return {key: f"{prefix}console_{key}" for key in ("users", "sessions", "audit", "labels")}


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a safe SQL identifier (letters, digits, ``_``; at most 64), else raise."""
    if not isinstance(name, str) or not _IDENT_RE.fullmatch(name):
        msg = (
            f"invalid table name {name!r}: use 1-64 letters, digits or '_', not starting with a digit "
            "(set it with RISKCTL_JOB_RULES_TABLE or [job] rules_table in riskctl.toml)"
        )
        raise ConfigError(msg)
    return name


def quote(name: str) -> str:
    """The identifier back-quoted for SQL, after :func:`check_identifier`."""
    return f"`{check_identifier(name)}`"


def table_names(rules_table: str = "rules") -> TableNames:
    """The history and status tables that go with ``rules_table``.

    A name ending in ``rules`` keeps its prefix: ``rules`` -> ``rule_history``, ``rule_status``;
    ``t1_rules`` -> ``t1_rule_history``, ``t1_rule_status``. Any other name gets suffixes:
    ``policies`` -> ``policies_history``, ``policies_status``.
    """
    check_identifier(rules_table)
    if rules_table.endswith("rules"):
        prefix = rules_table[: -len("rules")]
        names = TableNames(rules_table, f"{prefix}rule_history", f"{prefix}rule_status")
    else:
        names = TableNames(rules_table, f"{rules_table}_history", f"{rules_table}_status")
    check_identifier(names.history)
    check_identifier(names.status)
    return names


def _v1(cur: Any, t: dict[str, str]) -> None:
    cur.execute(
        """CREATE TABLE IF NOT EXISTS {rules} (
            rule_id VARCHAR(64) NOT NULL PRIMARY KEY,
            version INT NOT NULL,
            status VARCHAR(16) NOT NULL,
            document LONGTEXT NOT NULL,
            updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
            updated_by VARCHAR(128) NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""".format(**t)
    )
    cur.execute(
        """CREATE TABLE IF NOT EXISTS {history} (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            rule_id VARCHAR(64) NOT NULL,
            version INT NOT NULL,
            status VARCHAR(16) NOT NULL,
            `change` VARCHAR(16) NOT NULL,
            author VARCHAR(128) NULL,
            comment TEXT NULL,
            document LONGTEXT NULL,
            digest CHAR(16) NULL,
            created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
            UNIQUE KEY uq_rule_version (rule_id, version)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""".format(**t)
    )
    cur.execute(
        """CREATE TABLE IF NOT EXISTS {status} (
            rule_id VARCHAR(64) NOT NULL,
            version INT NOT NULL,
            state VARCHAR(16) NOT NULL,
            reason TEXT NULL,
            field VARCHAR(255) NULL,
            seen_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
            PRIMARY KEY (rule_id, version)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""".format(**t)
    )


def _v2(cur: Any, t: dict[str, str]) -> None:
    # The web console (riskctl/console): accounts with roles, server-side sessions (the cookie holds a random
    # token; only its SHA-256 is stored), an append-only audit of who changed what when, review labels (one
    # row per rule that hit the case, active or shadow, so each rule's precision is one GROUP BY).
    cur.execute(
        """CREATE TABLE IF NOT EXISTS {users} (
            username VARCHAR(64) NOT NULL PRIMARY KEY,
            role VARCHAR(16) NOT NULL,
            password_hash VARCHAR(255) NOT NULL,
            created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
            updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""".format(**t)
    )
    cur.execute(
        """CREATE TABLE IF NOT EXISTS {sessions} (
            token_hash CHAR(64) NOT NULL PRIMARY KEY,
            username VARCHAR(64) NOT NULL,
            csrf CHAR(43) NOT NULL,
            created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
            expires_at TIMESTAMP(3) NOT NULL,
            KEY ix_user (username)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""".format(**t)
    )
    cur.execute(
        """CREATE TABLE IF NOT EXISTS {audit} (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
            username VARCHAR(64) NULL,
            action VARCHAR(32) NOT NULL,
            target VARCHAR(255) NULL,
            detail TEXT NULL,
            KEY ix_target (target)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""".format(**t)
    )
    cur.execute(
        """CREATE TABLE IF NOT EXISTS {labels} (
            case_id VARCHAR(255) NOT NULL,
            rule_id VARCHAR(64) NOT NULL,
            shadow BOOLEAN NOT NULL,
            user_id VARCHAR(255) NULL,
            label VARCHAR(16) NOT NULL,
            note TEXT NULL,
            labelled_by VARCHAR(64) NOT NULL,
            labelled_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
            PRIMARY KEY (case_id, rule_id),
            KEY ix_rule (rule_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""".format(**t)
    )


def _v3(cur: Any, t: dict[str, str]) -> None:
    # Review labels keyed by the case's user and id (case_key), not the id alone (two users' events may
    # share an id). Every former key (decision:..., alert:..., hashed or not) is rewritten with the user_id
    # stored in its rows; new keys start with a digit, so they are never selected again. Data only, no DDL:
    # in the transaction that records the migration (migrate commits both at once). Rows without a user_id
    # (none of the console's) keep their key.
    cur.execute(
        "SELECT DISTINCT case_id, user_id FROM {labels} "  # noqa: S608 - a checked table name
        "WHERE user_id IS NOT NULL AND (case_id LIKE %s OR case_id LIKE %s)".format(**t),
        ("decision:%", "alert:%"),
    )
    rows = [(str(former), str(user)) for former, user in cur.fetchall()]
    cur.executemany(
        "UPDATE {labels} SET case_id = %s WHERE case_id = %s AND user_id = %s".format(**t),  # noqa: S608
        [(_user_case_key(user, former), former, user) for former, user in rows],
    )


#: (version, description, function). Append only; never edit a migration that has shipped.
MIGRATIONS: tuple[tuple[int, str, Callable[[Any, dict[str, str]], None]], ...] = (
    (1, "rules, rule_history, rule_status", _v1),
    (2, "console_users, console_sessions, console_audit, console_labels", _v2),
    (3, "console_labels keyed by the case's user and id", _v3),
)


def _ensure_migrations_table(cur: Any) -> None:
    cur.execute(
        f"""CREATE TABLE IF NOT EXISTS {quote(MIGRATIONS_TABLE)} (
            scope VARCHAR(64) NOT NULL,
            version INT NOT NULL,
            description VARCHAR(255) NOT NULL,
            applied_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
            PRIMARY KEY (scope, version)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"""
    )


def applied_versions(conn: Any, rules_table: str = "rules") -> list[int]:
    """The migrations already applied for ``rules_table`` (empty if none, or if the bookkeeping table is
    missing).
    """
    check_identifier(rules_table)
    with conn.cursor() as cur:
        cur.execute(
            _TABLE_EXISTS,
            (MIGRATIONS_TABLE,),
        )
        if cur.fetchone()[0] == 0:
            return []
        cur.execute(
            f"SELECT version FROM {quote(MIGRATIONS_TABLE)} WHERE scope = %s ORDER BY version",  # noqa: S608
            (rules_table,),
        )
        return [int(row[0]) for row in cur.fetchall()]


def migrate(conn: Any, rules_table: str = "rules") -> list[int]:
    """Bring the rules store of ``rules_table`` up to date; return the migration versions applied now.

    ``conn`` is a DB-API connection (pymysql) to the target database. Safe to call on every start and from
    several processes at once.
    """
    names = table_names(rules_table)
    done = applied_versions(conn, rules_table)
    if len(done) >= len(MIGRATIONS) and set(done) >= {m[0] for m in MIGRATIONS}:
        return []  # the common case: one query, no lock, no DDL
    lock = f"riskctl.migrate.{rules_table}"
    applied: list[int] = []
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, %s)", (lock, _LOCK_TIMEOUT_S))
        if cur.fetchone()[0] != 1:
            # A riskctl error (a TimeoutError was a traceback of every 'riskctl rules' command, found in
            # review), naming who holds the lock.
            cur.execute("SELECT IS_USED_LOCK(%s)", (lock,))
            holder = cur.fetchone()[0]
            who = f"MySQL connection {holder}" if holder is not None else "another process"
            msg = (
                f"timed out after {_LOCK_TIMEOUT_S} s waiting for {who} to finish migrating the tables of "
                f"{rules_table!r} (it holds the lock {lock!r}); retry when it is done, or end that "
                "connection (KILL) if it is stuck"
            )
            raise ServiceError(_SERVICE, msg)
        try:
            _ensure_migrations_table(cur)
            cur.execute(
                f"SELECT version FROM {quote(MIGRATIONS_TABLE)} WHERE scope = %s",  # noqa: S608
                (rules_table,),
            )
            done_now = {int(row[0]) for row in cur.fetchall()}
            for version, description, apply in MIGRATIONS:
                if version in done_now:
                    continue
                apply(cur, names.quoted())
                cur.execute(
                    f"INSERT INTO {quote(MIGRATIONS_TABLE)} (scope, version, description) "  # noqa: S608
                    "VALUES (%s, %s, %s)",
                    (rules_table, version, description),
                )
                conn.commit()
                applied.append(version)
        finally:
            cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
            cur.fetchall()
    return applied


def drop_store(conn: Any, rules_table: str) -> None:
    """Drop the tables of a rules store and forget its migrations (for tests with uuid-named tables)."""
    names = table_names(rules_table)
    with conn.cursor() as cur:
        for name in (names.rules, names.history, names.status, *names.console().values()):
            cur.execute(f"DROP TABLE IF EXISTS {quote(name)}")
        cur.execute(
            _TABLE_EXISTS,
            (MIGRATIONS_TABLE,),
        )
        if cur.fetchone()[0]:
            cur.execute(f"DELETE FROM {quote(MIGRATIONS_TABLE)} WHERE scope = %s", (rules_table,))  # noqa: S608
    conn.commit()
