"""The definition of a feature (:class:`FeatureSpec`): its kind, field, window, filter and bounds, validated
when the rule is loaded. The runtime that computes it per key is :mod:`riskctl.core.features`.

Two rules whose features have equal definitions share one state (:attr:`FeatureSpec.state_key`); a changed
definition gets a fresh one.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from functools import cached_property
from typing import Any

from riskctl.core.errors import RuleError

Event = Mapping[str, Any]
Filter = Callable[[Event], bool]

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

WINDOWED_KINDS = ("count", "sum", "avg", "min", "max", "distinct_count")
KINDS = (*WINDOWED_KINDS, "last_n", "first_seen", "time_since")
LAST_N_STATS = ("avg_interval", "avg", "sum", "min", "max")

MAX_WINDOW = 400 * DAY
MAX_N = 1000
DEFAULT_RAW_CAP = 64
DEFAULT_MAX_VALUES = 100
MAX_VALUES_LIMIT = 10_000
#: the most buckets a ``granularity`` may cut a window into (the default cuts it into at most 60): a
#: windowed feature's value is summed over the buckets of its window at every event, so ``granularity: 1``
#: with ``window: 400d`` made each event of a busy key cost as many steps as it had events in the window
#: (2.2 ms per event for a distinct_count after 30,000 events, growing; 0.003 ms at the default)
MAX_BUCKETS = 1_000
#: the most stored values the features of one rule may read for one event (:attr:`FeatureSpec.reads`): a
#: ``distinct_count`` joins the values of every bucket of its window at every event, so its buckets times its
#: ``max_values`` multiply (1,000 buckets of 10,000 values were accepted: about 10 million values per event,
#: ~0.45 s); at this bound a rule's features read at most 100,000 (4.5 ms per event, measured)
MAX_FEATURE_READS = 100_000
TIME_SINCE_KEEP = 4
DEFAULT_HORIZON = {"last_n": 30 * DAY, "first_seen": 90 * DAY, "time_since": 30 * DAY}
_GRANULARITY_LADDER = (
    1, 2, 5, 10, 20, 50, 100, 200, 500,
    SECOND, 2 * SECOND, 5 * SECOND, 10 * SECOND, 15 * SECOND, 30 * SECOND,
    MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
    HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY,
)  # fmt: skip


def default_granularity(window: int) -> int:
    """The bucket size used for `window` when the spec gives none: the first ladder step >= window / 60."""
    target = -(-window // 60)
    for step in _GRANULARITY_LADDER:
        if step >= target:
            return step
    return -(-target // DAY) * DAY


def is_int(value: object) -> bool:
    """An int that is not a bool (``True`` is an int to Python, but not a count or a duration)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class FeatureSpec:
    """The definition of one feature, validated at construction.

    `filter` is the compiled predicate and `filter_text` its source; they come together or not at all. Only
    the text takes part in equality and in `state_key`, so two rules with the same definition share a state.
    """

    kind: str
    field: str | None = None
    window: int | None = None
    filter: Filter | None = dc_field(default=None, compare=False, repr=False)
    filter_text: str | None = None
    n: int | None = None
    stat: str | None = None
    min_events: int | None = None
    granularity: int | None = None
    max_values: int | None = None

    def __post_init__(self) -> None:
        kind = self.kind
        if kind not in KINDS:
            close = difflib.get_close_matches(str(kind), KINDS, n=1)
            msg = f"unknown feature kind {kind!r}; expected one of {', '.join(KINDS)}"
            raise RuleError(msg, field="kind", suggestion=close[0] if close else None)
        self._check_field()
        self._check_window()
        self._check_filter()
        self._check_only_for("n", self.n, ("last_n",))
        self._check_only_for("stat", self.stat, ("last_n",))
        self._check_only_for("min_events", self.min_events, ("last_n",))
        self._check_only_for("granularity", self.granularity, WINDOWED_KINDS)
        self._check_only_for("max_values", self.max_values, ("distinct_count", "first_seen"))
        if kind == "last_n":
            self._check_last_n()
        if self.granularity is not None:
            if not is_int(self.granularity) or self.granularity <= 0:
                msg = f"granularity must be a positive number of milliseconds, got {self.granularity!r}"
                raise RuleError(msg, field="granularity")
            if self.window is not None and self.granularity > self.window:
                msg = f"granularity ({self.granularity} ms) is longer than the window ({self.window} ms)"
                raise RuleError(msg, field="granularity")
            if self.window is not None and self.window > self.granularity * MAX_BUCKETS:
                least = -(-self.window // MAX_BUCKETS)
                msg = (
                    f"granularity ({self.granularity} ms) cuts the window ({self.window} ms) into more than "
                    f"{MAX_BUCKETS:,} buckets, summed at every event: give at least {least} ms, or leave "
                    "it out (the default cuts a window into at most 60)"
                )
                raise RuleError(msg, field="granularity")
        if self.max_values is not None and (
            not is_int(self.max_values) or not 1 <= self.max_values <= MAX_VALUES_LIMIT
        ):
            msg = f"max_values must be an integer from 1 to {MAX_VALUES_LIMIT}, got {self.max_values!r}"
            raise RuleError(msg, field="max_values")
        if kind == "distinct_count" and self.reads > MAX_FEATURE_READS:
            buckets = self.window_buckets
            most = MAX_FEATURE_READS // buckets
            least = -(-self.effective_window // (MAX_FEATURE_READS // self.effective_max_values))
            msg = (
                f"max_values ({self.effective_max_values:,}) x the {buckets:,} buckets of the window "
                f"(granularity {self.effective_granularity} ms) is {self.reads:,} values joined at every "
                f"event, over the {MAX_FEATURE_READS:,} allowed (MAX_FEATURE_READS): give max_values at most "
                f"{most:,}, or a granularity of at least {least} ms"
            )
            raise RuleError(msg, field="max_values")

    def _check_field(self) -> None:
        kind, fld = self.kind, self.field
        needs_field = kind in ("sum", "avg", "min", "max", "distinct_count", "first_seen") or (
            kind == "last_n" and self.stat not in (None, "avg_interval")
        )
        if fld is not None and (not isinstance(fld, str) or not fld):
            msg = f"field must be a non-empty event field name, got {fld!r}"
            raise RuleError(msg, field="field")
        if needs_field and fld is None:
            what = f"{kind} {self.stat}" if kind == "last_n" else kind
            msg = f"a {what} feature needs the event field it aggregates"
            raise RuleError(msg, field="field")
        if fld is not None and (kind == "time_since" or (kind == "last_n" and self.stat == "avg_interval")):
            msg = f"a {kind} feature looks at event times only: remove the field, pick events with a filter"
            raise RuleError(msg, field="field")

    def _check_window(self) -> None:
        window = self.window
        if window is None:
            if self.kind in WINDOWED_KINDS:
                msg = f"a {self.kind} feature needs a window (milliseconds, e.g. 300000 for 5 minutes)"
                raise RuleError(msg, field="window")
            return
        if not is_int(window) or window <= 0:
            msg = f"window must be a positive number of milliseconds, got {window!r}"
            raise RuleError(msg, field="window")
        if window > MAX_WINDOW:
            msg = f"window of {window} ms is longer than the {MAX_WINDOW // DAY} days supported"
            raise RuleError(msg, field="window")

    def _check_filter(self) -> None:
        if self.filter is not None and not callable(self.filter):
            msg = f"filter must be a compiled predicate (callable), got {type(self.filter).__name__}"
            raise RuleError(msg, field="filter")
        if (self.filter is None) != (self.filter_text is None):
            msg = "filter and filter_text go together: the text identifies the feature's state"
            raise RuleError(msg, field="filter")
        if self.filter_text is not None and not isinstance(self.filter_text, str):
            msg = f"filter_text must be the filter's source text, got {self.filter_text!r}"
            raise RuleError(msg, field="filter")

    def _check_only_for(self, name: str, value: object, kinds: tuple[str, ...]) -> None:
        if value is not None and self.kind not in kinds:
            msg = f"{name} does not apply to a {self.kind} feature (only to {', '.join(kinds)})"
            raise RuleError(msg, field=name)

    def _check_last_n(self) -> None:
        n, stat, min_events = self.n, self.stat, self.min_events
        if stat not in LAST_N_STATS:
            close = difflib.get_close_matches(str(stat), LAST_N_STATS, n=1)
            msg = f"last_n needs a stat, one of {', '.join(LAST_N_STATS)}; got {stat!r}"
            raise RuleError(msg, field="stat", suggestion=close[0] if close else None)
        if n is None or not is_int(n) or not 1 <= n <= MAX_N:
            msg = f"last_n needs n, an integer from 1 to {MAX_N}; got {n!r}"
            raise RuleError(msg, field="n")
        least = 2 if stat == "avg_interval" else 1
        if stat == "avg_interval" and n < 2:
            msg = "avg_interval needs n >= 2 (an interval takes two events)"
            raise RuleError(msg, field="n")
        if min_events is not None and (not is_int(min_events) or not least <= min_events <= n):
            msg = f"min_events must be an integer from {least} to n ({n}), got {min_events!r}"
            raise RuleError(msg, field="min_events")

    @property
    def effective_window(self) -> int:
        """The window, or for last_n, first_seen and time_since the default horizon when none was given."""
        return self.window if self.window is not None else DEFAULT_HORIZON[self.kind]

    @property
    def effective_granularity(self) -> int:
        """The bucket size of a windowed kind (0 for the other kinds)."""
        if self.kind not in WINDOWED_KINDS:
            return 0
        if self.granularity is not None:
            return self.granularity
        return default_granularity(self.effective_window)

    @property
    def effective_max_values(self) -> int:
        """The cap on stored values of a distinct_count (per bucket) or first_seen (0 for the other kinds)."""
        if self.kind not in ("distinct_count", "first_seen"):
            return 0
        return self.max_values or DEFAULT_MAX_VALUES

    @property
    def window_buckets(self) -> int:
        """How many buckets one event's value reads at most (a windowed kind; 0 for the others)."""
        if self.kind not in WINDOWED_KINDS:
            return 0
        return -(-self.effective_window // self.effective_granularity)

    @property
    def reads(self) -> int:
        """The most stored values computing this feature reads for one event, besides the ``raw_cap`` (64)
        events a windowed kind keeps one by one: its buckets (times ``max_values`` for a distinct_count), the
        ``n`` events of a last_n, twice the ``max_values`` of a first_seen (a new value over the cap scans
        them to evict one), 4 timestamps for time_since. Bounded per rule by :data:`MAX_FEATURE_READS`."""
        kind = self.kind
        if kind in WINDOWED_KINDS:
            per = self.effective_max_values if kind == "distinct_count" else 1
            return self.window_buckets * per
        if kind == "last_n":
            return self.n or 1
        if kind == "first_seen":
            return 2 * self.effective_max_values
        return TIME_SINCE_KEEP

    @cached_property  # every rule change's plan reads every feature's
    def state_key(self) -> str:
        """A short stable name for this definition's state: equal definitions share it, changed ones do not.

        Derived from everything that changes what is stored or what it means (kind, field, window, filter
        text, n, stat, granularity, caps), never from the rule id. Defaults are resolved first, so a spec
        spelling out a default gets the same key as one leaving it out.
        """
        parts = (
            "v1",
            self.kind,
            self.field,
            self.effective_window,
            self.filter_text,
            self.n,
            self.stat,
            self.effective_granularity,
            self.max_values or (DEFAULT_MAX_VALUES if self.kind in ("distinct_count", "first_seen") else 0),
        )
        digest = hashlib.blake2b(repr(parts).encode(), digest_size=6).hexdigest()
        return f"{self.kind}.{digest}"
