"""A numeric string in ``amount`` is held to the door's number range, like a number (found in review).

The door checks the numbers of an event, not its strings, and ``normalize_event`` converted ``"1e300"`` (or a
string of 300 nines) to a number after it: ``sum(amount)`` over two ``"1.7e308"`` became inf, written as null,
and 10^300 made every later sum of that user's window inexact (docs/engine.md, "Limits at the door").
"""

from __future__ import annotations

import json

import pytest

from riskctl.core.errors import EventError
from riskctl.core.events import parse_event
from riskctl.core.expr import MAX_NUMBER


def event(amount: object) -> bytes:
    doc = {"event_id": "e1", "user_id": "u1", "type": "transfer", "ts": 1_700_000_000_000, "amount": amount}
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "amount",
    ["1e300", "1.7e308", "-1e16", "9" * 300, "-" + "9" * 16, str(MAX_NUMBER + 1), "1000000000000000.5"],
)
def test_a_numeric_string_beyond_max_number_is_refused(amount: str) -> None:
    with pytest.raises(EventError) as info:
        parse_event(event(amount))
    assert info.value.field == "amount"
    assert "beyond" in info.value.reason


@pytest.mark.parametrize(
    ("amount", "value"), [("12.5", 12.5), (str(MAX_NUMBER), MAX_NUMBER), ("-1e15", -1e15)]
)
def test_a_numeric_string_within_the_range_is_converted(amount: str, value: float) -> None:
    assert parse_event(event(amount))["amount"] == value


def test_an_infinite_string_still_says_finite() -> None:
    with pytest.raises(EventError, match="finite"):
        parse_event(event("1e999"))
