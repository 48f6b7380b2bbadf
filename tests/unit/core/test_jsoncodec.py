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
