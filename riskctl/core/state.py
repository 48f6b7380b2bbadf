"""Per-key state behind a small protocol, so the engine runs unchanged over a dict or over Flink keyed state.

Values are plain Python data (dict, list, tuple, str, int, float, bool, None, nested). The Flink
implementation stores a key's values as one dict, encoded by :func:`encode_state` into one ``ValueState``,
hence two rules for callers: a value mutated after :meth:`KeyedState.get` must be :meth:`KeyedState.put`
back, and one entry should stay small (bounded).
"""

from __future__ import annotations

import hashlib
import marshal
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
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

    def remove(self, name: str | int) -> None:
        """Forget ``name`` (no error if absent)."""
        ...

    def names(self) -> Iterable[str | int]:
        """Every name that currently holds a value. A state kept encoded may give, for a name no rule in
        force has, the code it is stored under (an int, :class:`EncodedKeyedState`), which :meth:`remove`
        takes."""
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

    def remove(self, name: str | int) -> None:
        """See :meth:`KeyedState.remove` (its names are strings: an int holds nothing here)."""
        if type(name) is str:
            self.data.pop(name, None)

    def names(self) -> Iterable[str | int]:
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


#: the most state names an EncodedKeyedState remembers the codes of (each rule change brings a few new ones);
#: past it they are learned again as they are used
MAX_KNOWN_NAMES = 10_000


def state_code(name: str) -> int:
    """The int a state name is stored under in a user's dict (state layout 4): the first 62 bits of its
    BLAKE2b digest, the same in every process and version.

    The engine's names are long (``pattern:<rule id>:<16 hex digits>``, ``first_seen.<12 hex digits>``): a
    fifth to a quarter of a user's pickled state was its names, written to RocksDB and compacted again at
    every event. As codes a user's state is 696 bytes instead of 860 on the side-by-side bench, and RocksDB's
    compaction thread spent about a fifth less CPU per event (21.0 against 25.9 µs, medians of six
    alternating rounds with 4 MB memtables: bench/flink_profile/README.md). Two names
    share a code with a probability of about n^2 / 2^63 for n names: none in practice.
    """
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") >> 2


class EncodedKeyedState:
    """:class:`KeyedState` over one value of the current key (Flink's ``ValueState`` in the job:
    ``riskctl.flink.risk_function.FlinkKeyedState``): the key's dict of state values, encoded by this class
    (:func:`encode_state`: marshal's format since state layout 5; the value holds those bytes), each under
    the code of its name (:func:`state_code`). Here, not in ``riskctl.flink``, so that the compiled core runs
    it natively: the engine calls :meth:`get` and :meth:`put` some ten times per event (0.9-3.0 µs less per
    event compiled, bench/flink_profile/README.md).

    Call :meth:`begin` with the current key before the engine handles an event or timer of it, and
    :meth:`commit` after: the dict is decoded on first use and written back once, only when something changed.

    Recently used keys keep their committed bytes in a bounded LRU cache, so a hot key skips the RocksDB read.
    Each event decodes a fresh copy: its objects are new and close together in memory, which the engine and
    the encoding walk faster than a dict whose objects were scattered over the heap since the key's last
    event (the Python side of the decide thread 28-29 against 38-40 µs/event: bench/flink_profile/README.md),
    and a cached user costs about 1.5 KB (its bytes and the cache's entry, with rules/) instead of some 5.5 KB
    of objects. The cache holds exactly the bytes last written to the ValueState, what a checkpoint holds, and
    an event that fails (:meth:`abort`) leaves nothing behind. With ``ttl_ms`` (the ValueState's Flink TTL,
    processing time, refreshed by each write) an entry written that long ago is dropped at its next use, a
    second early: the ValueState's value has expired by then, and the key reads as Flink has it, whether it
    was cached or not.

    Names: the engine reads and writes by name; the dict holds codes. :meth:`names` turns them back into
    names: those used in this process, then those ``known_names()`` gives (the engine's names in force).
    A code neither knows is of a name no rule in force uses, and is given as the code itself (an int), which
    the engine releases as it releases any such name (``remove`` takes it). Older layouts are read as they
    are: a dict whose keys are names (layouts 1-3; layout 1 pickled by PyFlink itself) is recoded when it is
    decoded, and written back as codes at its next change; a pickled dict (layouts 1-4) is read as one.

    ``pickle_writes``: the ValueState keeps what it is given, as the Java ValueState under PyFlink's wrapper
    does (``riskctl.flink.fast_path.java_value_state``); each write is then the bytes pickled (protocol 3,
    as a ``bytes`` object: 8 bytes more and about 0.2 µs), which PyFlink's wrapper reads as the bytes they
    are, so that a job run with ``job.fast_path: false`` restores them too. Without it PyFlink's wrapper
    pickles them itself.
    """

    def __init__(
        self,
        value_state: Any,
        cache_size: int = 80_000,
        ttl_ms: int | None = None,
        known_names: Callable[[], Iterable[str]] | None = None,
        pickle_writes: bool = False,
        codec: tuple[Callable[[Any], Any], Callable[[Any], Any]] = (encode_state, decode_state),
    ) -> None:
        self._value = value_state
        #: how the dict becomes the value's bytes and back (a bench arm keeps the objects themselves):
        #: marshal since layout 5; a pickle (layouts 1-4, or what marshal does not write) is read as such
        self._dumps, self._loads = codec
        self._pickle_writes = pickle_writes
        self._data: dict[Any, Any] | None = None
        self._raw: Any = None  # the current key's cached bytes, decoded on first use
        self._dirty = False
        self._key: Any = None
        self._cache: OrderedDict[Any, tuple[Any, float]] = OrderedDict()  # key -> (bytes, monotonic written)
        self._cache_size = cache_size
        self._ttl_s = None if ttl_ms is None else ttl_ms / 1000 - 1.0
        self._codes: dict[str, int] = {}  # name -> code, and back
        self._names: dict[int, str] = {}
        self._known_names = known_names
        self.hits = 0
        self.misses = 0

    def begin(self, key: Any = None) -> None:
        """Start on ``key``: its bytes come from the cache when they are there, else from the ValueState."""
        self._key = key
        self._dirty = False
        self._data = None
        entry = self._cache.get(key) if key is not None else None
        raw = None
        if entry is not None:
            ttl = self._ttl_s
            if ttl is not None and time.monotonic() - entry[1] >= ttl:
                del self._cache[key]  # Flink's TTL has expired the value: read it as Flink has it
            else:
                raw = entry[0]
                self._cache.move_to_end(key)
                self.hits += 1
        self._raw = raw

    def _load(self) -> dict[Any, Any]:
        if self._data is None:
            raw = self._raw
            if raw is None:
                self.misses += 1
                raw = self._value.value()
                if raw is None:
                    self._data = {}
                    return self._data
                # not cached here: when it was written (what Flink's TTL counts from) is unknown; the commit
                # of this event caches what it writes
            # a dict: PyFlink's wrapper unpickled it (layout 1's dict, or layout 4's bytes read through it)
            data = raw if type(raw) is dict else self._loads(raw)
            if type(data) is bytes:  # the bytes pickled (by PyFlink's wrapper or pickle_writes), from Java
                data = self._loads(data)
            for name in data:
                if type(name) is str:  # layouts 1-3: keyed by name
                    data = {self._code(k): v for k, v in data.items()}
                break
            self._data = data
        return self._data

    def _code(self, name: Any) -> int:
        """The code ``name`` is stored under (an int given by :meth:`names` is a code already)."""
        code = self._codes.get(name)
        if code is None:
            if type(name) is int:
                return name  # type: ignore[no-any-return]
            if len(self._codes) >= MAX_KNOWN_NAMES:
                self._codes.clear()
                self._names.clear()
            code = state_code(name)
            self._codes[name] = code
            self._names[code] = name
        return code

    def _remember(self, raw: Any) -> None:
        # The key is the most recent already: a new key is appended, and a cached one was moved to the end by
        # begin(); replacing its value keeps its place.
        if self._key is None or self._cache_size <= 0:
            return
        self._cache[self._key] = (raw, time.monotonic())
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def get(self, name: str) -> Any | None:
        data = self._data
        code = self._codes.get(name)
        if code is None:
            code = self._code(name)
        return (data if data is not None else self._load()).get(code)

    def put(self, name: str, value: Any) -> None:
        data = self._data
        code = self._codes.get(name)
        if code is None:
            code = self._code(name)
        (data if data is not None else self._load())[code] = value
        self._dirty = True

    def remove(self, name: str | int) -> None:
        data = self._load()
        code = self._code(name)
        if code in data:
            del data[code]
            self._dirty = True

    def names(self) -> Iterable[str | int]:
        out: list[str | int] = []
        learn = self._known_names  # asked once, at the first code this process has not used the name of
        for code in self._load():
            name = self._names.get(code)
            if name is None and learn is not None:
                for known in learn():
                    self._code(known)
                learn = None
                name = self._names.get(code)
            out.append(code if name is None else name)  # a code no name in force has: released by the engine
        return out

    def abort(self) -> None:
        """Forget what the current event did: its changes were made to a decoded copy, and the cache and the
        ValueState still hold the value last committed."""
        self._data = self._raw = None
        self._dirty = False
        self._key = None

    def commit(self) -> None:
        """Write the key's dict back if it changed (an empty one clears the ValueState), and end the key."""
        if self._dirty:
            if self._data:
                raw = self._dumps(self._data)
                self._value.update(pickle.dumps(raw, protocol=3) if self._pickle_writes else raw)
                self._remember(raw)
            else:
                self._value.clear()
                self._cache.pop(self._key, None)
        self._data = self._raw = None
        self._dirty = False
        self._key = None
