"""RuleStore's transactions without MySQL: a fake pymysql connection records what the store asks of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pymysql
import pytest

import riskctl.store.rules_store as rules_store
from riskctl.errors import StoreBusyError, VersionConflictError
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
    rolled_back_before_reading: list[bool] = []

    def answer(sql: str, params: Any) -> list[tuple[Any, ...]]:
        if sql.startswith("SELECT version FROM"):  # _actual: what the other writer left
            # read after the transaction is rolled back: inside it, the version read was its own new one
            rolled_back_before_reading.append(conn.rollbacks > 0)
            return [(3,)]
        if sql.startswith("INSERT"):
            raise pymysql.err.IntegrityError(1062, "Duplicate entry 'r_a' for key 'PRIMARY'")
        return []

    conn = FakeConnection(answer)
    rules = store(conn)
    with pytest.raises(VersionConflictError) as caught, rules._transaction() as cur:
        rules._write(cur, "r_a", None, {"action": "REVIEW", "when": "true"}, "create", "me", None)
    assert (caught.value.rule_id, caught.value.expected, caught.value.actual) == ("r_a", None, 3)
    assert rolled_back_before_reading == [True]
    assert conn.rollbacks >= 1 and conn.commits == 0


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


# -- deadlocks and lock wait timeouts ------------------------------------------------------------------------
DOCUMENT = '{"id": "r_a", "version": 1, "status": "active", "action": "REVIEW", "when": "true"}'
ROW = ("r_a", 1, "active", DOCUMENT, None, "me")


def locked_rule(error: Callable[[], BaseException | None], statement: str = "UPDATE") -> FakeConnection:
    """Rule r_a at version 1; each ``statement`` (an UPDATE of the rules table, a DELETE) raises what
    ``error()`` gives (None: none)."""

    def answer(sql: str, params: Any) -> list[tuple[Any, ...]]:
        if sql.startswith("SELECT rule_id, version, status, document"):
            return [ROW]
        if sql.startswith("SELECT @@SESSION.innodb_lock_wait_timeout"):
            return [(20,)]
        if sql.startswith(statement):
            exc = error()
            if exc is not None:
                raise exc
        return []

    return FakeConnection(answer)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(rules_store.time, "sleep", slept.append)
    return slept


def deadlock() -> pymysql.err.OperationalError:
    return pymysql.err.OperationalError(
        1213, "Deadlock found when trying to get lock; try restarting transaction"
    )


def test_a_deadlock_is_retried_as_a_whole_transaction_and_written_once(_no_backoff: list[float]) -> None:
    errors = [deadlock(), None]
    conn = locked_rule(lambda: errors.pop(0) if errors else None)
    change = store(conn).set_status("r_a", "disabled", author="me")
    assert change is not None and (change.from_version, change.version) == (1, 2)
    assert (conn.commits, conn.rollbacks) == (1, 1)  # the deadlocked try rolled back, the second committed
    # each try ran the whole transaction: the row locked and read again (twice a try: the status write checks
    # the version it expects under the lock), not only the statement that failed
    assert sum(sql.endswith("FOR UPDATE") for sql in conn.log) == 4
    assert len(_no_backoff) == 1 and 0 < _no_backoff[0] < 0.2


@pytest.mark.parametrize("method", ["set_status", "delete", "apply"])
def test_a_deadlock_on_every_try_is_one_busy_error_naming_what_was_not_written(
    method: str, _no_backoff: list[float]
) -> None:
    conn = locked_rule(deadlock, "DELETE" if method == "delete" else "UPDATE")
    rules = store(conn)
    with pytest.raises(StoreBusyError) as caught:
        if method == "set_status":
            rules.set_status("r_a", "disabled")
        elif method == "delete":
            rules.delete("r_a")
        else:
            plan = rules_store.Plan(
                (rules_store.PlanItem("r_a", "update", 1, 2, {"action": "REJECT", "when": "true"}, "a.yaml"),)
            )
            rules.apply(plan)
    error = caught.value
    assert (error.code, error.rule_ids, error.attempts) == (1213, ["r_a"], rules_store.DEADLOCK_ATTEMPTS)
    what = {"set_status": "the disable of rule 'r_a'", "delete": "the deletion of rule 'r_a'"}.get(
        method, "apply's 1 change(s) (update 'r_a')"
    )
    assert str(error).startswith(f"MySQL: {what} was not written, nothing was: it deadlocked")
    assert "\n" not in str(error)
    assert conn.commits == 0 and conn.rollbacks == rules_store.DEADLOCK_ATTEMPTS
    assert len(_no_backoff) == rules_store.DEADLOCK_ATTEMPTS - 1


def test_a_lock_wait_timeout_is_not_retried_and_says_how_long_it_waited(_no_backoff: list[float]) -> None:
    timeout = pymysql.err.OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction")
    conn = locked_rule(lambda: timeout)
    with pytest.raises(StoreBusyError) as caught:
        store(conn).set_status("r_a", "shadow", author="me")
    error = caught.value
    assert (error.code, error.attempts) == (1205, 1)
    assert "the shadow of rule 'r_a' was not written, nothing was: it waited 20 s for a row lock" in str(
        error
    )
    assert "error 1205" in str(error) and "information_schema.innodb_trx" in str(error)
    assert conn.commits == 0 and _no_backoff == []
    assert error.details() == {"mysql_error": 1205, "rule_ids": ["r_a"], "attempts": 1}


def test_any_other_mysql_error_of_a_write_goes_on_unchanged_and_is_not_retried() -> None:
    refused = pymysql.err.OperationalError(1644, "refused by a trigger")
    conn = locked_rule(lambda: refused)
    with pytest.raises(pymysql.err.OperationalError) as caught:
        store(conn).set_status("r_a", "disabled")
    assert caught.value is refused
    assert sum(sql.endswith("FOR UPDATE") for sql in conn.log) == 2  # one try
    assert (conn.commits, conn.rollbacks) == (0, 1)
