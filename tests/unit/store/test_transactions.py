"""RuleStore's transactions without MySQL: a fake pymysql connection records what the store asks of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from riskctl.errors import VersionConflictError
from riskctl.store.rules_store import RuleStore


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.rowcount = 1
        self._rows: list[tuple[Any, ...]] = []

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: Any = None) -> None:
        self.conn.log.append(sql)
        self._rows = self.conn.answer(sql, params)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None


class FakeConnection:
    """Answers each statement with ``answer(sql, params)``; counts commits and rollbacks."""

    def __init__(self, answer: Callable[[str, Any], list[tuple[Any, ...]]] | None = None) -> None:
        self.answer = answer or (lambda sql, params: [])
        self.log: list[str] = []
        self.commits = 0
        self.rollbacks = 0

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def commit(self) -> None:
        self.commits += 1

    def rollback(self) -> None:
        self.rollbacks += 1


def store(conn: FakeConnection) -> RuleStore:
    made = RuleStore(conn, "rules", auto_migrate=False)
    conn.log.clear()
    return made


def test_a_transaction_commits_when_its_block_ends() -> None:
    conn = FakeConnection()
    with store(conn)._transaction() as cur:
        cur.execute("UPDATE x")
    assert (conn.commits, conn.rollbacks) == (1, 0)


def test_a_transaction_rolls_back_and_reraises_on_any_error() -> None:
    conn = FakeConnection()
    with pytest.raises(KeyboardInterrupt), store(conn)._transaction() as cur:
        cur.execute("UPDATE x")
        raise KeyboardInterrupt
    assert (conn.commits, conn.rollbacks) == (0, 1)


def test_each_read_ends_its_transaction() -> None:
    conn = FakeConnection(lambda sql, params: [("r_a",), ("r_b",)] if "UNION" in sql else [])
    assert store(conn).known_ids() == ["r_a", "r_b"]
    assert conn.commits == 1


def test_a_duplicate_key_from_a_concurrent_writer_is_a_conflict_with_the_version_mysql_holds() -> None:
    def answer(sql: str, params: Any) -> list[tuple[Any, ...]]:
        if sql.startswith("SELECT version FROM"):  # _actual: what the other writer left
            return [(3,)]
        if sql.startswith("INSERT"):
            raise pymysql.err.IntegrityError(1062, "Duplicate entry 'r_a' for key 'PRIMARY'")
        return []

    conn = FakeConnection(answer)
    rules = store(conn)
    with pytest.raises(VersionConflictError) as caught, rules._transaction() as cur:
        rules._write(cur, "r_a", None, {"action": "REVIEW", "when": "true"}, "create", "me", None)
    assert (caught.value.rule_id, caught.value.expected, caught.value.actual) == ("r_a", None, 3)
    assert conn.rollbacks == 1 and conn.commits == 0


def test_another_mysql_error_goes_on_unchanged() -> None:
    def answer(sql: str, params: Any) -> list[tuple[Any, ...]]:
        if sql.startswith("INSERT"):
            raise pymysql.err.OperationalError(1644, "refused by a trigger")
        return []

    conn = FakeConnection(answer)
    rules = store(conn)
    with pytest.raises(pymysql.err.OperationalError), rules._transaction() as cur:
        rules._write(cur, "r_a", None, {"action": "REVIEW", "when": "true"}, "create", "me", None)
    assert conn.rollbacks == 1


class GoneConnection(FakeConnection):
    """A connection pymysql has closed (MySQL lost it, or Ctrl-C cut a read short): rollback cannot run."""

    closed = False

    def rollback(self) -> None:
        self.rollbacks += 1
        raise pymysql.err.InterfaceError(0, "")

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    "error",
    [pymysql.err.OperationalError(2013, "Lost connection to server during query"), KeyboardInterrupt()],
    ids=["connection-lost", "ctrl-c"],
)
def test_the_error_that_ended_a_transaction_goes_on_when_the_connection_cannot_roll_back(
    error: BaseException,
) -> None:
    # On the real MariaDB, a connection killed in the middle of 'riskctl rules apply' and Ctrl-C both ended
    # in "MySQL error: (0, '')": the failed rollback's InterfaceError replaced the error that said why.
    conn = GoneConnection()
    with pytest.raises(type(error)) as raised, store(conn)._transaction() as cur:
        cur.execute("INSERT INTO x")
        raise error
    assert raised.value is error
    assert conn.rollbacks == 1 and conn.closed and conn.commits == 0
