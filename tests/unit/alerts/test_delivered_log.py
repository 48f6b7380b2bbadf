"""Keys of the delivered-ids topic."""

from __future__ import annotations

from riskctl.alerts.delivered_log import key_of, parse_key


def test_keys_round_trip_and_foreign_keys_are_ignored() -> None:
    assert parse_key(key_of("ding", "r:1:timer:e1")) == ("ding", "r:1:timer:e1")
    assert parse_key(key_of("ding", "id\x1fwith separator")) == ("ding", "id\x1fwith separator")
    for foreign in (None, b"", b"no-separator", b"\xff\xfe", b"\x1fid", b"ch\x1f"):
        assert parse_key(foreign) is None
