"""AccountStore's transactions without MySQL: a fake pymysql connection whose statements fail as told."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

import riskctl.store.rules_store as rules_store
from riskctl.console.accounts import AccountStore
from riskctl.errors import StoreBusyError


def deadlock() -> pymysql.err.OperationalError:
    return pymysql.err.OperationalError(
        1213, "Deadlock found when trying to get lock; try restarting transaction"
    )


class FakeConnection:
    """Runs each statement through ``fail(sql)`` (an error to raise, or None); logs the statements that ran,
    counts commits and rollbacks."""

    def __init__(self, fail: Callable[[str], BaseException | None]) -> None:
        self.fail = fail
        self.ran: list[str] = []
        self.commits = 0
        self.rollbacks = 0

    def cursor(self) -> FakeConnection:
        return self

    def __enter__(self) -> FakeConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: Any = None) -> None:
        error = self.fail(sql)
        if error is not None:
            raise error
        self.ran.append(sql.split()[0])

    def executemany(self, sql: str, rows: Any) -> None:
        self.execute(sql)

    def fetchall(self) -> list[Any]:
        return []

    def commit(self) -> None:
        self.commits += 1

    def rollback(self) -> None:
        self.rollbacks += 1


@pytest.fixture(autouse=True)
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    pauses: list[float] = []
    monkeypatch.setattr(rules_store.time, "sleep", pauses.append)
    return pauses


def once(error: Callable[[], BaseException], on: str) -> Callable[[str], BaseException | None]:
    """``error()`` for the first statement that begins with ``on``, then nothing."""
    left = [error]
    return lambda sql: left.pop()() if left and sql.startswith(on) else None


def label(accounts: AccountStore) -> None:
    accounts.label_case("decision:e1", ("r1", "r2"), (), "alice", "fraud", None, "ann")


def test_a_label_that_deadlocks_once_is_written_by_its_second_try(slept: list[float]) -> None:
    """A deadlock (1213: MySQL rolled the whole transaction back) on an account write was not retried: a
    503 for the analyst, as if a lock had been held for the whole lock wait. Now the rules store's retry:
    the whole transaction again, after a short pause, and written once."""
    conn = FakeConnection(once(deadlock, "INSERT"))
    label(AccountStore(conn, auto_migrate=False))
    assert conn.ran == ["DELETE", "DELETE", "INSERT"]  # the deadlocked try's DELETE, then the whole label
    assert (conn.commits, conn.rollbacks) == (1, 1)
    assert len(slept) == 1 and 0 < slept[0] < 0.2


def test_a_logout_that_deadlocks_once_ends_the_session() -> None:
    conn = FakeConnection(once(deadlock, "DELETE"))
    AccountStore(conn, auto_migrate=False).close_session("a token")
    assert conn.ran == ["DELETE"] and (conn.commits, conn.rollbacks) == (1, 1)


def test_a_label_that_deadlocks_on_every_try_is_one_busy_error_naming_it(slept: list[float]) -> None:
    conn = FakeConnection(lambda sql: deadlock())
    with pytest.raises(StoreBusyError) as caught:
        label(AccountStore(conn, auto_migrate=False))
    error = caught.value
    assert (error.code, error.attempts) == (1213, rules_store.DEADLOCK_ATTEMPTS)
    assert str(error).startswith(
        "MySQL: the label of case 'decision:e1' of user 'alice' was not written, nothing was: it "
    )
    assert (conn.commits, conn.rollbacks) == (0, rules_store.DEADLOCK_ATTEMPTS)
    assert len(slept) == rules_store.DEADLOCK_ATTEMPTS - 1


def test_any_other_error_of_an_account_write_is_not_retried() -> None:
    refused = pymysql.err.OperationalError(1644, "refused by a trigger")
    conn = FakeConnection(lambda sql: refused)
    with pytest.raises(pymysql.err.OperationalError) as caught:
        AccountStore(conn, auto_migrate=False).audit("ann", "login", None)
    assert caught.value is refused and (conn.commits, conn.rollbacks) == (0, 1)


class LostConnection(FakeConnection):
    """A connection MySQL lost in the middle of a statement: pymysql has closed it, so its rollback raises
    InterfaceError (0, '')."""

    def __init__(self) -> None:
        super().__init__(
            lambda sql: pymysql.err.OperationalError(2013, "Lost connection to server during query")
        )
        self.closed = False

    def rollback(self) -> None:
        raise pymysql.err.InterfaceError(0, "")

    def close(self) -> None:
        self.closed = True


def test_an_account_write_whose_connection_is_lost_raises_the_loss_not_the_rollbacks_error() -> None:
    """AccountStore wrote its own commit-or-rollback again beside the rules store's transaction(): a
    rollback on a connection MySQL had lost raised pymysql's InterfaceError (0, ''), which replaced the
    error saying why (the lost connection), as it did in the rules store before (found in review there)."""
    conn = LostConnection()
    with pytest.raises(pymysql.err.OperationalError) as caught:
        AccountStore(conn, auto_migrate=False).audit("ann", "logout", None)
    assert caught.value.args[0] == 2013 and conn.closed


def test_a_user_written_whose_audit_row_mysql_refuses_is_added_and_the_refusal_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """'riskctl console user add' wrote the user, then its audit row: a refused audit row (a trigger, a lock
    wait) failed the command though the user was written, and a retry said 'updated'. Now, as for the
    console's changes, the user stands and the refused audit row is logged as an error naming it."""
    refused = pymysql.err.OperationalError(1644, "audit refused by a trigger")
    conn = FakeConnection(lambda sql: refused if sql.startswith("INSERT INTO `console_audit`") else None)
    with caplog.at_level(logging.ERROR, "riskctl.console"):
        created = AccountStore(conn, auto_migrate=False).add_user("ann", "analyst", "a long password 1")
    assert created is True
    assert conn.ran == ["SELECT", "INSERT"] and (conn.commits, conn.rollbacks) == (2, 1)
    [line] = [r.getMessage() for r in caplog.records if r.name == "riskctl.console"]
    assert line == (
        "console: user_add of user 'ann' by None was written, but its audit row was not "
        "(MySQL error 1644: audit refused by a trigger): role=analyst"
    )
