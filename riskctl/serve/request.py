"""What ``POST /v1/decisions`` accepts: the checks of a request before its event goes to Kafka.

The event is validated by the job's own code and limits (:func:`riskctl.core.door.decode`,
:func:`riskctl.core.events.normalize_event`, :func:`riskctl.core.door.check_clock`: exactly what
:func:`riskctl.core.events.parse_event` does in the job), so the API refuses what the job would dead-letter,
and nothing else. Every refusal is an :class:`ApiError` with an HTTP status, the field and the reason:

* 415: a Content-Type other than ``application/json`` (a ``charset`` other than UTF-8 included), or a
  Content-Encoding other than identity, gzip or deflate;
* 413: a body larger than ``job.max_event_bytes`` (the event as produced, with its ``reply_to``, included);
* 400: a body that is not JSON (or not valid UTF-8);
* 422: JSON that the job refuses (missing or mistyped field, too deep, string too long, number beyond
  10**15, ``ts`` too far ahead of the clock), a ``reply_to`` set by the caller (the API sets it), or a
  ``timeout_ms`` outside ``[serve.min_timeout_ms, serve.max_timeout_ms]``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from riskctl.core.door import Limits, check_clock, decode
from riskctl.core.errors import EventError
from riskctl.core.events import normalize_event
from riskctl.core.reply import REPLY_FIELD

_MAX_TIMEOUT_TEXT = 12


class ApiError(Exception):
    """A refused request: HTTP ``status``, the ``field`` (None: the whole body is at fault), ``reason``."""

    def __init__(
        self, status: int, reason: str, field: str | None = None, *, retry_after: int | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.field = field
        #: seconds a refused caller should wait before trying again (a 429's ``Retry-After``)
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "field": self.field, "reason": self.reason}}


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """A request that passed every check: the event to produce and how long to wait for its decision."""

    event_id: str
    user_id: str
    #: the event as the caller sent it (decoded), to which the API adds ``reply_to`` before producing it
    document: dict[str, Any]
    #: digest of the event's content, to tell a retry (same event) from a conflicting reuse of the event_id
    fingerprint: str
    timeout_ms: int
    #: the event's time as the job normalizes it: its decision repeats it (with user_id), a reply that does
    #: not is not this event's decision
    ts: int


#: the Content-Encoding values a request body may have (case-insensitive); other values are 415
CONTENT_ENCODINGS = ("identity", "gzip", "x-gzip", "deflate")


def decoder(encoding: str) -> Any:
    """A zlib decompressor for ``encoding`` (a request's Content-Encoding), None for identity (or none);
    415 naming the header for any other value, a list of codings included."""
    value = encoding.strip().lower()
    if value in ("", "identity"):
        return None
    if value in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if value == "deflate":  # RFC 9110: the zlib format
        return zlib.decompressobj()
    msg = f"Content-Encoding {encoding[:40]!r} is not supported: send the body as it is, or gzip or deflate"
    raise ApiError(415, msg, "Content-Encoding")


def check_content_type(value: str | None) -> None:
    """415 unless the Content-Type is JSON in UTF-8 (no charset means UTF-8 for JSON)."""
    if not value:
        msg = "Content-Type is missing: send application/json"
        raise ApiError(415, msg, "Content-Type")
    media, _, params = value.partition(";")
    if media.strip().lower() != "application/json":
        msg = f"Content-Type {media.strip()[:100]!r} is not supported: send application/json"
        raise ApiError(415, msg, "Content-Type")
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "charset" and val.strip().strip('"').lower() not in {"utf-8", "utf8"}:
            msg = f"charset {val.strip()[:40]!r} is not supported: events are UTF-8 JSON"
            raise ApiError(415, msg, "Content-Type")


def parse_timeout(value: str | None, default_ms: int, min_ms: int, max_ms: int) -> int:
    """The request's ``timeout_ms`` (query parameter), within ``[min_ms, max_ms]``; 422 otherwise."""
    if value is None or value == "":
        return default_ms
    text = value.strip()
    if len(text) > _MAX_TIMEOUT_TEXT or not text.isdigit() or not text.isascii():
        msg = f"must be an integer number of milliseconds between {min_ms} and {max_ms}, got {value[:40]!r}"
        raise ApiError(422, msg, "timeout_ms")
    ms = int(text)
    if not min_ms <= ms <= max_ms:
        msg = f"must be between {min_ms} and {max_ms} milliseconds, got {ms}"
        raise ApiError(422, msg, "timeout_ms")
    return ms


def parse_event_request(body: bytes, limits: Limits, now_ms: int, timeout_ms: int) -> DecisionRequest:
    """Validate the body (one event) as the job would; raise :class:`ApiError` (400/413/422)."""
    if len(body) > limits.max_event_bytes:
        msg = f"body of {len(body)} bytes is larger than max_event_bytes ({limits.max_event_bytes})"
        raise ApiError(413, msg)
    try:
        doc = decode(body, limits)
        event = normalize_event(doc)
        check_clock(event["ts"], now_ms, limits)
    except EventError as exc:
        raise ApiError(_status_of(body), exc.reason, exc.field) from None
    if REPLY_FIELD in doc:
        msg = "reserved: riskctl serve sets this field to route the decision back"
        raise ApiError(422, msg, REPLY_FIELD)
    fingerprint = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return DecisionRequest(event["event_id"], event["user_id"], doc, fingerprint, timeout_ms, event["ts"])


def _status_of(body: bytes) -> int:
    """400 when the body is not JSON at all (syntax, encoding), 422 when the job refuses its content."""
    try:
        json.loads(body.decode("utf-8"))
    except RecursionError:
        return 422  # valid JSON nested beyond what the stdlib decodes: a depth limit, like max_depth
    except ValueError:  # UnicodeDecodeError and JSONDecodeError (and int() beyond 4,300 digits)
        return 400
    return 422


def encode_event(request: DecisionRequest, reply_key: str, limits: Limits) -> bytes:
    """The record value to produce: the caller's event plus ``reply_to``; 413 if that exceeds the limit."""
    raw = orjson.dumps({**request.document, REPLY_FIELD: reply_key})
    if len(raw) > limits.max_event_bytes:
        msg = (
            f"the event with its {REPLY_FIELD} ({len(raw)} bytes) is larger than max_event_bytes "
            f"({limits.max_event_bytes})"
        )
        raise ApiError(413, msg)
    return raw
