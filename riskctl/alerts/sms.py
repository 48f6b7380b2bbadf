"""SMS through Twilio's Programmable Messaging API (pure: the text's fit and the requests; no network here).

An SMS is short and billed per segment: a text of GSM 03.38 characters (the GSM-7 alphabet) takes 160
characters in one segment and 153 per segment when split; any other character makes the whole text UCS-2,
70 characters in one segment and 67 per segment (a character outside the Basic Multilingual Plane, an emoji,
takes two). :func:`fit` cuts a rendered message to the channel's ``max_segments`` (``...`` at the end, which
keeps a GSM-7 text GSM-7), so an attacker's long or exotic values cannot make reviewers' phones receive, and
the company pay for, ten segments per alert.

One message is one ``POST {url}/2010-04-01/Accounts/{account_sid}/Messages.json`` per recipient
(form-encoded ``To``, ``From``, ``Body``; HTTP basic authentication with the account SID and auth token), as
Twilio documents it. Twilio answers 201 with the message's JSON; 4xx other than 408 and 429 (a number that
cannot receive SMS, a wrong token) is permanent, the rest is retried. As with e-mail, a message that reached
at least one recipient is delivered (sending again would duplicate it for them); the recipients that failed
are logged.
"""

from __future__ import annotations

import base64
from urllib.parse import quote, urlencode

from riskctl.alerts.messages import HttpRequest

#: Twilio's API base: a channel's ``url`` replaces it (a Twilio-compatible gateway, a test receiver)
TWILIO_URL = "https://api.twilio.com"
MAX_SEGMENTS = 10
DEFAULT_SEGMENTS = 2
MAX_RECIPIENTS = 10
#: the GSM 03.38 basic character set, and its extension table (each of those takes two septets)
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


def _septets(text: str) -> int | None:
    """The GSM-7 length of ``text`` (extension characters count two), None when it is not GSM-7."""
    n = 0
    for ch in text:
        if ch in _GSM_BASIC:
            n += 1
        elif ch in _GSM_EXTENDED:
            n += 2
        else:
            return None
    return n


def _ucs2_units(text: str) -> int:
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def segments(text: str) -> tuple[str, int]:
    """``("gsm7" | "ucs2", segments)`` that ``text`` takes as one SMS (an empty text takes one)."""
    septets = _septets(text)
    if septets is not None:
        return "gsm7", 1 if septets <= 160 else -(-septets // 153)
    units = _ucs2_units(text)
    return "ucs2", 1 if units <= 70 else -(-units // 67)


def fit(text: str, max_segments: int) -> str:
    """``text``, cut (with ``...``) to take at most ``max_segments`` segments: the longest prefix that does,
    in its own encoding. The encoding is not the whole text's: one character beyond GSM-7 (a Cyrillic or CJK
    user id, an emoji) after the review link made the whole text UCS-2 (70 and 67 characters a segment for
    160 and 153), so the cut fell inside the link, though the text up to that character, link included, fits
    in GSM-7; the cut now keeps that prefix when it is the longer one."""
    if segments(text)[1] <= max_segments:
        return text
    end_gsm = next(
        (i for i, ch in enumerate(text) if ch not in _GSM_BASIC and ch not in _GSM_EXTENDED), len(text)
    )
    as_gsm = _prefix(text[:end_gsm], max_segments, gsm=True)
    as_ucs2 = _prefix(text, max_segments, gsm=False) if end_gsm < len(text) else ""
    return max(as_gsm, as_ucs2, key=len).rstrip() + "..."


def _prefix(text: str, max_segments: int, *, gsm: bool) -> str:
    """The longest prefix of ``text`` that takes at most ``max_segments`` segments of the encoding (GSM-7 or
    UCS-2) with ``...`` after it."""
    per, one = (153, 160) if gsm else (67, 70)
    budget = (one if max_segments == 1 else per * max_segments) - 3  # the "..."
    used = 0
    for i, ch in enumerate(text):
        cost = (2 if ch in _GSM_EXTENDED else 1) if gsm else (2 if ord(ch) > 0xFFFF else 1)
        if used + cost > budget:
            return text[:i]
        used += cost
    return text


def twilio_requests(
    url: str, account_sid: str, auth_token: str, sender: str, recipients: tuple[str, ...], text: str
) -> list[tuple[str, HttpRequest]]:
    """One request per recipient: ``[(recipient, request), ...]``."""
    endpoint = (
        f"{(url or TWILIO_URL).rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}/Messages.json"
    )
    credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")
    headers = {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "Authorization": f"Basic {credentials}",
    }
    return [
        (to, HttpRequest(endpoint, urlencode({"To": to, "From": sender, "Body": text}).encode(), headers))
        for to in recipients
    ]
