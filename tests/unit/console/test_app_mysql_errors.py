"""How the console answers MySQL refusing a statement for a missing privilege, without MySQL: a connection
whose statements MySQL refuses as it does (pymysql's error with MySQL's code and message). The lock waits,
which need real row locks, are in tests/integration/test_console_http.py."""

from __future__ import annotations

import html
import logging
import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from riskctl.console.app import COOKIE, Backend, create_app
from riskctl.console.security import RateLimiter, hash_password
from riskctl.store.migrations import MIGRATIONS

DENIED = "UPDATE command denied to user 'console'@'10.0.0.7' for table 'rules'"


@pytest.fixture(autouse=True)
def _every_line_logged() -> Any:
    """The console's logger without the filters a console started earlier in the session put on it (a
    server_config of another test: its limit of one warning per reason every 10 s held back the second and
    third lock warnings these tests count, depending on which tests ran before)."""
    logger = logging.getLogger("riskctl.console")
    held = list(logger.filters)
    for f in held:
        logger.removeFilter(f)
    yield
    for f in held:
        logger.addFilter(f)


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


class _LoginWritesRefused(_Cursor):
    """A user ``ann`` (an approver) whose password is :data:`ANN_PASSWORD`; MySQL answers every write (the
    audit row, the session) with ``code``: pymysql's error, as MySQL's refusal (a trigger's SIGNAL 1644, a
    privilege 1142, a lock wait 1205) or a connection lost (2013) comes."""

    def execute(self, sql: str, params: Any = None) -> None:
        import pymysql

        if sql.startswith("SELECT role, password_hash FROM"):  # AccountStore.check_login
            self.rows = [("approver", ANN_HASH)] if params == ("ann",) else []
        elif sql.startswith(("INSERT", "DELETE")):
            messages = {
                2013: "Lost connection to MySQL server during query",
                1205: "Lock wait timeout exceeded",
            }
            raise pymysql.err.OperationalError(self.code, messages.get(self.code, REFUSED))
        else:
            super().execute(sql, params)


ANN_PASSWORD = "ann's long password"  # noqa: S105 - a test account's
ANN_HASH = hash_password(ANN_PASSWORD)
REFUSED = "audit refused by a trigger on 'rules_console_audit'"
#: MySQL's answer to a login's writes -> the login's status, the start of the reason it shows
LOGIN_ANSWERS = {
    1644: (500, "not logged in: MySQL refused to record this login (MySQL error 1644), and the console lets"),
    1406: (500, "not logged in: MySQL refused to record this login (MySQL error 1406), and the console lets"),
    1142: (500, "the console's MySQL account lacks a privilege this needs (MySQL error 1142)"),
    1205: (503, "MySQL: the login of '{user}' was not written, nothing was: it waited for a row lock"),
    2013: (503, "the rules database (MySQL) is not answering: try again in a few seconds"),
}


@pytest.mark.parametrize("code", list(LOGIN_ANSWERS))
def test_a_login_whose_writes_mysql_refuses_shows_why_and_counts_only_a_wrong_password(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A login whose audit row (or session) MySQL refused was the driver's error, a bare 500 with a
    traceback (a trigger's SIGNAL, strict mode; a missing privilege a plain-text 500, MySQL away a
    plain-text 503). Now the login form again, the name kept, with the status and the reason: a refusal
    500, a privilege 500 saying so, a lock or MySQL away 503 with Retry-After; the same reason for a right
    password as for a wrong one. MySQL's message is in the log only. A wrong password still counts toward
    the login limit (de2fae9: it had been forgiven), a right one does not."""
    status, reason = LOGIN_ANSWERS[code]

    class Connection(_Connection):
        def cursor(self) -> _Cursor:
            return _LoginWritesRefused(code)

    app = create_app(
        Backend(lambda: Connection(code)),
        secure_cookies=False,
        limiter=RateLimiter(max_failures=1, window_s=60),
    )
    client = TestClient(app, follow_redirects=False)

    def login(user: str, password: str) -> Any:
        page = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        return client.post("/login", data={"csrf": token.group(1), "username": user, "password": password})

    with caplog.at_level(logging.WARNING, "riskctl.console"):
        answers = [login("ann", ANN_PASSWORD), login("ann", ANN_PASSWORD), login("mallory", "a guess")]
    for resp, user in zip(answers, ("ann", "ann", "mallory"), strict=True):
        assert resp.status_code == status, resp.text
        shown = re.search(r'<p class="err" id="login-error">(.*?)</p>', resp.text, re.S)
        assert shown and html.unescape(shown.group(1)).startswith(reason.format(user=user)), resp.text
        assert f'name="username" value="{user}"' in resp.text and COOKIE not in resp.cookies
        assert ("retry-after" in resp.headers) == (status == 503)
        assert REFUSED not in resp.text and "Traceback" not in resp.text
    # a right password is forgiven (it logged in again and again); a wrong one counts: the next is a 429
    assert login("ann", ANN_PASSWORD).status_code == 429
    if code != 2013:  # MySQL away: the one line of _log_away, which says so without the user
        logged = [r.getMessage() for r in caplog.records if "nobody was logged in" in r.getMessage()]
        assert len(logged) == 3, logged
        assert "the login of 'ann' from testclient (its audit row and its session; the pass" in logged[0]
        assert "the login of 'mallory' from testclient (its audit row: a wrong password " in logged[2]
        if code != 1205:
            assert all(f"MySQL error {code}: {REFUSED}" in line for line in logged), logged
