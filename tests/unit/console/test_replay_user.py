"""A user's events replayed with the current rules: decisions plus every feature's value, from the engine."""

from __future__ import annotations

import json

from riskctl.console.replay_user import MAX_USER_EVENTS, probe, replay_user, user_lines

FAILS = {"kind": "count", "window": "10m", "filter": "event.type == 'login' and event.success == false"}
RULES = [
    {"id": "brute", "action": "REJECT", "features": {"fails": FAILS}, "when": "fails >= 3"},
    {"id": "off", "action": "REJECT", "status": "disabled", "features": {"n": FAILS}, "when": "n >= 1"},
    {"id": "big", "action": "REVIEW", "when": "event.amount > 100"},
]


def _line(eid: str, user: str, etype: str, t: int, **fields: object) -> bytes:
    return json.dumps(
        {"event_id": eid, "user_id": user, "type": etype, "ts": 1_700_000_000_000 + t, **fields}
    ).encode()


def test_decisions_and_feature_values_per_event() -> None:
    lines = [_line(f"e{i}", "u", "login", i * 1000, success=False) for i in range(3)]
    lines.append(_line("t", "u", "transfer", 5000, amount=500))
    out = replay_user(RULES, lines)
    assert [r["event_id"] for r in out] == ["e0", "e1", "e2", "t"]
    assert [r["features"]["brute"]["fails"] for r in out] == [1, 2, 3, 3]
    assert [r["action"] for r in out] == ["PASS", "PASS", "REJECT", "REJECT"]  # brute has no applies_to
    assert out[2]["rules"] == ["brute"] and set(out[3]["rules"]) == {"brute", "big"}
    assert all("off" not in r["features"] and "big" not in r["features"] for r in out)


def test_probe_only_for_condition_rules_with_features() -> None:
    assert probe(RULES[2]) is None and probe(RULES[1]) is None
    made = probe(RULES[0])
    assert made is not None and made["when"] == "fails == fails or true" and made["id"] == "probe.brute"


def test_user_lines_filter_bad_lines_and_bound() -> None:
    data = b"\n".join(
        [_line("a", "u", "login", 0), _line("b", "v", "login", 0), b"not json", b"[1]", b"\xff\xfe"]
    )
    assert user_lines(data, "u") == [_line("a", "u", "login", 0)]
    many = b"\n".join(_line(f"e{i}", "u", "login", i) for i in range(MAX_USER_EVENTS + 5))
    kept = user_lines(many, "u")
    assert len(kept) == MAX_USER_EVENTS and b'"e5"' in kept[0]


def test_a_rule_that_does_not_load_is_left_out() -> None:
    out = replay_user(
        [*RULES, {"id": "bad", "action": "NOPE", "when": "true"}], [_line("x", "u", "login", 0)]
    )
    assert [r["event_id"] for r in out] == ["x"]


def test_decided_as_the_job_decides() -> None:
    """The replay ran the engine's defaults (no lateness, no too-late action), not the job's: a failed login
    2 s behind its user's newest event was too late for it and counted by no feature, where the job (lateness
    5 s) counts it, and rejects the user's next event. Now it decides by the job's settings, and says what the
    job said of each event's time."""
    import dataclasses

    from riskctl.cli.replay import JOB_DEFAULTS

    lines = [_line(f"e{i}", "u", "login", t, success=False) for i, t in enumerate((0, 3000, 1000))]
    lines.append(_line("t", "u", "transfer", 4000, amount=50))
    out = replay_user(RULES, lines)  # the job's defaults: lateness 5 s
    assert [(r["action"], r["late"], r["too_late"]) for r in out] == [
        ("PASS", False, False),
        ("PASS", False, False),
        ("PASS", True, False),  # 2 failures up to its own time
        ("REJECT", False, False),
    ]
    assert out[3]["features"]["brute"]["fails"] == 3
    strict = dataclasses.replace(JOB_DEFAULTS, lateness=0, too_late_action="REVIEW")
    out = replay_user(RULES, lines, settings=strict)
    assert [(r["action"], r["too_late"]) for r in out][2:] == [("REVIEW", True), ("PASS", False)]
    assert out[3]["features"]["brute"]["fails"] == 2  # the too-late failure: counted by no feature
    # an event stamped ahead of the replay's clock is decided at the clock, and says by how much
    ahead = replay_user(RULES, [_line("x", "u", "login", 9000)], now=1_700_000_000_000 + 4000)
    assert ahead[0]["ahead_ms"] == 5000
