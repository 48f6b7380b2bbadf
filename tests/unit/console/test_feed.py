"""The console's view of decisions and alerts: hits per rule, filters, review cases, per-minute counts."""

from __future__ import annotations

from typing import Any

from riskctl.console.feed import DAY_MS, HOUR_MS, MINUTE_MS, Feed, case_of
from riskctl.store.migrations import case_key

NOW = 1_700_000_000_000


def decision(
    eid: str, user: str, action: str, rules: list[str], shadow: list[str] | None = None
) -> dict[str, Any]:
    fired = [{"id": r, "version": 1, "action": action, "evidence": {}} for r in rules]
    return {
        "kind": "decision",
        "event_id": eid,
        "user_id": user,
        "type": "transfer",
        "ts": NOW,
        "action": action,
        "rules": fired,
        "shadow": [{"id": r, "version": 1, "action": "REVIEW", "evidence": {}} for r in shadow or []],
    }


def alert(aid: str, user: str, rule: str, *, shadow: bool = False) -> dict[str, Any]:
    return {"kind": "alert", "alert_id": aid, "user_id": user, "reason": "timer", "ts": NOW, "shadow": shadow,
            "rule": {"id": rule, "version": 1, "action": "REVIEW", "evidence": {}}}  # fmt: skip


def test_hits_per_rule_over_hour_and_day() -> None:
    feed = Feed()
    feed.add(
        [
            (decision("e1", "u1", "REVIEW", ["big"], ["night"]), NOW - 10),
            (decision("e2", "u2", "REJECT", ["big", "brute"]), NOW - 2 * HOUR_MS),
            (decision("e3", "u3", "PASS", []), NOW - 10),
            (alert("a1", "u1", "no2fa"), NOW - 10),
            (decision("old", "u1", "REJECT", ["big"]), NOW - DAY_MS - 1),
        ]
    )
    assert feed.hits(NOW) == {
        "big": {"hour": 1, "day": 2},
        "night": {"hour": 1, "day": 1},
        "brute": {"hour": 0, "day": 1},
        "no2fa": {"hour": 1, "day": 1},
    }


def test_filters_and_cases() -> None:
    feed = Feed()
    feed.add(
        [
            (decision("e1", "u1", "REVIEW", ["big"], ["night"]), NOW),
            (decision("e2", "u2", "REJECT", ["big"]), NOW),
            (alert("a1", "u2", "no2fa", shadow=True), NOW),
            ({"kind": "decision", "action": "REVIEW"}, NOW),  # malformed: no case, no crash
            ("not a dict", NOW),  # type: ignore[list-item]
        ]
    )
    assert [r.get("event_id") for r in feed.latest(action="REJECT")] == ["e2"]
    assert [r.get("alert_id") for r in feed.latest(action="ALERT")] == ["a1"]
    assert [r.get("event_id") for r in feed.latest(rule="night")] == ["e1"]
    assert len(feed.latest(user="u2")) == 2
    cases = feed.cases()
    assert [c.case_id for c in cases] == ["alert:a1", "decision:e1"]
    assert cases[0].rules == () and cases[0].shadow == ("no2fa",)
    assert cases[1].rules == ("big",) and cases[1].shadow == ("night",)
    assert feed.case(case_key("u1", "decision:e2")) is None  # a REJECT is no review case
    assert case_of({"kind": "alert", "rule": "x"}) is None


def test_buffers_are_bounded_but_counts_are_not() -> None:
    feed = Feed(max_records=3, max_cases=2)
    feed.add((decision(f"e{i}", "u", "REVIEW", ["big"]), NOW - i * 60_000) for i in reversed(range(5)))
    assert len(feed.latest()) == 3 and len(feed.cases()) == 2
    assert (
        feed.case(case_key("u", "decision:e0")) is not None
        and feed.case(case_key("u", "decision:e4")) is None
    )
    series = feed.per_minute(NOW, 60)
    assert sum(series["REVIEW"]) == 5 and len(series["REVIEW"]) == 60
    assert series["REVIEW"][-5:] == [1, 1, 1, 1, 1]
    assert feed.per_minute(NOW, 60, rule="big")["hits"][-5:] == [1, 1, 1, 1, 1]
    assert feed.per_minute(NOW, 60, rule="other") == {}
    assert feed.hits(NOW)["big"] == {"hour": 5, "day": 5}


def test_minutes_older_than_a_day_are_dropped() -> None:
    feed = Feed()
    feed.add((decision(f"e{i}", "u", "PASS", ["r"]), NOW - DAY_MS * 2 + i * 60_000) for i in range(100))
    feed.add([(decision("now", "u", "PASS", ["r"]), NOW)])
    assert len(feed._minutes) == 1
    assert feed.hits(NOW) == {"r": {"hour": 1, "day": 1}}


def test_a_malformed_record_is_left_out_not_raised() -> None:
    """A record whose ``rules`` was a string raised TypeError in add (which restarted the Kafka reader from a
    day back, forever) after it was already in the buffer, where the filters raised on it again."""
    feed = Feed()
    bad = [
        {**decision("b1", "u1", "REVIEW", []), "rules": "r1"},
        {**decision("b2", "u1", "REVIEW", []), "shadow": {"id": "r1"}},
        {**decision("b3", "u1", "REVIEW", []), "rules": ["r1"]},
        {**alert("b4", "u1", "r1"), "rule": "r1"},
        ["not", "an", "object"],
    ]
    feed.add([(record, NOW) for record in bad] + [(decision("e1", "u1", "REVIEW", ["r1"]), NOW)])  # type: ignore[misc]
    assert feed.skipped == len(bad)
    assert [r["event_id"] for r in feed.latest(rule="r1")] == ["e1"]
    assert [r["event_id"] for r in feed.latest(user="u1")] == ["e1"]
    assert [c.case_id for c in feed.cases()] == ["decision:e1"]
    assert feed.hits(NOW) == {"r1": {"hour": 1, "day": 1}}
    feed.add([(alert("a1", "u2", "r2", shadow=True), NOW)])  # an alert's shadow is a flag, not a list
    assert feed.skipped == len(bad) and feed.cases()[0].shadow == ("r2",)


def test_a_record_with_a_lone_surrogate_is_left_out() -> None:
    """JSON may escape a lone surrogate ('"\\ud800"') and json.loads takes it; a decision holding one (in its
    user id, event id or evidence) was kept, and every page showing it failed to encode: /decisions and
    /review answered 500 to everyone for as long as it was in the buffer."""
    import json

    feed = Feed()
    raw = json.dumps(decision("e\\ud800", "u1", "REVIEW", ["r1"])).replace("\\\\ud800", "\\ud800")
    bad = [json.loads(raw), {**decision("b2", "u1", "REVIEW", ["r1"]), "user_id": "u\udc00"}]
    bad.append({**alert("a1", "u1", "r1"), "rule": {"id": "r1", "evidence": {"k": "\ud83d"}}})
    assert bad[0]["event_id"] == "e\ud800"
    feed.add([(record, NOW) for record in bad] + [(decision("e1", "u1", "REVIEW", ["r1"]), NOW)])
    assert feed.skipped == len(bad)
    assert [r["event_id"] for r in feed.latest()] == ["e1"]
    assert [c.case_id for c in feed.cases()] == ["decision:e1"]
    feed.add([(decision("e2", "u1", "PASS", ["r1"], ["😀 an emoji is a pair, not a lone one"]), NOW)])
    assert feed.skipped == len(bad) and len(feed.latest()) == 2


def test_a_record_over_the_jobs_size_limit_is_left_out() -> None:
    """The feed bounded the number of records, not their size: 20,000 records of 1 MB from another producer
    would have been kept (20 GB of memory). The job writes none over MAX_RECORD_BYTES (compact JSON)."""
    from riskctl.core.decisions import MAX_RECORD_BYTES
    from riskctl.core.jsoncodec import dumpb

    def sized(eid: str, n: int) -> dict[str, Any]:
        record = decision(eid, "u1", "REVIEW", ["r1"])
        record["rules"][0]["evidence"] = {"fields": {"blob": ""}}
        record["rules"][0]["evidence"]["fields"]["blob"] = "x" * (n - len(dumpb(record)))
        assert len(dumpb(record)) == n
        return record

    feed = Feed()
    feed.add([(sized("big", MAX_RECORD_BYTES + 1), NOW), (sized("fits", MAX_RECORD_BYTES), NOW)])
    feed.add([(sized("huge", 3 * MAX_RECORD_BYTES), NOW)])
    assert feed.skipped == 2
    assert [r["event_id"] for r in feed.latest()] == ["fits"]
    assert [c.case_id for c in feed.cases()] == ["decision:fits"]
    assert feed.hits(NOW) == {"r1": {"hour": 1, "day": 1}}


def test_the_buffers_are_bounded_by_memory_not_only_by_count() -> None:
    """Records under the size limit, but many: 400 of nearly 1 MB were all kept (400 MB); now the newest that
    fit in MAX_RECORD_MEMORY (cases: MAX_CASE_MEMORY). The job's own 20,000 records are all kept as before."""
    blob = "x" * 990_000  # one string shared by every record: the test itself holds 1 MB, the feed counts 400
    feed = Feed()
    feed.add(
        (
            {**decision(f"e{i}", "u1", "REVIEW", ["r1"]), "evidence": {"blob": blob}},
            NOW - (400 - i) * MINUTE_MS // 10,
        )
        for i in range(400)
    )
    kept = feed.latest(limit=1_000)
    assert 200 < len(kept) < 300  # 256 MiB of ~1 MB records
    assert kept[0]["event_id"] == "e399"  # the newest kept, the oldest dropped
    assert 100 < len(feed.cases(1_000)) < 150 and feed.cases()[0].case_id == "decision:e399"
    assert feed.hits(NOW)["r1"]["day"] == 400  # the counts are not cut
    small = Feed()
    small.add((decision(f"s{i}", f"u{i % 50}", "PASS", ["r1"]), NOW) for i in range(20_001))
    assert len(small.latest(limit=30_000)) == 20_000 and small.latest(limit=1)[0]["event_id"] == "s20000"


def test_records_naming_ever_new_rule_ids_fill_no_more_counts_than_the_bound() -> None:
    """The counts per minute were bounded by rules x 1,440 minutes, but the rule ids are whatever the records
    name: another producer writing ever new ids grew them without end (about 100 bytes each). Past the bound
    a new id is not counted (uncounted); the records are still shown, and known ids are still counted."""
    feed = Feed()
    feed.max_counts = 100  # the default (a million) would take 100 MB here
    feed.add([(decision("e0", "u1", "REJECT", ["known"]), NOW)])
    for i in range(50):
        ids = [f"new{i}-{j}" for j in range(10)]
        feed.add([(decision(f"e{i + 1}", "u1", "REJECT", ["known", *ids]), NOW - (i % 3) * MINUTE_MS)])
    assert sum(len(c) for c in feed._minutes.values()) <= 100
    assert feed.counts == 100 and feed.uncounted == 500 - (100 - 6)  # 3 minutes x (REJECT, known)
    assert len(feed.hits(NOW)) < 100
    assert feed.hits(NOW)["known"] == {"hour": 51, "day": 51}
    assert len(feed.latest(limit=100)) == 51
    feed.add([(decision("late", "u1", "REJECT", ["known"]), NOW + DAY_MS + 2 * MINUTE_MS)])  # a day later
    assert feed.hits(NOW + DAY_MS + 2 * MINUTE_MS) == {"known": {"hour": 1, "day": 1}}
    feed.add([(decision("next", "u1", "REJECT", ["another"]), NOW + DAY_MS + 2 * MINUTE_MS)])
    assert feed.hits(NOW + DAY_MS + 2 * MINUTE_MS)["another"] == {"hour": 1, "day": 1}  # room again


def test_records_each_in_a_minute_of_their_own_cost_no_scan_of_every_kept_minute() -> None:
    """Each record that opened a minute of its own made the feed look for the minutes older than a day among
    all the minutes it kept, under the lock every page waits for: records stamped one minute apart back in
    time (a producer sets the Kafka timestamp) were all kept, up to a million minutes, and cost a scan of all
    of them each: 10,000 such records took 8 s (quadratic). Now only the day's minutes are kept, and the
    clock moves by whole minutes, each looked at once."""
    import time

    day_minutes = DAY_MS // MINUTE_MS
    feed = Feed()
    records = [(decision(f"e{i}", "u", "PASS", ["r"]), NOW - i * MINUTE_MS) for i in range(10_000)]
    started = time.perf_counter()
    feed.add(records)
    took = time.perf_counter() - started
    assert len(feed._minutes) <= day_minutes
    assert feed.outside == 10_000 - day_minutes  # shown, not counted: no window would show them
    assert len(feed.latest(limit=20_000)) == 10_000
    assert feed.hits(NOW) == {"r": {"hour": 60, "day": day_minutes}}
    assert took < 3, f"{took:.1f} s for 10,000 records"


def test_a_record_stamped_ahead_of_the_clock_drops_no_count() -> None:
    """The minutes older than a day were those older than the newest record's, whatever its timestamp: one
    record stamped two days ahead (another producer's) dropped every count of the day, and the rules page
    said 0 hits. The Kafka tail now gives the wall clock (now_ms): a record more than MAX_AHEAD_MS ahead of
    it, or more than a day behind, is shown but not counted, and drops nothing."""
    from riskctl.console.feed import MAX_AHEAD_MS

    feed = Feed()
    feed.add(((decision(f"e{i}", "u", "REVIEW", ["r"]), NOW - i * MINUTE_MS) for i in range(90)), now_ms=NOW)
    hostile = [
        (decision("ahead", "u", "REVIEW", ["r", "x"]), NOW + 2 * DAY_MS),
        (decision("behind", "u", "REVIEW", ["r", "x"]), NOW - DAY_MS - MINUTE_MS),
        (decision("soon", "u", "REVIEW", ["r"]), NOW + MAX_AHEAD_MS),  # the job's clock a little ahead
    ]
    feed.add(hostile, now_ms=NOW)
    assert feed.outside == 2 and feed.counts == 90 * 2 + 2  # (REVIEW, r) a minute; soon's minute
    assert feed.hits(NOW, rules=["r", "x", "none"]) == {
        "r": {"hour": 60, "day": 90},
        "x": {"hour": 0, "day": 0},
        "none": {"hour": 0, "day": 0},
    }
    assert [r["event_id"] for r in feed.latest(rule="x")] == ["behind", "ahead"]  # shown all the same
    later = NOW + MAX_AHEAD_MS
    assert feed.hits(later, rules=["r"]) == {"r": {"hour": 56, "day": 91}}  # "soon" counted once it is due
    assert sum(feed.per_minute(later, 60, rule="r")["hits"]) == 56


def test_what_a_page_asks_costs_the_same_whatever_the_topics_hold() -> None:
    """The rules page summed every count of the day for each request, on the event loop (3.3 s for a
    million counts: another producer's records naming 50,000 rule ids each), the rule page too, and the
    rule filter of /decisions looked at every rule of every record. Now hits are running totals looked up
    for the rules a page shows, a chart one count per minute and action, and a filter one set per record."""
    import time

    def hostile(i: int) -> dict[str, Any]:  # 40,000 rule ids in 750 kB of JSON
        return {
            **decision(f"h{i}", "u1", "REVIEW", []),
            "rules": [{"id": f"x{i}-{j}"} for j in range(40_000)],
        }

    feed = Feed()
    feed.add(
        [(hostile(i), NOW) for i in range(5)] + [(decision("e1", "u2", "REVIEW", ["r"]), NOW)], now_ms=NOW
    )
    assert feed.skipped == 0 and feed.counts == 200_000 + 2
    calls = {
        "hits": lambda: feed.hits(NOW, rules=[f"r{i}" for i in range(100)] + ["r"]),
        "per_minute": lambda: feed.per_minute(NOW, 60),
        "per_minute_rule": lambda: feed.per_minute(NOW, 60, rule="r"),
        "latest_rule": lambda: feed.latest(rule="nope"),
        "cases": lambda: feed.cases(200),
    }
    took = {}
    for name, call in calls.items():
        started = time.perf_counter()
        for _ in range(10):
            call()
        took[name] = (time.perf_counter() - started) / 10
    assert max(took.values()) < 0.02, took
    assert feed.hits(NOW, rules=["r"]) == {"r": {"hour": 1, "day": 1}}
    assert feed.per_minute(NOW, 60)["REVIEW"][-1] == 6
    assert [r["event_id"] for r in feed.latest(rule="x3-39999")] == ["h3"]


def test_an_action_the_job_never_writes_is_counted_as_other() -> None:
    """The chart had a line for every action a record named: another producer's records with ever new
    actions drew as many lines (and filled the counts). Actions: PASS, REVIEW, REJECT, ALERT, else OTHER."""
    feed = Feed()
    feed.add([({**decision(f"e{i}", "u", "PASS", []), "action": f"A{i}"}, NOW) for i in range(50)])
    assert feed.per_minute(NOW, 60) == {"OTHER": [0] * 59 + [50]}
    assert len(feed.latest(action="OTHER")) == 50


def test_the_running_totals_are_the_brute_force_counts() -> None:
    """hits() reads running totals moved as the clock passes each minute; they are the counts of the
    records in the last hour and day of the clock, over random timestamps, clocks and jumps."""
    import random

    from riskctl.console.feed import DAY_MINUTES, HOUR_MINUTES, MAX_AHEAD_MS

    rng = random.Random(7)
    for _ in range(30):
        feed, counted = Feed(), []
        clock = NOW // MINUTE_MS
        for step in range(40):
            clock += rng.choice([0, 0, 1, 2, 59, 61, 700, 1439, 1441, 3000])
            batch = []
            for i in range(rng.randint(0, 5)):
                minute = clock + rng.randint(-DAY_MINUTES - 5, MAX_AHEAD_MS // MINUTE_MS + 3)
                rules = rng.sample(["a", "b", "c"], rng.randint(0, 2))
                batch.append((decision(f"e{step}-{i}", "u", "REVIEW", rules), minute * MINUTE_MS + 5))
                if clock - DAY_MINUTES < minute <= clock + MAX_AHEAD_MS // MINUTE_MS:
                    counted.append((minute, rules))
            feed.add(batch, now_ms=clock * MINUTE_MS + rng.randint(0, MINUTE_MS - 1))
            ask = clock + rng.choice([0, 0, 1, 3])
            clock = ask  # asking moves the clock too
            want = {
                r: {
                    "hour": sum(r in rs for m, rs in counted if ask - HOUR_MINUTES < m <= ask),
                    "day": sum(r in rs for m, rs in counted if ask - DAY_MINUTES < m <= ask),
                }
                for r in ("a", "b", "c")
            }
            assert feed.hits(ask * MINUTE_MS, rules=["a", "b", "c"]) == want


def test_a_case_is_named_by_a_bounded_key_and_found_by_it() -> None:
    """A case id of nearly 1 MB (another producer's event id) was what the review page posted back: the case
    now carries a key of at most 255 characters, and the feed finds the case by that key."""
    feed = Feed()
    long_id = "e" * 999_000
    feed.add(
        ({"kind": "decision", "event_id": eid, "user_id": "u1", "type": "t", "ts": 1, "action": "REVIEW",
          "rules": [{"id": "r1"}], "shadow": []}, 1)
        for eid in (long_id, "short")
    )  # fmt: skip
    short, long = feed.cases()
    assert short.key == "2:u1:decision:short"
    assert long.key == case_key("u1", f"decision:{long_id}") and len(long.key) <= 255
    assert long.key.startswith("2:u1:decision:eee")
    assert feed.case(long.key) is long and feed.case(short.key) is short
    assert feed.case(long.key[:-1]) is None


def test_two_users_cases_with_one_event_id_are_two_cases() -> None:
    """Event ids are the sender's, unique only within a user: a case was keyed by ``decision:<event_id>``
    alone, so an attacker's event with a victim's event id made one key for both cases, and the feed gave
    the newest (his) for a label meant for the victim's. Keyed by (user, id), each is found by its own."""
    feed = Feed()
    feed.add(
        [
            (decision("e1", "victim", "REVIEW", ["big"]), NOW),
            (decision("e1", "attacker", "REVIEW", ["other"]), NOW + 1),
            (alert("a1", "victim", "big"), NOW + 2),
            (alert("a1", "attacker", "other"), NOW + 3),
        ]
    )
    cases = feed.cases()
    assert len({c.key for c in cases}) == 4
    for user, rule in (("victim", "big"), ("attacker", "other")):
        for case_id in ("decision:e1", "alert:a1"):
            case = feed.case(case_key(user, case_id))
            assert case is not None and case.user_id == user and rule in case.rules + case.shadow
    assert feed.case("decision:e1") is None  # an id alone names no case


def test_a_case_key_cannot_be_forged_across_the_separator() -> None:
    """The length of the user id in front says where it ends: (u1, a:b) and (u1:a, b) differ, as do a short
    key and the hashed form of a long one; every key fits the labels' column."""
    assert case_key("u1", "decision:a:b") == "2:u1:decision:a:b"
    assert case_key("u1:decision:a", "b") != case_key("u1", "decision:a:b")
    assert case_key("u1", "decision:a:b") != case_key("u1:decision", "a:b")
    long_user, long_id = "u" * 256, "decision:" + "e" * 4096
    keys = {case_key(u, i) for u in ("u1", long_user) for i in ("decision:e1", long_id, long_id + "x")}
    assert len(keys) == 6 and all(len(k) <= 255 for k in keys)
    assert case_key("u1", "decision:x#sha256:" + "0" * 64) != "2:u1:decision:x#sha256:" + "0" * 64
