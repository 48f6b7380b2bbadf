"""Validation and normalisation of raw events (JSON) into the shape the engine relies on.

Required: ``event_id`` (str), ``user_id`` (str), ``type`` (str), ``ts`` (int, ms since the epoch, event time).
Known optional fields are type-checked: ``amount`` (finite number; a numeric string is converted, and held to
the door's range, ``MAX_NUMBER``, like a number), ``success``
(bool), ``device_id``, ``city``, ``ip``, ``country`` (str). ``null`` for an optional field is kept as None
(rules treat it as missing). Unknown fields are kept as they are, so rules can refer to them.

Before any of this, :mod:`riskctl.core.door` holds every record to its limits (size, depth, string length,
number range, valid UTF-8, no lone surrogates) and, given the time, refuses a ``ts`` too far in the future.
Anything else raises :class:`~riskctl.core.errors.EventError` with the reason and the field; the Flink job
sends those records to the dead-letter topic, ``riskctl replay`` reports them with their line number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from riskctl.core.door import DEFAULT_LIMITS, Limits, check_clock, decode
from riskctl.core.errors import EventError
from riskctl.core.expr import MAX_NUMBER

REQUIRED_STR = ("event_id", "user_id", "type")
OPTIONAL_STR = ("device_id", "city", "ip", "country")
MAX_ID_LENGTH = 256
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: anything above is not milliseconds


def parse_event(
    raw: str | bytes | bytearray | None, limits: Limits = DEFAULT_LIMITS, now: int | None = None
) -> dict[str, Any]:
    """Decode one record within the door's ``limits`` and validate it (see :func:`normalize_event`).

    With ``now`` (ms since the epoch), a ``ts`` more than ``limits.max_clock_skew_ms`` ahead of it is refused
    too (:func:`riskctl.core.door.check_clock`). Raises :class:`EventError` with the reason and the field.
    """
    obj = decode(raw, limits)
    # (a decoded object is this call's own: validated in place, without normalize_event's copy)
    event = _normalize(obj) if type(obj) is dict else normalize_event(obj)
    if now is not None and event["ts"] > now + limits.max_clock_skew_ms:
        check_clock(event["ts"], now, limits)  # raises, with the reason
    return event


def normalize_event(obj: Any) -> dict[str, Any]:
    """Validate a decoded event and return a normalised copy (a new dict; the input is not changed)."""
    if not isinstance(obj, Mapping):
        msg = f"an event must be a JSON object, got {type(obj).__name__}"
        raise EventError(msg)
    return _normalize(dict(obj))


def _normalize(event: dict[str, Any]) -> dict[str, Any]:
    """:func:`normalize_event` of ``event``, a dict of the caller's own, changed in place and returned.

    Most events are well-formed: each field is first checked by its exact type alone (what JSON decoding
    gives), and only a field that fails that takes the general checks, which refuse it or convert it (an
    integer id to its string, a whole float time or a numeric string amount to its number)."""
    for name in REQUIRED_STR:
        value = event.get(name)
        if type(value) is str and value and len(value) <= MAX_ID_LENGTH:
            continue
        event[name] = _identifier(value, name)
    ts = event.get("ts")
    if type(ts) is not int or not 0 <= ts <= MAX_TS:
        event["ts"] = _timestamp(ts)
    amount = event.get("amount")
    if amount is not None and not (
        (type(amount) is int or (type(amount) is float and math.isfinite(amount)))
        and -MAX_NUMBER <= amount <= MAX_NUMBER
    ):
        event["amount"] = _amount(amount)
    success = event.get("success")
    if success is not None and type(success) is not bool:
        msg = f"must be true or false, got {success!r}"
        raise EventError(msg, "success")
    for name in OPTIONAL_STR:
        value = event.get(name)
        if value is not None and type(value) is not str and not isinstance(value, str):
            msg = f"must be a string, got {type(value).__name__}"
            raise EventError(msg, name)
    return event


def _identifier(value: Any, name: str) -> str:
    """A required id's general check: present, a string or an integer (as its string), not too long."""
    if value is None:
        msg = "required field is missing"
        raise EventError(msg, name)
    if isinstance(value, bool) or not isinstance(value, str | int):
        msg = f"must be a string, got {type(value).__name__}"
        raise EventError(msg, name)
    value = str(value)  # integer ids are common in producers; the engine keys by string
    if not value or len(value) > MAX_ID_LENGTH:
        msg = f"must be a non-empty string of at most {MAX_ID_LENGTH} characters"
        raise EventError(msg, name)
    return value


def _timestamp(value: Any) -> int:
    if value is None:
        msg = "required field is missing"
        raise EventError(msg, "ts")
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"must be an integer (milliseconds since the epoch), got {type(value).__name__}"
        raise EventError(msg, "ts")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            msg = f"must be an integer number of milliseconds, got {value!r}"
            raise EventError(msg, "ts")
        value = int(value)
    if not 0 <= value <= MAX_TS:
        msg = f"out of range (milliseconds since the epoch): {value}"
        raise EventError(msg, "ts")
    return value


def _amount(value: Any) -> int | float:
    if isinstance(value, bool):
        msg = "must be a number, got a boolean"
        raise EventError(msg, "amount")
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            msg = f"must be a number, got the string {value[:40]!r}"
            raise EventError(msg, "amount") from None
    if not isinstance(value, int | float):
        msg = f"must be a number, got {type(value).__name__}"
        raise EventError(msg, "amount")
    if isinstance(value, float) and not math.isfinite(value):
        msg = f"must be a finite number, got {value!r}"
        raise EventError(msg, "amount")
    if not -MAX_NUMBER <= value <= MAX_NUMBER:
        # the door checks numbers, not strings: "1e300" (or 300 nines) read from a string is held to the same
        # range here, else it reached sum/avg and made them inf (null) or inexact
        shown = repr(value) if isinstance(value, float) else f"of {len(str(abs(value)))} digits"
        msg = f"number {shown} is not finite or beyond {MAX_NUMBER:.0e} in absolute value"
        raise EventError(msg, "amount")
    return value
