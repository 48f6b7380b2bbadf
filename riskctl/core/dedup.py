"""The events a key has seen recently, so that the same event delivered twice is decided once.

A producer that retries a send, an upstream system that re-sends, or a retry of ``riskctl serve`` that reaches
another API instance (each instance remembers only its own requests) delivers the same event again. Decided a
second time, it would count twice in every feature and sequence: a retried transfer doubles the user's
transfer sum. The engine keeps, per key, a digest of each event decided within ``dedup_window`` ms of event
time behind the key's newest event (at most :data:`SEEN_CAP` of them) with the action it got. An event whose
digest is there is a *duplicate*: it gets the first one's action, changes no state, fires nothing
(docs/engine.md, "Duplicate events").

The digest is of the event's whole content, not of its ``event_id`` alone: an event that reuses an id with
other content (a transfer of 1,000,000 sent under the id of an earlier transfer of 10) is decided as a new
event, never given the earlier one's PASS. ``reply_to`` (the API instance that waits for the decision,
riskctl/core/reply.py) is left out, since a retry through another instance carries another one. 128 bits of
BLAKE2b: a sender who writes both events would need about 2**64 digests to make a pair collide (with 64 bits,
2**32 were enough: a review found it, an afternoon of one core to have an event taken for an earlier PASS).

Kept as one ``bytes`` of 24 bytes per event, in arrival order: its digest (16 bytes), then
``ts << 2 | action rank`` (8 bytes, little-endian). One object to pickle however many events are remembered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import orjson

from riskctl.core.reply import REPLY_FIELD

#: the most events remembered per key (the oldest are forgotten first): 24 x 128 bytes at most
SEEN_CAP = 128
DIGEST = 16  # bytes of a digest
ENTRY = DIGEST + 8  # bytes of a remembered event: its digest, then ts << 2 | rank
_CAP_BYTES = ENTRY * SEEN_CAP
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_dumps = orjson.dumps
_blake2b = hashlib.blake2b


def digest(event: Mapping[str, Any]) -> bytes:
    """16 bytes identifying the event's content (its fields and values, ``reply_to`` aside)."""
    if REPLY_FIELD in event:
        event = {k: v for k, v in event.items() if k != REPLY_FIELD}
    try:
        raw = _dumps(event, option=_OPTIONS)
    except TypeError:  # an integer beyond 64 bits, a value JSON has no type for
        text = json.dumps(event, sort_keys=True, default=repr, ensure_ascii=False)
        raw = text.encode("utf-8", "surrogatepass")
    return _blake2b(raw, digest_size=DIGEST).digest()


def seen_rank(seen: bytes, key: bytes) -> int:
    """The action rank the event of digest ``key`` got, or -1 when it is not in ``seen``."""
    pos = seen.find(key)
    while pos > 0 and pos % ENTRY:  # found across two fields: look further
        pos = seen.find(key, pos + 1)
    if pos < 0:
        return -1
    return seen[pos + DIGEST] & 3  # the low byte of ts << 2 | rank (little-endian)


def remember(seen: bytes | None, key: bytes, ts: int, rank: int, horizon: int) -> bytes:
    """``seen`` with the event of digest ``key``; those before ``horizon`` and beyond the cap dropped."""
    entry = key + (ts << 2 | rank).to_bytes(8, "little", signed=True)
    if seen is None:
        return entry
    if _ts(seen, 0) < horizon or len(seen) >= _CAP_BYTES:
        n = len(seen) // ENTRY
        cut = 1
        while cut < n and _ts(seen, cut * ENTRY) < horizon:
            cut += 1
        if n - cut >= SEEN_CAP:
            cut = n - SEEN_CAP + 1
        seen = seen[cut * ENTRY :]
    return seen + entry


def forget_before(seen: bytes, horizon: int) -> bytes | None:
    """``seen`` without the events older than ``horizon`` (None when none is left)."""
    kept = b"".join(seen[i : i + ENTRY] for i in range(0, len(seen), ENTRY) if _ts(seen, i) >= horizon)
    return kept or None


def _ts(seen: bytes, at: int) -> int:
    """The event time of the entry at byte ``at``."""
    return int.from_bytes(seen[at + DIGEST : at + ENTRY], "little", signed=True) >> 2
