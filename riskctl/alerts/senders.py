"""The network side of a delivery: one HTTP POST (stdlib ``urllib``) or one SMTP session (``smtplib``).

Each call makes one attempt and returns an :class:`~riskctl.alerts.messages.Outcome`; it never raises for a
failure of the receiver (refused connection, timeout, TLS error, bad answer). Redirects are not followed (a
webhook that answers 3xx is a failure, retried), answers are read up to 64 KiB, and the URL (which carries
tokens) never appears in a reason.

``timeout_s`` bounds the **whole attempt**, not each socket operation: a receiver (or a proxy) that answers a
byte at a time, each within the socket's timeout, would otherwise hold the channel's worker for as long as it
likes, and a channel that looks busy but healthy is never shed, so reading would pause for every channel. A
:class:`Deadline` shuts the attempt's sockets down when it runs out (TCP, a proxy's tunnel, the TLS handshake
and the answer, HTTP and SMTP alike), and the attempt fails as "timed out", to be retried. The receiver's host
name (or the proxy's) is resolved within the same deadline (:func:`riskctl.deadline.create_connection`): a
DNS server that does not answer held ``getaddrinfo``, and with it the attempt, for as long as the resolver
tried (5 s per try and server), however short ``timeout_s``. SMTP's own lookup of the local host's name for
EHLO (``socket.getfqdn``) is bounded as well (:func:`_ehlo_name`).

SMTP recipients: ``smtplib`` returns the refused recipients only when at least one was accepted, and then the
message was delivered to the accepted ones: that is a delivery (a warning is logged), since sending again
would duplicate it for them. When every recipient is refused, the failure is permanent if every answer was
5xx, retried otherwise.
"""

from __future__ import annotations

import http.client
import logging
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from email.message import EmailMessage
from typing import Any

from riskctl.alerts.messages import OK, HttpRequest, Outcome, read_http_answer
from riskctl.alerts.settings import Channel
from riskctl.deadline import Deadline, HTTPConnection, HTTPSConnection, create_connection, current

log = logging.getLogger("riskctl.alerts")
_MAX_ANSWER = 65_536


class TlsContext(ssl.SSLContext):
    """A client context whose TLS sockets are watched by the attempt's deadline before their handshake (a
    handshake can be dripped as well): HTTPS, SMTP over TLS and STARTTLS all wrap through it."""

    def wrap_socket(  # type: ignore[override]
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        tls = super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )
        deadline = current()
        if deadline is not None:
            deadline.watch(tls)
        if do_handshake_on_connect:
            tls.do_handshake()
        return tls


def tls_context(cafile: str | None = None) -> TlsContext:
    """What ``ssl.create_default_context()`` makes (certificates and host names checked, the system's CAs,
    or ``cafile``), as a :class:`TlsContext`."""
    context = TlsContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile is None:
        context.load_default_certs()
    else:
        context.load_verify_locations(cafile)
    return context


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(HTTPSConnection, req, context=self._context)  # type: ignore[attr-defined]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def opener(context: ssl.SSLContext) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment, HTTPS_PROXY and the others), redirects not followed,
    every connection and TLS handshake under the attempt's :class:`Deadline`."""
    return urllib.request.build_opener(_NoRedirect(), _HTTPHandler(), _HTTPSHandler(context=context))


_OPENER: urllib.request.OpenerDirector | None = None


def _opener() -> urllib.request.OpenerDirector:
    global _OPENER
    if _OPENER is None:  # the system's CAs are read once, at the first HTTP attempt
        _OPENER = opener(tls_context())
    return _OPENER


def post(channel_type: str, request: HttpRequest, timeout_s: float) -> Outcome:
    """POST ``request``; the outcome read by :func:`~riskctl.alerts.messages.read_http_answer`."""
    return _within(timeout_s, lambda: _post(channel_type, request, timeout_s))


def _post(channel_type: str, request: HttpRequest, timeout_s: float) -> Outcome:
    req = urllib.request.Request(request.url, data=request.body, headers=request.headers, method="POST")  # noqa: S310 (http/https only: checked when the file loads)
    try:
        with _opener().open(req, timeout=timeout_s) as resp:
            return read_http_answer(channel_type, resp.status, resp.read(_MAX_ANSWER))
    except urllib.error.HTTPError as exc:
        body = exc.read(_MAX_ANSWER) if exc.fp is not None else b""
        return read_http_answer(channel_type, exc.code, body)
    except urllib.error.URLError as exc:
        return Outcome(False, f"cannot reach the receiver: {_reason(exc.reason)}")
    except (ValueError, http.client.InvalidURL) as exc:  # its message quotes the URL (a token, maybe)
        return Outcome(False, f"the channel's URL cannot be used ({type(exc).__name__})", permanent=True)
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(False, f"cannot reach the receiver: {_reason(exc)}")


def _within(timeout_s: float, attempt: Callable[[], Outcome]) -> Outcome:
    """``attempt()`` under a :class:`Deadline` of ``timeout_s``; once it expired, the attempt timed out,
    whatever the shut socket made of it (a reset, or an answer cut short that may read as a 200: at least
    once, the attempt is retried)."""
    with Deadline(timeout_s) as deadline:
        outcome = attempt()
    # a failure at the deadline is its doing too: a name not resolved in time ends the attempt by itself,
    # as the watchdog (a thread of its own) may only then be expiring the deadline
    if deadline.expired or (not outcome.ok and time.monotonic() >= deadline.end):
        return Outcome(False, f"timed out: the attempt took longer than {timeout_s:g}s")
    return outcome


def _reason(exc: object) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _refusals(refused: dict[str, Any]) -> str:
    """``addr code, addr code, ...``: the first 3 refused addresses (from the channel's list), their codes."""
    shown = ", ".join(
        f"{addr} {answer[0] if isinstance(answer, tuple) else answer}"
        for addr, answer in sorted(refused.items())[:3]
    )
    return shown + (f" and {len(refused) - 3} more" if len(refused) > 3 else "")


#: the local host's fully qualified name (``socket.getfqdn()``), looked up once per process in a thread
_fqdn: Future[str] | None = None
_fqdn_lock = threading.Lock()
#: an attempt has waited for that lookup in vain: the next ones do not wait (they take it once it is there)
_fqdn_slow = False


def _ehlo_name(sock: socket.socket) -> str:
    """The name said in EHLO: the local host's fully qualified name, as smtplib says, when it is known within
    half the attempt's time left (the session needs the rest); otherwise (no answer in time, or no dot in it)
    the connection's own address as a literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``; RFC 5321, 4.1.3).
    smtplib looks that name up itself, after connecting and outside every timeout: ``getfqdn`` asks the
    resolver, which may not answer. The lookup runs once per process, in a daemon thread; an attempt that
    does not get its answer in time goes on without it, and the later ones do not wait for it again (a
    resolver that never answers cost every SMTP attempt half its time), taking it once it is there."""
    global _fqdn, _fqdn_slow
    with _fqdn_lock:
        if _fqdn is None:
            _fqdn = Future()
            threading.Thread(target=_lookup_fqdn, args=(_fqdn,), name="riskctl-fqdn", daemon=True).start()
        future = _fqdn
    deadline = current()
    left = deadline.end - time.monotonic() if deadline is not None else None
    wait = 0.0 if _fqdn_slow else max(left / 2, 0.0) if left is not None else None
    try:
        name = future.result(timeout=wait)
    except TimeoutError:
        _fqdn_slow = True
        name = ""
    except OSError:
        name = ""
    if "." in name:
        return name
    addr = sock.getsockname()[0]
    return f"[IPv6:{addr}]" if sock.family == socket.AF_INET6 else f"[{addr}]"


def _lookup_fqdn(future: Future[str]) -> None:
    try:
        future.set_result(socket.getfqdn())
    except BaseException as exc:  # handed to the waiters
        future.set_exception(exc)


class _SMTP(smtplib.SMTP):
    """Connected by the constructor within the attempt's deadline, host name and EHLO name included."""

    def __init__(self, host: str, port: int, timeout: float, **kwargs: Any) -> None:
        # a name given: smtplib does not look the local one up (socket.getfqdn) after connecting
        super().__init__(host, port, local_hostname="localhost", timeout=timeout, **kwargs)
        if self.sock is not None:
            self.local_hostname = _ehlo_name(self.sock)

    def _source(self) -> tuple[str, int] | None:
        return self.source_address  # type: ignore[return-value]  # (host, port) or None, as given: none here

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return create_connection((host, port), timeout, self._source())


class _SMTPSSL(_SMTP, smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = create_connection((host, port), timeout, self._source())
        return self.context.wrap_socket(sock, server_hostname=self._host)  # type: ignore[attr-defined]


def send_mail(
    channel: Channel, message: EmailMessage, timeout_s: float, context: ssl.SSLContext | None = None
) -> Outcome:
    """One SMTP session: connect (SSL or STARTTLS when set), log in when a user is set, send. ``context``:
    for TLS (default: :func:`tls_context`)."""
    return _within(timeout_s, lambda: _smtp_session(channel, message, timeout_s, context))


def _smtp_session(
    channel: Channel, message: EmailMessage, timeout_s: float, context: ssl.SSLContext | None
) -> Outcome:
    try:
        smtp: smtplib.SMTP
        if channel.ssl or channel.starttls:
            context = context or tls_context()
        # connected by the constructor, through _get_socket: under the attempt's deadline already
        if channel.ssl:
            smtp = _SMTPSSL(channel.host, channel.port, timeout=timeout_s, context=context)
        else:
            smtp = _SMTP(channel.host, channel.port, timeout=timeout_s)
        with smtp:
            if channel.starttls:
                smtp.starttls(context=context)
            if channel.username:
                smtp.login(channel.username, channel.password)
            refused = smtp.send_message(message, from_addr=channel.sender, to_addrs=list(channel.to))
        if refused:  # some recipients accepted it: delivered (sending again would duplicate it for them)
            log.warning(
                "channel %s: delivered, but the SMTP server refused %d of %d recipient(s): %s",
                channel.name,
                len(refused),
                len(channel.to),
                _refusals(refused),
            )
        return OK
    except smtplib.SMTPRecipientsRefused as exc:  # every recipient refused (or a 421 while asking)
        codes = [answer[0] if isinstance(answer, tuple) else None for answer in exc.recipients.values()]
        permanent = bool(codes) and all(isinstance(c, int) and 500 <= c < 600 for c in codes)
        reason = f"the SMTP server refused the recipient(s): {_refusals(exc.recipients)}"  # none accepted
        return Outcome(False, reason, permanent)
    except smtplib.SMTPAuthenticationError as exc:
        return Outcome(False, f"SMTP login refused ({exc.smtp_code})", permanent=True)
    except smtplib.SMTPResponseException as exc:
        permanent = 500 <= exc.smtp_code < 600
        text = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        return Outcome(False, f"SMTP {exc.smtp_code}: {text[:200]}", permanent)
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome(False, f"cannot deliver over SMTP: {_reason(exc)}")


def send_sms(channel: Channel, text: str, timeout_s: float) -> Outcome:
    """One SMS to each of the channel's recipients (Twilio's API), cut to ``max_segments`` first; each POST
    within ``timeout_s``. Delivered when it reached at least one recipient (the others are logged: sending
    again would duplicate it for those it reached); when it reached none, the failure is permanent only if
    every recipient's was."""
    from riskctl.alerts.sms import fit, twilio_requests

    requests = twilio_requests(
        channel.url,
        channel.username,
        channel.password,
        channel.sender,
        channel.to,
        fit(text, channel.max_segments),
    )
    failed: list[tuple[str, Outcome]] = []
    for recipient, request in requests:
        outcome = post("sms", request, timeout_s)
        if not outcome.ok:
            failed.append((recipient, outcome))
    if not failed:
        return OK
    shown = "; ".join(f"{to}: {o.reason[:120]}" for to, o in failed[:3]) + (
        f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    )
    if len(failed) < len(requests):
        log.warning(
            "channel %s: delivered, but %d of %d recipient(s) failed: %s",
            channel.name,
            len(failed),
            len(requests),
            shown,
        )
        return OK
    return Outcome(False, f"no recipient got the SMS: {shown}", all(o.permanent for _, o in failed))
