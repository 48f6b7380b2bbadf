"""Request validation of POST /v1/decisions: the job's door and checks, mapped to 400/413/415/422."""

from __future__ import annotations

import json

import pytest

from riskctl.core.door import Limits
from riskctl.serve.request import (
    ApiError,
    check_content_type,
    encode_event,
    parse_event_request,
    parse_timeout,
)

NOW = 1_800_000_000_000
LIM = Limits()


def body(**fields: object) -> bytes:
    base: dict[str, object] = {"event_id": "e1", "user_id": "u1", "type": "login", "ts": NOW}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def refused(raw: bytes, limits: Limits = LIM) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_event_request(raw, limits, NOW, 100)
    return info.value


def test_valid_event_keeps_the_document_and_normalises_ids() -> None:
    r = parse_event_request(body(user_id=42, amount="12.5", extra={"a": [1]}), LIM, NOW, 80)
    assert (r.event_id, r.user_id, r.timeout_ms) == ("e1", "42", 80)
    assert r.document["extra"] == {"a": [1]} and r.document["amount"] == "12.5"


def test_same_content_same_fingerprint_whatever_the_key_order_or_spacing() -> None:
    a = parse_event_request(b'{"event_id":"e","user_id":"u","type":"t","ts":1}', LIM, NOW, 1)
    b = parse_event_request(b'{ "ts": 1, "type": "t", "user_id": "u", "event_id": "e" }', LIM, NOW, 1)
    c = parse_event_request(b'{"event_id":"e","user_id":"u","type":"t","ts":2}', LIM, NOW, 1)
    assert a.fingerprint == b.fingerprint != c.fingerprint


@pytest.mark.parametrize(
    ("raw", "status", "field", "reason_part"),
    [
        (b"not json", 400, None, "not valid JSON"),
        (b'{"event_id": "e1", ', 400, None, "not valid JSON"),
        (b'{"event_id": "\xff\xfe", "user_id": "u", "type": "t", "ts": 1}', 400, None, "UTF-8"),
        (b"[1, 2]", 422, None, "JSON object"),
        (b'"just a string"', 422, None, "JSON object"),
        (body(user_id=...), 422, "user_id", "missing"),
        (body(event_id=...), 422, "event_id", "missing"),
        (body(ts=...), 422, "ts", "missing"),
        (body(ts="soon"), 422, "ts", "integer"),
        (body(ts=-1), 422, "ts", "out of range"),
        (body(ts=NOW + 10 * 3600 * 1000), 422, "ts", "max_clock_skew_ms"),
        (body(type=True), 422, "type", "string"),
        (body(event_id="x" * 257), 422, "event_id", "256"),
        (body(amount=10**16), 422, "amount", "beyond"),
        (b'{"event_id":"e","user_id":"u","type":"t","ts":1,"amount":1e400}', 422, "amount", "beyond"),
        (body(amount="NaN"), 422, "amount", "number"),
        (body(amount="1e999"), 422, "amount", "finite"),
        (body(success="yes"), 422, "success", "true or false"),
        (body(city=["Paris"]), 422, "city", "string"),
        (body(note="y" * 5000), 422, "note", "max_string_chars"),
        (body(reply_to="other:1"), 422, "reply_to", "reserved"),
        (b'{"event_id":"e","user_id":"u","type":"t","ts":1,"s":"\\ud800"}', 422, "s", "surrogate"),
    ],
)
def test_hostile_bodies_get_the_status_the_field_and_the_reason(
    raw: bytes, status: int, field: str | None, reason_part: str
) -> None:
    err = refused(raw)
    assert err.status == status, err.reason
    assert err.field == field
    assert reason_part in err.reason


def test_deep_nesting_is_422_with_the_field_at_the_limit_and_never_a_crash() -> None:
    deep = b'{"event_id":"e","user_id":"u","type":"t","ts":1,"x":' + b"[" * 40 + b"]" * 40 + b"}"
    err = refused(deep)
    assert err.status == 422 and "max_depth" in err.reason and err.field and err.field.startswith("x")
    very_deep = b'{"event_id":"e","user_id":"u","type":"t","ts":1,"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert refused(very_deep, Limits(max_event_bytes=20_000)).status == 422


def test_body_over_max_event_bytes_is_413() -> None:
    err = refused(body(note="z" * 100), Limits(max_event_bytes=90))
    assert err.status == 413 and "max_event_bytes" in err.reason


def test_event_that_only_overflows_with_its_reply_key_is_413() -> None:
    raw = body(note="z" * 30)
    limits = Limits(max_event_bytes=len(raw) + 5)
    request = parse_event_request(raw, limits, NOW, 1)
    with pytest.raises(ApiError) as info:
        encode_event(request, "instance:7", limits)
    assert info.value.status == 413 and "reply_to" in info.value.reason
    produced = json.loads(encode_event(request, "instance:7", LIM))
    assert produced["reply_to"] == "instance:7" and produced["note"] == "z" * 30


@pytest.mark.parametrize(
    "value",
    [None, "", "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_content_type_other_than_json_is_415(value: str | None) -> None:
    with pytest.raises(ApiError) as info:
        check_content_type(value)
    assert info.value.status == 415 and info.value.field == "Content-Type"


@pytest.mark.parametrize(
    "value", ["application/json", "Application/JSON; charset=UTF-8", "application/json;charset=utf8"]
)
def test_json_content_types_pass(value: str) -> None:
    check_content_type(value)


@pytest.mark.parametrize("value", ["abc", "-5", "1.5", "4", "10001", "9" * 40, "１００"])
def test_timeout_outside_bounds_or_not_an_integer_is_422(value: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_timeout(value, 150, 5, 10_000)
    assert info.value.status == 422 and info.value.field == "timeout_ms"


def test_timeout_default_and_bounds() -> None:
    assert parse_timeout(None, 150, 5, 10_000) == 150
    assert parse_timeout("5", 150, 5, 10_000) == 5
    assert parse_timeout("10000", 150, 5, 10_000) == 10_000
