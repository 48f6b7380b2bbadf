"""Acceptance scenarios 1-10, 13, 14, 15 and 18 through the real ``riskctl replay`` command and ``rules/``.

Each test writes the scenario's events as JSON lines, runs ``riskctl replay --rules rules/`` (click's runner,
in
process; ``test_replay_cli.py`` runs the real subprocess) and checks the decision and alert records field by
field.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from riskctl.cli.main import cli
from riskctl.config import PROJECT_ROOT
from riskctl.core.rules import load_rules
from riskctl.testing import T0, EventFactory

RULES = PROJECT_ROOT / "rules"
VERSION = load_rules(RULES).version
MIN = 60.0
HOUR = 3600.0


class Replayed:
    def __init__(self, records: list[dict[str, Any]], stderr: str) -> None:
        self.records = records
        self.decisions = {r["event_id"]: r for r in records if r["kind"] == "decision"}
        self.alerts = [r for r in records if r["kind"] == "alert"]
        self.stderr = stderr

    def action(self, event_id: str) -> str:
        return str(self.decisions[event_id]["action"])

    def fired(self, event_id: str) -> list[str]:
        return [r["id"] for r in self.decisions[event_id]["rules"]]


def replay(tmp_path: Path, events: list[dict[str, Any]], *args: str) -> Replayed:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = CliRunner().invoke(cli, ["replay", "--rules", str(RULES), str(path), "--summary-json", *args])
    assert result.exit_code == 0, result.output + result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert sum(r["kind"] == "decision" for r in records) == len(events), "exactly one decision per event"
    return Replayed(records, result.stderr)


def assert_pass(out: Replayed, *event_ids: str) -> None:
    for event_id in event_ids:
        d = out.decisions[event_id]
        assert (d["action"], d["rules"]) == ("PASS", []), d


# ------------------------------------------------------------------------------------- 1-3 brute force


FAIL = {"success": False, "type": "login"}
OK = {"success": True, "type": "login"}


def test_scenario_01_brute_force_rejects_the_success(tmp_path: Path) -> None:
    ev = EventFactory("u1")
    events = [ev.login(0, success=False), ev.login(2, success=False), ev.login(4, success=False)]
    events.append(ev.login(6, success=True))
    out = replay(tmp_path, events)
    assert_pass(out, "u1-1", "u1-2", "u1-3")
    d = out.decisions["u1-4"]
    assert d["action"] == "REJECT"
    assert d["user_id"] == "u1" and d["type"] == "login" and d["ts"] == T0 + 6000
    assert d["ruleset_version"] == VERSION and d["late"] is False and d["shadow"] == []
    assert d["rules"] == [
        {
            "id": "brute_force_login",
            "version": 1,
            "action": "REJECT",
            "evidence": {
                "match": {
                    "steps": {"first_fail": ["u1-1"], "more_fails": ["u1-2", "u1-3"], "success": ["u1-4"]},
                    "start_ts": T0,
                    "end_ts": T0 + 6000,
                    # each matched event with what its step's condition read of it
                    "events": {
                        "first_fail": [{"event_id": "u1-1", "fields": FAIL, "features": {}}],
                        "more_fails": [
                            {"event_id": "u1-2", "fields": FAIL, "features": {}},
                            {"event_id": "u1-3", "fields": FAIL, "features": {}},
                        ],
                        "success": [{"event_id": "u1-4", "fields": OK, "features": {}}],
                    },
                }
            },
        }
    ]
    assert out.alerts == []


def test_scenario_02_brute_force_too_slow_passes(tmp_path: Path) -> None:
    ev = EventFactory("u1")
    events = [ev.login(0, success=False), ev.login(4, success=False), ev.login(8, success=False)]
    events.append(ev.login(11, success=True))
    out = replay(tmp_path, events)
    assert_pass(out, "u1-1", "u1-2", "u1-3", "u1-4")


def test_scenario_03_broken_run_passes(tmp_path: Path) -> None:
    ev = EventFactory("u1")
    events = [
        ev.login(0, success=False),
        ev.login(1, success=False),
        ev.login(2, success=True),
        ev.login(3, success=False),
        ev.login(4, success=True),
    ]
    out = replay(tmp_path, events)
    assert_pass(out, "u1-3", "u1-5")


# ------------------------------------------------------------------------------------- 4-5 takeover chain


def _chain(ev: EventFactory, city: str) -> list[dict[str, Any]]:
    return [
        ev.login(0, city="Paris", device_id="d1"),  # the user's usual city and device
        ev.login(2 * HOUR, city=city, device_id="d1"),
        ev.password_change(2 * HOUR + 5 * MIN),
        ev.transfer(2 * HOUR + 12 * MIN, amount=12_000),
    ]


def test_scenario_04_takeover_chain_rejects_the_transfer(tmp_path: Path) -> None:
    ev = EventFactory("u4")
    out = replay(tmp_path, _chain(ev, "Lagos"))
    assert_pass(out, "u4-1", "u4-2", "u4-3")
    d = out.decisions["u4-4"]
    assert d["action"] == "REJECT" and d["type"] == "transfer"
    (fired,) = d["rules"]
    assert fired["id"] == "account_takeover_chain" and fired["version"] == 1 and fired["action"] == "REJECT"
    match = fired["evidence"]["match"]
    assert {k: match[k] for k in ("steps", "start_ts", "end_ts")} == {
        "steps": {"login": ["u4-2"], "password": ["u4-3"], "transfer": ["u4-4"]},
        "start_ts": T0 + 2 * 3_600_000,
        "end_ts": T0 + 2 * 3_600_000 + 12 * 60_000,
    }
    # what made each step match, as it was at that event: new_city was true at the login (at the transfer,
    # a login feature has no value of its own, so the evidence does not show one there)
    assert match["events"] == {
        "login": [
            {"event_id": "u4-2", "fields": {"success": True, "type": "login"}, "features": {"new_city": True}}
        ],
        "password": [{"event_id": "u4-3", "fields": {"type": "password_change"}, "features": {}}],
        "transfer": [{"event_id": "u4-4", "fields": {"amount": 12_000, "type": "transfer"}, "features": {}}],
    }
    assert "features" not in fired["evidence"]


def test_scenario_05_chain_from_a_known_city_passes(tmp_path: Path) -> None:
    ev = EventFactory("u5")
    out = replay(tmp_path, _chain(ev, "Paris"))
    assert_pass(out, "u5-1", "u5-2", "u5-3", "u5-4")


def test_takeover_chain_longer_than_30_minutes_passes(tmp_path: Path) -> None:
    ev = EventFactory("u4")
    events = _chain(ev, "Lagos")
    events[3] = ev.transfer(2 * HOUR + 31 * MIN, amount=12_000, event_id="late-transfer")
    out = replay(tmp_path, events)
    assert_pass(out, "late-transfer")


# ------------------------------------------------------------------------------------- 6-8 features


def test_scenario_06_velocity_reviews_the_crossing_transfer(tmp_path: Path) -> None:
    ev = EventFactory("u6")
    amounts = [15_000, 15_000, 15_000, 10_000, 1_000]
    events = [ev.transfer(i * MIN, amount=a) for i, a in enumerate(amounts)]
    out = replay(tmp_path, events)
    assert_pass(out, "u6-1", "u6-2", "u6-3")
    for event_id, total in (("u6-4", 55_000), ("u6-5", 56_000)):
        d = out.decisions[event_id]
        assert d["action"] == "REVIEW"
        assert d["rules"] == [
            {
                "id": "transfer_velocity",
                "version": 1,
                "action": "REVIEW",
                # the condition reads the feature only (the rule applies to transfers)
                "evidence": {"features": {"transfer_sum_5m": total}, "fields": {}},
            }
        ]


def test_velocity_window_slides(tmp_path: Path) -> None:
    ev = EventFactory("u6")
    # 4 x 15,000 but the first leaves the 5-minute window exactly when the 4th arrives: (ts - 5m, ts]
    events = [ev.transfer(t, amount=15_000) for t in (0, 2 * MIN, 4 * MIN, 5 * MIN)]
    out = replay(tmp_path, events)
    assert_pass(out, "u6-1", "u6-2", "u6-3", "u6-4")


def test_scenario_07_fifth_failed_login_within_an_hour(tmp_path: Path) -> None:
    ev = EventFactory("u7")
    events = [ev.login(i * 10 * MIN, success=False) for i in range(5)]
    out = replay(tmp_path, events)
    assert_pass(out, "u7-1", "u7-2", "u7-3", "u7-4")
    assert out.decisions["u7-5"]["action"] == "REVIEW"
    assert out.decisions["u7-5"]["rules"] == [
        {
            "id": "login_failures_hourly",
            "version": 1,
            "action": "REVIEW",
            "evidence": {"features": {"failed_logins_1h": 5}, "fields": {"success": False}},
        }
    ]


def test_five_failed_logins_over_more_than_an_hour_pass(tmp_path: Path) -> None:
    ev = EventFactory("u7")
    events = [ev.login(i * 15 * MIN, success=False) for i in range(5)]  # 0..60 min: the first is out
    out = replay(tmp_path, events)
    assert_pass(out, *(f"u7-{i}" for i in range(1, 6)))


def test_scenario_08_bot_cadence(tmp_path: Path) -> None:
    ev = EventFactory("u8")
    events = [ev.event("page_view", i * 0.5) for i in range(10)]
    out = replay(tmp_path, events)
    assert_pass(out, *(f"u8-{i}" for i in range(1, 10)))
    d = out.decisions["u8-10"]
    assert d["action"] == "REVIEW"
    assert d["rules"][0]["id"] == "bot_cadence"
    assert d["rules"][0]["evidence"] == {"features": {"interval_last_10": 500}, "fields": {}}


def test_human_cadence_passes(tmp_path: Path) -> None:
    ev = EventFactory("u8")
    events = [ev.event("page_view", i * 1.0) for i in range(12)]  # exactly 1 s: not under 1 s
    out = replay(tmp_path, events)
    assert_pass(out, *(f"u8-{i}" for i in range(1, 13)))


# ------------------------------------------------------------------------------------- 9-10 sequences


def test_scenario_09_gap_between_steps(tmp_path: Path) -> None:
    fast, slow = EventFactory("fast"), EventFactory("slow")
    events = [fast.register(0), slow.register(0), fast.order(2.999), slow.order(5)]
    out = replay(tmp_path, events)
    d = out.decisions["fast-2"]
    assert d["action"] == "REVIEW"
    assert d["rules"][0]["id"] == "register_then_quick_order"
    assert d["rules"][0]["evidence"]["match"]["steps"] == {"register": ["fast-1"], "order": ["fast-2"]}
    assert_pass(out, "fast-1", "slow-1", "slow-2")


def test_order_exactly_3s_after_register_passes(tmp_path: Path) -> None:
    ev = EventFactory("u9")
    out = replay(tmp_path, [ev.register(0), ev.order(3)])
    assert_pass(out, "u9-2")


def test_scenario_10_absence_raises_an_alert_when_the_time_passes(tmp_path: Path) -> None:
    alone, ok = EventFactory("alone"), EventFactory("ok")
    other = EventFactory("other")
    events = [
        alone.login(0, device_id="new-phone"),
        ok.login(1, device_id="new-phone"),
        ok.two_fa(60, success=True),
        other.event("page_view", 4 * MIN),
        # this event of another user moves the watermark past alone's deadline (5 min + lateness 5 s)
        other.event("page_view", 5 * MIN + 6),
        other.event("page_view", 5 * MIN + 7),
    ]
    out = replay(tmp_path, events)
    assert_pass(out, "alone-1", "ok-1", "ok-2")
    assert len(out.alerts) == 1
    alert = out.alerts[0]
    assert alert["reason"] == "timer" and alert["user_id"] == "alone" and alert["shadow"] is False
    assert alert["ts"] == T0 + 5 * 60_000  # the deadline: login + 5 min
    assert alert["rule"]["id"] == "new_device_without_2fa" and alert["rule"]["action"] == "REVIEW"
    assert alert["rule"]["evidence"]["match"] == {
        "steps": {"login": ["alone-1"]},
        "start_ts": T0,
        "end_ts": T0 + 5 * 60_000,
        # the alert explains itself: the login was a success from a device never seen before
        "events": {
            "login": [
                {
                    "event_id": "alone-1",
                    "fields": {"success": True, "type": "login"},
                    "features": {"new_device": True},
                }
            ]
        },
    }
    assert alert["event_id"] == "alone-1" and alert["trigger_event_id"] is None
    assert alert["ruleset_version"] == VERSION
    # raised by the watermark, before the input ended: it comes before the last decision
    position = out.records.index(alert)
    assert position < out.records.index(out.decisions["other-3"])


def test_absence_alert_at_end_of_input(tmp_path: Path) -> None:
    ev = EventFactory("u10")
    out = replay(tmp_path, [ev.login(0, device_id="new")])
    assert [a["reason"] for a in out.alerts] == ["timer"]
    assert out.records[-1]["kind"] == "alert"


def test_2fa_too_late_does_not_cancel_the_alert(tmp_path: Path) -> None:
    ev = EventFactory("u10")
    out = replay(tmp_path, [ev.login(0, device_id="new"), ev.two_fa(5 * MIN + 1)])
    assert [a["rule"]["id"] for a in out.alerts] == ["new_device_without_2fa"]


# ------------------------------------------------------------------------------------- 13 shadow


def test_scenario_13_shadow_rule_is_recorded_but_does_not_decide(tmp_path: Path) -> None:
    ev = EventFactory("u13")
    out = replay(tmp_path, [ev.transfer(0, amount=25_000)])
    d = out.decisions["u13-1"]
    assert d["action"] == "PASS" and d["rules"] == []
    assert d["shadow"] == [
        {
            "id": "large_transfer_reject",
            "version": 1,
            "action": "REJECT",
            # a shadow hit is explained like an active one: the condition read the amount
            "evidence": {"features": {}, "fields": {"amount": 25_000}},
        }
    ]
    summary = json.loads(out.stderr.strip().splitlines()[-1])
    assert summary["shadow_hits"] == {"large_transfer_reject": 1}
    assert summary["actions"] == {"PASS": 1}


# ------------------------------------------------------------------------------------- 14 out of order


def _velocity_events(ev: EventFactory) -> list[dict[str, Any]]:
    return [ev.transfer(i * 1.5, amount=a) for i, a in enumerate([15_000, 15_000, 15_000, 10_000, 2_000])]


def _hits(out: Replayed, rule_id: str) -> dict[str, Any]:
    """event id -> feature values, for every event the rule fired on, in a decision or a late alert."""
    hits: dict[str, Any] = {}
    for d in out.decisions.values():
        for r in d["rules"]:
            if r["id"] == rule_id:
                hits[d["event_id"]] = r["evidence"]["features"]
    for a in out.alerts:
        if a["rule"]["id"] == rule_id:
            hits[a["event_id"]] = a["rule"]["evidence"]["features"]
    return hits


def test_scenario_14_velocity_shuffled_gives_the_same_sums_and_hits(tmp_path: Path) -> None:
    in_order = _velocity_events(EventFactory("u14"))
    expected = _hits(replay(tmp_path, in_order), "transfer_velocity")
    assert expected == {"u14-4": {"transfer_sum_5m": 55_000}, "u14-5": {"transfer_sum_5m": 57_000}}
    # the crossing transfer arrives first, the earlier ones late (all within the 5 s lateness)
    shuffled = [in_order[3], in_order[0], in_order[4], in_order[1], in_order[2]]
    out = replay(tmp_path, shuffled)
    assert _hits(out, "transfer_velocity") == expected
    # on arrival u14-4 saw 10,000 and passed; the late u14-3 pushed it over: an alert names it
    assert out.action("u14-4") == "PASS"
    (alert,) = [a for a in out.alerts if a["event_id"] == "u14-4"]
    assert alert["reason"] == "late_threshold" and alert["trigger_event_id"] == "u14-3"
    assert out.decisions["u14-1"]["late"] is True


@pytest.mark.parametrize("seed", range(8))
def test_scenario_14_random_shuffles_within_lateness(tmp_path: Path, seed: int) -> None:
    from riskctl.testing import shuffle_within

    in_order = _velocity_events(EventFactory("u14"))
    expected = _hits(replay(tmp_path, in_order), "transfer_velocity")
    out = replay(tmp_path, shuffle_within(in_order, 5_000, seed=seed))
    got = _hits(out, "transfer_velocity")
    assert got.keys() == expected.keys()  # the same transfers are flagged, on arrival or by a late alert
    # with the sum known when flagged: over 50,000, at most the in-order one
    for event_id, features in got.items():
        assert 50_000 < features["transfer_sum_5m"] <= expected[event_id]["transfer_sum_5m"]


def test_scenario_14_brute_force_completed_by_a_late_event_raises_an_alert(tmp_path: Path) -> None:
    ev = EventFactory("u1")
    f1, f2, f3 = ev.login(0, success=False), ev.login(2, success=False), ev.login(4, success=False)
    ok = ev.login(6, success=True)
    out = replay(tmp_path, [f1, f2, ok, f3])  # the third failure arrives after the success
    assert out.action("u1-4") == "PASS"  # decided on arrival, before the run was complete
    assert out.action("u1-3") == "PASS" and out.decisions["u1-3"]["late"] is True
    (alert,) = out.alerts
    assert alert["reason"] == "late" and alert["trigger_event_id"] == "u1-3"
    assert alert["rule"]["id"] == "brute_force_login" and alert["rule"]["action"] == "REJECT"
    assert alert["rule"]["evidence"]["match"]["steps"] == {
        "first_fail": ["u1-1"],
        "more_fails": ["u1-2", "u1-3"],
        "success": ["u1-4"],
    }


# ------------------------------------------------------------------------------------- 15 TTL


def test_scenario_15_silent_user_starts_from_zero(tmp_path: Path) -> None:
    ev = EventFactory("u15")
    events = [
        ev.login(0, city="Paris", device_id="d1"),
        ev.two_fa(10),
        # 25 h of silence (TTL 24 h): Paris is forgotten, so the same chain is now a takeover
        ev.login(25 * HOUR, city="Paris", device_id="d1"),
        ev.two_fa(25 * HOUR + 10),
        ev.password_change(25 * HOUR + MIN),
        ev.transfer(25 * HOUR + 2 * MIN, amount=12_000),
    ]
    out = replay(tmp_path, events, "--state-ttl", "24h")
    assert out.fired("u15-6") == ["account_takeover_chain"]
    # with a longer TTL the city is remembered and the transfer passes
    out = replay(tmp_path, events, "--state-ttl", "48h")
    assert_pass(out, "u15-6")


def test_scenario_15_state_does_not_grow_without_bound(tmp_path: Path) -> None:
    from riskctl.core.engine import Engine
    from riskctl.core.runner import LocalRunner

    runner = LocalRunner(Engine(load_rules(RULES), lateness=5_000, state_ttl=3_600_000))
    peak = 0
    # 200 users a day for 5 days, each active for a few minutes then silent for good
    for day in range(5):
        for u in range(200):
            ev = EventFactory(f"d{day}u{u}", start=T0 + day * 86_400_000 + u * 1000)
            for e in (ev.login(0, city="X", device_id="d"), ev.two_fa(1), ev.transfer(30, amount=10)):
                list(runner.feed(e))
        peak = max(peak, len(runner.store))
    assert peak <= 400  # at most the users of the last TTL (plus the day before, until its timers fire)
    list(runner.finish())
    assert len(runner.store) == 0


# ------------------------------------------------------------------------------------- 18 interleaved


def test_scenario_18_thousand_users_interleaved(tmp_path: Path) -> None:
    rng = random.Random(18)
    events: list[dict[str, Any]] = []
    for u in range(1000):
        ev = EventFactory(f"user{u}", start=T0 + rng.randrange(60_000))
        events += [ev.login(0, success=False), ev.login(2, success=False), ev.login(4, success=False)]
        events.append(ev.login(6, success=True))
        events += [ev.transfer(30 + i * 20, amount=a) for i, a in enumerate([15_000, 15_000, 15_000, 10_000])]
    events.sort(key=lambda e: e["ts"])
    out = replay(tmp_path, events)
    for u in range(1000):
        p = f"user{u}"
        assert out.fired(f"{p}-4") == ["brute_force_login"], p
        assert out.action(f"{p}-4") == "REJECT"
        assert out.decisions[f"{p}-4"]["rules"][0]["evidence"]["match"]["steps"]["first_fail"] == [f"{p}-1"]
        assert out.fired(f"{p}-8") == ["transfer_velocity"]
        assert out.decisions[f"{p}-8"]["rules"][0]["evidence"]["features"] == {"transfer_sum_5m": 55_000}
        for i in (1, 2, 3, 5, 6, 7):
            assert out.decisions[f"{p}-{i}"]["rules"] == [], (p, i)
    assert out.alerts == []
    # and as if alone: one user replayed on their own gives the same records
    alone = replay(tmp_path, [e for e in events if e["user_id"] == "user7"])
    for event_id, d in alone.decisions.items():
        assert out.decisions[event_id] == d
