"""Per-key state behind a small protocol, so the engine runs unchanged over a dict or over Flink keyed state.

Values are plain Python data (dict, list, tuple, str, int, float, bool, None, nested). The Flink
implementation stores each name as one ``MapState`` entry (pickled), hence two rules for callers: a value
mutated after :meth:`KeyedState.get` must be :meth:`KeyedState.put` back, and one entry should stay small
(bounded).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol


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

    def pickled_sizes(self) -> list[int]:
        """Bytes of each non-empty key's state, pickled (protocol 5): about what a state backend stores."""
        import pickle

        return [len(pickle.dumps(s.data, protocol=5)) for s in self._keys.values() if s.data]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
