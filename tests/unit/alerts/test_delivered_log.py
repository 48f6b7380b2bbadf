"""Keys of the delivered-ids topic."""

from __future__ import annotations

from riskctl.alerts.delivered_log import key_of, parse_key
from riskctl.alerts.model import MAX_KEY_CHARS


def test_keys_round_trip_and_foreign_keys_are_ignored() -> None:
    assert parse_key(key_of("ding", "r:1:timer:e1")) == ("ding", "r:1:timer:e1")
    assert parse_key(key_of("ding", "id\x1fwith separator")) == ("ding", "id\x1fwith separator")
    for foreign in (None, b"", b"no-separator", b"\xff\xfe", b"\x1fid", b"ch\x1f"):
        assert parse_key(foreign) is None


def test_a_key_longer_than_any_the_dispatcher_writes_is_garbage() -> None:
    # the longest key written: a 64-character channel and a deduplication key of 4-byte characters
    longest = key_of("c" * 64, "\U0001f600" * MAX_KEY_CHARS)
    assert parse_key(longest) == ("c" * 64, "\U0001f600" * MAX_KEY_CHARS)
    # a megabyte key (garbage in the topic) was kept in memory, up to dedup_size of them
    assert parse_key(b"ding\x1f" + b"x" * 1_000_000) is None
    assert parse_key(longest + b"x") is None
