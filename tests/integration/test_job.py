"""The risk job end to end: events into Kafka, rules in MySQL (CDC), decisions and alerts out of Kafka.

One job runs for the module (MiniCluster, parallelism 2, its own topics and rules table); each scenario uses
its own users, so scenarios do not see each other. Rule edits (scenarios 11, 12, 17) come last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import PROJECT_ROOT, Settings
from riskctl.core.rules import load_rules
from tests.integration.conftest import JobProcess, consume_until, produce

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000  # event time origin of every scenario
S = 1000


@dataclass
class Job:
    settings: Settings
    env: dict[str, str]
    rules_table: str
    topics: dict[str, str]
    proc: JobProcess | None = None
    users: set[str] = field(default_factory=set)

    def user(self, name: str) -> str:
        uid = f"{name}-{uuid.uuid4().hex[:6]}"
        self.users.add(uid)
        return uid

    def send(self, events: list[dict[str, Any]]) -> None:
        produce(self.settings, self.topics["events"], events, key=_key)

    def read(
        self, kind: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 90
    ) -> list[dict[str, Any]]:
        return consume_until(self.settings, self.topics[kind], done, timeout=timeout, job=self.proc)

    def decisions_for(self, event_ids: list[str], timeout: float = 90) -> dict[str, dict[str, Any]]:
        wanted = set(event_ids)
        recs = self.read("decisions", lambda rs: wanted <= {r["event_id"] for r in rs}, timeout)
        by_id = {r["event_id"]: r for r in recs if r["event_id"] in wanted}
        assert set(by_id) == wanted, f"missing decisions for {wanted - set(by_id)}"
        return by_id


def _key(e: Any) -> bytes | None:
    return str(e["user_id"]).encode() if isinstance(e, dict) and "user_id" in e else None


def ev(eid: str, user: str, etype: str, t: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": eid, "user_id": user, "type": etype, "ts": T0 + t, **fields}


def _job_env(settings: Settings, topics: dict[str, str], table: str, tmp: Path, group: str) -> dict[str, str]:
    server_id = 6000 + uuid.uuid4().int % 3000
    return {
        "RISKCTL_JOB_EVENTS_TOPIC": topics["events"],
        "RISKCTL_JOB_DECISIONS_TOPIC": topics["decisions"],
        "RISKCTL_JOB_ALERTS_TOPIC": topics["alerts"],
        "RISKCTL_JOB_DEAD_LETTER_TOPIC": topics["dead"],
        "RISKCTL_JOB_RULE_STATUS_TOPIC": topics["status"],
        "RISKCTL_JOB_RULES_TABLE": table,
        "RISKCTL_JOB_GROUP_ID": group,
        "RISKCTL_JOB_RULES_SOURCE": "cdc",
        "RISKCTL_JOB_CDC_SERVER_ID": f"{server_id}-{server_id + 3}",
        "RISKCTL_JOB_PARALLELISM": "2",
        "RISKCTL_JOB_LATENESS_MS": "2000",
        "RISKCTL_JOB_IDLENESS_MS": "1000",
        "RISKCTL_JOB_CHECKPOINT_INTERVAL_MS": "1000",
        "RISKCTL_JOB_CHECKPOINT_DIR": (tmp / "chk").as_uri(),
        # the scenarios' event time (T0, in 2027) is ahead of the wall clock: allow it (ten years of skew)
        "RISKCTL_JOB_MAX_CLOCK_SKEW_MS": str(10 * 365 * 24 * 3600 * 1000),
    }


def apply_rules(settings: Settings, table: str) -> None:
    from riskctl.store.connection import connect
    from riskctl.store.rules_store import RuleStore

    conn = connect(settings)
    try:
        store = RuleStore(conn, table)
        store.apply(store.plan(load_rules(PROJECT_ROOT / "rules")), author="tests")
    finally:
        conn.close()


def wait_status(job: Job, rule_id: str, version: int, timeout: float = 60) -> dict[str, Any]:
    recs = job.read(
        "status", lambda rs: any(r["rule_id"] == rule_id and r["version"] == version for r in rs), timeout
    )
    found = [r for r in recs if r["rule_id"] == rule_id and r["version"] == version]
    assert found, f"no status for {rule_id} v{version}: {recs[-5:]}"
    return found[-1]


def new_job(stack: Settings, tmp: Path) -> Job:
    """Fresh topics and rules table (rules/ applied) and the job's environment; the job is not started."""
    from riskctl.kafka_admin import ensure_topics

    suffix = uuid.uuid4().hex[:8]
    topics = {k: f"test-{k}-{suffix}" for k in ("events", "decisions", "alerts", "dead", "status")}
    ensure_topics(stack.kafka_bootstrap, topics.values(), partitions=2)
    table = f"t{suffix}_rules"
    apply_rules(stack, table)
    return Job(stack, _job_env(stack, topics, table, tmp, f"g-{suffix}"), table, topics)


def start_job(job: Job, log: Path, extra: dict[str, str] | None = None) -> JobProcess:
    """Run jobs/risk_job.py on the MiniCluster in its own process group (``JobProcess.stop`` kills it all)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "jobs" / "risk_job.py")],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **job.env, **(extra or {})},
            cwd=PROJECT_ROOT,
        )
    job.proc = JobProcess(proc, log)
    return job.proc


def wait_rules(job: Job, timeout: float = 240) -> None:
    """Until the job reports every rule of rules/ accepted."""
    n_rules = len(load_rules(PROJECT_ROOT / "rules"))
    recs = job.read(
        "status", lambda rs: len({r["rule_id"] for r in rs if r["state"] == "accepted"}) >= n_rules, timeout
    )
    assert len({r["rule_id"] for r in recs if r["state"] == "accepted"}) >= n_rules, recs


@pytest.fixture(scope="module")
def job(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    j = new_job(stack, tmp_path_factory.mktemp("job"))
    proc = start_job(j, tmp_path_factory.getbasetemp() / f"job-{j.rules_table}.log")
    try:
        wait_rules(j)
        yield j
    finally:
        proc.stop()


# -- scenarios on the running job ---------------------------------------------------------------------------
def test_scenario_1_brute_force_rejects_the_success(job: Job) -> None:
    u = job.user("bf")
    events = [
        ev(f"{u}-1", u, "login", 0, success=False, device_id="d1", city="Paris"),
        ev(f"{u}-2", u, "login", 2 * S, success=False, device_id="d1", city="Paris"),
        ev(f"{u}-3", u, "login", 4 * S, success=False, device_id="d1", city="Paris"),
        ev(f"{u}-4", u, "login", 6 * S, success=True, device_id="d1", city="Paris"),
    ]
    job.send(events)
    d = job.decisions_for([e["event_id"] for e in events])
    assert [d[e["event_id"]]["action"] for e in events[:3]] == ["PASS", "PASS", "PASS"]
    last = d[f"{u}-4"]
    assert last["action"] == "REJECT" and last["user_id"] == u and last["ts"] == T0 + 6 * S
    fired = {r["id"]: r for r in last["rules"]}
    assert fired["brute_force_login"]["version"] == 1
    steps = fired["brute_force_login"]["evidence"]["match"]["steps"]
    assert steps == {"first_fail": [f"{u}-1"], "more_fails": [f"{u}-2", f"{u}-3"], "success": [f"{u}-4"]}


def test_scenario_4_account_takeover_chain(job: Job) -> None:
    u = job.user("ato")
    events = [
        ev(f"{u}-1", u, "login", 0, success=True, city="Lyon", device_id="a"),
        ev(f"{u}-2", u, "password_change", 60 * S),
        ev(f"{u}-3", u, "transfer", 120 * S, amount=12_000),
    ]
    job.send(events)
    d = job.decisions_for([e["event_id"] for e in events])
    t = d[f"{u}-3"]
    assert t["action"] == "REJECT"
    chain = next(r for r in t["rules"] if r["id"] == "account_takeover_chain")
    assert chain["evidence"]["match"]["steps"] == {
        "login": [f"{u}-1"],
        "password": [f"{u}-2"],
        "transfer": [f"{u}-3"],
    }


def test_scenario_6_velocity_and_13_shadow(job: Job) -> None:
    u = job.user("vel")
    amounts = [20_000, 20_000, 15_000]  # the third crosses 50,000 within 5 minutes
    events = [ev(f"{u}-{i}", u, "transfer", i * 30 * S, amount=a) for i, a in enumerate(amounts)]
    job.send(events)
    d = job.decisions_for([e["event_id"] for e in events])
    assert [d[e["event_id"]]["action"] for e in events] == ["PASS", "PASS", "REVIEW"]
    crossing = next(r for r in d[f"{u}-2"]["rules"] if r["id"] == "transfer_velocity")
    assert crossing["evidence"]["features"]["transfer_sum_5m"] == 55_000
    # scenario 13: the shadow rule would REJECT 20,000 transfers; the action stays PASS, the hit is recorded
    first = d[f"{u}-0"]
    assert first["action"] == "PASS"
    assert [s["id"] for s in first["shadow"]] == ["large_transfer_reject"]


def test_scenario_16_bad_events_go_to_dead_letter(job: Job) -> None:
    u = job.user("bad")
    good_after = ev(f"{u}-ok", u, "login", 0, success=True, device_id="x")
    job.send(
        [
            "not json",
            {"event_id": f"{u}-nouser", "type": "login", "ts": T0},
            ev(f"{u}-str", u, "transfer", S, amount="abc"),
            good_after,
        ]
    )
    dead = job.read(
        "dead",
        lambda rs: sum(r["raw"] is not None and u in r["raw"] or r["raw"] == "not json" for r in rs) >= 3,
    )
    mine = [r for r in dead if r["raw"] == "not json" or u in (r["raw"] or "")]
    reasons = {(r["field"], r["reason"].split(":")[0]) for r in mine}
    assert (None, "not valid JSON") in reasons
    assert ("user_id", "required field is missing") in reasons
    assert ("amount", "must be a number, got the string 'abc'") in reasons
    for r in mine:
        assert r["topic"] == job.topics["events"] and isinstance(r["partition"], int) and r["offset"] >= 0
    assert job.decisions_for([good_after["event_id"]])[good_after["event_id"]]["action"] == "PASS"


def test_scenario_10_absence_alert_when_time_passes(job: Job) -> None:
    u = job.user("nodev")
    login = ev(f"{u}-1", u, "login", 0, success=True, device_id="new-device", city="Oslo")
    job.send([login])
    job.decisions_for([login["event_id"]])
    # event time advances through other users' traffic; nothing more arrives for this user
    other = job.user("clock")
    job.send([ev(f"{other}-{i}", other, "order", (290 + 10 * i) * S) for i in range(4)])
    alerts = job.read("alerts", lambda rs: any(a["user_id"] == u for a in rs), timeout=90)
    alert = next(a for a in alerts if a["user_id"] == u)
    assert alert["reason"] == "timer" and alert["rule"]["id"] == "new_device_without_2fa"
    assert alert["ts"] == T0 + 300 * S
    assert alert["rule"]["evidence"]["match"]["steps"]["login"] == [f"{u}-1"]


# -- rule edits through MySQL while the job runs ------------------------------------------------------
def _store(job: Job) -> Any:
    from riskctl.store.connection import connect
    from riskctl.store.rules_store import RuleStore

    return RuleStore(connect(job.settings), job.rules_table)


def _edit_velocity(job: Job, limit: int) -> tuple[int, float]:
    """Write a new version of transfer_velocity with another limit; return (version, commit wall time)."""
    store = _store(job)
    try:
        current = store.require("transfer_velocity")
        doc = json.loads(json.dumps(current.document))
        doc["when"] = f"transfer_sum_5m > {limit}"
        from riskctl.core.rules import RuleSet, parse_rule

        others = [parse_rule(r.document) for r in store.current() if r.rule_id != "transfer_velocity"]
        plan = store.plan(RuleSet([*others, parse_rule(doc)]))
        changes = store.apply(plan, author="tests", comment=f"limit {limit}")
        committed = time.time()
    finally:
        store.conn.close()
    (change,) = [c for c in changes if c.rule_id == "transfer_velocity"]
    return change.version, committed


def test_scenario_11_hot_rule_change_within_a_second(job: Job) -> None:
    propagation = []
    for limit in (10_000, 12_000, 10_000):
        version, committed = _edit_velocity(job, limit)
        status = wait_status(job, "transfer_velocity", version)
        assert status["state"] == "accepted"
        propagation.append(status["seen_at_ms"] / 1000 - committed)
        u = job.user("hot")
        events = [ev(f"{u}-1", u, "transfer", 0, amount=6_000), ev(f"{u}-2", u, "transfer", S, amount=6_500)]
        job.send(events)
        d = job.decisions_for([e["event_id"] for e in events])
        assert d[f"{u}-1"]["action"] == "PASS"
        assert d[f"{u}-2"]["action"] == "REVIEW"
        (fired,) = [r for r in d[f"{u}-2"]["rules"] if r["id"] == "transfer_velocity"]
        assert fired["version"] == version
    print(f"\nrule propagation MySQL commit -> job applied (s): {[round(p, 3) for p in propagation]}")
    assert max(propagation) < 1.0, propagation


def test_scenario_12_disabled_rule_stops_firing(job: Job) -> None:
    store = _store(job)
    try:
        change = store.set_status("transfer_velocity", "disabled", author="tests")
    finally:
        store.conn.close()
    assert change is not None
    assert wait_status(job, "transfer_velocity", change.version)["state"] == "accepted"
    u = job.user("disabled")
    events = [ev(f"{u}-{i}", u, "transfer", i * S, amount=30_000) for i in range(3)]
    job.send(events)
    d = job.decisions_for([e["event_id"] for e in events])
    assert all("transfer_velocity" not in [r["id"] for r in x["rules"]] for x in d.values())


def test_scenario_17_bad_rule_is_refused_and_old_version_keeps_running(job: Job, mysql: Any) -> None:
    rule = "register_then_quick_order"
    # a writer that bypasses `riskctl rules apply` (which would refuse it) puts a broken version in MySQL
    with mysql.cursor() as cur:
        cur.execute(f"SELECT version, document FROM `{job.rules_table}` WHERE rule_id=%s", (rule,))
        version, document = cur.fetchone()
        bad = json.loads(document)
        bad["sequence"]["steps"][1]["when"] = "event.type == 'order' and"
        bad["version"] = version + 1
        cur.execute(
            f"UPDATE `{job.rules_table}` SET version=%s, document=%s WHERE rule_id=%s",
            (version + 1, json.dumps(bad), rule),
        )
    status = wait_status(job, rule, version + 1)
    assert status["state"] == "refused"
    assert status["field"] == "sequence.steps[1].when" and status["reason"], status
    # scenario 9 on the previous version, which keeps running
    u = job.user("quick")
    events = [ev(f"{u}-1", u, "register", 0), ev(f"{u}-2", u, "order", 2 * S)]
    job.send(events)
    d = job.decisions_for([e["event_id"] for e in events])
    (fired,) = [r for r in d[f"{u}-2"]["rules"] if r["id"] == rule]
    assert d[f"{u}-2"]["action"] == "REVIEW" and fired["version"] == version
    assert job.proc is not None
    job.proc.check_alive()
