"""What the engine keeps of an event: only the fields rules can read, with every string capped.

Keyed state must stay bounded in bytes, not only in counts: pattern buffers, partial matches and the engine's
recent events (for the late re-check) hold events, and ``distinct_count`` / ``first_seen`` hold field values.
Two measures, both decided when a rule set is compiled, not per event:

* **Projection.** :func:`make_projector` builds, for a set of field names (those the rule set's expressions
  read, see :attr:`riskctl.core.expr.CompiledExpression.event_fields`, plus what the engine itself needs),
  a function that copies only those top-level fields of an event. A 100 KiB free field that no rule reads is
  never stored. When the fields cannot be known (``None``: an expression uses a whole event as a value, e.g.
  ``first(s) == last(s)``) every field is kept, each value still capped.
* **Capping.** A string longer than :data:`MAX_STORED_STRING` characters is replaced by
  :func:`stored_string`: its first :data:`STORED_PREFIX` characters, ``…#`` and a 128-bit BLAKE2b digest
  of the whole string (97 characters in all). Equality is kept (two long strings give the same token iff
  they are equal, up to a 2^-64 collision chance per pair; a token never equals a string of at most
  :data:`MAX_STORED_STRING` characters unless that string is literally a token). What changes for a stored
  long string: its length, ``endswith``/``contains`` on the part after the prefix, ordering comparisons, and
  ``lower``/``upper`` (the digest is of the original). A list or dict value is kept when it is small (at most
  :data:`MAX_STORED_ITEMS` values in all, containers and keys included, :data:`MAX_STORED_DEPTH` levels,
  :data:`MAX_STORED_STRING` characters of strings in all), else replaced by a token ``<list>…#<digest>``
  built from its pickled bytes (equal only to an identical container; ``len`` and fields are lost).

:data:`MAX_STORED_STRING` is 256, the longest ``event_id``/``user_id``/``type`` the door accepts
(:data:`riskctl.core.events.MAX_ID_LENGTH`), so a validated id is never changed.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Collection, Mapping
from typing import Any

#: strings longer than this (characters) are stored as a fixed-size token (see the module docstring)
MAX_STORED_STRING = 256
#: how a boolean is kept as a distinct value (``distinct_count``, ``first_seen``, ``distinct()``): a 1-tuple,
#: apart from 1 and 0, which ``True`` and ``False`` equal (and hash as) in Python. Events carry lists, never
#: tuples, so no event value equals one.
BOOL_KEYS: dict[Any, Any] = {True: (True,), False: (False,)}
#: characters of the original string kept at the start of its token
STORED_PREFIX = 64
#: a list/dict value is stored as is only with at most this many values in all (containers, keys and
#: scalars counted; strings holding at most MAX_STORED_STRING characters in all)...
MAX_STORED_ITEMS = 16
#: ...and at most this many levels of nesting; beyond either it is stored as a token
MAX_STORED_DEPTH = 4
#: characters of a token: prefix, the 2-character marker "…#", 32 hex digits
TOKEN_LENGTH = STORED_PREFIX + 2 + 32

_SCALARS = (int, float, bool, type(None))


def _token(prefix: str, data: bytes) -> str:
    return prefix + "\u2026#" + hashlib.blake2b(data, digest_size=16).hexdigest()


def stored_string(value: str) -> str:
    """``value`` as state keeps it: unchanged up to MAX_STORED_STRING characters, else a token."""
    if len(value) <= MAX_STORED_STRING:
        return value
    return _token(value[:STORED_PREFIX], value.encode("utf-8", "surrogatepass"))


def stored_value(value: Any) -> Any:
    """Any event value as state keeps it: scalars unchanged, strings capped, containers small or a token."""
    t = type(value)
    if t is str:
        return value if len(value) <= MAX_STORED_STRING else stored_string(value)
    if t in _SCALARS:
        return value
    small = _small_copy(value, MAX_STORED_DEPTH, [MAX_STORED_ITEMS, MAX_STORED_STRING])
    if small is not _TOO_BIG:
        return small
    try:
        data = pickle.dumps(value, protocol=5)
    except (RecursionError, TypeError, ValueError, pickle.PicklingError, AttributeError):
        data = repr(type(value)).encode()  # unpicklable or nested past the interpreter's limit
    return _token(f"<{t.__name__}>", data)


_TOO_BIG = object()


def _small_copy(value: Any, depth: int, budget: list[int]) -> Any:
    """A copy, or _TOO_BIG past the budget: ``budget`` = [nodes left, string characters left]."""
    budget[0] -= 1
    if budget[0] < 0:
        return _TOO_BIG
    t = type(value)
    if t is str:
        budget[1] -= len(value)
        return _TOO_BIG if budget[1] < 0 else value
    if t in _SCALARS:
        return value
    if depth <= 0:
        return _TOO_BIG
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            key = _small_copy(k, depth - 1, budget)
            if key is _TOO_BIG:
                return _TOO_BIG
            item = _small_copy(v, depth - 1, budget)
            if item is _TOO_BIG:
                return _TOO_BIG
            out[key] = item
        return out
    if isinstance(value, list | tuple):
        items: list[Any] = []
        for v in value:
            item = _small_copy(v, depth - 1, budget)
            if item is _TOO_BIG:
                return _TOO_BIG
            items.append(item)
        return items if t is list else tuple(items)
    return _TOO_BIG


Projector = Callable[[Mapping[str, Any]], dict[str, Any]]


def make_projector(fields: Collection[str] | None, *, memo: list[Any] | None = None) -> Projector:
    """A function copying the given top-level fields of an event, each value capped (None: every field).

    ``memo``, a list ``[event, projection]``, makes the function answer the same projection again for the
    same event object (the engine hands one event to several patterns and to the late re-check); its owner
    clears ``memo[0]`` once that event is done with (a caller may reuse and change a dict for its next event).
    """
    if fields is None:

        def project_all(event: Mapping[str, Any]) -> dict[str, Any]:
            return {stored_value(k): stored_value(v) for k, v in event.items()}

        return project_all
    keep = tuple(sorted(fields))
    cap = MAX_STORED_STRING
    missing = _TOO_BIG
    last: list[Any] = memo if memo is not None else [None, None]

    def project(event: Mapping[str, Any]) -> dict[str, Any]:
        if event is last[0]:
            return last[1]  # type: ignore[no-any-return]
        out = {}
        # (a dict, as events are: the compiled core calls dict.get itself, not a method looked up by name)
        fields: dict[str, Any] = event if isinstance(event, dict) else dict(event)
        for k in keep:
            v = fields.get(k, missing)
            if v is missing:
                continue
            t = type(v)
            if t is str:
                if len(v) > cap:
                    v = stored_string(v)
            elif t is not int and t is not bool and t is not float and v is not None:
                v = stored_value(v)
            out[k] = v
        if memo is not None:
            last[0] = event
            last[1] = out
        return out

    return project
