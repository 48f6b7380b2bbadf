"""The console's uvicorn configuration with real connections on loopback (a trivial application: the bounds
are the server's, not the console's pages). Loopback is 127.0.0.0/8: a socket bound to 127.0.0.2 before it
connects is another client."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from riskctl.console.server import server_config
from tests.helpers import free_port, serve_in_thread

REQUEST = b"GET / HTTP/1.1\r\nHost: c\r\n\r\n"


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def console() -> Iterator[int]:
    """A server as ``riskctl console`` configures it; the header timeout longer than any test here (idle
    connections must stay open for the test's length)."""
    port = free_port()
    stop = serve_in_thread(server_config(hello, "127.0.0.1", port, header_timeout_s=60.0))
    yield port
    stop()


def connect(port: int, client: str) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((client, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def ask(port: int, client: str, request: bytes = REQUEST) -> bytes:
    """The answer to one request on a new connection from ``client``, its Date header taken out."""
    with connect(port, client) as sock:
        sock.sendall(request)
        answer = b""
        while (b"\r\n\r\n" not in answer or not answer.endswith((b"ok", b"Unavailable", b"received."))) and (
            chunk := sock.recv(65536)
        ):
            answer += chunk
    return b"\r\n".join(line for line in answer.split(b"\r\n") if not line.lower().startswith(b"date:"))


def hold(port: int, client: str, n: int, into: list[socket.socket]) -> None:
    """``n`` idle connections from ``client`` (a browser's kept-alive ones, or a script's)."""
    for _ in range(n):
        into.append(connect(port, client))
    time.sleep(0.2)  # the server has taken them


def test_one_client_cannot_take_every_connection_of_the_console(console: int) -> None:
    """uvicorn's limit_concurrency (64) counts every open connection: one client holding 64 idle connections
    got every other analyst's request answered 503. Now 16 of one address count; its 17th connection is
    answered the 503 the total limit gives, and the others are served."""
    from riskctl.console.server import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT

    assert (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT) == (64, 16)
    held: list[socket.socket] = []
    try:
        hold(console, "127.0.0.1", 64, held)
        assert ask(console, "127.0.0.2").startswith(b"HTTP/1.1 200")  # before: 503
        refused = ask(console, "127.0.0.1")
        assert refused.startswith(b"HTTP/1.1 503")
        # three more clients take their 16 each: 64 connections count, and the total limit answers
        for client in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            hold(console, client, 16, held)
        beyond_total = ask(console, "127.0.0.5")
        assert beyond_total == refused  # the same answer, byte for byte (but the date)
        assert refused.endswith(b"\r\n\r\nService Unavailable") and b"connection: close" in refused
        for sock in held[:16]:  # the first client lets its counted connections go: it is served again
            sock.close()
        held[:16] = []
        time.sleep(0.2)
        assert ask(console, "127.0.0.1").startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_flood_of_refused_requests_logs_a_bounded_number_of_lines(console: int) -> None:
    """uvicorn logged one line per request refused at a limit, or not HTTP at all: 600 requests, 600 lines
    (a flood of the console floods its log and disk). Now one line per reason every LOG_EVERY_S (10 s)."""
    lines = Lines()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(lines)
    held: list[socket.socket] = []
    try:
        hold(console, "127.0.0.1", 64, held)
        for _ in range(200):  # beyond one client's connections
            assert ask(console, "127.0.0.1").startswith(b"HTTP/1.1 503")
        for client in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            hold(console, client, 16, held)
        for _ in range(200):  # beyond the total
            assert ask(console, "127.0.0.5").startswith(b"HTTP/1.1 503")
        for _ in range(200):  # not HTTP
            assert ask(console, "127.0.0.6", b"\x16\x03\x01 not http\r\n\r\n").startswith(b"HTTP/1.1 400")
    finally:
        logger.removeHandler(lines)
        for sock in held:
            sock.close()
    assert lines.lines == [
        "Exceeded the connections of one client (16).",
        "Exceeded concurrency limit.",
        "Invalid HTTP request received.",
    ]


def test_a_reason_logs_once_per_interval_and_says_how_many_it_did_not() -> None:
    from riskctl.lograte import OncePer

    now = [0.0]
    once = OncePer(10.0, clock=lambda: now[0])  # as quiet_logs puts it: by reason, errors all pass
    logger = logging.getLogger("test_console_server.once")
    logger.propagate = False
    lines = Lines()
    logger.addHandler(lines)
    logger.addFilter(once)
    try:
        for i in range(1000):  # 100 s of a flood, 10 a second, and one other reason
            now[0] = i / 10
            logger.warning("Exceeded concurrency limit.")
            if i == 500:
                logger.warning("Invalid HTTP request received.")
            if i == 501:
                logger.error("Exception in ASGI application")  # errors all pass
                logger.error("Exception in ASGI application")
        assert len(lines.lines) == 13
        assert lines.lines[:2] == [
            "Exceeded concurrency limit.",
            "Exceeded concurrency limit. (99 more not logged in the 10 s before)",
        ]
        assert lines.lines[6:9] == [
            "Invalid HTTP request received.",
            "Exception in ASGI application",
            "Exception in ASGI application",
        ]
    finally:
        logger.removeFilter(once)
        logger.removeHandler(lines)


@pytest.fixture
def quiet() -> Iterator[Callable[..., Any]]:
    """``quiet(every_s, clock, background)``: :func:`quiet_logs` as ``riskctl console`` puts it, taken off
    the loggers at the end."""
    from riskctl.console.server import QUIET_LOGGERS, quiet_logs

    put: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        put.append(quiet_logs(*args, **kwargs))
        return put[-1]

    yield make
    for name in QUIET_LOGGERS:
        for once in put:
            logging.getLogger(name).removeFilter(once)


def test_a_flood_of_requests_while_mysql_is_away_logs_a_bounded_number_of_lines(
    quiet: Callable[..., Any],
) -> None:
    """The console logged one warning per request while MySQL was away: 500 requests, 500 lines. Now one
    line every LOG_EVERY_S, like uvicorn's refusals, and the count of the lines held back once the flood
    stopped (it was logged only with the reason's next line, which a flood that ended never had)."""
    from starlette.testclient import TestClient

    from riskctl.console.app import Backend, create_app
    from riskctl.errors import ServiceError

    def away() -> Any:
        raise ServiceError("MySQL", "127.0.0.1:9 refused the connection")

    now = [0.0]
    once = quiet(10.0, lambda: now[0], background=False)
    client = TestClient(create_app(Backend(away), secure_cookies=False))
    client.cookies.set("riskctl_console", "a session token")  # the session check reads MySQL
    lines = Lines()
    logger = logging.getLogger("riskctl.console")
    logger.addHandler(lines)
    try:
        for i in range(500):  # 50 s of a flood, 10 requests a second
            now[0] = i / 10
            assert client.get(f"/rules/r{i}").status_code == 503
        assert once.flush() == 0  # the interval from 40 s is not over
        now[0] = 50.0
        assert once.flush() == 1 and once.flush() == 0
    finally:
        logger.removeHandler(lines)
    away_at = "MySQL is away: MySQL: 127.0.0.1:9 refused the connection"
    assert lines.lines == [
        f"console: GET /rules/r0: {away_at}",
        *(
            f"console: GET /rules/r{i}: {away_at} (99 more not logged in the 10 s before)"
            for i in range(100, 500, 100)
        ),
        f"console: GET /rules/r499: {away_at} (the last of 99 not logged in the 10 s before)",
    ]


def test_the_count_of_a_flood_that_stopped_is_logged_after_the_interval_and_at_shutdown(
    quiet: Callable[..., Any],
) -> None:
    from riskctl.console.server import flush_logs

    once = quiet(0.3)  # real time, the counts flushed by a thread of the filter's
    logger = logging.getLogger("uvicorn.error")
    lines = Lines()
    logger.addHandler(lines)
    try:
        for _ in range(50):
            logger.warning("Exceeded concurrency limit.")
        deadline = time.monotonic() + 5
        while len(lines.lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # nothing more
        assert lines.lines == [
            "Exceeded concurrency limit.",
            "Exceeded concurrency limit. (the last of 49 not logged in the 0 s before)",
        ]
        once.every_s = 60.0  # a count still held when the server stops: logged then
        for _ in range(3):
            logger.warning("Invalid HTTP request received.")
        flush_logs()
    finally:
        logger.removeHandler(lines)
    assert lines.lines[2:] == [
        "Invalid HTTP request received.",
        "Invalid HTTP request received. (the last of 2 not logged in the 0 s before)",
    ]


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent on ``sock`` until it closed it, or None when it did not close it in time."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        return got
    return got


async def slow_hello(scope: Any, receive: Any, send: Any) -> None:
    """:func:`hello`, a second late on ``/slow``."""
    if scope["type"] == "http" and scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    await hello(scope, receive, send)


def test_connections_over_a_clients_cap_end_at_shutdown_as_the_others_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uvicorn's shutdown ends the connections of its set (an idle one closed at once, a busy one after its
    answer) and waits for them; a connection beyond a client's cap is taken out of that set (so that it
    does not count toward the total) and was neither ended nor waited for: it stayed open, taking requests,
    until the event loop was torn down (a 503 still being written then was cut off). Now they end with the
    others: closed at once while a counted request's answer is still being sent, or answered whole."""
    port = free_port()
    stop = serve_in_thread(server_config(slow_hello, "127.0.0.1", port, header_timeout_s=60.0))
    held: list[socket.socket] = []
    try:
        hold(port, "127.0.0.1", 15, held)  # the client's cap (16), with the slow one below
        busy = connect(port, "127.0.0.1")
        held.append(busy)
        over = [connect(port, "127.0.0.1") for _ in range(3)]  # beyond it, idle
        partial = connect(port, "127.0.0.1")
        partial.sendall(b"GET / HTTP/1.1\r\nHost: c\r\n")  # beyond it, its headers not all sent
        refused = connect(port, "127.0.0.1")
        held += [*over, partial, refused]
        refused.sendall(REQUEST)
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: c\r\n\r\n")
        time.sleep(0.2)
        with caplog.at_level(logging.ERROR, "asyncio"):
            stopping = threading.Thread(target=stop)
            stopping.start()
            # within half a second of the shutdown: the slow answer (a second) is still being written
            closed = [_closed_within(sock, 0.5) for sock in [*held[:15], *over, partial]]
            answer, slow = _closed_within(refused, 3), _closed_within(busy, 3)
            stopping.join()
        assert closed == [b""] * 19, closed  # closed by the server, without an answer
        assert answer is not None and answer.startswith(b"HTTP/1.1 503")
        assert answer.endswith(b"\r\n\r\nService Unavailable")  # whole
        assert slow is not None and slow.startswith(b"HTTP/1.1 200") and slow.endswith(b"ok")
        assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text  # no task destroyed
    finally:
        for sock in held:
            sock.close()


async def whoami(scope: Any, receive: Any, send: Any) -> None:
    """Answers the client's address and scheme as the application sees them (the login limit's key and the
    audit log's "from" are ``request.client.host``)."""
    if scope["type"] != "http":
        return
    body = f"{scope['client'][0]} {scope['scheme']}".encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _seen_as(port: int, forwarded_for: str, client: str = "127.0.0.1") -> str:
    request = (
        f"GET / HTTP/1.1\r\nHost: c\r\nX-Forwarded-For: {forwarded_for}\r\nX-Forwarded-Proto: https\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with connect(port, client) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n\r\n", 1)[1].decode()


@pytest.mark.parametrize(
    ("trusted", "forwarded_for", "seen"),
    [
        # nobody trusted (the default): the socket's peer, whatever the headers say
        ((), "203.0.113.9", "127.0.0.1 http"),
        # the peer is a trusted proxy: the client it forwards for
        (("127.0.0.1",), "203.0.113.9", "203.0.113.9 https"),
        # a network of proxies, two hops: the right-most address that is not a trusted proxy; what the client
        # wrote itself before it (198.51.100.1) is not believed
        (("127.0.0.0/8", "10.0.0.0/8"), "198.51.100.1, 203.0.113.9, 10.1.2.3", "203.0.113.9 https"),
        # the peer is not one of the proxies: its headers are not believed
        (("10.0.0.0/8",), "203.0.113.9", "127.0.0.1 http"),
    ],
)
def test_forwarded_headers_are_believed_only_from_the_trusted_proxies(
    monkeypatch: pytest.MonkeyPatch, trusted: tuple[str, ...], forwarded_for: str, seen: str
) -> None:
    """uvicorn believed X-Forwarded-For and X-Forwarded-Proto by default from 127.0.0.1, or from whatever
    its FORWARDED_ALLOW_IPS variable named: any local process chose the client address the console's login
    limit and audit log saw. Now only from console.trusted_proxies, and the variable widens nothing."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    port = free_port()
    stop = serve_in_thread(server_config(whoami, "127.0.0.1", port, trusted_proxies=trusted))
    try:
        assert _seen_as(port, forwarded_for) == seen
    finally:
        stop()
