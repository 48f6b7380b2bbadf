"""Rate limits and digests, with time as an argument."""

from __future__ import annotations

from riskctl.alerts.ratelimit import DigestWindow
from riskctl.alerts.settings import RateLimit


def test_no_limit_admits_everything() -> None:
    w: DigestWindow[int] = DigestWindow(None)
    assert all(w.admit(i, 0.0) for i in range(1000))
    assert w.deadline() is None and w.due(1e9) == []


def test_beyond_the_limit_items_are_held_until_the_window_ends() -> None:
    w: DigestWindow[int] = DigestWindow(RateLimit(max=3, window_s=10))
    assert [w.admit(i, 100.0 + i) for i in range(6)] == [True, True, True, False, False, False]
    assert w.deadline() == 110.0
    assert w.due(109.9) == []
    assert w.due(110.0) == [3, 4, 5]
    # the digest opened a new window and counts in it: 2 more go through one by one, then held again
    assert [w.admit(i, 111.0) for i in (6, 7, 8)] == [True, True, False]
    assert w.due(119.9) == [] and w.due(120.0) == [8]


def test_a_quiet_window_ends_and_the_count_starts_over() -> None:
    w: DigestWindow[int] = DigestWindow(RateLimit(max=1, window_s=5))
    assert w.admit(1, 0.0) and not w.admit(2, 1.0)
    assert w.due(5.0) == [2]
    assert w.admit(3, 20.0)  # a later window: the count starts over
    assert not w.admit(4, 20.5)


def test_while_items_are_held_later_ones_join_the_digest_in_order() -> None:
    w: DigestWindow[str] = DigestWindow(RateLimit(max=1, window_s=1))
    assert w.admit("a", 0.0)
    assert not w.admit("b", 0.1)
    assert not w.admit("c", 5.0)  # the window ended but the digest has not gone yet: held, order kept
    assert w.due(5.0) == ["b", "c"]
