"""The door: limits every record meets before the engine sees it, and the dead letters of those that do not.

Attackers write the events topic, so every record is hostile until shown otherwise. :func:`decode` turns a
record's bytes into JSON data within :class:`Limits`, :func:`check_clock` keeps event time from being pushed
into the future, and :func:`dead_letter` builds the record of anything refused or failed: reason, field,
exception type and rule id (internal errors), where it came from (Kafka topic/partition/offset, or the
file line in a replay), and the original record (as text when it is valid UTF-8, else base64 of the original
bytes), always within ``dead_letter_max_bytes``. The Flink job and ``riskctl replay`` share these
functions, so a line gets the same outcome in both.

What the door refuses, each with the field path (``meta.tags[3]``) where one applies:

* a record larger than ``max_event_bytes`` (before it is decoded);
* bytes that are not valid UTF-8 (no replacement character, ever: the original bytes go to the dead letter);
* a document nested deeper than ``max_depth`` containers (the event object itself is depth 1);
* a string (value or key) longer than ``max_string_chars`` characters (ids are limited further, to 256, by
  :mod:`riskctl.core.events`);
* a number that is not finite or beyond ``MAX_NUMBER`` (10**15) in absolute value, anywhere in the event: the
  range in which the engine's sums and averages stay exact (:data:`riskctl.core.expr.MAX_NUMBER`);
* a lone surrogate (``"\\ud800"``) in any string or key: it cannot be written back as UTF-8;
* (:func:`check_clock`) a ``ts`` more than ``max_clock_skew_ms`` ahead of ``now``.

No wall clock here: ``now`` is an argument. Cost: the fast path is one orjson decode plus one walk over the
decoded event (``bench/door_bench.py``). Refusing costs about what accepting does (``bench/door_hostile.py``):
the walk stops at the first culprit and builds only its field path; what orjson cannot read (NaN, Infinity,
numbers beyond a double, lone surrogate escapes, and anything it finds invalid) is read once more by the
standard library, at C speed, before the same walk.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from riskctl.core.door_limits import DEFAULT_LIMITS, Limits
from riskctl.core.errors import EventError
from riskctl.core.expr import MAX_NUMBER

_MAX_REASON_CHARS = 1_000
_MAX_FIELD_CHARS = 300
#: a lone surrogate (U+D800-U+DFFF); written with chr(): the compiled core (mypyc) takes no surrogate in a
#: string literal
_SURROGATE = re.compile(f"[{chr(0xD800)}-{chr(0xDFFF)}]")
_M = MAX_NUMBER


# ------------------------------------------------------------------------------------------------- decode
def decode(raw: bytes | bytearray | str | None, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one record into JSON data within ``limits``; raises :class:`EventError` (reason, field)."""
    if type(raw) is bytes:
        size = len(raw)
    elif raw is None:
        msg = "empty record (null value)"
        raise EventError(msg)
    elif isinstance(raw, str):
        size = len(raw) if raw.isascii() else len(raw.encode("utf-8", "surrogatepass"))
    else:
        size = len(raw)
    if size > limits.max_event_bytes:
        msg = f"record of {size} bytes is larger than max_event_bytes ({limits.max_event_bytes})"
        raise EventError(msg)
    try:
        # orjson accepts only valid UTF-8 and refuses lone surrogates, NaN/Infinity, numbers beyond a double
        # and nesting beyond 1,024: what it accepts needs only the size, depth and range checks
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = _decode_slow(raw)
        surrogates = True
    else:
        surrogates = False
    trail = _walk(obj, 1, limits.max_depth, limits.max_string_chars, surrogates)
    if trail is not None:
        raise _refusal(trail, limits)
    return obj


def _decode_slow(raw: bytes | bytearray | str) -> Any:
    """The standard library's reading of what orjson refused, with its error message when it refuses too."""
    if not isinstance(raw, str):
        try:
            raw = bytes(raw).decode("utf-8")  # strict: the stdlib would guess UTF-16/32 or pass surrogates
        except UnicodeDecodeError as exc:
            msg = f"not valid UTF-8: {exc.reason} at byte {exc.start}"
            raise EventError(msg) from None
    try:
        return json.loads(raw)
    except RecursionError:
        msg = "not valid JSON: nested too deep to decode"
        raise EventError(msg) from None
    except ValueError as exc:  # JSONDecodeError, and int() beyond 4,300 digits
        msg = f"not valid JSON: {exc}"
        raise EventError(msg) from None


def _walk(value: Any, depth: int, max_depth: int, max_chars: int, surrogates: bool) -> list[Any] | None:
    """One walk over ``value``: None when every container, string and number is within the limits, else
    the trail to the first that is not (document order), innermost first: ``[culprit, parent, ..., value]``,
    a key as its culprit given as ``(key,)``. Only a refused record pays for finding its path
    (:func:`_refusal`). ``surrogates``: strings are checked for lone surrogates too (the standard library's
    reading; orjson refuses them)."""
    t = type(value)
    if t is dict:
        if depth > max_depth:
            return [value]
        for k in value:
            if len(k) > max_chars or (surrogates and not k.isascii() and _SURROGATE.search(k)):
                return [(k,), value]
        items = value.values()
    elif t is list:
        if depth > max_depth:
            return [value]
        items = value
    elif t is str:
        return None if len(value) <= max_chars and not (surrogates and _lone(value)) else [value]
    elif t is int or t is float:
        return None if -_M <= value <= _M else [value]
    else:
        return None
    depth += 1
    for v in items:  # scalars checked inline, not by a call per value: this walk runs for every event
        tv = type(v)
        if tv is str:
            if len(v) > max_chars or (surrogates and not v.isascii() and _SURROGATE.search(v)):
                return [v, value]
        elif tv is int or tv is float:
            if not -_M <= v <= _M:
                return [v, value]
        elif tv is dict or tv is list:
            if not v and depth <= max_depth:  # an empty container within the depth: nothing to call for
                continue
            trail = _walk(v, depth, max_depth, max_chars, surrogates)
            if trail is not None:
                trail.append(value)
                return trail
    return None


def _lone(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _refusal(trail: list[Any], limits: Limits) -> EventError:
    """The error of the culprit that ends ``trail`` (:func:`_walk`), with its field path."""
    path = ""
    for parent, child in zip(trail[:0:-1], trail[-2::-1], strict=True):
        if type(child) is tuple:  # a key
            break
        # an earlier value equal to the culprit's branch would have been refused first: index() finds it
        if type(parent) is dict:
            key = list(parent)[list(parent.values()).index(child)]
            path = f"{path}.{_printable(key)}" if path else _printable(key)
        else:
            path = f"{path}[{parent.index(child)}]"
    value = trail[0]
    if type(value) is tuple:
        return _string_error(value[0], f"{path}.{value[0]}" if path else value[0], limits, "key")
    if type(value) is str:
        return _string_error(value, path, limits, "string")
    if type(value) is dict or type(value) is list:
        msg = f"nested deeper than max_depth ({limits.max_depth})"
        return EventError(msg, path or None)
    text = repr(value) if type(value) is float else _int_text(value)
    msg = f"number {text} is not finite or beyond {_M:.0e} in absolute value"
    return EventError(msg, path or None)


def _string_error(value: str, path: str, limits: Limits, what: str) -> EventError:
    field = _printable(path[:_MAX_FIELD_CHARS]) or None
    if len(value) > limits.max_string_chars:
        msg = f"{what} of {len(value)} characters is longer than max_string_chars ({limits.max_string_chars})"
        return EventError(msg, field)
    found = _SURROGATE.search(value)
    assert found is not None  # noqa: S101 - _walk refused it for its length or for this
    msg = f"{what} holds a lone surrogate (U+{ord(found.group()):04X} at character {found.start()})"
    return EventError(msg, field)


def _int_text(value: int) -> str:
    digits = len(str(abs(value))) if value.bit_length() < 10_000 else None
    return (
        f"of {digits} digits"
        if digits is not None
        else f"of about {int(value.bit_length() * 0.30103)} digits"
    )


def _printable(text: str) -> str:
    """``text`` with lone surrogates escaped (``\\ud800``), so it can be written as UTF-8."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# -------------------------------------------------------------------------------------------------- time
def check_clock(ts: int, now: int, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse a ``ts`` more than ``max_clock_skew_ms`` ahead of ``now`` (both in ms since the epoch)."""
    if ts > now + limits.max_clock_skew_ms:
        msg = (
            f"{ts - now} ms ahead of now ({now}), more than max_clock_skew_ms ({limits.max_clock_skew_ms}): "
            "it would move event time into the future"
        )
        raise EventError(msg, "ts")


def watermark_ts(raw: bytes | bytearray | str | None, limits: Limits, now: int) -> int:
    """The event time the Java side of the job reads from a record (``riskctl.flink.job.event_time_sql``).

    Java reads ``ts`` with ``JSON_VALUE`` and ``TRY_CAST`` before (and whatever) Python decides, so a record
    that Python dead-letters still moves the watermark when Java reads a ``ts`` in it. Replay calls this for
    dead-lettered lines to move its watermark the same way: Java's reading, number for number, whatever the
    record's size (Flink 1.20 SQL cannot measure BYTES), else 0 (never moves event time); then, as the job's
    test, a time between 0 and ``now + max_clock_skew_ms``, else 0. tests/integration/test_event_time_sql.py
    holds the two to each other over records written to differ.

    Java's reading, as measured there: the record decoded with replacement characters; its first JSON value
    (Jackson ignores whatever follows it), of any depth and with numbers of any length, and nothing where
    JSON's grammar is broken inside it or where it holds NaN or Infinity (the standard library's reader, and
    :func:`_top_members` past its limits); the ``ts`` of a top-level object as Flink's cast reads the text
    ``JSON_VALUE`` gives of it (:func:`_java_long`).
    """
    if raw is None:
        return 0
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    text = data.decode("utf-8", "replace")  # Java decodes with replacement characters
    try:
        first, _ = _JSON.raw_decode(text, len(text) - len(text.lstrip(" \t\n\r")))
    except json.JSONDecodeError:
        return 0
    except (RecursionError, ValueError):  # nested past Python's recursion, or an int of 4,300 digits
        try:
            members = _top_members(text)  # the same grammar, without those limits (and in Python: slower)
        except ValueError:
            return 0
    else:
        members = first if type(first) is dict else {}
    value = _java_long(members.get("ts"))
    return value if value is not None and 0 <= value <= now + limits.max_clock_skew_ms else 0


#: the standard library's reader of a JSON string (escapes, no raw control character), as json.loads reads
scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _no_constant(text: str) -> Any:
    # a refusal of the document, as the reader's own (not read a second time by _top_members)
    msg = f"{text} is no JSON number to Jackson"
    raise json.JSONDecodeError(msg, text, 0)


_JSON = json.JSONDecoder(parse_constant=_no_constant)
_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS = (("true", True), ("false", False), ("null", None))
_CONTAINER = object()  # a member whose value is an object or an array
_VALUE, _AFTER, _KEY, _FIRST_KEY, _FIRST_VALUE = range(5)


def _top_members(text: str) -> dict[str, Any]:
    """The members of the JSON document at the start of ``text`` when it is an object (else none), read as
    Jackson reads it: the first value only, whatever follows; JSON's grammar as the standard library's
    ``json`` has it (its string reader, its number pattern), without NaN and Infinity; any depth (a loop and
    a stack, not recursion) and numbers of any length. Only the top level's scalars are built (a container
    there is ``_CONTAINER``); a later duplicate name wins. Raises ValueError where the grammar breaks."""
    members: dict[str, Any] = {}
    stack: list[str] = []  # the open containers, '{' or '['
    key: str | None = None
    state = _VALUE
    i = 0
    while True:
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        if i >= len(text):
            msg = "the document ends inside a value"
            raise ValueError(msg)
        c = text[i]
        if state in (_FIRST_KEY, _KEY):
            if c == "}" and state == _FIRST_KEY:
                stack.pop()
            elif c == '"':
                name, i = scanstring(text, i + 1, True)
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                if not text.startswith(":", i):
                    msg = f"no ':' after a name at {i}"
                    raise ValueError(msg)
                key = name if len(stack) == 1 else None
                state, i = _VALUE, i + 1
                continue
            else:
                msg = f"no name at {i}"
                raise ValueError(msg)
            i += 1
        elif state == _FIRST_VALUE and c == "]":
            stack.pop()
            i += 1
        elif state in (_VALUE, _FIRST_VALUE):
            if c in "{[":
                if key is not None:
                    members[key] = _CONTAINER
                stack.append(c)
                key = None
                state, i = (_FIRST_KEY if c == "{" else _FIRST_VALUE), i + 1
                continue
            value, i = _scalar(text, i)
            if key is not None:
                members[key] = value
            key = None
        elif c == ",":
            state, i = (_KEY if stack[-1] == "{" else _VALUE), i + 1
            continue
        elif c == ("}" if stack[-1] == "{" else "]"):
            stack.pop()
            i += 1
        else:
            msg = f"no ',' or end of container at {i}"
            raise ValueError(msg)
        if not stack:
            return members
        state = _AFTER


def _scalar(text: str, i: int) -> tuple[Any, int]:
    if text[i] == '"':
        return scanstring(text, i + 1, True)
    m = _NUMBER.match(text, i)
    if m is not None:
        whole, fraction, exponent = m.groups()
        if fraction or exponent:
            return float(m.group()), m.end()
        # more than 25 characters is past BIGINT either way, so any number past it stands for it (and int()
        # refuses 4,300 digits, which Jackson reads)
        return (int(whole) if len(whole) <= 25 else 1 << 80), m.end()
    for word, value in _LITERALS:
        if text.startswith(word, i):
            return value, i + len(word)
    msg = f"no JSON value at {i}"
    raise ValueError(msg)


_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


def _java_long(value: Any) -> int | None:
    """``TRY_CAST(JSON_VALUE(...) AS BIGINT)`` of a JSON value: ``JSON_VALUE`` gives a scalar's text (a
    double as Java's ``Double.toString`` writes it; no text for an object or array), and Flink's cast takes
    that text with spaces (only) trimmed, an optional sign, ASCII digits, and an optional part after a
    ``.`` that is all digits and dropped; any other text, or a number beyond BIGINT, is NULL."""
    t = type(value)
    if t is int:
        return value if _LONG_MIN <= value <= _LONG_MAX else None  # type: ignore[no-any-return]
    if t is float:
        # Double.toString writes 1e-3 <= |d| < 1e7 in plain digits, anything else with an exponent ('E',
        # which the cast refuses), and 0 as 0.0; the cast drops the fraction
        return int(value) if value == 0 or 1e-3 <= abs(value) < 1e7 else None
    if t is not str:
        return None  # null, true/false (text the cast refuses), an object or an array
    text = value.strip(" ")
    sign = text[:1]
    if sign in ("+", "-"):
        if len(text) == 1:
            return None
        text = text[1:]
    whole, _, fraction = text.partition(".")
    if not text or not _ascii_digits(whole) or not _ascii_digits(fraction):
        return None
    number = int(whole) if whole else 0
    number = -number if sign == "-" else number
    return number if _LONG_MIN <= number <= _LONG_MAX else None


def _ascii_digits(text: str) -> bool:
    return not text or (text.isascii() and text.isdigit())


# ------------------------------------------------------------------------------------------- dead letters
def dead_letter(
    raw: bytes | bytearray | str | None,
    *,
    reason: str,
    field: str | None = None,
    error: str | None = None,
    rule_id: str | None = None,
    coordinates: Mapping[str, Any] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    raw_bytes: int | None = None,
) -> str:
    """The JSON dead-letter record of one refused or failed record; its UTF-8 is at most
    ``limits.dead_letter_max_bytes`` bytes.

    Fields: ``kind`` (``dead_letter``), ``reason``, ``field`` (path in the event, or None), ``error`` (the
    exception type of an internal error, None for a refusal at the door), ``rule_id`` (the rule being
    evaluated when an internal error happened, when known), the ``coordinates`` (``topic``, ``partition``,
    ``offset`` in the job; ``line`` in a replay), ``raw_bytes`` (length of the original record in bytes),
    ``raw`` (the record as text when it is valid UTF-8) or ``raw_base64`` (base64 of the original bytes), and
    ``truncated`` (True when ``raw``/``raw_base64`` holds only the beginning of the record). ``raw_bytes``
    overrides the length when ``raw`` is already only the beginning of a longer record (replay's long lines).
    """
    data: bytes | None
    if raw is None:
        data = None
    elif isinstance(raw, str):
        data = raw.encode("utf-8", "surrogatepass")
    else:
        data = bytes(raw)
    text: str | None = None
    if data is not None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    doc: dict[str, Any] = {
        "kind": "dead_letter",
        "reason": _printable(reason[:_MAX_REASON_CHARS]),
        "field": None if field is None else _printable(field[:_MAX_FIELD_CHARS]),
        "error": error,
        "rule_id": None if rule_id is None else _printable(rule_id[:_MAX_FIELD_CHARS]),
    }
    for key, value in (coordinates or {}).items():
        doc[key] = _printable(value[:_MAX_FIELD_CHARS]) if isinstance(value, str) else value
    doc["raw_bytes"] = raw_bytes if raw_bytes is not None else (None if data is None else len(data))
    doc["raw"] = None
    doc["raw_base64"] = None
    doc["truncated"] = raw_bytes is not None and data is not None and raw_bytes > len(data)
    budget = limits.dead_letter_max_bytes
    out = orjson.dumps(doc)
    if data is None:
        return out.decode()
    room = budget - len(out) + len(b"null")  # what the raw value may take, quotes included
    if text is not None:
        doc["raw"] = text
        out = orjson.dumps(doc)
        if len(out) <= budget:
            return out.decode()
        # JSON escapes make a character 1 to 6 bytes: scale the cut by what the last try weighed (a few
        # encodings, not a bisection: an attacker's records cost little to refuse), and fall back to
        # room // 6 characters, which always fits
        doc["truncated"] = True
        cut = min(len(text), max(0, room))
        for _ in range(4):
            doc["raw"] = text[:cut]
            out = orjson.dumps(doc)
            if len(out) <= budget:
                return out.decode()
            weight = len(out) - (budget - room)  # bytes the raw value took, quotes included
            cut = min(cut - 1, int(cut * room / weight * 0.98))
            if cut <= room // 6:
                break
        doc["raw"] = text[: max(0, room - 2) // 6]
        return orjson.dumps(doc).decode()
    encoded_room = max(0, room - 2)
    keep = min(len(data), encoded_room // 4 * 3)
    doc["raw_base64"] = base64.b64encode(data[:keep]).decode("ascii")
    doc["truncated"] = keep < len(data) or doc["truncated"]
    return orjson.dumps(doc).decode()


def internal_error_reason(exc: BaseException) -> str:
    """The reason of a dead letter for an exception raised while deciding an event."""
    text = str(exc)
    if len(text) > 500:
        text = text[:500] + "..."
    return (
        f"internal error while deciding: {type(exc).__name__}: {text}"
        if text
        else (f"internal error while deciding: {type(exc).__name__}")
    )
