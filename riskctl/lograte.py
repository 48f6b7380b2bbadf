"""A logging filter that lets a flood of like lines through at most once an interval, with their count
(standard library only).

A line logged per request refused, or per connection attempt that fails, floods the log (and its disk) as
fast as the requests or the attempts come. :class:`OncePer` lets each kind of line (its key) log at most once
every ``every_s`` seconds; the next line of that kind says how many were not logged meanwhile, and the count
of a flood that stopped is logged too (:meth:`OncePer.flush`), else the last part of every flood would go
unsaid. Used by the console (uvicorn's refusals and its own warnings:
:func:`riskctl.console.server.quiet_logs`) and by ``riskctl serve`` (librdkafka's lines:
:data:`riskctl.serve.kafka_bus.KAFKA_LOG`); the two differ in what makes lines alike (:func:`by_reason`,
:func:`by_shape`), in which levels are limited and in their words.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["LEFT_OUT", "NOT_LOGGED", "OncePer", "Wording", "by_reason", "by_shape"]

_DIGITS = re.compile(r"[0-9]+")


def by_reason(record: logging.LogRecord) -> str:
    """Lines are alike when their format string is: the code's fixed texts (uvicorn's ``Exceeded concurrency
    limit.``, the console's ``console: %s %s: MySQL is away: %s``), whatever their arguments."""
    return str(record.msg)


def by_shape(record: logging.LogRecord) -> str:
    """Lines are alike when their text is, numbers aside: for lines that come formatted already, whose
    format string says nothing (confluent-kafka logs each of librdkafka's lines as ``%s [%s] %s``)."""
    return _DIGITS.sub("#", record.getMessage())


class Wording(NamedTuple):
    """What a line says of the lines not logged before it (``{n}``: how many, ``{s}``: in how many s)."""

    #: the next line of the kind, logged in its own time
    more: str
    #: the last line held back, logged by :meth:`OncePer.flush`
    last: str


#: the console's words
NOT_LOGGED = Wording(
    "{n} more not logged in the {s:.0f} s before", "the last of {n} not logged in the {s:.0f} s before"
)
#: serve's words for librdkafka's lines, alike but not the same (their numbers differ)
LEFT_OUT = Wording("{n} more like it left out", "the last of {n} like it left out in the {s:.0f} s before")


class OncePer(logging.Filter):
    """On a logger: a line of each kind (``key``) at or below ``max_level`` logs at most once every
    ``every_s`` seconds; the next line of that kind ends with the count of those not logged (``wording``).
    Lines above ``max_level`` all pass (the console's errors: an exception in the application).

    The count was logged only with the kind's next line: the last count of a flood that stopped never was.
    :meth:`flush` logs it (the last line not logged, with the count) once the kind's interval is over, from a
    daemon thread while lines are held back (``background``: real time, ``clock`` being time.monotonic), and
    every count still held at the end (``final``: at shutdown)."""

    #: kinds remembered at most; beyond, the memory starts afresh (a line may then pass early once)
    MAX_KEYS = 1000

    def __init__(
        self,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        key: Callable[[logging.LogRecord], str] = by_reason,
        max_level: int = logging.WARNING,
        wording: Wording = NOT_LOGGED,
        background: bool = False,
    ) -> None:
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self.key = key
        self.max_level = max_level
        self.wording = wording
        self.background = background
        self._lock = threading.Lock()  # lines come from any thread (librdkafka's: each client's poll)
        #: key -> (when its last line was logged, lines not logged since, the last of them)
        self._seen: dict[str, tuple[float, int, logging.LogRecord | None]] = {}
        self._flushing = False  # a background flush thread runs

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > self.max_level or getattr(record, "_once_per_count", False):
            return True
        key = self.key(record)
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.every_s:
                self._seen[key] = (seen[0], seen[1] + 1, record)
                if self.background and not self._flushing:
                    self._flushing = True
                    threading.Thread(target=self._flush_later, name="riskctl-log-counts", daemon=True).start()
                return False
            if seen is None and len(self._seen) >= self.MAX_KEYS:
                self._seen.clear()
            self._seen[key] = (now, 0, None)
        if seen is not None and seen[1]:
            # the format string grows, the arguments stay: formatted later, as the line would have been
            record.msg = f"{record.msg} ({self.wording.more.format(n=seen[1], s=now - seen[0])})"
        return True

    def flush(self, *, final: bool = False) -> int:
        """Log the count of each kind whose interval is over (``final``: of every kind) with lines not
        logged: the last of them, ending with ``wording.last``; the kind's next interval starts then. Returns
        the lines logged."""
        now = self.clock()
        due: list[tuple[logging.LogRecord, int, float]] = []
        with self._lock:
            for key, (at, held, last) in list(self._seen.items()):
                if held and last is not None and (final or now - at >= self.every_s):
                    due.append((last, held, now - at))
                    self._seen[key] = (now, 0, None)
        for last, held, took in due:
            line = logging.makeLogRecord(last.__dict__)
            line.msg = f"{last.msg} ({self.wording.last.format(n=held, s=took)})"
            line._once_per_count = True  # passes this filter
            logging.getLogger(last.name).handle(line)
        return len(due)

    def _flush_later(self) -> None:
        """The background flush: at the end of the earliest interval with lines held back, until none is."""
        while True:
            with self._lock:
                ends = [at + self.every_s for at, held, _ in self._seen.values() if held]
                if not ends:
                    self._flushing = False
                    return
                wait = min(ends) - self.clock()
            if wait > 0:
                time.sleep(wait)
            self.flush()
