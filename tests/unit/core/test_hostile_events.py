"""An adversarial corpus of hostile events: each gets its outcome at the door, with the reason and the field.

Issue 11's cases first (each crashed or fooled ``riskctl replay`` before the door): a 1 MB binary record,
invalid UTF-8 inside a JSON string, a field nested 1,024 (and ~500) deep, lone surrogates in the ids, amounts
of 4,300 digits and of 10^400, and a far-future ``ts``. Then the dead letters: original bytes kept, always
within ``dead_letter_max_bytes``.
"""

from __future__ import annotations

import base64
import json
import pickle
from typing import Any

import pytest

from riskctl.core.door import (
    DEFAULT_LIMITS,
    Limits,
    check_clock,
    dead_letter,
    decode,
    internal_error_reason,
    watermark_ts,
)
from riskctl.core.door_limits import MAX_DEAD_LETTER_BYTES
from riskctl.core.errors import EventError
from riskctl.core.events import parse_event
from riskctl.core.expr import MAX_NUMBER

NOW = 1_700_000_000_000
BASE = {"event_id": "e1", "user_id": "u1", "type": "transfer", "ts": NOW - 1000}


def ev(**fields: Any) -> dict[str, Any]:
    return {**BASE, **fields}


def raw(**fields: Any) -> bytes:
    return json.dumps(ev(**fields)).encode()


def nested(depth: int) -> str:
    """A JSON value of ``depth`` nested objects ({"a": {"a": ... 1}})."""
    return '{"a":' * depth + "1" + "}" * depth


def with_text(text: str) -> bytes:
    """BASE plus ``"x": <text>`` spliced in as raw JSON (for what json.dumps will not write)."""
    return (json.dumps(BASE)[:-1] + ', "x": ' + text + "}").encode()


# (id, record, reason fragment, field)
REFUSED: list[tuple[str, bytes, str, str | None]] = [
    ("1MB binary", bytes(range(256)) * 3907, "larger than max_event_bytes (65536)", None),
    ("oversized valid JSON", raw(note="n" * 70_000), "larger than max_event_bytes", None),
    ("invalid UTF-8 in a string", raw(city="X")[:-2] + b'\xff\xfe"}', "not valid UTF-8", None),
    (
        "invalid UTF-8 in the user id",
        b'{"event_id":"e","user_id":"\xc3\x28","type":"login","ts":1}',
        "not valid UTF-8",
        None,
    ),
    (
        "UTF-8 encoded surrogate (CESU)",
        b'{"event_id":"\xed\xa0\x80","user_id":"u","type":"t","ts":1}',
        "not valid UTF-8",
        None,
    ),
    ("nested 1,024 deep", with_text(nested(1024)), "nested", None),
    ("nested ~500 deep", with_text(nested(500)), "nested deeper than max_depth (16)", "x" + ".a" * 15),
    (
        "nested 17 deep in a list",
        with_text("[" * 17 + "]" * 17),
        "nested deeper than max_depth",
        "x" + "[0]" * 15,
    ),
    (
        "lone surrogate in event_id",
        b'{"event_id":"\\ud800","user_id":"u","type":"t","ts":1}',
        "lone surrogate (U+D800",
        "event_id",
    ),
    (
        "lone surrogate in type",
        b'{"event_id":"e","user_id":"u","type":"a\\udfff","ts":1}',
        "lone surrogate (U+DFFF at character 1)",
        "type",
    ),
    (
        "lone surrogate in user_id",
        b'{"event_id":"e","user_id":"\\udbff","type":"t","ts":1}',
        "lone surrogate",
        "user_id",
    ),
    ("lone surrogate in a key", with_text('{"k\\ud800": 1}'), "key holds a lone surrogate", "x.k\\ud800"),
    (
        "amount of 4,300 digits",
        with_text("1" * 4300).replace(b'"x"', b'"amount"'),
        "number of about 4299 digits is not finite or beyond 1e+15",
        "amount",
    ),
    (
        "amount of 10^400",
        with_text("1" + "0" * 400).replace(b'"x"', b'"amount"'),
        "number of 401 digits",
        "amount",
    ),
    ("10^400 as a float", with_text("1e400").replace(b'"x"', b'"amount"'), "inf", "amount"),
    ("NaN deep inside", with_text('{"a": [1, 2, NaN]}'), "nan is not finite", "x.a[2]"),
    ("-Infinity", with_text("-Infinity"), "-inf", "x"),
    ("just over the number range", raw(meta={"n": MAX_NUMBER + 1}), "beyond 1e+15", "meta.n"),
    ("a float over the range", raw(score=-1.5e15), "beyond 1e+15", "score"),
    ("string too long", raw(note="n" * 4097), "string of 4097 characters is longer", "note"),
    ("key too long", raw(meta={"k" * 5000: 1}), "key of 5000 characters", "meta." + "k" * 295),
    ("id too long", raw(user_id="u" * 257), "at most 256 characters", "user_id"),
    ("not an object", b"[1, 2, 3]", "must be a JSON object", None),
    ("UTF-16", json.dumps(BASE).encode("utf-16-le"), "not valid JSON", None),
    ("empty", b"", "not valid JSON", None),
    ("null value (tombstone)", None, "empty record", None),  # type: ignore[list-item]
    ("ts in year 9999", raw(ts=253_402_300_799_999), "ms ahead of now", "ts"),
    ("ts beyond milliseconds", raw(ts=10**16), "beyond 1e+15", "ts"),
    ("ts six minutes ahead", raw(ts=NOW + 360_000), "more than max_clock_skew_ms (300000)", "ts"),
]


@pytest.mark.parametrize(("record", "reason", "field"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_hostile_records_are_refused_with_reason_and_field(
    record: bytes | None, reason: str, field: str | None
) -> None:
    with pytest.raises(EventError) as info:
        parse_event(record, DEFAULT_LIMITS, NOW)
    assert reason in info.value.reason
    assert info.value.field == field
    # and every one of them gets a dead letter that fits
    doc = dead_letter(record, reason=info.value.reason, field=info.value.field, coordinates={"line": 1})
    assert len(doc.encode()) <= DEFAULT_LIMITS.dead_letter_max_bytes
    assert json.loads(doc)["reason"] == info.value.reason


ACCEPTED: list[tuple[str, bytes]] = [
    ("plain", raw()),
    ("numbers at the limit", raw(amount=MAX_NUMBER, meta={"x": -MAX_NUMBER, "f": -1e15})),
    ("string at the limit", raw(note="n" * 4096)),
    ("nested 16 deep in all", with_text(nested(15))),
    ("unicode text", raw(city="Zürich 東京 🙂")),
    ("ts at now + skew", raw(ts=NOW + 300_000)),
    ("ts far in the past (a late event, not refused at the door)", raw(ts=0)),
    ("numeric string amount", raw(amount="12.5")),
]


@pytest.mark.parametrize("record", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_what_is_within_the_limits_passes(record: bytes) -> None:
    event = parse_event(record, DEFAULT_LIMITS, NOW)
    assert event["user_id"] == "u1"
    pickle.dumps(event)  # state keeps events: they must stay picklable
    json.dumps(event).encode("utf-8")  # and writable as UTF-8


def test_without_now_there_is_no_clock_check_and_limits_are_configurable() -> None:
    assert parse_event(raw(ts=NOW + 10**9))["ts"] == NOW + 10**9
    small = Limits(max_event_bytes=200, max_depth=2, max_string_chars=5, max_clock_skew_ms=10)
    with pytest.raises(EventError, match="max_string_chars \\(5\\)"):
        parse_event(raw(), small)  # "transfer" has 8 characters
    with pytest.raises(EventError, match="max_depth \\(2\\)") as info:
        decode(b'{"a": {"b": {"c": 1}}}', small)
    assert info.value.field == "a.b"
    with pytest.raises(EventError, match="max_event_bytes \\(200\\)"):
        decode(b" " * 201, small)
    with pytest.raises(EventError, match="max_clock_skew_ms \\(10\\)"):
        check_clock(NOW + 11, NOW, small)
    check_clock(NOW + 10, NOW, small)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("max_depth", 0, "max_depth must be a positive integer"),
        ("max_event_bytes", "big", "max_event_bytes must be a positive integer"),
        ("dead_letter_max_bytes", 2_000_000, "between 4096 and 1000000"),
        ("dead_letter_max_bytes", 100, "between 4096 and 1000000"),
        # the job's source tests a ts clamped to [-1, MAX_TS + 1]: MAX_TS + 1 - skew must stay ahead of now
        ("max_clock_skew_ms", 100 * 365 * 86_400_000 + 1, "at most 3153600000000 \\(100 years\\)"),
    ],
)
def test_bad_limits_name_the_setting(field: str, value: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Limits(**{field: value})


def test_an_event_in_year_9999_is_refused_but_still_kept_off_the_watermark() -> None:
    far = raw(user_id="other", ts=253_402_300_799_999)
    assert watermark_ts(far, DEFAULT_LIMITS, NOW) == 0
    assert watermark_ts(raw(ts=NOW + 5), DEFAULT_LIMITS, NOW) == NOW + 5
    # refused by Python, but Java reads its ts: it moves event time in the job, so in replay too
    assert watermark_ts(raw(note="n" * 5000, ts=NOW - 7), DEFAULT_LIMITS, NOW) == NOW - 7
    assert watermark_ts(raw(note="n" * 70_000, ts=NOW - 9), DEFAULT_LIMITS, NOW) == NOW - 9  # any size
    for junk in (None, b"\xff", b"[1]", b'{"ts": "x"}', b'{"ts": true}', b'{"ts": -5}', b" " * 70_000):
        assert watermark_ts(junk, DEFAULT_LIMITS, NOW) == 0


T = NOW - 3_600_000


@pytest.mark.parametrize(
    ("record", "java"),
    [
        # what Flink's JSON_VALUE and TRY_CAST read (tests/integration/test_event_time_sql.py checks each)
        (f'{{"ts": "{T}"}}', T),
        (f'{{"ts": " {T} "}}', T),  # spaces trimmed ...
        (f'{{"ts": "\\t{T}\\n"}}', 0),  # ... and nothing else
        (f'{{"ts": "{T:_}"}}', 0),
        (f'{{"ts": "{"".join(chr(0xFF10 + int(d)) for d in str(T))}"}}', 0),  # digits, ASCII only
        (f'{{"ts": "{T}.7"}}', T),  # the cast drops a fraction ...
        (f'{{"ts": "{T}.7x"}}', 0),  # ... of digits
        ('{"ts": "1.2.3"}', 0),
        (f'{{"ts": "+{T}"}}', T),
        ('{"ts": "."}', 0),
        (f'{{"ts": {T}.0}}', 0),  # a double is Java's text of it: 1.796...E12, no number to the cast
        ('{"ts": 5000000.5}', 5_000_000),  # below 10^7 in plain digits
        (f'{{"ts": {T}e0}}', 0),
        (f'{{"ts": {T}}} trailing', T),  # Jackson reads the first value
        (f'{{"ts": {T}}}{{"ts": 1}}', T),
        (f'{{"ts": {T}, "x": tru}}', 0),  # ... all of it
        (f'{{"ts": {T}, "x": NaN}}', 0),
        (f'{{"ts": {T}, "x": {"[" * 100_000}{"]" * 100_000}}}', T),  # any depth
        (f'{{"ts": {T}, "x": {"[" * 5_000}}}', 0),
        (f'{{"ts": {T}, "x": {"7" * 5_000}}}', T),  # numbers of any length
        (f'{{"ts": {T}, "ts": {{"a": 1}}}}', 0),  # the last of a name
        (f'{{"x": {{"ts": 1}}, "ts": {T}}}', T),
        ('{"ts": 99999999999999999999}', 0),
    ],
)
def test_replay_reads_ts_as_the_jobs_java_does(record: str, java: int) -> None:
    assert watermark_ts(record.encode(), DEFAULT_LIMITS, NOW) == java


# ----------------------------------------------------------------------------------------------- dead letters
def test_a_binary_megabyte_gets_a_base64_dead_letter_within_the_limit() -> None:
    record = bytes(range(256)) * 3907  # 1,000,192 bytes, not UTF-8
    doc = dead_letter(
        record,
        reason="too big",
        coordinates={"topic": "riskctl.events", "partition": 3, "offset": 12345},
    )
    assert len(doc.encode()) <= DEFAULT_LIMITS.dead_letter_max_bytes
    dl = json.loads(doc)
    assert dl["kind"] == "dead_letter" and dl["raw"] is None and dl["truncated"] is True
    assert dl["raw_bytes"] == len(record)
    kept = base64.b64decode(dl["raw_base64"])
    assert record.startswith(kept) and len(kept) > DEFAULT_LIMITS.dead_letter_max_bytes * 0.7
    assert (dl["topic"], dl["partition"], dl["offset"]) == ("riskctl.events", 3, 12345)


def test_invalid_utf8_keeps_the_original_bytes_in_full() -> None:
    record = b'{"event_id":"e","user_id":"\xff","type":"t","ts":1}'
    dl = json.loads(dead_letter(record, reason="not valid UTF-8"))
    assert base64.b64decode(dl["raw_base64"]) == record and dl["truncated"] is False
    assert dl["raw"] is None and dl["raw_bytes"] == len(record)


@pytest.mark.parametrize(
    "text",
    ["a" * 1_200_000, "\x01" * 300_000, '"' * 600_000, "é" * 600_000, "🙂" * 300_000, "\x01é" * 300_000],
    ids=["ascii", "control characters (6 bytes each)", "quotes", "2-byte", "4-byte", "mixed"],
)
@pytest.mark.parametrize("limit", [4_096, 262_144, MAX_DEAD_LETTER_BYTES])
def test_text_dead_letters_are_truncated_to_the_limit(text: str, limit: int) -> None:
    limits = Limits(dead_letter_max_bytes=limit)
    doc = dead_letter(text.encode(), reason="r" * 5000, field="f" * 5000, error="E", limits=limits)
    assert len(doc.encode()) <= limit
    dl = json.loads(doc)
    assert dl["truncated"] is True and text.startswith(dl["raw"]) and dl["raw_bytes"] == len(text.encode())
    assert len(dl["raw"].encode()) > limit * 0.1  # truncated, not emptied
    assert len(dl["reason"]) == 1000 and len(dl["field"]) == 300


def test_small_records_are_kept_whole_as_text() -> None:
    dl = json.loads(dead_letter(b'{"a": "\\ud800"}', reason="lone surrogate", field="a", rule_id="r1"))
    assert dl["raw"] == '{"a": "\\ud800"}' and dl["truncated"] is False and dl["rule_id"] == "r1"
    assert json.loads(dead_letter(None, reason="empty"))["raw_bytes"] is None


def test_surrogates_in_reasons_and_fields_are_escaped() -> None:
    doc = dead_letter("x\ud800", reason="bad \ud800", field="k\udfff", rule_id="\ud800")
    dl = json.loads(doc)
    assert dl["reason"] == "bad \\ud800" and dl["field"] == "k\\udfff" and dl["rule_id"] == "\\ud800"
    assert base64.b64decode(dl["raw_base64"]) == "x\ud800".encode("utf-8", "surrogatepass")


def test_internal_error_reason_names_the_exception_and_is_bounded() -> None:
    assert internal_error_reason(ZeroDivisionError("division by zero")) == (
        "internal error while deciding: ZeroDivisionError: division by zero"
    )
    assert len(internal_error_reason(ValueError("v" * 10_000))) < 600
    assert internal_error_reason(KeyError()) == "internal error while deciding: KeyError"
