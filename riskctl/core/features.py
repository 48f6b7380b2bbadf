"""Per-key features over event time: windowed aggregates, last-N statistics, first-seen values, time since.

A feature has two halves, kept apart as in bytewax's windowers: a `FeatureSpec` (immutable, validated when the
rule is loaded) and a runtime `Feature` built once from it by `compile_feature`. The runtime holds no per-key
data; each call gets the key's stored value and returns the new one (see `docs/design/core-contracts.md`)::

    value, new_stored = feature.evaluate(stored, event, ts)   # new_stored None: remove the entry
    new_stored = feature.expire(stored, now_ts)               # on a cleanup timer
    feature.next_cleanup(stored)                              # when all of it can be freed, or None

Stored values are plain lists, dicts, tuples and numbers, compact once pickled. `evaluate` may mutate `stored`
in place and return it: the caller must put the returned value back (the `KeyedState` contract).

Common rules, all kinds
-----------------------
* Every timestamp and duration is an `int` in milliseconds of event time; nothing here reads the wall clock.
* The filter decides which events are *recorded* in the state; every event gets a value, matching the filter
  or not (a "failed logins in the last hour" count has a value on a successful login too).
* A field value is usable when it is a number (`int` or `float`, not `bool`, not NaN) for numeric kinds, or a
  `str`/`int`/`float`/`bool` for `distinct_count` and `first_seen`. An event whose field is missing or
  unusable is not recorded, like SQL ignoring NULLs: `sum` over `true` values is 0, not their count. A
  boolean is never a number here either: `true` and `1` are two distinct values (kept as
  `riskctl.core.stored.BOOL_KEYS`), as they are two values for `==` in an expression.
* `window` is the window of the aggregate, or the horizon of `last_n`, `first_seen` and `time_since`: every
  kind looks at the half-open interval `(ts - window, ts]` of event time, so an event exactly `window` ms old
  is out.
* Lateness: `compile_feature(spec, lateness=L)` keeps `window + L` ms of history behind the newest recorded
  event, so an event up to `L` ms older than the newest one gets its exact value and lands in the right place.
  An older one is *too late* (docs/engine.md): the engine does not call `update` for it but `peek`, which
  gives its value over what is stored, without recording it (nor counting it in its own value).
* Stored strings are capped: a `distinct_count` or `first_seen` value longer than
  `riskctl.core.stored.MAX_STORED_STRING` characters is kept (and compared) as a fixed-size token.

Kinds
-----
* `count`, `sum`, `avg`, `min`, `max`, `distinct_count` (windowed): the aggregate of `field` (any matching
  event for a `count` without field) over the recorded events with ts in `(ts - window, ts]`, *including the
  current event* when it is recorded. Events later than `ts` that arrived earlier are not counted. Empty
  window: `count`, `sum` and `distinct_count` are 0, `avg`, `min` and `max` are None.
* `last_n`: `stat` (`avg_interval`, `avg`, `sum`, `min`, `max`) over the last `n` recorded events with ts in
  `(ts - window, ts]`, including the current one; None while fewer than `min_events` (default `n`) are there.
  `avg_interval` is `(newest - oldest) / (k - 1)` ms over those k events.
* `first_seen`: True when the event's `field` value was not recorded for this key within `(ts - window, ts]`
  *before* this event, False when it was, None when the event has no usable value.
* `time_since`: ms since the newest recorded event with ts in `(ts - window, ts]` recorded before this one (an
  earlier event with the same ts gives 0), or None.

Bounded state and precision
---------------------------
* Windowed kinds are exact while a key has at most `raw_cap` (default 64) recorded events in the last
  `window + L` ms: those are kept one by one. Beyond that the oldest are folded, whole bucket by whole bucket,
  into buckets of `granularity` ms (default: the smallest of 1, 2, 5, 10, 20, 50, 100, 200, 500 ms, 1, 2, 5,
  10, 15, 30 s, 1, 2, 5, 10, 15, 30 min, 1, 2, 3, 6, 12 h, 1 day that is at least window/60, so between
  window/60 and window/24). A folded event counts as if it happened at the start of its bucket: it leaves the
  window up to `granularity - 1` ms early, never late; and a late event whose ts falls in a folded bucket sees
  that whole bucket, including events up to `granularity - 1` ms after it. A late event older than the folding
  frontier goes straight into its bucket. So a key holds at most `raw_cap` events plus
  `(window + L) / granularity + 1` buckets, whatever its event rate. A `distinct_count` bucket remembers at
  most `max_values` (default 100) distinct values; more are not counted.
* `last_n` keeps the last `n` events; `time_since` the last 4 timestamps (a late event gets the exact value
  unless 4 or more newer ones were recorded before it arrived); `first_seen` at most `max_values` (default
  100) values, each with its first and last sighting, evicting the least recently seen (by event time) beyond
  that. A late event whose value was first seen more than `window` before it and seen again after it counts as
  seen.
* `next_cleanup(stored)` is the time at which `expire` frees the whole entry (newest recorded ts + window +
  L). While a key is active `evaluate` prunes as it goes, so the timer only has to release idle keys: one
  timer per key and feature, not one per bucket.
"""

from __future__ import annotations

import pickle
from bisect import bisect_left, bisect_right, insort
from typing import Any, Final

from riskctl.core.feature_spec import (
    DAY,
    DEFAULT_HORIZON,
    DEFAULT_MAX_VALUES,
    DEFAULT_RAW_CAP,
    HOUR,
    KINDS,
    LAST_N_STATS,
    MAX_N,
    MAX_VALUES_LIMIT,
    MAX_WINDOW,
    MINUTE,
    SECOND,
    TIME_SINCE_KEEP,
    WINDOWED_KINDS,
    Event,
    FeatureSpec,
    Filter,
    default_granularity,
    is_int,
)
from riskctl.core.stored import BOOL_KEYS, MAX_STORED_STRING, stored_string

__all__ = [
    "DAY",
    "DEFAULT_HORIZON",
    "DEFAULT_MAX_VALUES",
    "DEFAULT_RAW_CAP",
    "HOUR",
    "KINDS",
    "LAST_N_STATS",
    "MAX_N",
    "MAX_VALUES_LIMIT",
    "MAX_WINDOW",
    "MINUTE",
    "SECOND",
    "TIME_SINCE_KEEP",
    "WINDOWED_KINDS",
    "Event",
    "Feature",
    "FeatureSpec",
    "Filter",
    "FirstSeenFeature",
    "LastNFeature",
    "TimeSinceFeature",
    "WindowedFeature",
    "compile_feature",
    "default_granularity",
    "stored_bytes",
]

_NUMBER_TYPES = (int, float)
_VALUE_TYPES = (str, int, float, bool)
_NO_FRONTIER = -(1 << 62)  # nothing folded yet: every recorded event is kept one by one


def _insert_in_order(tss: list[int], values: list[Any] | None, ts: int, v: Any) -> None:
    """Insert ``ts`` into the sorted ``tss`` after any equal times (arrival order), and ``v`` at the same
    index of the parallel ``values`` (None when the kind keeps no values); an in-order event is an append."""
    if not tss or ts >= tss[-1]:
        tss.append(ts)
        if values is not None:
            values.append(v)
    else:
        i = bisect_right(tss, ts)
        tss.insert(i, ts)
        if values is not None:
            values.insert(i, v)


def _none_after(times: list[Any], ts: int) -> bool:
    """No time in the sorted ``times`` is after ``ts`` (an event at ``ts`` goes last). The newest time is read
    into a typed local and compared natively: compared with an ``Any``, the compiled core would make ``ts``
    a new int object (the times are past 2^30) at every comparison."""
    if not times:
        return True
    newest: int = times[-1]
    return newest <= ts


def field_of(event: Event, name: str) -> Any:
    """``event.get(name)``. Events are dicts, and on a dict the compiled core calls ``dict.get`` itself,
    where on a ``Mapping`` it looks the method up by name at every call (a few hundred instructions)."""
    if isinstance(event, dict):
        return event.get(name)
    return event.get(name)


class Feature:
    """The runtime of one `FeatureSpec`: stateless itself, it reads and returns each key's stored value."""

    spec: FeatureSpec

    def __init__(self, spec: FeatureSpec, lateness: int) -> None:
        if not is_int(lateness) or lateness < 0:
            msg = f"lateness must be a non-negative number of milliseconds, got {lateness!r}"
            raise ValueError(msg)
        self.spec = spec
        self.window = spec.effective_window
        self.lateness = lateness
        self.retention = self.window + lateness
        self._filter = spec.filter
        self._field = spec.field
        self._fld: str = spec.field or ""  # for the kinds whose validated spec always has a field

    def evaluate(self, stored: Any, event: Event, ts: int) -> tuple[Any, Any]:
        """The value for `event` at event time `ts`, and the stored value to put back (None: remove it)."""
        value, new, _ = self.update(stored, event, ts)
        return value, new

    def update(self, stored: Any, event: Event, ts: int) -> tuple[Any, Any, bool]:
        """`evaluate`, plus whether the stored value changed (False: `new_stored` is `stored`, untouched).

        The engine uses the flag to skip writing back an unchanged value (a pickle and a RocksDB write in
        Flink).
        """
        raise NotImplementedError

    def peek(self, stored: Any, event: Event, ts: int) -> Any:
        """The value for a *too late* event (docs/engine.md): as `evaluate` would give it if the event were
        not recorded, whatever the filter says; `stored` is not changed."""
        raise NotImplementedError

    def expire(self, stored: Any, now_ts: int) -> Any:
        """Drop what no event at `now_ts - lateness` or later can need; None when nothing is left."""
        raise NotImplementedError

    def next_cleanup(self, stored: Any) -> int | None:
        """The event time at which `expire` frees the whole entry, or None for an empty one."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, lateness={self.lateness})"


# Windowed state: [newest recorded ts, folding frontier, raw ts, raw values, bucket index, bucket acc, acc 2]
# (Final literals: the compiled core indexes with constants, not with a global looked up each time.)
_MAX: Final = 0
_FRONT: Final = 1
_RTS: Final = 2
_RV: Final = 3
_BIX: Final = 4
_BA: Final = 5
_BB: Final = 6


class WindowedFeature(Feature):
    """count, sum, avg, min, max, distinct_count over `(ts - window, ts]` (precision: module docstring)."""

    def __init__(self, spec: FeatureSpec, lateness: int = 0, raw_cap: int = DEFAULT_RAW_CAP) -> None:
        super().__init__(spec, lateness)
        if not is_int(raw_cap) or raw_cap < 1:
            msg = f"raw_cap must be a positive integer, got {raw_cap!r}"
            raise ValueError(msg)
        self.raw_cap = raw_cap
        self.granularity = spec.effective_granularity
        self.max_values = spec.max_values or DEFAULT_MAX_VALUES
        kind = spec.kind
        self._kind = kind
        self._keeps_values = kind != "count"
        self._has_b = kind == "avg"
        self._empty: Any = 0 if kind in ("count", "sum", "distinct_count") else None

    # -- reading the event -------------------------------------------------------------------------------
    def _value_of(self, event: Event) -> tuple[bool, Any]:
        """(recorded?, value to record) for one event."""
        flt = self._filter
        if flt is not None and not flt(event):
            return False, None
        fld = self._field
        if fld is None:
            return True, None
        v = field_of(event, fld)
        if v is None:
            return False, None
        if self._kind == "count":
            return True, None
        if self._kind == "distinct_count":
            if type(v) is str and len(v) > MAX_STORED_STRING:
                v = stored_string(v)  # bounded state: a long value is kept as a fixed-size token
            elif v is True or v is False:
                return True, BOOL_KEYS[v]  # true is not 1: counted apart
            return type(v) in _VALUE_TYPES and v == v, v
        return type(v) in _NUMBER_TYPES and v == v, v

    # -- runtime API -------------------------------------------------------------------------------------
    def update(self, stored: Any, event: Event, ts: int) -> tuple[Any, Any, bool]:
        """The aggregate over `(ts - window, ts]`, the current event included when recorded."""
        rec, v = self._value_of(event)
        if stored is None:
            if not rec:
                return self._empty, None, False
            rv = [v] if self._keeps_values else None
            return self._single(v), [ts, _NO_FRONTIER, [ts], rv, [], [], [] if self._has_b else None], True
        if not rec:
            return self._query(stored, ts), stored, False
        # The stored times are read into typed locals and compared natively, and ``ts`` is made an object
        # once: compared with an ``Any``, or put into a list, the compiled core makes each int past 2^30 a
        # new object every time (the engine's ``Engine.process`` does the same with its ``meta``).
        ts_obj: object = ts
        rts: list[Any] = stored[_RTS]
        front: int = stored[_FRONT]
        if ts >= front and _none_after(rts, ts):  # in order: the common case
            rts.append(ts_obj)
            if self._keeps_values:
                stored[_RV].append(v)
        else:
            self._insert(stored, ts, v)
        value = self._query(stored, ts)
        newest: int = stored[_MAX]
        if ts > newest:
            stored[_MAX] = ts_obj
            newest = ts
        if len(rts) > self.raw_cap:
            self._fold(stored)
        cutoff = newest - self.retention  # pruned after folding: a bucket goes by its start
        bix: list[Any] = stored[_BIX]
        due = False
        if rts:
            oldest: int = rts[0]
            due = oldest <= cutoff
        if not due and bix:
            first_bucket: int = bix[0]
            due = first_bucket * self.granularity <= cutoff
        if due:
            self._prune(stored, cutoff)
            if not rts and not bix:
                return value, None, True
        return value, stored, True

    def peek(self, stored: Any, event: Event, ts: int) -> Any:
        """The aggregate over `(ts - window, ts]` of what is stored, without the event itself."""
        return self._empty if stored is None else self._query(stored, ts)

    def value_at(self, stored: Any, ts: int) -> Any:
        """The aggregate over `(ts - window, ts]` of what is stored now; records nothing, changes nothing."""
        return self._empty if stored is None else self._query(stored, ts)

    def expire(self, stored: Any, now_ts: int) -> Any:
        """Drop events older than `now_ts - window - lateness`; None when nothing is left."""
        if stored is None:
            return None
        self._prune(stored, now_ts - self.retention)
        if not stored[_RTS] and not stored[_BIX]:
            return None
        return stored

    def next_cleanup(self, stored: Any) -> int | None:
        """Newest recorded ts + window + lateness: from then on nothing of this entry can be needed."""
        if stored is None:
            return None
        return int(stored[_MAX]) + self.retention

    # -- internals ---------------------------------------------------------------------------------------
    def _single(self, v: Any) -> Any:
        kind = self._kind
        if kind == "count" or kind == "distinct_count":
            return 1
        if kind == "avg":
            return v / 1 if isinstance(v, int) else v
        return v

    def _insert(self, stored: list[Any], ts: int, v: Any) -> None:
        if ts < stored[_FRONT]:
            self._add_to_bucket(stored, ts // self.granularity, v)
            return
        _insert_in_order(stored[_RTS], stored[_RV], ts, v)

    def _add_to_bucket(self, stored: list[Any], k: int, v: Any) -> None:
        bix, ba, bb = stored[_BIX], stored[_BA], stored[_BB]
        i = bisect_left(bix, k)
        kind = self._kind
        if i < len(bix) and bix[i] == k:
            if kind == "count":
                ba[i] += 1
            elif kind == "sum":
                ba[i] += v
            elif kind == "avg":
                ba[i] += v
                bb[i] += 1
            elif kind == "min":
                if v < ba[i]:
                    ba[i] = v
            elif kind == "max":
                if v > ba[i]:
                    ba[i] = v
            elif v not in ba[i] and len(ba[i]) < self.max_values:
                ba[i].append(v)
            return
        bix.insert(i, k)
        if kind == "count":
            ba.insert(i, 1)
        elif kind == "distinct_count":
            ba.insert(i, [v])
        else:
            ba.insert(i, v)
            if kind == "avg":
                bb.insert(i, 1)

    def _fold(self, stored: list[Any]) -> None:
        """Fold the oldest raw events, a whole bucket at a time, until at most `raw_cap` remain raw."""
        g = self.granularity
        rts, rv = stored[_RTS], stored[_RV]
        bix, ba = stored[_BIX], stored[_BA]
        bb = stored[_BB]
        kind = self._kind
        while len(rts) > self.raw_cap:
            k = rts[0] // g
            front = (k + 1) * g
            n = bisect_left(rts, front)
            vals: list[Any] = rv[:n] if rv is not None else []
            del rts[:n]
            if rv is not None:
                del rv[:n]
            stored[_FRONT] = front
            # every bucket is older than the old frontier, and the old frontier <= rts[0]: k goes last
            bix.append(k)
            if kind == "count":
                ba.append(n)
            elif kind == "sum":
                ba.append(sum(vals))
            elif kind == "avg":
                ba.append(sum(vals))
                bb.append(n)
            elif kind == "min":
                ba.append(min(vals))
            elif kind == "max":
                ba.append(max(vals))
            else:
                ba.append(list(dict.fromkeys(vals))[: self.max_values])

    def _prune(self, stored: list[Any], cutoff: int) -> None:
        rts = stored[_RTS]
        if rts and rts[0] <= cutoff:
            i = bisect_right(rts, cutoff)
            del rts[:i]
            if stored[_RV] is not None:
                del stored[_RV][:i]
        bix = stored[_BIX]
        if bix and bix[0] * self.granularity <= cutoff:
            i = bisect_right(bix, cutoff // self.granularity)
            del bix[:i]
            del stored[_BA][:i]
            if stored[_BB] is not None:
                del stored[_BB][:i]

    def _query(self, stored: list[Any], ts: int) -> Any:
        start = ts - self.window
        rts: list[Any] = stored[_RTS]
        lo = bisect_right(rts, start)
        hi = len(rts) if _none_after(rts, ts) else bisect_right(rts, ts)
        bix = stored[_BIX]
        if bix:
            g = self.granularity
            blo = bisect_right(bix, start // g)
            bhi = bisect_right(bix, ts // g)
        else:
            blo = bhi = 0
        kind = self._kind
        rv = stored[_RV]
        if kind == "count":
            return hi - lo + (sum(stored[_BA][blo:bhi]) if bhi > blo else 0)
        if kind == "sum":
            total = sum(rv[lo:hi]) if hi > lo else 0
            return total + sum(stored[_BA][blo:bhi]) if bhi > blo else total
        if kind == "avg":
            n = hi - lo
            total = sum(rv[lo:hi]) if n else 0
            if bhi > blo:
                total += sum(stored[_BA][blo:bhi])
                n += sum(stored[_BB][blo:bhi])
            return total / n if n else None
        if kind == "min" or kind == "max":
            pick = min if kind == "min" else max
            best = pick(rv[lo:hi]) if hi > lo else None
            if bhi > blo:
                b = pick(stored[_BA][blo:bhi])
                best = b if best is None else pick(best, b)
            return best
        if bhi == blo:
            return len(set(rv[lo:hi])) if hi - lo > 1 else hi - lo
        seen = set(rv[lo:hi])
        for vals in stored[_BA][blo:bhi]:
            seen.update(vals)
        return len(seen)


# last_n state: [ts list, value list or None]


class LastNFeature(Feature):
    """A statistic over the last `n` recorded events within the horizon (see the module docstring)."""

    def __init__(self, spec: FeatureSpec, lateness: int = 0) -> None:
        super().__init__(spec, lateness)
        self.n: int = spec.n if spec.n is not None else 1
        self.stat = str(spec.stat)
        self.min_events = spec.min_events if spec.min_events is not None else self.n
        self._interval = self.stat == "avg_interval"

    def _value_of(self, event: Event) -> tuple[bool, Any]:
        flt = self._filter
        if flt is not None and not flt(event):
            return False, None
        if self._interval:
            return True, None
        v = field_of(event, self._fld)
        return type(v) in _NUMBER_TYPES and v == v, v

    def update(self, stored: Any, event: Event, ts: int) -> tuple[Any, Any, bool]:
        """The statistic over the last n recorded events in `(ts - window, ts]`, the current one included."""
        if self._interval and self._filter is None:
            rec, v = True, None  # every event counts (bot cadence): no call
        else:
            rec, v = self._value_of(event)
        if stored is None:
            if not rec:
                return None, None, False
            stored = [[ts], None if self._interval else [v]]
            return self._stat(stored, ts), stored, True
        if not rec:
            return self._stat(stored, ts), stored, False
        # (typed locals: the compiled core indexes them natively)
        tss: list[Any] = stored[0]
        vals: list[Any] | None = stored[1]
        if tss and _none_after(tss, ts):  # in order: _insert_in_order's common case, inlined
            tss.append(ts)
            if vals is not None:
                vals.append(v)
        else:
            _insert_in_order(tss, vals, ts, v)
        if len(tss) > self.n:
            del tss[0]
            if vals is not None:
                del vals[0]
        value = self._stat(stored, ts)
        last: int = tss[-1]
        oldest: int = tss[0]
        cutoff = last - self.retention
        if oldest <= cutoff:
            self._prune(stored, cutoff)
        return value, stored if tss else None, True

    def peek(self, stored: Any, event: Event, ts: int) -> Any:
        """The statistic over the last n stored events in `(ts - window, ts]`, without the event itself."""
        return None if stored is None else self._stat(stored, ts)

    def _stat(self, stored: list[Any], ts: int) -> Any:
        tss: list[Any] = stored[0]
        vals = stored[1]  # (None for avg_interval, which reads no value)
        if len(tss) < self.min_events:
            return None  # fewer events than needed, whatever the window (the common case)
        hi = len(tss) if _none_after(tss, ts) else bisect_right(tss, ts)
        lo = max(bisect_right(tss, ts - self.window), hi - self.n)
        k = hi - lo
        if k < self.min_events or k == 0:
            return None
        stat = self.stat
        if stat == "avg_interval":
            return (tss[hi - 1] - tss[lo]) / (k - 1) if k > 1 else None
        if stat == "sum":
            return sum(vals[lo:hi])
        if stat == "avg":
            return sum(vals[lo:hi]) / k
        if stat == "min":
            return min(vals[lo:hi])
        return max(vals[lo:hi])

    def _prune(self, stored: list[Any], cutoff: int) -> None:
        tss: list[Any] = stored[0]
        vals: list[Any] | None = stored[1]
        i = bisect_right(tss, cutoff)
        del tss[:i]
        if vals is not None:
            del vals[:i]

    def expire(self, stored: Any, now_ts: int) -> Any:
        """Drop events older than `now_ts - window - lateness`; None when nothing is left."""
        if stored is None:
            return None
        self._prune(stored, now_ts - self.retention)
        return stored if stored[0] else None

    def next_cleanup(self, stored: Any) -> int | None:
        """Newest recorded ts + window + lateness."""
        if stored is None or not stored[0]:
            return None
        return int(stored[0][-1]) + self.retention


# first_seen state: [newest recorded ts, {value: (first ts, last ts)}]


class FirstSeenFeature(Feature):
    """Whether the event's `field` value is new for the key within the horizon (see the module docstring)."""

    def __init__(self, spec: FeatureSpec, lateness: int = 0) -> None:
        super().__init__(spec, lateness)
        self.max_values = spec.max_values or DEFAULT_MAX_VALUES

    def update(self, stored: Any, event: Event, ts: int) -> tuple[Any, Any, bool]:
        """True if the value was not recorded in `(ts - window, ts]` before this event; None if no value."""
        v = field_of(event, self._fld)
        if v is None or type(v) not in _VALUE_TYPES or v != v:
            return None, stored, False
        if type(v) is str and len(v) > MAX_STORED_STRING:
            v = stored_string(v)  # bounded state: a long value is kept as a fixed-size token
        elif v is True or v is False:
            v = BOOL_KEYS[v]  # true is not 1: a value apart
        flt = self._filter
        rec = flt is None or flt(event)
        # ``ts`` made an object once, the stored times compared as typed locals (see WindowedFeature.update)
        ts_obj: object = ts
        if stored is None:
            return True, ([ts_obj, {v: (ts_obj, ts_obj)}] if rec else None), rec
        seen: dict[Any, Any] = stored[1]
        fl = seen.get(v)
        first = last = 0
        if fl is None:
            value = True
        else:
            first = fl[0]
            last = fl[1]
            if last <= ts:
                value = last <= ts - self.window
            else:
                value = first > ts  # seen only after this event: new; seen before and after: not new
        if not rec:
            return value, stored, False
        newest: int = stored[0]
        changed = ts > newest
        if changed:
            stored[0] = ts_obj
            newest = ts
        if fl is None:
            changed = True
            seen[v] = (ts_obj, ts_obj)
            if len(seen) > self.max_values:
                self._prune(stored, newest - self.retention)
                if len(seen) > self.max_values:
                    del seen[min(seen, key=lambda x: seen[x][1])]
        elif ts < first:
            seen[v] = (ts_obj, fl[1])
            changed = True
        elif ts > last:
            seen[v] = (fl[0], ts_obj)
            changed = True
        return value, stored, changed

    def peek(self, stored: Any, event: Event, ts: int) -> Any:
        """Whether the value is new against what is stored (None: no usable value); records nothing."""
        v = field_of(event, self._fld)
        if v is None or type(v) not in _VALUE_TYPES or v != v:
            return None
        if type(v) is str and len(v) > MAX_STORED_STRING:
            v = stored_string(v)
        elif v is True or v is False:
            v = BOOL_KEYS[v]
        fl = None if stored is None else stored[1].get(v)
        if fl is None:
            return True
        first, last = fl
        return last <= ts - self.window if last <= ts else first > ts

    def _prune(self, stored: list[Any], cutoff: int) -> None:
        seen = stored[1]
        old = [v for v, (_, last) in seen.items() if last <= cutoff]
        for v in old:
            del seen[v]

    def expire(self, stored: Any, now_ts: int) -> Any:
        """Forget values last seen at or before `now_ts - window - lateness`; None when none is left."""
        if stored is None:
            return None
        self._prune(stored, now_ts - self.retention)
        return stored if stored[1] else None

    def next_cleanup(self, stored: Any) -> int | None:
        """Newest recorded ts + window + lateness."""
        if stored is None:
            return None
        return int(stored[0]) + self.retention


class TimeSinceFeature(Feature):
    """Milliseconds since the previous recorded event within the horizon (see the module docstring)."""

    def peek(self, stored: Any, event: Event, ts: int) -> Any:
        """`ts` minus the newest stored ts in `(ts - window, ts]`, or None; records nothing."""
        if not stored:
            return None
        hi = len(stored) if stored[-1] <= ts else bisect_right(stored, ts)
        return ts - stored[hi - 1] if hi and stored[hi - 1] > ts - self.window else None

    def update(self, stored: Any, event: Event, ts: int) -> tuple[Any, Any, bool]:
        """`ts` minus the newest recorded ts in `(ts - window, ts]` recorded before this event, or None."""
        if stored is None:
            value = None
        else:
            hi = len(stored) if stored[-1] <= ts else bisect_right(stored, ts)
            value = ts - stored[hi - 1] if hi and stored[hi - 1] > ts - self.window else None
        flt = self._filter
        if flt is not None and not flt(event):
            return value, stored, False
        if stored is None:
            return value, [ts], True
        if ts >= stored[-1]:
            stored.append(ts)
        else:
            insort(stored, ts)
        if len(stored) > TIME_SINCE_KEEP:
            del stored[0]
        cutoff = stored[-1] - self.retention
        if stored[0] <= cutoff:
            del stored[: bisect_right(stored, cutoff)]
        return value, stored, True

    def expire(self, stored: Any, now_ts: int) -> Any:
        """Drop timestamps at or before `now_ts - window - lateness`; None when none is left."""
        if stored is None:
            return None
        del stored[: bisect_right(stored, now_ts - self.retention)]
        return stored or None

    def next_cleanup(self, stored: Any) -> int | None:
        """Newest recorded ts + window + lateness."""
        if not stored:
            return None
        return int(stored[-1]) + self.retention


def compile_feature(spec: FeatureSpec, *, lateness: int = 0, raw_cap: int = DEFAULT_RAW_CAP) -> Feature:
    """Build the runtime of `spec`.

    `lateness` is the engine's allowed lateness (ms): how far behind the newest event of a key an event may be
    and still get its exact value. `raw_cap` (windowed kinds) is how many events a key keeps one by one before
    folding the oldest into buckets; it changes precision under load, not the meaning of the stored data.
    """
    if spec.kind in WINDOWED_KINDS:
        return WindowedFeature(spec, lateness, raw_cap)
    if spec.kind == "last_n":
        return LastNFeature(spec, lateness)
    if spec.kind == "first_seen":
        return FirstSeenFeature(spec, lateness)
    return TimeSinceFeature(spec, lateness)


def stored_bytes(stored: Any) -> int:
    """How many bytes `stored` takes once pickled (what a Flink MapState entry holds, key not included)."""
    if stored is None:
        return 0
    return len(pickle.dumps(stored, protocol=pickle.HIGHEST_PROTOCOL))
