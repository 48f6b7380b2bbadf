"""The network side of a delivery: one HTTP POST (stdlib ``urllib``) or one SMTP session (``smtplib``).

Each call makes one attempt and returns an :class:`~riskctl.alerts.messages.Outcome`; it never raises for a
failure of the receiver (refused connection, timeout, TLS error, bad answer). Redirects are not followed (a
webhook that answers 3xx is a failure, retried), answers are read up to 64 KiB, and the URL (which carries
tokens) never appears in a reason.

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
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any

from riskctl.alerts.messages import OK, HttpRequest, Outcome, read_http_answer
from riskctl.alerts.settings import Channel

log = logging.getLogger("riskctl.alerts")
_MAX_ANSWER = 65_536


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def post(channel_type: str, request: HttpRequest, timeout_s: float) -> Outcome:
    """POST ``request``; the outcome read by :func:`~riskctl.alerts.messages.read_http_answer`."""
    req = urllib.request.Request(request.url, data=request.body, headers=request.headers, method="POST")  # noqa: S310 (http/https only: checked when the file loads)
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            return read_http_answer(channel_type, resp.status, resp.read(_MAX_ANSWER))
    except urllib.error.HTTPError as exc:
        body = exc.read(_MAX_ANSWER) if exc.fp is not None else b""
        return read_http_answer(channel_type, exc.code, body)
    except urllib.error.URLError as exc:
        return Outcome(False, f"cannot reach the receiver: {_reason(exc.reason)}")
    except (ValueError, http.client.InvalidURL) as exc:  # its message quotes the URL, which may hold a token
        return Outcome(False, f"the channel's URL cannot be used ({type(exc).__name__})", permanent=True)
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(False, f"cannot reach the receiver: {_reason(exc)}")


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


def send_mail(channel: Channel, message: EmailMessage, timeout_s: float) -> Outcome:
    """One SMTP session: connect (SSL or STARTTLS when set), log in when a user is set, send."""
    try:
        smtp: smtplib.SMTP
        if channel.ssl:
            smtp = smtplib.SMTP_SSL(
                channel.host, channel.port, timeout=timeout_s, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(channel.host, channel.port, timeout=timeout_s)
        with smtp:
            if channel.starttls:
                smtp.starttls(context=ssl.create_default_context())
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
