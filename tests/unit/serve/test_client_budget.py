"""riskctl.client within a caller's budget: ``deadline_ms`` bounds the whole call (retries included), each
attempt bounds the whole exchange (a server dripping its answer is cut off), and an answer is read up to
``max_answer_bytes``. Against local sockets that misbehave on purpose, and the API itself for the good path.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import riskctl.deadline
from riskctl.client import (
    MAX_RETRY_AFTER_S,
    AsyncDecisionClient,
    DecisionClient,
    RequestRefused,
    Unavailable,
    _retry_after,
)
from riskctl.deadline import Deadline
from tests.unit.serve.fakes import FakeBus, running_api, settings_for_tests
from tests.unit.serve.test_app import event

#: the budget of a test whose server answers at once and which counts the attempts, not their time: ample, so
#: that a loaded machine cannot turn an answer into a timeout and a retry (seen at 500 ms under load)
ANSWER_MS = 10_000


class Server:
    """A TCP server on 127.0.0.1 whose connections get ``answer(conn)`` after their request arrives."""

    def __init__(self, answer: Callable[[socket.socket, threading.Event], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.connections = 0
        self.answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                _read_request(conn)
                self.answer(conn, self.stopped)
            except OSError:
                return

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def _read_request(conn: socket.socket) -> None:
    """The whole request, its body included: closed with bytes of it unread, the socket sends a reset, which
    can discard the answer before the client reads it (the client then saw a broken connection and retried:
    two connections where the test expected one, under load in CI)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65_536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65_536)
        if not chunk:
            return
        body += chunk


def call_client(kind: str, url: str, opts: dict[str, Any], **call: Any) -> tuple[BaseException | None, float]:
    """One ``decide`` of the sync or the async client built with ``opts`` (see :func:`timed`)."""
    if kind == "sync":
        client = DecisionClient(url, **opts)
        return timed(lambda: client.decide(event(), **call))

    async def go() -> None:
        async with AsyncDecisionClient(url, **opts) as client:
            await client.decide(event(), **call)

    return timed(lambda: asyncio.run(go()))


def drip(conn: socket.socket, stopped: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stopped.wait(0.05):
        conn.sendall(b"a")


def answers_200(body: bytes) -> Callable[[socket.socket, threading.Event], None]:
    """A server's answer: status 200 with ``body``, then the connection closed."""

    def answer(conn: socket.socket, _: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)

    return answer


def huge(conn: socket.socket, stopped: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n")
    for _ in range(10_000):
        if stopped.is_set():
            return
        conn.sendall(b" " * 1000)


@pytest.fixture
def server() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(answer: Callable[[socket.socket, threading.Event], None]) -> Server:
        made.append(Server(answer))
        return made[-1]

    yield make
    for s in made:
        s.close()


def timed(call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """Run ``call`` in a thread: what it raised and how long it took; fails if it runs past 10 s."""
    box: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            box.append(None)
        except BaseException as exc:
            box.append(exc)

    t0 = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert box, "the call still runs after 10 s"
    return box[0], time.monotonic() - t0


def test_the_sync_client_cuts_off_a_server_dripping_its_answer(server: Callable[..., Server]) -> None:
    """Each read came within the socket's timeout, so an attempt lasted as long as the server liked."""
    s = server(drip)
    client = DecisionClient(s.url, timeout_ms=100, network_margin_ms=100, retries=1, backoff_ms=1)
    exc, took = timed(lambda: client.decide(event()))
    assert isinstance(exc, Unavailable) and "no whole answer within 200 ms" in str(exc), exc
    assert 0.4 <= took < 1.5, took  # two attempts of 200 ms
    assert s.connections == 2  # the cut connection is not reused


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_deadline_ms_bounds_the_whole_call_retries_included(server: Callable[..., Server], kind: str) -> None:
    """A caller with a 300 ms budget: six attempts of 200 ms each took 1.2 s; now the call ends at 300 ms."""
    s = server(drip)
    opts: dict[str, Any] = {"timeout_ms": 100, "network_margin_ms": 100, "retries": 5, "backoff_ms": 1}
    # the sync client is given its deadline when built, the async one per call: both ways are bounded
    if kind == "sync":
        exc, took = call_client(kind, s.url, {**opts, "deadline_ms": 300})
    else:
        exc, took = call_client(kind, s.url, opts, deadline_ms=300)
    assert isinstance(exc, Unavailable) and "deadline_ms" in str(exc), exc
    assert 0.28 <= took < 0.8, took
    assert s.connections == 2  # 200 ms, then the 100 ms left


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_answer_larger_than_max_answer_bytes_is_not_read_whole(
    server: Callable[..., Server], kind: str
) -> None:
    s = server(huge)
    opts: dict[str, Any] = {"timeout_ms": 2000, "retries": 0, "max_answer_bytes": 100_000}
    exc, _ = call_client(kind, s.url, opts)
    assert isinstance(exc, Unavailable) and "larger than max_answer_bytes (100000)" in str(exc), exc


@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", b'{"action": "PASS"}', b"[1]", b"null"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_200_whose_body_is_not_a_decision_is_retried_then_unavailable(
    server: Callable[..., Server], kind: str, body: bytes
) -> None:
    """A proxy's page with status 200: the call raised json's JSONDecodeError, a KeyError or a TypeError."""

    s = server(answers_200(body))
    opts: dict[str, Any] = {"timeout_ms": 500, "retries": 1, "backoff_ms": 1}
    exc, _ = call_client(kind, s.url, opts)
    assert isinstance(exc, Unavailable) and "HTTP 200 without a decision" in str(exc), exc
    assert s.connections == 2


def test_within_its_deadline_a_call_is_answered_on_one_kept_alive_connection() -> None:
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        with DecisionClient(base, timeout_ms=150, deadline_ms=2000) as client:
            first = client.decide(event("k1"))
            conn = client._conn
            second = client.decide(event("k2"))
            assert client._conn is conn and conn is not None
        assert (first.event_id, second.event_id) == ("k1", "k2") and first.action == "PASS"


def test_a_kept_alive_connection_the_server_closed_is_not_reused() -> None:
    """serve closes a connection idle for serve.idle_timeout_ms: the next call of the sync client wrote on
    it and failed (a broken pipe): Unavailable with retries=0, an attempt and its backoff lost otherwise."""
    with running_api(settings_for_tests(idle_timeout_ms=200), FakeBus()) as (base, _, _):
        with DecisionClient(base, timeout_ms=1000, retries=0) as client:
            assert client.decide(event("i1")).action == "PASS"
            time.sleep(1.0)  # the server closes the idle connection after 200 ms
            assert client.decide(event("i2")).action == "PASS"


#: the host name whose resolution the tests of the resolver control (:func:`resolver`)
SLOW_NAME = "risk.test"


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[float], list[str]]]:
    """``make(delay_s)``: socket.getaddrinfo answers SLOW_NAME with 127.0.0.1 after ``delay_s`` (a DNS server
    that does not answer: longer than the test), other names as before; returns the lookups of SLOW_NAME.
    The lookups still waiting end with the test."""
    real = socket.getaddrinfo
    release = threading.Event()
    asked: list[str] = []
    delay = [0.0]

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == SLOW_NAME:
            asked.append(host)
            release.wait(delay[0])
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    def make(delay_s: float) -> list[str]:
        delay[0] = delay_s
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return asked

    yield make
    release.set()
    # both clients share a lookup under way (riskctl.deadline.lookup): wait for the released ones to end, so
    # that the next test's calls start their own
    ends = time.monotonic() + 5
    while any(name == SLOW_NAME for name, _ in riskctl.deadline._resolving) and time.monotonic() < ends:
        time.sleep(0.01)


def call_by_name(kind: str, url: str, opts: dict[str, Any]) -> tuple[BaseException | None, float]:
    """:func:`call_client`, the async call timed within its loop (the call's own time; what asyncio.run's end
    waits for: :func:`test_a_hung_lookup_does_not_hold_the_end_of_asyncio_run`)."""
    if kind == "sync":
        return call_client(kind, url, opts)
    box: list[tuple[BaseException | None, float]] = []

    async def go() -> None:
        async with AsyncDecisionClient(url, **opts) as client:
            t0 = time.monotonic()
            try:
                await client.decide(event())
                box.append((None, time.monotonic() - t0))
            except Exception as exc:
                box.append((exc, time.monotonic() - t0))

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(go())
    finally:
        loop.close()  # the executor's threads are not waited for
    return box[0]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_host_name_whose_resolution_hangs_fails_within_the_deadline(
    resolver: Callable[[float], list[str]], kind: str
) -> None:
    """A DNS server that does not answer: the sync client's getaddrinfo ran outside every timeout, and a
    call with a 300 ms budget took as long as the resolver did (seconds). Now it fails like a call to a slow
    server: at deadline_ms, and without one after each attempt's wait."""
    asked = resolver(30.0)
    url = f"http://{SLOW_NAME}:9"
    opts: dict[str, Any] = {"timeout_ms": 100, "network_margin_ms": 100, "retries": 5, "backoff_ms": 1}
    exc, took = call_by_name(kind, url, {**opts, "deadline_ms": 300})
    assert isinstance(exc, Unavailable) and "no time left within deadline_ms" in str(exc), exc
    assert 0.28 <= took < 0.6, took
    exc, took = call_by_name(kind, url, {**opts, "retries": 1})
    assert isinstance(exc, Unavailable) and "after 2 attempt(s)" in str(exc), exc
    assert "not resolved within 200 ms" in str(exc) or "no whole answer within 200 ms" in str(exc), exc
    assert 0.38 <= took < 0.8, took
    assert asked == [SLOW_NAME]  # the later attempts and calls wait for the lookup under way, not start more


def test_a_hung_lookup_does_not_hold_the_end_of_asyncio_run(resolver: Callable[[float], list[str]]) -> None:
    """The async client looked names up in the loop's default executor: the call failed at its deadline, but
    asyncio.run, which joins that executor's threads when it ends, returned when the resolver did (10 s
    here). The lookup now runs in a daemon thread of its own (riskctl.deadline.lookup)."""
    resolver(10.0)
    url = f"http://{SLOW_NAME}:9"
    exc, took = call_client("async", url, {"timeout_ms": 100, "retries": 0}, deadline_ms=200)
    assert isinstance(exc, Unavailable), exc
    assert took < 3.0, took  # asyncio.run's whole time, its executor's shutdown included


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_host_name_resolved_in_time_is_called(resolver: Callable[[float], list[str]], kind: str) -> None:
    asked = resolver(0.05)
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        url = base.replace("127.0.0.1", SLOW_NAME)
        exc, took = call_by_name(kind, url, {"timeout_ms": 500, "retries": 0, "deadline_ms": 2000})
    assert exc is None and took < 1.5, exc
    assert asked == [SLOW_NAME]


def test_deadlines_expire_in_time_order_and_a_finished_one_does_nothing() -> None:
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        with Deadline(0.3) as late:
            late.watch(pairs[0][0])
            with Deadline(0.05) as early:
                early.watch(lambda: pairs[1][0])
                pairs[1][1].settimeout(2)
                assert pairs[1][1].recv(10) == b""  # shut down at 50 ms
            assert early.expired and not late.expired
            with Deadline(0.1) as finished:
                finished.watch(pairs[2][0])
            pairs[0][1].settimeout(2)
            assert pairs[0][1].recv(10) == b""
            assert late.expired
        time.sleep(0.2)
        assert not finished.expired
        pairs[2][0].sendall(b"still open")
        assert pairs[2][1].recv(10) == b"still open"
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_a_deadline_beyond_what_a_thread_can_wait_leaves_the_watchdog_running() -> None:
    """The watchdog waited for the earliest deadline with Condition.wait, which refuses more than 292 years
    (OverflowError): its thread ended, and no later deadline of the process ever expired."""
    with Deadline(1e10):
        time.sleep(0.3)  # the watchdog waits for this one
    a, b = socket.socketpair()
    try:
        with Deadline(0.05) as d:
            d.watch(a)
            a.settimeout(3)
            assert a.recv(10) == b""  # shut down at 50 ms (a TimeoutError after 3 s without the watchdog)
        assert d.expired
    finally:
        a.close()
        b.close()


def test_a_timeout_ms_beyond_what_a_socket_takes_gets_the_apis_refusal() -> None:
    """timeout_ms=10**13 raised an OverflowError from the socket (and killed the deadlines' watchdog)."""
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        with DecisionClient(base, timeout_ms=10**13) as client:
            exc, _ = timed(lambda: client.decide(event()))
    assert isinstance(exc, RequestRefused) and exc.status == 422 and exc.field == "timeout_ms", exc


def test_a_forked_child_gets_deadlines_of_its_own() -> None:
    """A pre-forking server imports the client before it forks: the watchdog thread stays in the parent."""
    with Deadline(5):  # the parent's watchdog thread is running
        pass
    pid = os.fork()
    if pid == 0:  # the child: exit 0 if its deadline shuts its socket down
        ok = False
        try:
            a, b = socket.socketpair()
            with Deadline(0.05) as d:
                d.watch(a)
                b.settimeout(2)
                ok = b.recv(10) == b"" and d.expired
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_client_says_what_the_api_refused_within_its_deadline() -> None:
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        with DecisionClient(base, deadline_ms=2000) as client:
            bad = event("bad")
            bad["ts"] = "yesterday"
            with pytest.raises(Exception) as err:
                client.decide(json.dumps(bad).encode())
    assert "ts" in str(err.value)


def refused_then_decided(times: list[float]) -> Callable[[socket.socket, threading.Event], None]:
    """The first request gets 429 with ``Retry-After: 1``, the next ones a decision; ``times``: when each
    request came."""

    def answer(conn: socket.socket, _: threading.Event) -> None:
        times.append(time.monotonic())
        if len(times) == 1:
            body = b'{"error": {"status": 429, "field": null, "reason": "share"}}'
            head = f"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: {len(body)}\r\n"
        else:
            body = json.dumps({"event_id": "e1", "action": "PASS"}).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
        conn.sendall(f"{head}Connection: close\r\n\r\n".encode() + body)

    return answer


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_429_is_retried_after_its_retry_after_not_before(server: Callable[..., Server], kind: str) -> None:
    """Both clients retried a 429 after backoff_ms (20 ms), into the same refusal: the retries of a caller
    over its share came back at once, three requests for one."""
    times: list[float] = []
    s = server(refused_then_decided(times))
    exc, took = call_client(kind, s.url, {"timeout_ms": 500, "retries": 1, "backoff_ms": 20})
    assert exc is None, exc
    assert len(times) == 2 and times[1] - times[0] >= 0.95, times
    assert took < 3


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_retry_after_beyond_the_deadline_ends_the_call_at_once(
    server: Callable[..., Server], kind: str
) -> None:
    times: list[float] = []
    s = server(refused_then_decided(times))
    opts: dict[str, Any] = {"timeout_ms": 100, "retries": 3, "backoff_ms": 20, "deadline_ms": 500}
    exc, took = call_client(kind, s.url, opts)
    assert isinstance(exc, Unavailable) and "Retry-After (1 s)" in str(exc) and "HTTP 429" in str(exc), exc
    assert len(times) == 1 and took < 0.4, (times, took)


def test_retry_after_is_read_in_seconds_and_capped() -> None:
    assert _retry_after(429, " 2 ") == 2.0 and _retry_after(503, "0") == 0.0
    assert _retry_after(429, "9" * 40) == MAX_RETRY_AFTER_S
    # a date, a negative or fractional value, none, or an answer that is not a refusal: the usual backoff
    for status, value in [(429, "Wed, 21 Oct 2015 07:28:00 GMT"), (429, "-1"), (429, "1.5"), (429, None)]:
        assert _retry_after(status, value) == 0.0
    assert _retry_after(500, "5") == 0.0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_decision_of_another_event_is_not_taken_for_this_one(
    server: Callable[..., Server], kind: str
) -> None:
    """A cache or a misrouting proxy answering 200 with another event's decision: the client returned it as
    this event's (a REJECT of one transfer could pass another)."""
    body = json.dumps({"event_id": "someone-else", "action": "PASS", "rules": []}).encode()

    s = server(answers_200(body))
    exc, _ = call_client(kind, s.url, {"timeout_ms": ANSWER_MS, "retries": 1, "backoff_ms": 1})
    assert isinstance(exc, Unavailable) and "the decision of another event ('someone-else')" in str(exc), exc
    assert s.connections == 2  # retried once


def test_the_event_id_is_matched_as_the_api_reads_it_and_duplicates_are_told() -> None:
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        with DecisionClient(base, timeout_ms=1000) as client:
            # an integer event_id comes back as its digits; bytes are read for their event_id too
            assert client.decide({**event(), "event_id": 42}).event_id == "42"
            assert client.decide(json.dumps(event("b1")).encode()).event_id == "b1"
            assert client.decide(event("d1")).duplicate is False


def test_a_timeout_ms_that_is_not_a_number_is_refused_with_its_name() -> None:
    client = DecisionClient("http://127.0.0.1:9", retries=0)
    for bad in (float("nan"), float("inf"), "100", True):
        with pytest.raises(ValueError, match="timeout_ms must be a number of milliseconds"):
            client.decide(event(), timeout_ms=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_redirect_is_neither_followed_nor_retried(server: Callable[..., Server], kind: str) -> None:
    """A 307 to another host: the async client posted the event there (aiohttp follows redirects) and
    returned that host's answer as the API's decision; the sync client retried the redirect twice."""
    decision = json.dumps({"event_id": "e1", "action": "PASS", "rules": []}).encode()

    other = server(answers_200(decision))
    to = other.url.replace("127.0.0.1", "localhost") + "/v1/decisions"

    def redirect(conn: socket.socket, _: threading.Event) -> None:
        conn.sendall(
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n".encode()
        )

    s = server(redirect)
    opts: dict[str, Any] = {"timeout_ms": 500, "retries": 2, "backoff_ms": 1, "api_key": "k" * 24}
    exc, _ = call_client(kind, s.url, opts)
    assert isinstance(exc, Unavailable), exc
    assert f"HTTP 307: a redirect to {to!r}, not followed" in str(exc), exc
    assert (s.connections, other.connections) == (1, 0)


@pytest.mark.parametrize(
    "doc",
    [
        {"event_id": "e1", "action": None},
        {"event_id": "e1", "action": "ALLOW"},
        {"event_id": "e1", "action": "reject"},
        {"event_id": "e1", "action": ["REJECT"]},
        {"event_id": "e1", "action": "REJECT", "rules": "velocity"},
        {"event_id": "e1", "action": "REJECT", "rules": [1]},
        {"event_id": "e1", "action": "PASS", "degraded": 1},
    ],
)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_200_for_this_event_of_another_shape_is_no_decision(
    server: Callable[..., Server], kind: str, doc: dict[str, Any]
) -> None:
    """A proxy, a mock or another service answering 200 with this event_id and a document of another shape:
    the action null came back as the action 'None' (a caller testing == "REJECT" let the event pass), a
    lowercase or unknown action as itself, and rules "velocity" as a list of its characters."""
    body = json.dumps(doc).encode()

    s = server(answers_200(body))
    exc, _ = call_client(kind, s.url, {"timeout_ms": ANSWER_MS, "retries": 1, "backoff_ms": 1})
    assert isinstance(exc, Unavailable) and "HTTP 200 without a decision" in str(exc), exc
    assert s.connections == 2  # retried once, like a proxy's page


BAD_PARAMETERS = [
    ("deadline_ms", float("nan")),
    ("deadline_ms", "300"),
    ("deadline_ms", -1),
    ("network_margin_ms", float("inf")),
    ("backoff_ms", "20"),
    ("retries", "2"),
    ("retries", -1),
    ("retries", 1.5),
    ("max_answer_bytes", 0),
    ("timeout_ms", "100"),
]


@pytest.mark.parametrize(("name", "value"), BAD_PARAMETERS)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_bad_parameter_is_refused_where_it_is_given_naming_it(kind: str, name: str, value: Any) -> None:
    """A string (a setting read from the environment), NaN or a value out of range was taken as given and
    failed at the first call: TypeError or ValueError('Timeout value out of range'), outside the two
    exceptions the client documents, or deadline_ms=NaN made every call Unavailable with nothing sent."""
    cls = DecisionClient if kind == "sync" else AsyncDecisionClient
    with pytest.raises(ValueError, match=f"^{name} must be "):
        cls("http://127.0.0.1:9", **{name: value})


def test_a_bad_deadline_per_call_and_an_unbounded_pool_are_refused() -> None:
    client = DecisionClient("http://127.0.0.1:9", retries=0)
    with pytest.raises(ValueError, match="^deadline_ms must be a number >= 0, got nan"):
        client.decide(event(), deadline_ms=float("nan"))
    with pytest.raises(ValueError, match="^max_connections must be an integer >= 1, got 0"):
        AsyncDecisionClient("http://127.0.0.1:9", max_connections=0)  # aiohttp: no limit at all
    # a margin may be negative (give up before the API's timeout): beyond the timeout the sync client gave
    # its socket a negative timeout and raised ValueError('Timeout value out of range'), not Unavailable
    s = Server(drip)
    try:
        client = DecisionClient(s.url, timeout_ms=100, network_margin_ms=-500, retries=0)
        exc, took = timed(lambda: client.decide(event()))
        assert isinstance(exc, Unavailable) and took < 0.5, exc
    finally:
        s.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_base_url_with_credentials_or_a_query_is_refused_without_repeating_them(kind: str) -> None:
    """http://svc:<password>@host: the sync client sent no credentials, the async one sent them as Basic
    auth, and both repeated the password in every Unavailable ('no decision from http://svc:<password>@...').
    A query: the async client posted to http://host/?x=1/v1/decisions."""
    cls = DecisionClient if kind == "sync" else AsyncDecisionClient
    for url in (
        "http://svc:s3cr3t-pass@127.0.0.1:9",
        "ftp://svc:s3cr3t-pass@127.0.0.1:9",
        "http://:s3cr3t-pass@h",
    ):
        with pytest.raises(ValueError, match="must not hold credentials") as err:
            cls(url)
        assert "s3cr3t" not in str(err.value)
    for url in ("http://127.0.0.1:9/risk?x=1", "http://127.0.0.1:9/risk#top"):
        with pytest.raises(ValueError, match=r"without \? or #"):
            cls(url)


def test_a_connection_made_within_a_deadline_keeps_its_timeout_per_operation() -> None:
    """riskctl.deadline.create_connection bounds the connect by what is left; the socket it returns waits
    ``timeout`` per read again, as socket.create_connection's does (it kept the time left at connect)."""
    import socket as socket_mod

    from riskctl.deadline import Deadline, create_connection

    listener = socket_mod.create_server(("127.0.0.1", 0))
    try:
        with Deadline(30.0):
            sock = create_connection(listener.getsockname(), timeout=5.0)
        try:
            assert sock.gettimeout() == 5.0
        finally:
            sock.close()
        sock = create_connection(("localhost", listener.getsockname()[1]), timeout=2.5)
        try:
            assert sock.gettimeout() == 2.5
        finally:
            sock.close()
    finally:
        listener.close()


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "body",
    [DEEP, b'{"event_id": "e1", "action": "PASS", "elapsed_ms": 1' + b"0" * 400 + b"}"],
    ids=["nested-too-deep", "elapsed-beyond-a-float"],
)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_200_nested_too_deep_or_beyond_a_float_is_retried_then_unavailable(
    server: Callable[..., Server], kind: str, body: bytes
) -> None:
    """JSON nested deeper than Python's json reads (RecursionError), or an elapsed_ms float() cannot hold
    (OverflowError): both left decide() as themselves, neither of the two exceptions the client documents."""

    s = server(answers_200(body))
    exc, _ = call_client(kind, s.url, {"timeout_ms": ANSWER_MS, "retries": 1, "backoff_ms": 1})
    assert isinstance(exc, Unavailable) and "HTTP 200 without a decision" in str(exc), exc
    assert s.connections == 2  # retried once, like a proxy's page


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_4xx_nested_too_deep_is_refused_with_its_first_bytes(
    server: Callable[..., Server], kind: str
) -> None:
    def answer(conn: socket.socket, _: threading.Event) -> None:
        head = f"HTTP/1.1 400 Bad Request\r\nContent-Length: {len(DEEP)}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode() + DEEP)

    s = server(answer)
    exc, _ = call_client(kind, s.url, {"timeout_ms": ANSWER_MS, "retries": 1, "backoff_ms": 1})
    assert isinstance(exc, RequestRefused) and exc.status == 400 and exc.reason == "[" * 200, exc
    assert s.connections == 1  # a 4xx is not retried


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_event_given_as_bytes_nested_too_deep_is_sent_and_refused_by_the_api(kind: str) -> None:
    """The client reads a bytes event for its event_id: nested too deep, it raised RecursionError before
    sending anything; the API is the one to refuse it (422, the depth beyond job.max_depth)."""
    deep = b"[" * 5_000 + b"]" * 5_000  # beyond Python's recursion limit, within job.max_event_bytes
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        if kind == "sync":
            exc, _ = timed(lambda: DecisionClient(base, retries=0).decide(deep))
        else:

            async def go() -> None:
                async with AsyncDecisionClient(base, retries=0) as client:
                    await client.decide(deep)

            exc, _ = timed(lambda: asyncio.run(go()))
    assert isinstance(exc, RequestRefused) and exc.status == 422, exc
