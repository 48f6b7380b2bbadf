"""The demo's clock events: they move event time past the absence window, and the job's door takes them.

They were 6 minutes ahead of the last event, sent at once: the door refuses an event more than
job.max_clock_skew_ms (5 minutes) ahead of the job's clock, so both were dead-lettered, no absence alert was
released (`scripts/run`: new_device_no_2fa caught 0 of 17) and the demo waited for their decisions until its
deadline (60 s). Event time now moves at most to the job's clock (job.event_time_past_clock false): the demo
stamps its traffic behind the clock, so that its clock events, sent at once, are not ahead of it.
"""

from __future__ import annotations

import json

import pytest

from riskctl.cli.demo import TRAFFIC_BEHIND_MS, _clock_events, clock_wait_s
from riskctl.core.door import DEFAULT_LIMITS
from riskctl.core.events import parse_event

LAST_TS = 1_800_000_000_000
ABSENCE_MS = 5 * 60 * 1000  # rules/new_device_2fa.yaml: within 5m
DEMO_LATENESS_MS = 2_000  # the demo job's RISKCTL_JOB_LATENESS_MS


@pytest.mark.parametrize("behind_s", [0.0, 3.0, 30.0])
def test_the_clock_events_sent_when_the_demo_says_pass_the_door_and_are_not_ahead_of_the_clock(
    behind_s: float,
) -> None:
    """``behind_s``: how long after the last event's send the clock events are due (paced sends are late);
    the traffic is stamped TRAFFIC_BEHIND_MS behind the clock it is sent by."""
    now_s = (LAST_TS + TRAFFIC_BEHIND_MS) / 1000 + behind_s
    assert clock_wait_s(LAST_TS, now_s) <= 0  # sent at once
    for _, clock in _clock_events(LAST_TS, 2):
        event = parse_event(json.dumps(clock), DEFAULT_LIMITS, int(now_s * 1000))  # the job's own check
        assert event["ts"] == clock["ts"] <= now_s * 1000  # taken, and event time moves all the way to it


def test_clock_events_ahead_of_the_clock_wait_until_it_catches_up() -> None:
    now_s = LAST_TS / 1000  # traffic stamped with the clock itself: the clock events would be ahead
    wait = clock_wait_s(LAST_TS, now_s)
    assert wait > 0
    for _, clock in _clock_events(LAST_TS, 2):
        assert clock["ts"] <= (now_s + wait) * 1000


def test_the_clock_events_move_event_time_past_every_absence_window() -> None:
    for _, clock in _clock_events(LAST_TS, 2):
        watermark = clock["ts"] - DEMO_LATENESS_MS - 1  # bounded out-of-orderness
        assert watermark > LAST_TS + ABSENCE_MS
