"""InMemoryStore: keys created on use, dropped when empty, and their encoded sizes; the state's encoding."""

from __future__ import annotations

import marshal
import pickle
from fractions import Fraction
from typing import Any

import pytest

from riskctl.core.state import PICKLE_MARK, InMemoryStore, decode_state, encode_state


def test_encoded_sizes_count_only_keys_with_state() -> None:
    store = InMemoryStore()
    store.for_key("a").put("count", [1, 2, 3])
    store.for_key("b")  # created, never written
    store.for_key("c").put("seen", {"dev-1": (1, 2)})
    assert sorted(store.encoded_sizes()) == sorted(
        len(marshal.dumps(d, 4)) for d in ({"count": [1, 2, 3]}, {"seen": {"dev-1": (1, 2)}})
    )
    store.drop_if_empty("b")
    assert "b" not in store and len(store) == 2


# What the engine keeps: ints past 31 and 63 bits (times, codes, the -2**62 of "no watermark"), floats
# (inf and nan included), strings of every plane, nested tuples, lists and dicts, a shared object.
SHARED = {"event_id": "e-1", "type": "login", "_features": {"new_city": True}}
STATES: list[Any] = [
    {1: 2},
    {4611686018427387903: (1_700_000_051_483, 2, -(1 << 62), (1_700_000_051_483, 1, True, SHARED))},
    {-1: [[(1, 2, None, False, {"login": (SHARED,), "password": ()}, (2,))], 1 << 100, -(1 << 100)]},
    {
        7: [
            1.5,
            float("inf"),
            -0.0,
            "é😀\u0000",
            "",
            b"\x00\x80",
            frozenset({1, "a"}),
            {"k": [SHARED, SHARED]},
        ]
    },
    {"name": "a state of layout 1-3, keyed by its name", "deep": [[[[[[[[[[1]]]]]]]]]]},
]


@pytest.mark.parametrize("state", STATES)
def test_a_state_round_trips_through_marshal_never_starting_with_pickles_mark(state: Any) -> None:
    raw = encode_state(state)
    assert raw == marshal.dumps(state, 4) and raw[0] != PICKLE_MARK
    back = decode_state(raw)
    assert back == state and kinds(back) == kinds(state)  # tuples stay tuples, -0.0 stays -0.0


def kinds(value: Any) -> Any:
    """The types of ``value`` and all it holds (a float as its repr: -0.0 is not 0.0)."""
    if isinstance(value, list | tuple):
        return type(value).__name__, [kinds(v) for v in value]
    if isinstance(value, dict):
        return "dict", {k: kinds(v) for k, v in value.items()}
    if isinstance(value, frozenset):
        return "frozenset", sorted(map(repr, value))
    return repr(value) if type(value) is float else type(value).__name__


def test_a_nan_and_a_shared_object_keep_what_they_are() -> None:
    shared: list[Any] = [1]
    back = decode_state(encode_state({1: [float("nan"), shared, shared]}))
    assert back[1][0] != back[1][0]  # nan
    assert back[1][1] is back[1][2]  # one object, as the engine left it (marshal writes a reference)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_pickled_state_is_read_as_layouts_up_to_4_stored_it(protocol: int) -> None:
    state = STATES[1]
    raw = pickle.dumps(state, protocol=protocol)
    assert raw[0] == PICKLE_MARK and decode_state(raw) == state


def test_what_marshal_does_not_write_is_pickled_and_read_back() -> None:
    state = {3: [Fraction(1, 3), (1, 2)]}  # an instance of a class: marshal refuses it
    with pytest.raises(ValueError):
        marshal.dumps(state, 4)
    raw = encode_state(state)
    assert raw[0] == PICKLE_MARK and decode_state(raw) == state
