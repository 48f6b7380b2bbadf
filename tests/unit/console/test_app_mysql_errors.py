"""How the console answers MySQL refusing a statement for a missing privilege, without MySQL: a connection
whose statements MySQL refuses as it does (pymysql's error with MySQL's code and message). The lock waits,
which need real row locks, are in tests/integration/test_console_http.py."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from riskctl.console.app import COOKIE, Backend, create_app
from riskctl.console.security import RateLimiter
from riskctl.store.migrations import MIGRATIONS

DENIED = "UPDATE command denied to user 'console'@'10.0.0.7' for table 'rules'"


class _Cursor:
    """Answers the session settings, the store's check of its migrations (all applied) and the console's
    session lookup (a live session of an approver); MySQL refuses every other statement with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.rows: list[tuple[Any, ...]] = []

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: Any = None) -> None:
        import pymysql

        if sql.startswith("SET SESSION"):
            self.rows = []
        elif "information_schema.tables" in sql:  # migrations.applied_versions: the bookkeeping table
            self.rows = [(1,)]
        elif sql.startswith("SELECT version FROM") and params == ("rules",):  # ... and what it holds
            self.rows = [(version,) for version, _, _ in MIGRATIONS]
        elif "JOIN" in sql and "sessions" in sql:  # AccountStore.session
            self.rows = [("ann", "approver", "the-csrf")]
        else:
            raise pymysql.err.OperationalError(self.code, DENIED)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


class _Connection:
    def __init__(self, code: int) -> None:
        self.code = code

    def cursor(self) -> _Cursor:
        return _Cursor(self.code)

    def commit(self) -> None:
        return None

    def rollback(self) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.mark.parametrize("code", [1142, 1143, 1044, 1227])
def test_a_privilege_the_consoles_mysql_account_lacks_is_a_500_that_blames_the_server_not_the_input(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A status change MySQL refused for a privilege the console's account lacks (error 1142, ...) was a 400
    page with MySQL's message, as if the analyst had sent a bad change. It is the server's configuration: a
    500 saying the console's MySQL account lacks a privilege, MySQL's message (the account, the host, the
    table) in the log only."""
    app = create_app(Backend(lambda: _Connection(code)), secure_cookies=False)
    client = TestClient(app, follow_redirects=False, cookies={COOKIE: "t" * 43})
    with caplog.at_level(logging.ERROR, "riskctl.console"):
        resp = client.post("/rules/r1/change", data={"csrf": "the-csrf", "op": "shadow"})
    assert resp.status_code == 500, resp.text
    assert f"the console's MySQL account lacks a privilege this needs (MySQL error {code})" in resp.text
    assert "not your input" in resp.text
    assert "10.0.0.7" not in resp.text and "denied" not in resp.text
    logged = [r.getMessage() for r in caplog.records if r.name == "riskctl.console"]
    assert any("POST /rules/r1/change" in line and DENIED in line for line in logged), logged
    api = client.get("/api/rules/r1/status")
    assert api.status_code == 500
    assert api.json() == {"ok": False, "error": resp.text}


class _AuditRefused(_Cursor):
    """No such user; MySQL refuses the audit row (a trigger's SIGNAL, 1644)."""

    def execute(self, sql: str, params: Any = None) -> None:
        if sql.startswith("SELECT role, password_hash FROM"):  # AccountStore.check_login
            self.rows = []
        else:
            super().execute(sql, params)


def test_a_wrong_password_whose_audit_row_mysql_refuses_still_counts_toward_the_login_limit() -> None:
    """A failed login whose audit row MySQL refused (or kept out with a row lock) was forgiven by the login
    rate limiter, as if MySQL had not answered and no password had been checked: it had been, and was wrong.
    Guesses whose audit rows failed were not limited. Now they count; the answer is the error as before."""

    class Connection(_Connection):
        def cursor(self) -> _Cursor:
            return _AuditRefused(1644)

    app = create_app(
        Backend(lambda: Connection(1644)),
        secure_cookies=False,
        limiter=RateLimiter(max_failures=1, window_s=60),
    )
    client = TestClient(app, follow_redirects=False, raise_server_exceptions=False)
    statuses = []
    for _ in range(2):
        page = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        data = {"csrf": token.group(1), "username": "mallory", "password": "a guess"}
        statuses.append(client.post("/login", data=data).status_code)
    assert statuses == [500, 429], statuses
