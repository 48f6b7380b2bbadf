"""The senders against local receivers that drip their answers: ``delivery.timeout_ms`` bounds the whole
attempt (HTTP, HTTPS with its handshake, SMTP), not each socket operation; and TLS still works.

A receiver that sends a byte every 0.2 s keeps each read under the socket's timeout; before the whole-attempt
deadline, such an attempt lasted as long as the receiver liked, holding the channel's worker (and, since the
channel looked busy but healthy, pausing reading for every channel once max_in_flight was reached).
"""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from riskctl.alerts import senders
from riskctl.alerts.messages import HttpRequest, Outcome
from riskctl.alerts.settings import parse_config
from tests.unit.alerts.conftest import SmtpServer

TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl, as Debian has it)."""
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt)]
        + ["-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return str(crt), str(key)


class Dripper:
    """A TCP server on 127.0.0.1: each connection gets ``first`` (after reading what the client sent first,
    when ``read_first``), then one byte of ``drip`` every 0.2 s until the client goes away."""

    def __init__(self, first: bytes, drip: bytes = b"x", read_first: bool = True) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.first, self.drip, self.read_first = first, drip, read_first
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.read_first:
                    conn.recv(65536)
                conn.sendall(self.first)
                while not self.stopped.wait(0.2):
                    conn.sendall(self.drip)
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def timed(call: Callable[[], Outcome]) -> tuple[Outcome, float]:
    """``call()`` in a thread: its outcome and how long it took; fails if it is still running after 15 s."""
    out: list[Outcome] = []
    t0 = time.monotonic()
    t = threading.Thread(target=lambda: out.append(call()), daemon=True)
    t.start()
    t.join(15)
    assert out, "the attempt still runs after 15 s: nothing bounds it"
    return out[0], time.monotonic() - t0


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Slow: ", id="headers"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", id="body"),
        pytest.param(b"", id="status line"),
    ],
)
def test_a_receiver_dripping_its_answer_times_the_attempt_out(first: bytes) -> None:
    server = Dripper(first)
    try:
        req = HttpRequest(f"http://127.0.0.1:{server.port}/hook?access_token=SECRET", b"{}")
        outcome, took = timed(lambda: senders.post("webhook", req, TIMEOUT_S))
    finally:
        server.close()
    assert not outcome.ok and not outcome.permanent  # retried, as any timeout
    assert outcome.reason == "timed out: the attempt took longer than 1s"
    assert TIMEOUT_S <= took < TIMEOUT_S + 2


def test_a_receiver_dripping_its_tls_handshake_times_the_attempt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # a TLS record header announcing 16,128 bytes of handshake, then its bytes one at a time
    server = Dripper(b"\x16\x03\x03\x3f\x00", drip=b"\x00")
    monkeypatch.setattr(senders, "_OPENER", senders.opener(senders.tls_context()))
    try:
        req = HttpRequest(f"https://127.0.0.1:{server.port}/hook", b"{}")
        outcome, took = timed(lambda: senders.post("webhook", req, TIMEOUT_S))
    finally:
        server.close()
    assert not outcome.ok and not outcome.permanent
    assert outcome.reason == "timed out: the attempt took longer than 1s"
    assert TIMEOUT_S <= took < TIMEOUT_S + 2


@pytest.fixture
def https_server(cert: tuple[str, str]) -> Iterator[tuple[int, list[bytes]]]:
    got: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], got
    finally:
        server.shutdown()
        server.server_close()


def test_https_is_delivered_with_the_certificate_checked(
    https_server: tuple[int, list[bytes]], cert: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, got = https_server
    req = HttpRequest(f"https://127.0.0.1:{port}/hook", b'{"x": 1}', {"Content-Type": "application/json"})
    # the system's CAs do not know this certificate: refused (retried: a receiver may be mid-renewal)
    monkeypatch.setattr(senders, "_OPENER", senders.opener(senders.tls_context()))
    refused = senders.post("webhook", req, 5)
    assert not refused.ok and "CERTIFICATE_VERIFY_FAILED" in refused.reason, refused
    monkeypatch.setattr(senders, "_OPENER", senders.opener(senders.tls_context(cert[0])))
    assert senders.post("webhook", req, 5).ok
    assert got == [b'{"x": 1}']


def _mail_channel(port: int, **over: Any) -> Any:
    channel = {"type": "email", "host": "127.0.0.1", "port": port, "from": "r@x", "to": ["ok@y"], **over}
    return parse_config({"channels": {"m": channel}, "default_channels": ["m"]}, {}).channels["m"]


def _mail() -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = "alert", "r@x", "ok@y"
    msg.set_content("body")
    return msg


@pytest.mark.parametrize(
    "first",
    [pytest.param(b"220 slow", id="greeting"), pytest.param(b"220 ok\r\n", id="after the greeting")],
)
def test_an_smtp_server_dripping_its_answers_times_the_session_out(first: bytes) -> None:
    server = Dripper(first, read_first=False)
    try:
        outcome, took = timed(lambda: senders.send_mail(_mail_channel(server.port), _mail(), TIMEOUT_S))
    finally:
        server.close()
    assert not outcome.ok and not outcome.permanent
    assert outcome.reason == "timed out: the attempt took longer than 1s"
    assert TIMEOUT_S <= took < TIMEOUT_S + 2


def test_smtp_over_tls_is_delivered_with_the_certificate_checked(
    cert: tuple[str, str], tmp_path: Path
) -> None:
    server = SmtpServer()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    server.server.socket = ctx.wrap_socket(server.server.socket, server_side=True)
    try:
        channel = _mail_channel(server.port, ssl=True)
        refused = senders.send_mail(channel, _mail(), 5, senders.tls_context())
        assert not refused.ok and "CERTIFICATE_VERIFY_FAILED" in refused.reason, refused
        assert senders.send_mail(channel, _mail(), 5, senders.tls_context(cert[0])).ok
    finally:
        server.close()
    assert [to for to, _ in server.messages] == [["ok@y"]]


@pytest.fixture
def hanging_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """socket.getaddrinfo of a name ending in ``.test`` answers 127.0.0.1 only after 10 s (a DNS server that
    does not answer), other names as before; the names asked for are listed. The lookups still waiting end
    with the test. Each test asks for names of its own: a lookup under way is shared by the later ones."""
    real = socket.getaddrinfo
    release = threading.Event()
    asked: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".test"):
            asked.append(host)
            release.wait(10)
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    release.set()


HANG_TIMEOUT_S = 0.5


@pytest.mark.parametrize("kind", ["http", "https", "smtp", "smtp over tls"])
def test_a_host_name_whose_resolution_hangs_times_the_attempt_out(hanging_dns: list[str], kind: str) -> None:
    """A DNS server that does not answer: getaddrinfo ran outside the attempt's deadline, and an attempt with
    a 0.5 s timeout lasted as long as the resolver tried (10 s here), holding the channel's worker."""
    host = f"{kind.replace(' ', '-')}.hangs.test"
    if kind.startswith("http"):
        req = HttpRequest(f"{kind}://{host}:9/hook", b"{}")
        outcome, took = timed(lambda: senders.post("webhook", req, HANG_TIMEOUT_S))
    else:
        channel = _mail_channel(25, host=host, ssl=kind == "smtp over tls")
        outcome, took = timed(lambda: senders.send_mail(channel, _mail(), HANG_TIMEOUT_S))
    assert (outcome.ok, outcome.permanent) == (False, False)  # retried, as any timeout
    assert outcome.reason == "timed out: the attempt took longer than 0.5s"
    assert HANG_TIMEOUT_S <= took < HANG_TIMEOUT_S + 0.4, took
    assert hanging_dns == [host]


def test_an_attempt_whose_resolution_hangs_is_retried_then_dead_lettered(hanging_dns: list[str]) -> None:
    from riskctl.alerts.dispatcher import network_sender
    from tests.unit.alerts.conftest import alert_doc
    from tests.unit.alerts.test_dispatcher import run_one

    channels = {"w": {"type": "webhook", "url": "http://retried.hangs.test/hook"}}
    delivery = {"attempts": 3, "backoff_ms": 1, "max_backoff_ms": 1, "timeout_ms": 300}
    cfg = parse_config({"channels": channels, "default_channels": ["w"], "delivery": delivery}, {})
    t0 = time.monotonic()
    (letter,) = run_one(cfg, alert_doc(alert_id="a1"), network_sender(cfg.delivery.timeout_ms / 1000))
    took = time.monotonic() - t0
    assert (
        letter["reason"]
        == "channel w: undeliverable after 3 attempt(s): timed out: the attempt took longer than 0.3s"
    )
    assert 0.9 <= took < 0.9 + 0.8, took
    # the later attempts waited for the lookup under way rather than start more
    assert hanging_dns == ["retried.hangs.test"]


def test_an_smtp_session_goes_on_when_the_local_host_name_is_not_resolved_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """smtplib looked up the local host's name for EHLO (socket.getfqdn) after connecting, outside every
    timeout: with a resolver that does not answer, the session waited for it (10 s here). Now the session
    waits half its time left at most, then says EHLO with its address as a literal."""
    release = threading.Event()
    monkeypatch.setattr(socket, "getfqdn", lambda name="": release.wait(10) and "late.example")
    monkeypatch.setattr(senders, "_fqdn", None)  # looked up again, through the patched getfqdn
    monkeypatch.setattr(senders, "_fqdn_slow", False)
    ehlo: list[str] = []
    real_ehlo = senders._SMTP.ehlo
    monkeypatch.setattr(
        senders._SMTP, "ehlo", lambda self, name="": ehlo.append(self.local_hostname) or real_ehlo(self, name)
    )
    server = SmtpServer()
    try:
        outcome, took = timed(lambda: senders.send_mail(_mail_channel(server.port), _mail(), TIMEOUT_S))
        # the next attempt does not wait for the lookup again (each one lost half its time to it)
        again, took_again = timed(lambda: senders.send_mail(_mail_channel(server.port), _mail(), TIMEOUT_S))
    finally:
        release.set()
        server.close()
    assert outcome.ok and took < TIMEOUT_S, (outcome, took)
    assert again.ok and took_again < TIMEOUT_S / 4, (again, took_again)
    assert ehlo == ["[127.0.0.1]", "[127.0.0.1]"] and len(server.messages) == 2
