"""The door, end to end: hostile records among valid events on the real job (MiniCluster, p=2, MySQL CDC).

Sent, interleaved with valid events: a 1,000,000-byte binary record, invalid UTF-8 inside a JSON string, a
lone surrogate in ``user_id``, an amount of 10^400, a field nested 1,024 deep, and another user's event
stamped 9999-12-31 in the middle of a brute-force run (issue 11's acceptance case: the success must still be
REJECTed). Checked: each hostile record has one dead letter with reason, field, Kafka coordinates and the
original bytes (base64 when not UTF-8), within ``dead_letter_max_bytes``; every valid event is decided exactly
once; the job never restarted (its REST API: never RESTARTING, ``numRestarts`` 0, no exception history).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import Settings
from tests.integration.support import Job, new_job, produce, start_job, wait_rules

pytestmark = pytest.mark.integration

DEAD_MAX = 262_144
FAR_FUTURE = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def rest(url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{url}{path}", timeout=10) as resp:  # noqa: S310
        return json.loads(resp.read())


@pytest.fixture(scope="module", params=["at-least-once", "exactly-once"])
def door_job(
    request: pytest.FixtureRequest, stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    j = new_job(stack, tmp_path_factory.mktemp("door"))
    extra = {
        "RISKCTL_JOB_DELIVERY": request.param,
        "RISKCTL_JOB_DEAD_LETTER_MAX_BYTES": str(DEAD_MAX),
        # this module's events are stamped with the wall clock: the real skew check applies, and event time
        # moves at most to the clock (the defaults)
        "RISKCTL_JOB_MAX_CLOCK_SKEW_MS": "300000",
        "RISKCTL_JOB_EVENT_TIME_PAST_CLOCK": "false",
        # too-late events are held (test_a_too_late_transfer_is_held_by_job_too_late_action); none of the
        # other tests here sends one
        "RISKCTL_JOB_TOO_LATE_ACTION": "REVIEW",
    }
    proc = start_job(j, tmp_path_factory.getbasetemp() / f"door-{j.rules_table}.log", extra)
    try:
        wait_rules(j)
        yield j, proc.rest_url(), request.param
    finally:
        proc.stop()


def _key(value: Any) -> bytes:
    """Events by user (a user's events stay in order, on one partition); hostile bytes on any partition."""
    return value["user_id"].encode() if isinstance(value, dict) else b"door"


def _read_committed(job: Job, kind: str, done: Any, mode: str, timeout: float = 120) -> list[dict[str, Any]]:
    from tests.integration.support import consume_until

    level = "read_committed" if mode == "exactly-once" else "read_uncommitted"
    return consume_until(
        job.settings, job.topics[kind], done, timeout=timeout, job=job.proc, isolation_level=level
    )


def test_hostile_records_get_dead_letters_and_never_restart_the_job(door_job: Any) -> None:
    job, url, mode = door_job
    now = int(time.time() * 1000)
    victim, other, plain = job.user("victim"), job.user("attacker"), job.user("plain")

    def ev(eid: str, user: str, t: int, **fields: Any) -> dict[str, Any]:
        return {"event_id": eid, "user_id": user, "type": "login", "ts": now - 20_000 + t, **fields}

    fail1, fail2 = ev(f"{victim}-1", victim, 0, success=False), ev(f"{victim}-2", victim, 1000, success=False)
    fail3, win = ev(f"{victim}-3", victim, 2000, success=False), ev(f"{victim}-4", victim, 3000, success=True)
    future = {**ev(f"{other}-f", other, 0), "ts": FAR_FUTURE}
    binary = bytes((i * 7 + 3) % 256 for i in range(1_000_000))
    bad_utf8 = json.dumps(ev(f"{plain}-u8", plain, 0, city="X")).encode().replace(b'"X"', b'"\xff\xfe"')
    surrogate = json.dumps(ev(f"{plain}-sg", plain, 0)).replace(
        f'"user_id": "{plain}"', '"user_id": "\\ud800"'
    )
    surrogate_b = surrogate.encode()
    assert b"\\ud800" in surrogate_b
    huge = json.dumps(ev(f"{plain}-big", plain, 0, type="transfer"))[:-1] + ', "amount": 1' + "0" * 400 + "}"
    deep = (
        json.dumps(ev(f"{plain}-deep", plain, 0))[:-1] + ', "m": ' + '{"a":' * 1024 + "1" + "}" * 1024 + "}"
    )
    valid = [ev(f"{plain}-{i}", plain, 100 * i) for i in range(5)]
    too_long = json.dumps(ev(f"{plain}-long", "u" * 257, 0)).encode()  # one over MAX_ID_LENGTH: no key
    # A user id with a final line break is another user: keyed as the id without it (a key read that trims
    # or stops at a line break), these three failures and that user's success would be a brute force
    nl = job.user("nl")
    nl_fails = [ev(f"{nl}-f{i}", nl + "\n", 100 * i, success=False) for i in range(3)]
    nl_win = ev(f"{nl}-w", nl, 400, success=True)
    # Two ids of MAX_ID_LENGTH astral characters (each two UTF-16 units: a cut counting those would key both
    # as one prefix) that differ in their last: two failures of one and a failure and a success of the other
    # are no brute force
    base = job.user("astral")
    stem = "\U0001f600" * (255 - len(base)) + base
    astral = [ev(f"{base}-{i}", stem + "ab"[i // 2], 100 * i, success=i == 3) for i in range(4)]
    assert all(len(e["user_id"]) == 256 for e in astral)
    hostile: list[bytes] = [binary, bad_utf8, surrogate_b, huge.encode(), deep.encode(), too_long]
    records: list[Any] = [fail1, fail2, future, hostile[0], valid[0], fail3, hostile[1], valid[1]]
    records += [win, hostile[2], valid[2], hostile[3], valid[3], hostile[4], valid[4], hostile[5]]
    records += [None, b""]  # a tombstone (no value at all) and an empty value, keyed like the rest
    produce(job.settings, job.topics["events"], records, key=_key)
    # one partition for both ids, in this order, so that keying them alike would be seen
    produce(job.settings, job.topics["events"], [*nl_fails, nl_win], key=lambda _: nl.encode())
    produce(job.settings, job.topics["events"], astral, key=lambda _: b"astral")

    wanted = {e["event_id"] for e in [fail1, fail2, fail3, win, *valid, *nl_fails, nl_win, *astral]}
    decisions = _read_committed(job, "decisions", lambda rs: wanted <= {r["event_id"] for r in rs}, mode)
    mine = [r for r in decisions if r["event_id"] in wanted]
    assert sorted(r["event_id"] for r in mine) == sorted(wanted), "every valid event decided exactly once"
    by_id = {r["event_id"]: r for r in mine}
    assert by_id[win["event_id"]]["action"] == "REJECT", by_id[win["event_id"]]
    assert by_id[win["event_id"]]["rules"][0]["id"] == "brute_force_login"
    assert by_id[nl_win["event_id"]]["action"] == "PASS", by_id[nl_win["event_id"]]
    assert by_id[astral[3]["event_id"]]["action"] == "PASS", by_id[astral[3]["event_id"]]

    def mine_dead(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rs if r.get("topic") == job.topics["events"]]

    dead = mine_dead(_read_committed(job, "dead", lambda rs: len(mine_dead(rs)) >= 9, mode))
    assert len(dead) == 9, [(d["reason"], d["field"]) for d in dead]
    for d in dead:
        assert len(json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()) <= DEAD_MAX
        assert isinstance(d["partition"], int) and d["offset"] >= 0 and d["kind"] == "dead_letter"
    big = next(d for d in dead if d["raw_bytes"] == 1_000_000)
    assert "larger than max_event_bytes" in big["reason"] and big["truncated"] is True
    assert binary.startswith(base64.b64decode(big["raw_base64"]))
    u8 = next(d for d in dead if "not valid UTF-8" in d["reason"])
    assert base64.b64decode(u8["raw_base64"]) == bad_utf8 and u8["truncated"] is False  # original bytes
    assert any(d["field"] == "user_id" and "lone surrogate" in d["reason"] for d in dead)
    assert any(d["field"] == "user_id" and json.loads(d["raw"])["event_id"] == f"{plain}-long" for d in dead)
    assert any(d["field"] == "amount" and "beyond 1e+15" in d["reason"] for d in dead)
    assert any("nested" in d["reason"] for d in dead)
    tombstone = next(d for d in dead if "null value" in d["reason"])
    assert tombstone["raw_bytes"] is None and tombstone["raw"] is None, tombstone
    assert any(d["raw_bytes"] == 0 for d in dead), [(d["reason"], d["raw_bytes"]) for d in dead]
    far = next(d for d in dead if d["field"] == "ts")
    assert "ahead of now" in far["reason"] and json.loads(far["raw"])["event_id"] == future["event_id"]

    jobs = rest(url, "/jobs/overview")["jobs"]
    running = [j for j in jobs if j["state"] == "RUNNING"]
    assert len(running) == 1, jobs
    jid = running[0]["jid"]
    detail = rest(url, f"/jobs/{jid}")
    assert detail["timestamps"].get("RESTARTING", 0) == 0, detail["timestamps"]  # never entered RESTARTING
    metrics = rest(url, f"/jobs/{jid}/metrics?get=numRestarts")  # empty until the first metrics report
    assert all(int(float(m["value"])) == 0 for m in metrics), metrics
    history = rest(url, f"/jobs/{jid}/exceptions")
    assert not history.get("exceptionHistory", {}).get("entries"), history
    # the decide operator's own counters (riskctl.flink.risk_function.METRICS): every decided event looked
    # its user up in the state cache, and the guard caught nothing (the hostile records are the door's)
    counted = _decide_metrics(url, jid, lambda m: m["stateCacheHits"] + m["stateCacheMisses"] >= len(wanted))
    assert counted["stateCacheHits"] + counted["stateCacheMisses"] >= len(wanted), counted
    assert counted["internalErrors"] == 0 and counted["timerErrors"] == 0, counted
    # and the events took the fast path (riskctl.flink.fast_path) in every subtask: the door's hostile
    # records, its dead letters and the decisions above all came through it
    # the MiniCluster's JVM runs without its event log (riskctl.config.settings.JVM_OPTIONS)
    assert "-XX:-LogEvents" in rest(url, "/jobmanager/environment")["jvm"]["options"]
    decide_parallelism = next(v["parallelism"] for v in detail["vertices"] if v["name"].startswith("decide"))
    assert counted["fastPath"] == decide_parallelism >= 1, counted
    # and says so in the MiniCluster's log, which is in the stack's folder (riskctl.flink.env.local_log_dir),
    # with its RocksDB instances' LOG files, not in PyFlink's site-packages
    assert job.proc is not None
    logs = Path(job.settings.stack.dir) / "minicluster-logs" / str(job.proc.proc.pid)
    flink_log = next(logs.glob("flink-*-python-*.log"))
    text = flink_log.read_text(errors="replace")
    for subtask in range(decide_parallelism):
        assert f"decide subtask {subtask}: engine core " in text, flink_log
    assert text.count("; events by the fast path") == decide_parallelism, flink_log
    # each user's state bytes went into the Java ValueState (riskctl.flink.fast_path), pickled by the operator
    # as bytes, not through PyFlink's wrapper
    assert text.count("; state bytes by the Java ValueState;") == decide_parallelism, flink_log
    # chained operators pass records on without copying them (riskctl.flink.env)
    assert rest(url, f"/jobs/{jid}/config")["execution-config"]["object-reuse-mode"] is True
    assert any(logs.glob("*EmbeddedPythonKeyedCoProcessOperator*LOG")), sorted(p.name for p in logs.iterdir())
    assert f"Flink's log in {logs}" in job.proc.log.read_text(errors="replace")


def test_a_ts_out_of_bounds_never_moves_event_time_and_none_moves_it_past_the_clock(door_job: Any) -> None:
    """The source's event time takes a record's ``ts`` only within [0, 9999-12-31] and at most
    ``max_clock_skew_ms`` ahead of the wall clock (riskctl.flink.job._events: the test on a clamped copy), and
    moves at most to the wall clock (``event_time_column_sql``). Seen through an absence rule, whose deadline
    fires when event time passes it; all on one partition (the other goes idle: this one's watermark is the
    job's):

    - a login on a new device 310 s ago arms ``new_device_without_2fa`` for 10 s ago (ahead of the event time
      the module's first test left, about 20 s ago); the hostile stamps (one of them taken would move event
      time at least to the clock), then ticks of its own time, must not fire it;
    - another user's login on a new device 20 s ago arms the same rule for 280 s ahead of the clock;
    - a third user's event stamped 290 s ahead, within the skew (taken: decided, not dead-lettered), moves
      event time to the clock, not to its own time: the first deadline fires and the second does not. Before,
      that one event fired every user's deadline up to its time, a 2FA still to come included."""
    job, _, mode = door_job
    now = int(time.time() * 1000)
    u, early, ahead = job.user("clockwatch"), job.user("early"), job.user("ahead")

    def ev(user: str, eid: str, t: int, etype: str = "order", **fields: Any) -> dict[str, Any]:
        return {"event_id": f"{user}-{eid}", "user_id": user, "type": etype, "ts": now + t, **fields}

    login = ev(u, "login", -310_000, "login", success=True, device_id="new-device")
    stamps = [FAR_FUTURE, FAR_FUTURE + 1, now + 400_000, -1, -(2**63), 2**63 - 1, 2**63, 1e300, "1.5e12"]
    hostile = [{**ev(u, f"h{i}", -310_000), "ts": ts} for i, ts in enumerate(stamps)]
    one_partition = {"key": lambda _: u.encode()}
    produce(job.settings, job.topics["events"], [login, *hostile], **one_partition)
    for i in range(10):  # the partition stays active, and its watermark is emitted, after the stamps
        produce(
            job.settings, job.topics["events"], [ev(u, f"t{i}", -310_000 + 2_000 * (i + 1))], **one_partition
        )
        time.sleep(0.3)

    def of(user: str, rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rs if r.get("user_id") == user]

    assert of(u, _read_committed(job, "alerts", lambda rs: bool(of(u, rs)), mode, timeout=8)) == []
    second = ev(early, "login", -20_000, "login", success=True, device_id="new-device")
    tick = ev(ahead, "tick", 290_000)
    produce(job.settings, job.topics["events"], [second, tick], **one_partition)
    alerts = _read_committed(job, "alerts", lambda rs: bool(of(u, rs)), mode, timeout=60)
    assert [(a["rule"]["id"], a["reason"]) for a in of(u, alerts)] == [("new_device_without_2fa", "timer")]
    decisions = _read_committed(job, "decisions", lambda rs: bool(of(ahead, rs)), mode, timeout=30)
    assert [d["event_id"] for d in of(ahead, decisions)] == [tick["event_id"]]  # taken, at its own ts
    # the watermark that fired the first deadline would have fired the second at once: read every partition
    # of the alerts topic for a few seconds past the first alert
    settled = time.monotonic() + 4

    def read_on(rs: list[dict[str, Any]]) -> bool:
        return bool(of(u, rs)) and time.monotonic() > settled

    assert of(early, _read_committed(job, "alerts", read_on, mode, timeout=30)) == []
    dead = _read_committed(job, "dead", lambda rs: len(_of(rs, u)) >= len(hostile), mode)
    assert sorted(json.loads(d["raw"])["event_id"] for d in _of(dead, u)) == sorted(
        e["event_id"] for e in hostile
    )


def test_an_event_stamped_ahead_of_the_clock_does_not_blind_its_user(door_job: Any) -> None:
    """One event stamped 290 s ahead of the wall clock (within the skew: taken) is decided at the clock's
    time, its decision saying how far ahead it was; the same user's transfers sent after it, stamped at the
    real time, are in order and count: the one that takes the 5-minute sum past 50,000 is REVIEWed. Before,
    the forged time became the user's newest, each next transfer was more than the lateness behind it (too
    late, counted by no feature), and all of them passed."""
    job, _, mode = door_job
    m = job.user("mallory")

    def mine(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rs if r.get("user_id") == m]

    sent_at = int(time.time() * 1000)
    forged = {"event_id": f"{m}-f", "user_id": m, "type": "page_view", "ts": sent_at + 290_000}
    one_partition = {"key": lambda _: m.encode()}
    produce(job.settings, job.topics["events"], [forged], **one_partition)
    (first,) = mine(_read_committed(job, "decisions", lambda rs: bool(mine(rs)), mode, timeout=60))
    taken_at = first["ts"] - first["ahead_ms"]  # the job's clock when it decided the event
    assert first["ts"] == forged["ts"] and sent_at <= taken_at <= int(time.time() * 1000)
    now = max(int(time.time() * 1000), taken_at)  # (the clock the job took it at is behind the transfers)
    transfers = [
        {"event_id": f"{m}-t{i}", "user_id": m, "type": "transfer", "amount": 19_000, "ts": now + i}
        for i in range(3)
    ]
    produce(job.settings, job.topics["events"], transfers, **one_partition)
    decided = mine(_read_committed(job, "decisions", lambda rs: len(mine(rs)) >= 4, mode, timeout=60))
    by_id = {d["event_id"]: d for d in decided}
    assert len(decided) == 4 and set(by_id) == {forged["event_id"], *(t["event_id"] for t in transfers)}
    got = [(by_id[t["event_id"]]["action"], by_id[t["event_id"]]["too_late"]) for t in transfers]
    assert got == [("PASS", False), ("PASS", False), ("REVIEW", False)]
    assert [r["id"] for r in by_id[transfers[2]["event_id"]]["rules"]] == ["transfer_velocity"]


def test_a_too_late_transfer_is_held_by_job_too_late_action(door_job: Any) -> None:
    """A transfer stamped 10 s behind its user's newest event (lateness 2 s here) is too late: counted by no
    feature, so no sum would ever hold it. job.too_late_action REVIEW (this module's job) holds it, with no
    rule fired; the job counts it (riskctl.tooLate)."""
    job, url, mode = door_job
    u = job.user("behind")
    now = int(time.time() * 1000)
    view = {"event_id": f"{u}-view", "user_id": u, "type": "page_view", "ts": now}
    late = {"event_id": f"{u}-t", "user_id": u, "type": "transfer", "amount": 100, "ts": now - 10_000}
    produce(job.settings, job.topics["events"], [view, late], key=lambda _: u.encode())

    def mine(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rs if r.get("user_id") == u]

    decided = mine(_read_committed(job, "decisions", lambda rs: len(mine(rs)) >= 2, mode, timeout=60))
    got = {d["event_id"]: (d["too_late"], d["action"], d["rules"]) for d in decided}
    assert got == {view["event_id"]: (False, "PASS", []), late["event_id"]: (True, "REVIEW", [])}
    # with no event after these two, a timer reports them within a second (events that came within the second
    # after a timer's report had no timer: their counts waited for the next event, over a minute in 2 of 5
    # runs of this module)
    jid = next(j["jid"] for j in rest(url, "/jobs/overview")["jobs"] if j["state"] == "RUNNING")
    counted = _decide_metrics(url, jid, lambda m: m["tooLate"] >= 1)
    assert counted["tooLate"] >= 1, counted


def _of(dead: list[dict[str, Any]], user: str) -> list[dict[str, Any]]:
    return [d for d in dead if d.get("raw") and f'"user_id": "{user}"' in d["raw"]]


def _decide_metrics(url: str, jid: str, done: Any, timeout: float = 60) -> dict[str, float]:
    """The riskctl counters of the decide operator, summed over its subtasks (REST fetches them every 10 s,
    and the operator brings them up to date once a second, with its next event or a timer)."""
    from riskctl.flink.risk_function import METRICS, PATH_METRIC

    names = (*METRICS, PATH_METRIC)
    vertex = next(v["id"] for v in rest(url, f"/jobs/{jid}")["vertices"] if v["name"].startswith("decide"))
    deadline = time.monotonic() + timeout
    while True:
        ids = [m["id"] for m in rest(url, f"/jobs/{jid}/vertices/{vertex}/metrics")]
        ours = [i for i in ids if i.split(".")[-2:-1] == ["riskctl"] and i.split(".")[-1] in names]
        values = rest(url, f"/jobs/{jid}/vertices/{vertex}/metrics?get={','.join(ours)}") if ours else []
        counted = dict.fromkeys(names, 0.0)
        for m in values:
            counted[m["id"].split(".")[-1]] += float(m["value"])
        if (ours and done(counted)) or time.monotonic() > deadline:
            return counted
        time.sleep(1)
