"""jsoncodec: orjson where it agrees with the standard library, the standard library where it does not."""

from __future__ import annotations

import json
import math

import pytest

from riskctl.core import jsoncodec
from riskctl.core.errors import EventError
from riskctl.core.events import parse_event


def test_round_trip_of_a_decision_shaped_document() -> None:
    doc = {
        "event_id": "e1",
        "rules": [{"id": "r", "evidence": {"features": {"n": 3, "sum": 1.5}}}],
        "late": False,
    }
    text = jsoncodec.dumps(doc)
    assert json.loads(text) == doc
    assert jsoncodec.loads(text) == doc
    assert jsoncodec.loads(text.encode()) == doc


def test_values_json_has_no_type_for_are_written_as_str() -> None:
    assert json.loads(jsoncodec.dumps({"s": {3}, "t": (1, 2), 7: "int key"})) == {
        "s": "{3}",
        "t": [1, 2],
        "7": "int key",
    }


def test_integers_beyond_64_bits_are_written_exactly() -> None:
    assert json.loads(jsoncodec.dumps({"big": 2**70})) == {"big": 2**70}


def test_nan_is_written_as_null_not_as_invalid_json() -> None:
    assert jsoncodec.dumps({"x": math.nan}) == '{"x":null}'


def test_literals_only_the_standard_library_reads_are_still_read() -> None:
    doc = jsoncodec.loads(b'{"amount": NaN}')
    assert math.isnan(doc["amount"])


@pytest.mark.parametrize("raw", [b"\xff", b'{"a": 1} trailing', b"{", b""])
def test_bad_documents_raise_value_errors(raw: bytes) -> None:
    with pytest.raises(ValueError):
        jsoncodec.loads(raw)


def test_an_event_with_a_nan_amount_is_refused_as_before() -> None:
    raw = b'{"event_id": "e", "user_id": "u", "type": "payment", "ts": 1, "amount": NaN}'
    with pytest.raises(EventError) as info:
        parse_event(raw)
    assert info.value.field == "amount"


def test_invalid_utf8_is_refused_with_the_decoder_reason() -> None:
    with pytest.raises(EventError, match="not valid UTF-8: invalid start byte at byte 14"):
        parse_event(b'{"event_id": "\xff"}')


def test_bytes_are_the_text_encoded() -> None:
    doc = {"event_id": "e1", "city": "Zürich", "rules": [{"id": "r", "n": 3, "x": 1.5}], "s": {3}, 7: None}
    assert jsoncodec.dumpb(doc) == jsoncodec.dumps(doc).encode()
    assert jsoncodec.dumpb({"x": math.nan}) == b'{"x":null}'


def test_bytes_of_what_orjson_refuses_are_still_valid_json() -> None:
    assert json.loads(jsoncodec.dumpb({"big": 2**70, "city": "Zürich"})) == {"big": 2**70, "city": "Zürich"}
    raw = jsoncodec.dumpb({"s": "a\udc80b"})  # a lone surrogate has no UTF-8 form: escaped, not an error
    assert raw == b'{"s":"a\\udc80b"}'
    assert json.loads(raw) == {"s": "a\udc80b"}
