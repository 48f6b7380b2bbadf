"""The traffic simulator (pure): determinism, rate, labels, attack shapes, and what the engine makes of it."""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from typing import Any

import pytest

from riskctl.config import PROJECT_ROOT
from riskctl.core.events import normalize_event
from riskctl.sim import ATTACKS, SimConfig, Simulator, build_report, generate
from riskctl.testing import RuleRunner

S = 1000
START = 1_700_000_000_000


@cache
def run(seed: int = 11) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    return generate(
        SimConfig(users=1000, rate=100, duration_s=120, attack_fraction=0.05, seed=seed, start_ts=START)
    )


def by_user(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        out[e["user_id"]].append(e)
    return out


def test_same_seed_same_events_other_seed_other_events() -> None:
    cfg = SimConfig(users=200, rate=50, duration_s=20, seed=3, start_ts=START)
    assert generate(cfg) == generate(cfg)
    other = generate(SimConfig(users=200, rate=50, duration_s=20, seed=4, start_ts=START))
    assert other[0] != generate(cfg)[0]


def test_events_are_valid_in_event_time_order_and_unique() -> None:
    events, _ = run()
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert len({e["event_id"] for e in events}) == len(events)
    for e in events:
        normalize_event(e)  # raises on an invalid event
    assert events[0]["ts"] >= START
    assert {e["type"] for e in events} >= {
        "login", "2fa", "order", "payment", "transfer", "password_change", "register",
    }  # fmt: skip


@pytest.mark.parametrize(("rate", "duration"), [(50, 60), (200, 30), (20, 120)])
def test_rate_within_the_window(rate: float, duration: float) -> None:
    events, _ = generate(SimConfig(users=2000, rate=rate, duration_s=duration, seed=1, start_ts=START))
    in_window = [e for e in events if e["ts"] < START + duration * S]
    assert abs(len(in_window) / duration - rate) / rate < 0.15
    # past the window: only attacks (kept whole) and the 2FA of a login just before the end
    assert all("sim" in e or e["type"] == "2fa" for e in events if e["ts"] >= START + duration * S)


def test_labels_name_every_attack_kind_and_legit_events_carry_none() -> None:
    events, attacks = run()
    assert {a["attack"] for a in attacks.values()} == set(ATTACKS)
    labelled = [e for e in events if "sim" in e]
    assert {e["sim"]["attack_id"] for e in labelled} == set(attacks)
    for e in labelled:
        assert e["sim"]["attack"] == attacks[e["sim"]["attack_id"]]["attack"]
        assert e["sim"]["role"] in {"attacker", "target"}
        assert e["user_id"] == attacks[e["sim"]["attack_id"]]["user_id"]
    share = len(attacks) / (len(events) / 4)  # about one session in 4 events
    assert 0.02 < share < 0.1


def test_attack_fraction_zero_means_no_attacks() -> None:
    events, attacks = generate(
        SimConfig(users=100, rate=20, duration_s=30, attack_fraction=0, start_ts=START)
    )
    assert not attacks and not any("sim" in e for e in events)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown attack"):
        SimConfig(attacks=("ddos",))
    with pytest.raises(ValueError, match="rate"):
        SimConfig(rate=0)


def test_each_attack_satisfies_its_scenario_definition() -> None:
    events, attacks = run()
    users = by_user(events)
    labelled: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if "sim" in e:
            labelled[e["sim"]["attack_id"]].append(e)
    for a in attacks.values():
        mine = labelled[a["attack_id"]]
        user_events = users[a["user_id"]]
        kind = a["attack"]
        if kind == "brute_force":
            logins = [e for e in mine if e["type"] == "login"]
            assert [e["success"] for e in logins[-4:]] == [False, False, False, True]
            assert logins[-1]["ts"] - logins[-4]["ts"] <= 10 * S
            # consecutive: nothing else from this user between the three fails and the success
            i = user_events.index(logins[-4])
            assert user_events[i : i + 4] == logins[-4:]
        elif kind == "account_takeover":
            login, pw, transfer = (
                next(e for e in mine if e["type"] == t) for t in ("login", "password_change", "transfer")
            )
            earlier_cities = {e.get("city") for e in user_events if e["ts"] < login["ts"]}
            assert login["success"] and login["city"] not in earlier_cities
            assert login["ts"] < pw["ts"] < transfer["ts"] <= login["ts"] + 30 * 60 * S
            assert transfer["amount"] >= 10_000
        elif kind == "velocity":
            transfers = [e for e in mine if e["type"] == "transfer"]
            assert sum(e["amount"] for e in transfers) > 50_000
            assert transfers[-1]["ts"] - transfers[0]["ts"] < 5 * 60 * S
        elif kind == "bot_cadence":
            last = mine[-10:]
            assert len(last) == 10 and (last[-1]["ts"] - last[0]["ts"]) / 9 < 1 * S
        elif kind == "new_device_no_2fa":
            login = mine[0]
            devices_before = {e.get("device_id") for e in user_events if e["ts"] < login["ts"]}
            assert login["type"] == "login" and login["success"] and login["device_id"] not in devices_before
            after = [e for e in user_events if login["ts"] < e["ts"] <= login["ts"] + 5 * 60 * S]
            assert not any(e["type"] == "2fa" and e.get("success") for e in after)
        elif kind == "quick_order":
            register, order = mine
            assert (register["type"], order["type"]) == ("register", "order")
            assert order["ts"] - register["ts"] < 3 * S


def test_legit_traffic_avoids_the_scenarios() -> None:
    """Humans: never three failed logins in a row, 2FA after every new device, no sub-second cadence."""
    events, _ = run()
    for user_events in by_user(events).values():
        legit = [e for e in user_events if "sim" not in e]
        if len(legit) != len(user_events):
            continue
        fails = 0
        for e in legit:
            fails = fails + 1 if e["type"] == "login" and not e["success"] else 0
            assert fails < 3
        gaps = [b["ts"] - a["ts"] for a, b in zip(legit, legit[1:], strict=False)]
        assert all(g >= 1 * S for g in gaps)
        for i, e in enumerate(legit):
            if e["type"] == "register":
                orders = [o for o in legit[i:] if o["type"] == "order"]
                assert all(o["ts"] - e["ts"] >= 5 * S for o in orders)


def test_the_pure_engine_catches_the_attacks_and_spares_legit_users() -> None:
    events, attacks = run()
    result = RuleRunner(PROJECT_ROOT / "rules", lateness="2s").run([normalize_event(e) for e in events])
    report = build_report(events, [r.to_dict() for r in result.records])
    assert report["attacks"] == len(attacks) > 30
    assert report["catch_rate"] >= 0.9, report["missed"]
    for kind, s in report["scenarios"].items():
        assert s["by_expected_rule"] >= 0.9 * s["attacks"], (kind, s)
    assert report["false_positive_user_rate"] < 0.02, report["false_positives_by_rule"]
    assert report["coverage"] == 1.0


def test_report_counts_a_missed_attack_and_a_false_positive() -> None:
    def ev(eid: str, user: str, etype: str, **extra: Any) -> dict[str, Any]:
        return {"event_id": eid, "user_id": user, "type": etype, "ts": START, **extra}

    label = {"attack": "quick_order", "attack_id": "a1", "role": "attacker"}
    events = [
        ev("e1", "bot", "register", sim=label),
        ev("e2", "bot", "order", sim=label),
        ev("e3", "alice", "login", success=True),
        ev("e4", "bob", "login", success=True),
    ]
    decision = {"kind": "decision", "action": "PASS", "rules": [], "user_id": "bot"}
    records = [
        {**decision, "event_id": "e1"},
        {**decision, "event_id": "e2"},
        {**decision, "event_id": "e3", "user_id": "alice"},
        {**decision, "event_id": "e4", "user_id": "bob", "action": "REVIEW",
         "rules": [{"id": "bot_cadence", "version": 1}]},
    ]  # fmt: skip
    report = build_report(events, records)
    assert report["caught"] == 0 and report["missed"] == [
        {"attack_id": "a1", "attack": "quick_order", "user_id": "bot"}
    ]
    assert report["false_positive_users"] == 1 and report["legit_users"] == 2
    assert report["false_positives_by_rule"] == {"bot_cadence": 1}
    # the same attack caught through an alert that names its event
    alert = {"kind": "alert", "user_id": "bot", "event_id": "e2", "rule": {"id": "register_then_quick_order"}}
    caught = build_report(events, [*records, alert])
    assert caught["scenarios"]["quick_order"]["by_rule"] == {"register_then_quick_order": 1}


def test_simulator_is_a_lazy_stream() -> None:
    sim = iter(Simulator(SimConfig(users=50, rate=10, duration_s=3600, seed=2, start_ts=START)))
    first = [next(sim) for _ in range(20)]
    assert all(e["ts"] < START + 600 * S for e in first)


def test_the_generator_imports_no_kafka_client() -> None:
    import subprocess
    import sys

    code = (
        "import sys, riskctl.sim; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'kafka', 'pyflink'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_zipf_skews_activity_towards_the_first_ranked_users() -> None:
    # A user is busy for a session plus a rest (about a minute), which caps what one user can send: the skew
    # shows as which users are active, and how much of the traffic the first-ranked ones carry.
    def top_ranked(zipf: float) -> tuple[float, float]:
        config = SimConfig(users=20000, rate=300, duration_s=60, attack_fraction=0.0, seed=3, zipf=zipf)
        counts: dict[str, int] = defaultdict(int)
        for e in Simulator(config):
            counts[e["user_id"]] += 1
        top = [f"u3-{rank:06d}" for rank in range(200)]  # the first 1% of the population
        active = sum(1 for u in top if u in counts) / len(top)
        return active, sum(counts[u] for u in top) / sum(counts.values())

    (active_uniform, share_uniform), (active_zipf, share_zipf) = top_ranked(0.0), top_ranked(1.1)
    assert active_uniform < 0.5 < 0.95 < active_zipf
    assert share_zipf > 3 * share_uniform


def test_zipf_exponent_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="zipf"):
        SimConfig(zipf=-1)
