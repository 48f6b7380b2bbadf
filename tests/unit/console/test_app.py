"""The console's ASGI plumbing without MySQL: body limits, headers (the routes' tests that need a session
are in tests/integration/test_console_http.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from riskctl.console.app import MAX_BODY_BYTES, Backend, BodyLimit, create_app


def _no_database() -> Any:
    msg = "these tests never reach MySQL"
    raise AssertionError(msg)


def _chunks(total: int, size: int = 1024 * 1024) -> Iterator[bytes]:
    """A body with no Content-Length (sent chunked), ``total`` bytes."""
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


def test_a_chunked_body_over_the_limit_is_a_413_not_a_500() -> None:
    """A body without Content-Length is counted as it arrives; past the limit the answer was a 500: the
    middleware's own exception went through Starlette's error middleware (which answers 500) before it
    was caught."""

    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    client = TestClient(BodyLimit(Starlette(routes=[Route("/", echo, methods=["POST"])]), 100))
    small = client.post("/", content=_chunks(100, 30))
    assert small.status_code == 200 and small.text == "100"
    client = TestClient(
        BodyLimit(Starlette(routes=[Route("/", echo, methods=["POST"])]), 100), raise_server_exceptions=False
    )
    big = client.post("/", content=_chunks(101, 30))
    assert big.status_code == 413 and "over 100 bytes" in big.text
    app = create_app(Backend(_no_database), secure_cookies=False)
    console = TestClient(app, raise_server_exceptions=False)
    resp = console.post(
        "/login",
        content=_chunks(MAX_BODY_BYTES + 1),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 413


def test_pages_have_a_content_security_policy_with_a_nonce_per_response() -> None:
    """No answer had a Content-Security-Policy: had an escape ever been missed (a rule text, an event field,
    a note), a page would run the script in it. Pages now allow only their own inline scripts (a nonce per
    response) and requests to this origin; any other answer allows nothing."""
    client = TestClient(create_app(Backend(_no_database), secure_cookies=False))
    first, second = client.get("/login"), client.get("/login")
    policies = [r.headers["content-security-policy"] for r in (first, second)]
    for policy in policies:
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert directives["script-src"].startswith("'nonce-") and "unsafe" not in directives["script-src"]
        assert directives["connect-src"] == directives["form-action"] == "'self'"
    assert policies[0] != policies[1]  # a nonce per response
    refused = client.post("/login", content=b"{}", headers={"content-type": "application/json"})
    assert refused.status_code == 415
    assert (
        refused.headers["content-security-policy"]
        == "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
    )
    assert len(refused.headers.get_list("content-security-policy")) == 1


def test_a_mysql_that_does_not_answer_is_a_503_in_seconds() -> None:
    """A MySQL that accepts connections but never answers (frozen, a network dropping its packets): the
    handshake waited forever (pymysql has no read timeout by default), each request held a worker thread,
    and once all were held no page needing MySQL answered again. Now a 503 after the console's timeout."""
    import dataclasses
    import socket
    import threading
    import time

    from riskctl.config import Settings
    from riskctl.console.app import mysql_backend

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the connections; nobody ever reads or writes them
    port = silent.getsockname()[1]
    base = Settings()
    settings = dataclasses.replace(
        base, mysql=dataclasses.replace(base.mysql, host="127.0.0.1", port=port, password="x")
    )
    client = TestClient(create_app(mysql_backend(settings, timeout_s=1), secure_cookies=False))
    client.cookies.set("riskctl_console", "a session token")
    answers: list[Any] = []

    def ask() -> None:
        started = time.monotonic()
        answers.append((client.get("/rules"), time.monotonic() - started))

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(15)
    silent.close()
    assert not thread.is_alive(), "the request still waits for MySQL after 15 s"
    resp, took = answers[0]
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5" and took < 10
    assert "MySQL" in resp.text and str(port) not in resp.text


def test_a_request_without_a_session_cookie_needs_no_mysql() -> None:
    """The session check opened a MySQL connection in a worker thread for every request, one without any
    cookie too: anyone could make the console open connections and hold worker threads. A request without
    a cookie (or with one no session can have) is now answered without MySQL."""
    client = TestClient(create_app(Backend(_no_database), secure_cookies=False), follow_redirects=False)
    assert client.get("/rules").status_code == 303
    assert client.post("/api/validate", data={"id": "r"}).status_code == 401
    client.cookies.set("riskctl_console", "x" * 129)
    assert client.get("/api/rules/r/status").status_code == 401


def test_the_consoles_mysql_sessions_give_up_on_a_row_lock_before_their_read_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write waiting for a row lock waited for the server's innodb_lock_wait_timeout (50 s by default),
    past the console's read timeout (30 s): the request ended as 'MySQL is not answering' while MySQL was,
    and the write waited on in the server. The console's sessions now give up on a lock first, with MySQL's
    1205: a 503 naming what was not written (tests/integration/test_console_http.py, a real lock)."""
    from types import SimpleNamespace

    import riskctl.store.connection
    from riskctl.console.app import MYSQL_TIMEOUT_S, mysql_backend

    options: dict[str, Any] = {}
    monkeypatch.setattr(riskctl.store.connection, "connect", lambda settings, **kw: options.update(kw))
    mysql_backend(SimpleNamespace(job=SimpleNamespace(rules_table="rules"))).connect()
    lock_wait_s = options["lock_wait_s"]  # set on the connection by connect()'s init_command
    assert lock_wait_s is not None and 1 <= lock_wait_s < MYSQL_TIMEOUT_S == options["read_timeout"]
