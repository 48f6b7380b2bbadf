"""Rate limits per channel, with the excess grouped into one digest per window.

Fixed windows of ``window_s`` seconds starting at the first message: the first ``max`` items of a window
are sent one by one; later ones are held and go out together as one digest when the window ends (the next
window starts then, empty). Time is an argument (seconds, monotonic): deterministic in tests.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from riskctl.alerts.settings import RateLimit

T = TypeVar("T")


class DigestWindow(Generic[T]):
    """One channel's limit: :meth:`admit` says whether an item may go now; held items come back from
    :meth:`due` when their window has ended.
    """

    def __init__(self, limit: RateLimit | None) -> None:
        self.limit = limit
        self.window_start: float | None = None
        self.sent = 0
        self.held: list[T] = []

    def _roll(self, now: float) -> None:
        if self.limit is None or self.window_start is None:
            return
        if now >= self.window_start + self.limit.window_s and not self.held:
            self.window_start = None
            self.sent = 0

    def admit(self, item: T, now: float) -> bool:
        """True: send ``item`` now. False: it was held for the digest of this window."""
        if self.limit is None:
            return True
        self._roll(now)
        if self.window_start is None:
            self.window_start = now
            self.sent = 0
        if self.sent < self.limit.max and not self.held:
            self.sent += 1
            return True
        self.held.append(item)
        return False

    def deadline(self) -> float | None:
        """When the held items are due (the end of their window), or None when nothing is held."""
        if not self.held or self.limit is None or self.window_start is None:
            return None
        return self.window_start + self.limit.window_s

    def due(self, now: float) -> list[T]:
        """The held items when their window has ended (and a new window begins with the digest as its first
        message); else an empty list.
        """
        end = self.deadline()
        if end is None or now < end:
            return []
        held, self.held = self.held, []
        self.window_start = now
        self.sent = 1  # the digest itself counts in the new window
        return held
