"""The door's walk: a refused record costs about what an accepted one does, and names its first culprit.

A record refused for something at its end (after thousands of keys or containers) used to have its whole
document walked a second time, building the field path of every value on the way (16 ms of CPU for 64 KB of
``{},`` and then a 10^16, against 5 ms to accept the same record without it: ``bench/door_hostile.py``).
The walk now finds the culprit in one pass and builds only the culprit's path. Checked here by counting work
(the field paths built), never by timing, and against a brute-force reference of what the door refuses.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskctl.core import door
from riskctl.core.door import Limits, decode
from riskctl.core.errors import EventError
from riskctl.core.expr import MAX_NUMBER

HEAD = '{"event_id":"e","user_id":"u","type":"t","ts":1,"x":{'
KEYS = ",".join(f'"k{i}":{{}}' for i in range(5_000))


@pytest.mark.parametrize(
    ("last", "reason"),
    [
        ('"' + "n" * 4097 + '"', "string of 4097 characters"),  # orjson's reading, refused by the walk
        ("10000000000000000", "number of 17 digits"),
        ('{"a":' * 15 + "1" + "}" * 15, "nested deeper than max_depth (16)"),
        ("NaN", "number nan"),  # the standard library's reading
        ('"\\ud800"', "lone surrogate"),
    ],
)
def test_a_culprit_after_5000_values_builds_one_field_path(
    last: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    printable = door._printable

    def counting(text: str) -> str:
        built.append(text)
        return printable(text)

    monkeypatch.setattr(door, "_printable", counting)
    with pytest.raises(EventError, match=re.escape(reason)) as info:
        decode((HEAD + KEYS + ',"z":' + last + "}}").encode())
    assert info.value.field is not None and info.value.field.startswith("x.z")
    assert len(built) <= 20  # one per step of the culprit's path, not one per value walked (5,000+ before)


def test_of_two_keys_too_long_in_one_object_the_first_is_named() -> None:
    """Everything else is refused at its first culprit in document order; keys were the last of an object."""
    with pytest.raises(EventError, match="key of 5000 characters") as info:
        decode(json.dumps({"meta": {"a" * 5000: 1, "b" * 6000: 2}}).encode())
    assert info.value.field == "meta." + "a" * 295


# ------------------------------------------------------------------------------- against a brute-force walk
SMALL = Limits(max_depth=3, max_string_chars=3)
_LONE = re.compile("[\ud800-\udfff]")


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _text_error(what: str, text: str, path: str) -> tuple[str, str | None]:
    field = _printable(path[:300]) or None
    if len(text) > SMALL.max_string_chars:
        return f"{what} of {len(text)} characters is longer than max_string_chars (3)", field
    found = _LONE.search(text)
    assert found is not None
    return f"{what} holds a lone surrogate (U+{ord(found.group()):04X} at character {found.start()})", field


def reference(value: Any, path: str = "", depth: int = 1) -> tuple[str, str | None] | None:
    """The first value of ``value`` (document order, an object's keys before its values) the door refuses."""
    if isinstance(value, dict | list):
        if depth > SMALL.max_depth:
            return "nested deeper than max_depth (3)", path or None
        if isinstance(value, dict):
            for k in value:
                if len(k) > SMALL.max_string_chars or _LONE.search(k):
                    return _text_error("key", k, f"{path}.{k}" if path else k)
            children = [(f"{path}.{_printable(k)}" if path else _printable(k), v) for k, v in value.items()]
        else:
            children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        for child_path, v in children:
            found = reference(v, child_path, depth + 1)
            if found:
                return found
    elif isinstance(value, str):
        if len(value) > SMALL.max_string_chars or _LONE.search(value):
            return _text_error("string", value, path)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not -MAX_NUMBER <= value <= MAX_NUMBER:
            text = repr(value) if isinstance(value, float) else f"of {len(str(abs(value)))} digits"
            return f"number {text} is not finite or beyond 1e+15 in absolute value", path or None
    return None


TEXT = st.text(alphabet=st.sampled_from(["a", "b", "é", "\ud800", "\udfff", "."]), max_size=5)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([MAX_NUMBER, MAX_NUMBER + 1, -MAX_NUMBER - 1, 1e16, float("nan"), float("-inf")])
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(DOCS)
def test_the_door_refuses_the_first_culprit_with_its_field(doc: Any) -> None:
    raw = json.dumps(doc).encode()  # NaN, Infinity and lone surrogates as the standard library writes them
    expected = reference(json.loads(raw))
    try:
        decode(raw, SMALL)
    except EventError as exc:
        assert (exc.reason, exc.field) == expected
    else:
        assert expected is None
