"""The request each channel kind sends, and how its answer is read (pure: no network here).

- ``webhook``: ``POST`` JSON ``{"title", "text", "severity", "items": [item...], "items_omitted": n}`` (one
  item, or the items of a digest, each as :meth:`~riskctl.alerts.model.AlertItem.to_dict`),
  ``Authorization: Bearer <token>`` when a token is set, plus the channel's headers. Any 2xx is success. The
  body is at most the channel's ``max_body_bytes``: the items are the first ones that fit, in order, and
  ``items_omitted`` counts the others (0 when all fit); the JSON is never cut.
- ``dingtalk``: ``POST`` ``{"msgtype": "markdown", "markdown": {"title", "text"}}`` to the robot URL,
  signed (``timestamp``, ``sign``) when a secret is set. Success is HTTP 200 with ``errcode`` 0.
- ``slack``: ``POST`` ``{"text"}`` (mrkdwn) to the incoming-webhook URL. Success is HTTP 200.
- ``email``: an :class:`email.message.EmailMessage` (plain text) from ``from`` to ``to``; ``=?`` in the
  Subject shows as ``=[?]`` (never read as an RFC 2047 encoded word).

A failure is *permanent* (dead-lettered at once, retrying cannot help) for HTTP 4xx other than 408 and 429;
anything else (5xx, 408, 429, a DingTalk ``errcode``, a refused connection, a timeout) is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid

import orjson

from riskctl.alerts.model import AlertItem
from riskctl.alerts.settings import Channel
from riskctl.alerts.signing import signed_url


@dataclass(frozen=True)
class HttpRequest:
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """How a delivery attempt ended."""

    ok: bool
    reason: str = ""
    permanent: bool = False


OK = Outcome(True)


def http_request(
    channel: Channel, title: str, text: str, severity: str, items: Sequence[AlertItem], now_ms: int
) -> HttpRequest:
    """The request of a webhook, DingTalk or Slack channel. ``now_ms`` signs DingTalk requests."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if channel.type == "webhook":
        headers.update(channel.headers)
        if channel.token:
            headers["Authorization"] = f"Bearer {channel.token}"
        return HttpRequest(
            channel.url, webhook_body(title, text, severity, items, channel.max_body_bytes), headers
        )
    body: dict[str, object]
    if channel.type == "dingtalk":
        body = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
        url = signed_url(channel.url, channel.secret, now_ms) if channel.secret else channel.url
    elif channel.type == "slack":
        body = {"text": text}
        url = channel.url
    else:
        msg = f"channel {channel.name} of type {channel.type} does not send HTTP"
        raise ValueError(msg)
    return HttpRequest(url, orjson.dumps(body), headers)


def webhook_body(title: str, text: str, severity: str, items: Sequence[AlertItem], max_bytes: int) -> bytes:
    """The webhook's JSON within ``max_bytes``: the first items that fit, in order; ``items_omitted`` counts
    the rest. Each item is serialized once, and none after the first that does not fit."""
    head: dict[str, object] = {"title": title, "text": text, "severity": severity}
    # the size without items, its count of omitted ones as wide as it can be
    size = len(orjson.dumps({**head, "items": [], "items_omitted": len(items)}))
    kept: list[orjson.Fragment] = []
    for item in items:
        part = orjson.dumps(item.to_dict())
        extra = len(part) + (1 if kept else 0)  # the comma before it
        if size + extra > max_bytes:
            break
        kept.append(orjson.Fragment(part))
        size += extra
    return orjson.dumps({**head, "items": kept, "items_omitted": len(items) - len(kept)})


def email_message(channel: Channel, title: str, text: str) -> EmailMessage:
    """The e-mail of an email channel. The Subject is shown as written: every ``=?`` in it becomes ``=[?]``,
    since the e-mail library reads ``=?charset?q?...?=`` in a header value as an RFC 2047 encoded word and
    writes what it decodes to raw: a user id ``=?utf-8?q?x=0D=0AReply-To:_a@evil?=`` added a header (a
    line break, a bidirectional control: what values are cleaned of, back in the header)."""
    msg = EmailMessage()
    msg["Subject"] = title.replace("=?", "=[?]")
    msg["From"] = channel.sender
    msg["To"] = ", ".join(channel.to)
    msg["Message-ID"] = make_msgid(domain=channel.sender.rpartition("@")[2] or None)
    msg.set_content(text)
    return msg


def read_http_answer(channel_type: str, status: int, body: bytes) -> Outcome:
    """Whether an HTTP answer means delivered; the reason (with a short body excerpt) when not."""
    excerpt = body[:200].decode("utf-8", "replace")
    if not 200 <= status < 300:
        permanent = 400 <= status < 500 and status not in (408, 429)
        return Outcome(False, f"HTTP {status}: {excerpt}", permanent)
    if channel_type == "dingtalk":
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Outcome(False, f"DingTalk answered with something that is not JSON: {excerpt}")
        if not isinstance(doc, dict):
            doc = {}
        code = doc.get("errcode")
        if code != 0:
            return Outcome(False, f"DingTalk errcode {code}: {str(doc.get('errmsg', excerpt))[:200]}")
    return OK


def backoff_s(attempt: int, base_ms: int, max_ms: int) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): base, 2 x base, 4 x base ..., capped."""
    return min(max_ms, base_ms * 2 ** min(attempt - 1, 30)) / 1000
