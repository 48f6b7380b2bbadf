"""JSON in and out of the hot path: orjson first, the standard library where orjson says no.

Every event is decoded once and every decision encoded once, so this is per-event work in the job, in
replays and in the plain-loop benchmark contender. orjson (already installed as a dependency of PyFlink's
apache-beam) decodes and encodes these small documents faster than :mod:`json`, and they were a visible
share of the decide operator's profile (``bench/flink_profile/README.md``). Where the two disagree,
the standard library's behaviour is kept:

* decoding: orjson refuses ``NaN``/``Infinity`` literals and numbers beyond a double, which :mod:`json`
  accepts, so a refused document is decoded again by :mod:`json` and fails (or not) exactly as before, with
  :mod:`json`'s error message. One difference remains: an integer beyond 64 bits is read by orjson as a
  float (JavaScript's reading), where :mod:`json` keeps it exact.
* encoding: integers beyond 64 bits go through :mod:`json`. Output is compact (no spaces) and UTF-8, not
  ASCII-escaped; NaN and infinities are written as ``null`` (valid JSON, unlike :mod:`json`'s ``NaN``).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def loads(raw: str | bytes | bytearray) -> Any:
    """Decode one JSON document; raises ``ValueError`` (a ``json.JSONDecodeError``) on a bad one."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dumps(obj: Any) -> str:
    """Encode ``obj`` compactly; values JSON has no type for are written as ``str(value)``."""
    try:
        return orjson.dumps(obj, default=str, option=_OPTIONS).decode()
    except TypeError:  # an integer beyond 64 bits (orjson.JSONEncodeError is a TypeError)
        return json.dumps(obj, default=str, separators=(",", ":"), ensure_ascii=False)


def dumpb(obj: Any) -> bytes:
    """:func:`dumps` as UTF-8 bytes, what a Kafka record's value holds: orjson writes them directly, with no
    ``str`` in between. What orjson refuses (an integer beyond 64 bits, a lone surrogate) goes through
    :mod:`json` ASCII-escaped, so even a string that has no UTF-8 form is written, as a ``\\u`` escape."""
    try:
        return orjson.dumps(obj, default=str, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(obj, default=str, separators=(",", ":")).encode()
