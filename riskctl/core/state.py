"""Per-key state behind a small protocol, so the engine runs unchanged over a dict or over Flink keyed state.

Values are plain Python data (dict, list, tuple, str, int, float, bool, None, nested). The Flink
implementation stores a key's values as one dict, encoded by :func:`encode_state` into one ``ValueState``,
hence two rules for callers: a value mutated after :meth:`KeyedState.get` must be :meth:`KeyedState.put`
back, and one entry should stay small (bounded).
"""

from __future__ import annotations

import marshal
import pickle
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

#: the version of ``marshal``'s format :func:`encode_state` writes: pinned, so that a newer Python writes
#: what an older one reads (version 4 is read by every Python since 3.4)
MARSHAL_VERSION = 4
#: the first byte of a pickle of protocol 2 or later (its ``PROTO`` opcode); a marshal never starts with it
PICKLE_MARK = 0x80


def encode_state(data: Any) -> bytes:
    """The bytes a key's state is stored as: ``marshal`` (version :data:`MARSHAL_VERSION`) for plain data.

    For the states the engine keeps (about a hundred small tuples, lists, ints and strings) marshal writes in
    about half the time pickle does and reads in three quarters of it (bench/flink_profile/README.md,
    2026-12-06 midday), because it keeps no memo of every object it writes; it takes a fifth more bytes (its
    integers past 31 bits are 15-bit digits). A value marshal does not write (an instance of a class) is
    pickled instead (protocol 5), and :func:`decode_state` tells the two apart by the first byte.
    """
    try:
        return marshal.dumps(data, MARSHAL_VERSION)
    except ValueError:  # an object marshal does not write: pickle writes it
        return pickle.dumps(data, protocol=5)


def decode_state(raw: bytes) -> Any:
    """The value :func:`encode_state` wrote, or a pickle (protocol 2 or later, as state layouts up to 4
    were stored). ``raw`` is the job's own state, read back from its state backend: never an input."""
    return pickle.loads(raw) if raw[0] == PICKLE_MARK else marshal.loads(raw)  # noqa: S301, S302 - see above


class KeyedState(Protocol):
    """State of one key (one user)."""

    def get(self, name: str) -> Any | None:
        """The value stored under ``name``, or None."""
        ...

    def put(self, name: str, value: Any) -> None:
        """Store ``value`` under ``name`` (replacing any previous value)."""
        ...

    def remove(self, name: str) -> None:
        """Forget ``name`` (no error if absent)."""
        ...

    def names(self) -> Iterable[str]:
        """Every name that currently holds a value."""
        ...


class KeyedStore(Protocol):
    """The states of many keys, as :class:`~riskctl.core.runner.LocalRunner` uses them
    (:class:`InMemoryStore`, or a test's store over another :class:`KeyedState`)."""

    def for_key(self, key: str) -> KeyedState:
        """The state of ``key`` (created empty if new)."""
        ...

    def get_existing(self, key: str) -> KeyedState | None:
        """The state of ``key`` if it has one, else None (does not create)."""
        ...

    def drop_if_empty(self, key: str) -> None:
        """Forget ``key`` when its state holds nothing."""
        ...

    def __len__(self) -> int:
        """How many keys have state."""
        ...


class InMemoryKeyedState:
    """A dict-backed :class:`KeyedState`.

    ``get`` returns the stored object itself (no copy), which is fine because the engine always ``put``\\ s a
    value back after changing it, exactly as it must for Flink state.
    """

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = {} if data is None else data

    def get(self, name: str) -> Any | None:
        """See :meth:`KeyedState.get`."""
        return self.data.get(name)

    def put(self, name: str, value: Any) -> None:
        """See :meth:`KeyedState.put`."""
        self.data[name] = value

    def remove(self, name: str) -> None:
        """See :meth:`KeyedState.remove`."""
        self.data.pop(name, None)

    def names(self) -> Iterable[str]:
        """See :meth:`KeyedState.names` (a snapshot, safe to iterate while removing)."""
        return list(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"InMemoryKeyedState({self.data!r})"


class InMemoryStore:
    """Keyed state of many keys: ``user_id -> InMemoryKeyedState``, created on first use."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, InMemoryKeyedState] = {}

    def for_key(self, key: str) -> InMemoryKeyedState:
        """The state of ``key`` (created empty if new)."""
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = InMemoryKeyedState()
        return state

    def get_existing(self, key: str) -> InMemoryKeyedState | None:
        """The state of ``key`` if it has one, else None (does not create)."""
        return self._keys.get(key)

    def drop_if_empty(self, key: str) -> None:
        """Forget ``key`` entirely when its state holds nothing (keeps memory bounded after cleanup)."""
        state = self._keys.get(key)
        if state is not None and not state.data:
            del self._keys[key]

    def keys(self) -> Iterator[str]:
        """Every key that has state."""
        return iter(list(self._keys))

    def encoded_sizes(self) -> list[int]:
        """Bytes of each non-empty key's state as :func:`encode_state` writes it: about what the Flink job
        stores per key (there each name is stored under a shorter code)."""
        return [len(encode_state(s.data)) for s in self._keys.values() if s.data]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
