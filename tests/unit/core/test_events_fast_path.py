"""An event's fields are first checked by their exact type alone, and only a field that fails takes the
general checks (riskctl.core.events): whatever the fields hold, the outcome is the general checks' own,
written out below as the reference (the validation as it was before that first check existed), for
``parse_event`` (a record decoded and validated in place) and ``normalize_event`` (a copy; its input
unchanged)."""

from __future__ import annotations

import copy
import math
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from riskctl.core.door import decode
from riskctl.core.errors import EventError
from riskctl.core.events import (
    MAX_ID_LENGTH,
    MAX_TS,
    OPTIONAL_STR,
    REQUIRED_STR,
    normalize_event,
    parse_event,
)
from riskctl.core.expr import MAX_NUMBER

T = 1_700_000_000_000


def reference(obj: dict[str, Any]) -> dict[str, Any]:
    """The general checks, each field in turn: the specification the first, by-type check must not change."""
    event = dict(obj)
    for name in REQUIRED_STR:
        value = event.get(name)
        if value is None:
            raise EventError("required field is missing", name)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise EventError(f"must be a string, got {type(value).__name__}", name)
        value = str(value)
        if not value or len(value) > MAX_ID_LENGTH:
            raise EventError(f"must be a non-empty string of at most {MAX_ID_LENGTH} characters", name)
        event[name] = value
    ts = event.get("ts")
    if ts is None:
        raise EventError("required field is missing", "ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise EventError(f"must be an integer (milliseconds since the epoch), got {type(ts).__name__}", "ts")
    if isinstance(ts, float):
        if not math.isfinite(ts) or ts != int(ts):
            raise EventError(f"must be an integer number of milliseconds, got {ts!r}", "ts")
        ts = int(ts)
    if not 0 <= ts <= MAX_TS:
        raise EventError(f"out of range (milliseconds since the epoch): {ts}", "ts")
    event["ts"] = ts
    amount = event.get("amount")
    if amount is not None:
        if isinstance(amount, bool):
            raise EventError("must be a number, got a boolean", "amount")
        if isinstance(amount, str):
            try:
                amount = float(amount) if any(c in amount for c in ".eE") else int(amount)
            except ValueError:
                raise EventError(f"must be a number, got the string {amount[:40]!r}", "amount") from None
        if not isinstance(amount, int | float):
            raise EventError(f"must be a number, got {type(amount).__name__}", "amount")
        if isinstance(amount, float) and not math.isfinite(amount):
            raise EventError(f"must be a finite number, got {amount!r}", "amount")
        if not -MAX_NUMBER <= amount <= MAX_NUMBER:
            shown = repr(amount) if isinstance(amount, float) else f"of {len(str(abs(amount)))} digits"
            raise EventError(
                f"number {shown} is not finite or beyond {MAX_NUMBER:.0e} in absolute value", "amount"
            )
        event["amount"] = amount
    success = event.get("success")
    if success is not None and not isinstance(success, bool):
        raise EventError(f"must be true or false, got {success!r}", "success")
    for name in OPTIONAL_STR:
        value = event.get(name)
        if value is not None and not isinstance(value, str):
            raise EventError(f"must be a string, got {type(value).__name__}", name)
    return event


ABSENT = object()
ODD = st.sampled_from(
    [None, True, False, 0, -1, 1.5, 2.0, "", [], {}, ["x"], {"a": 1}, "x" * (MAX_ID_LENGTH + 1)]
)
IDS = st.one_of(st.text(min_size=1, max_size=8), st.integers(-(10**20), 10**20), ODD)
TIMES = st.one_of(
    st.integers(0, MAX_TS),
    st.sampled_from([T, -1, MAX_TS, MAX_TS + 1, 10**19, float(T), T + 0.5, 1e300, "1700000000000", True]),
    ODD,
)
AMOUNTS = st.one_of(
    st.integers(-(10**16), 10**16),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [MAX_NUMBER, MAX_NUMBER + 1, -MAX_NUMBER - 1, float(MAX_NUMBER) * 2, "12", "1e3", "1e300"]
    ),
    st.sampled_from(["abc", "0x10", " 7 ", "-3.5", 10**400]),
    ODD,
)
STRINGS = st.one_of(st.text(max_size=8), ODD)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, values in (
        *((n, IDS) for n in REQUIRED_STR),
        ("ts", TIMES),
        ("amount", AMOUNTS),
        ("success", st.one_of(st.booleans(), ODD)),
        *((n, STRINGS) for n in OPTIONAL_STR),
        ("note", STRINGS),
    ):
        # mostly present and well-formed-ish; sometimes absent
        value = draw(st.one_of(st.just(ABSENT), values) if draw(st.integers(0, 5)) == 0 else values)
        if value is not ABSENT:
            fields[name] = value
    return fields


def outcome(call: Any, arg: Any) -> Any:
    try:
        return ("ok", call(arg))
    except EventError as exc:
        return ("refused", exc.reason, exc.field)


@settings(max_examples=1500, deadline=None)
@given(event=events())
def test_the_first_check_by_type_changes_no_outcome(event: dict[str, Any]) -> None:
    expected = outcome(reference, event)
    before = copy.deepcopy(event)
    got = outcome(normalize_event, event)
    assert got == expected
    assert event == before  # normalize_event validates a copy
    if expected[0] == "ok":
        assert type(got[1]["ts"]) is int and all(type(got[1][n]) is str for n in REQUIRED_STR)
    try:
        raw = orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # (integers past 64 bits: orjson does not write them)
        return
    # (the door first: its limits refuse some values before any field is checked)
    assert outcome(parse_event, raw) == outcome(lambda r: reference(decode(r)), raw)


def test_a_well_formed_event_is_returned_with_its_values_unchanged() -> None:
    raw = {"event_id": "e1", "user_id": "u1", "type": "login", "ts": T, "amount": 12.5, "success": True}
    assert parse_event(orjson.dumps(raw)) == raw
    converted = normalize_event({**raw, "user_id": 42, "ts": float(T), "amount": "7"})
    assert converted == {**raw, "user_id": "42", "ts": T, "amount": 7}
    assert type(converted["ts"]) is int
