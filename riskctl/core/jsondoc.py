"""A bounded loader for rule documents stored as JSON (the MySQL path, ``.json`` rule files, broadcast state).

``json.loads`` recurses once per nesting level: a document nested 100,000 deep raises ``RecursionError``
(not a ``ValueError``, so callers that expect bad input to be a ``ValueError`` let it escape), and on a thread
with a small C stack it could exhaust the stack instead. This loader refuses, before ``json.loads`` runs:

- a document longer than :data:`MAX_JSON_CHARS` characters;
- nesting deeper than :data:`MAX_JSON_DEPTH`, measured by a linear scan that does not recurse (strings are
  skipped as a whole, so brackets inside them do not count);

and, while parsing: duplicate keys (``{"status": "active", "status": "shadow"}``: JSON parsers disagree on
which one wins, so neither does), ``NaN``/``Infinity`` (not JSON), and integers over 4,300 digits (Python's
own limit). Every refusal is a :class:`~riskctl.core.errors.RuleSetError` (a ``ValueError``) carrying the
source, the rule id when the caller knows it, the field where one is known, and the reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

from riskctl.core.errors import RuleError, RuleSetError

#: characters of one JSON rule document (a rule is about a kilobyte)
MAX_JSON_CHARS = 1_048_576
#: nesting of arrays and objects in one rule document (a rule needs 5 levels)
MAX_JSON_DEPTH = 32

# A string (to its closing quote, or to the end of the text when it is unterminated, so that a scan never
# starts again inside it: linear even on '"\"\"\"...'), or one bracket.
_SCAN = re.compile(r'"[^"\\]*(?:\\[\s\S]?[^"\\]*)*(?:"|\Z)|[\[{]|[\]}]')


def json_depth_exceeds(text: str, limit: int) -> int | None:
    """The 0-based offset where ``text`` first nests deeper than ``limit``, or None. Linear, no recursion.

    Made for JSON; on text that is not JSON the answer is only a bound (``json.loads`` refuses it anyway).
    """
    depth = 0
    for m in _SCAN.finditer(text):
        ch = text[m.start()]
        if ch == '"':
            continue
        if ch in "[{":
            depth += 1
            if depth > limit:
                return m.start()
        elif depth > 0:
            depth -= 1
    return None


class _Refused(ValueError):
    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            msg = f"duplicate key {key!r} (JSON readers disagree on which value wins, so give it once)"
            raise _Refused(msg, key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    msg = f"{name} is not a JSON number"
    raise _Refused(msg)


def load_json_document(
    text: str | bytes | bytearray | None,
    *,
    source: str | None = None,
    rule_id: str | None = None,
    max_chars: int = MAX_JSON_CHARS,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Parse one JSON rule document within the limits above; raises :class:`RuleSetError` otherwise.

    Never raises anything but a ``RuleSetError`` for bad input: not text, not UTF-8, too long, too deep,
    duplicate keys, not JSON.
    """

    def refuse(reason: str, field: str | None = "document") -> RuleSetError:
        return RuleSetError([RuleError(reason, rule_id=rule_id, field=field, source=source)])

    if text is None:
        msg = "the rule document is empty (null)"
        raise refuse(msg)
    if isinstance(text, bytes | bytearray):
        if len(text) > max_chars * 4:
            msg = f"the rule document is too large ({len(text)} bytes, limit {max_chars} characters)"
            raise refuse(msg)
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            msg = f"the rule document is not valid UTF-8 (byte {exc.start})"
            raise refuse(msg) from None
    if not isinstance(text, str):
        msg = f"a rule document must be JSON text, got {type(text).__name__}"
        raise refuse(msg)
    if len(text) > max_chars:
        msg = f"the rule document is too large ({len(text)} characters, limit {max_chars})"
        raise refuse(msg)
    where = json_depth_exceeds(text, max_depth)
    if where is not None:
        msg = f"the rule document is nested deeper than {max_depth} levels (at character {where + 1})"
        raise refuse(msg)
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except _Refused as exc:
        raise refuse(exc.reason, exc.field or "document") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, ints over 4,300 digits
        msg = f"not valid JSON: {exc}"
        raise refuse(msg) from None
