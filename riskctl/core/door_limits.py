"""The door's limits (:class:`Limits`, the ``job.*`` settings of the same names) and their bounds.

Apart from :mod:`riskctl.core.door`, which the compiled core compiles: a compiled class holds its fields to
their declared types itself, with its own message (``int object expected; got str``), where
:meth:`Limits.__post_init__` names the setting and the value. Here it stays a plain dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass

#: what a dead letter may weigh at most: below the Kafka producer's default ``max.request.size`` (1 MiB),
#: which the job's sinks set explicitly, with room for the record key and the request's own overhead
MAX_DEAD_LETTER_BYTES = 1_000_000
#: the smallest ``dead_letter_max_bytes`` accepted: room for the reason, field and coordinates
MIN_DEAD_LETTER_BYTES = 4_096
#: the largest ``max_clock_skew_ms``: 100 years (of 365 days). The job's source tests a ``ts`` with one read
#: of it by clamping it to [-1, MAX_TS + 1] first (riskctl.flink.job._events), which holds while MAX_TS + 1
#: minus the skew is ahead of the wall clock: until the year 9899 with this bound
MAX_CLOCK_SKEW_MS = 100 * 365 * 86_400_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits at the door (``job.*`` settings of the same names, documented in docs/config.md)."""

    max_event_bytes: int = 65_536
    max_depth: int = 16
    max_string_chars: int = 4_096
    max_clock_skew_ms: int = 300_000
    dead_letter_max_bytes: int = 262_144

    def __post_init__(self) -> None:
        for name in ("max_event_bytes", "max_depth", "max_string_chars", "max_clock_skew_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"{name} must be a positive integer, got {value!r}"
                raise ValueError(msg)
        if self.max_clock_skew_ms > MAX_CLOCK_SKEW_MS:
            skew = self.max_clock_skew_ms
            msg = f"max_clock_skew_ms must be at most {MAX_CLOCK_SKEW_MS} (100 years), got {skew}"
            raise ValueError(msg)
        value = self.dead_letter_max_bytes
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"dead_letter_max_bytes must be an integer, got {value!r}"
            raise ValueError(msg)
        if not MIN_DEAD_LETTER_BYTES <= value <= MAX_DEAD_LETTER_BYTES:
            msg = (
                f"dead_letter_max_bytes must be between {MIN_DEAD_LETTER_BYTES} and {MAX_DEAD_LETTER_BYTES} "
                f"(the sinks' max.request.size is 1 MiB), got {value}"
            )
            raise ValueError(msg)


DEFAULT_LIMITS = Limits()
