"""The risk job end to end: events into Kafka, rules in MySQL (CDC), decisions and alerts out of Kafka.

One job runs for the module (MiniCluster, parallelism 2, its own topics and rules table); each scenario uses
its own users, so scenarios do not see each other. Rule edits (scenarios 11, 12, 17) come last.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import Settings
from tests.helpers import as_a_terminal_would
from tests.integration.support import (
    T0,
    Job,
    S,
    edit_velocity,
    ev,
    new_job,
    rule_store,
    start_job,
    wait_rules,
    wait_status,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def job(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    j = new_job(stack, tmp_path_factory.mktemp("job"))
    proc = start_job(j, tmp_path_factory.getbasetemp() / f"job-{j.rules_table}.log")
    try:
        wait_rules(j)
        yield j
    finally:
        proc.stop()


def test_the_minicluster_works_in_the_stack_folder_not_in_tmp(job: Job) -> None:
    """Its blobs and the decide operator's RocksDB live under <stack dir>/minicluster/<pid>, where the next
    run removes them once the job is stopped; in /tmp every run left its own 50 MB and more. RocksDB is in its
    rocksdb/, not under Flink's minicluster_<32 hex>/tm_0/tmp/: its LOG files are named after that path."""
    from pathlib import Path

    assert job.proc is not None
    stack_dir = Path(job.env.get("RISKCTL_STACK_DIR", job.settings.stack.dir))
    work = stack_dir / "minicluster" / str(job.proc.proc.pid)
    assert sorted(p.name[:12] for p in work.iterdir()) == ["minicluster_", "rocksdb"]
    assert list(work.glob("rocksdb/*EmbeddedPython*/db/CURRENT")), sorted(work.rglob("*"))[:20]


def test_the_job_runs_the_compiled_core_that_setup_built(job: Job) -> None:
    """scripts/setup compiles the engine's core (mypyc) into .cache/native-core, and the job's decide
    operators load it: the JVM that runs them maps its shared library, and each decide subtask logs, once
    open, the compiled modules its interpreter imported (a compiled module imported by another one is loaded
    from the shared library, so the modules' own files are not all mapped). Without a usable build (no C
    compiler), the job runs the pure-Python core; in CI, where setup ran, that is a failure."""
    import os
    import re
    import time
    from pathlib import Path

    from riskctl.core import native

    why = native.problem(native.DEFAULT_BUILD, Path(native.__file__).parent)
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"scripts/setup left no usable compiled core: {why}")
        pytest.skip(f"no usable compiled core here ({why}): run scripts/setup")
    assert job.proc is not None
    found = re.search(r"Flink's log in (\S+)", job.proc.log.read_text(errors="replace"))
    assert found, job.proc.log_tail()
    flink_log = Path(found.group(1))
    opened: dict[str, str] = {}
    deadline = time.monotonic() + 120
    while len(opened) < 2 and time.monotonic() < deadline:
        for f in flink_log.glob("*.log"):
            for m in re.finditer(r"decide subtask (\d+): engine core (.*)", f.read_text(errors="replace")):
                opened[m.group(1)] = m.group(2)
        time.sleep(0.5)
    assert sorted(opened) == ["0", "1"], (opened, sorted(flink_log.iterdir()))
    for line in opened.values():
        core = re.match(r"native:(\S+) \(compiled modules: ([^)]*)\)", line)
        assert core and core.group(1) == str(native.DEFAULT_BUILD), line
        hot = {"decisions", "engine", "features", "patterns", "stored"}
        assert hot <= set(core.group(2).split(", ")), line
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, mapped = [job.proc.proc.pid], set()
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            maps = (Path("/proc") / str(pid) / "maps").read_text()
        except OSError:
            continue
        mapped |= {line.split()[-1] for line in maps.splitlines() if str(native.DEFAULT_BUILD) in line}
    assert any(Path(m).name.split(".")[0].endswith("__mypyc") for m in mapped), mapped


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
    # another user's absence is settled by the 2FA: the job deletes that timer (delete_event_time_timer)
    settled = job.user("settled")
    s_login = ev(f"{settled}-1", settled, "login", 0, success=True, device_id="new-device", city="Oslo")
    s_2fa = ev(f"{settled}-2", settled, "2fa", 10 * S, success=True)
    job.send([login, s_login, s_2fa])
    decided = job.decisions_for([login["event_id"], s_login["event_id"], s_2fa["event_id"]])
    assert decided[s_2fa["event_id"]]["action"] == "PASS"  # decided, not dead-lettered by the deletion
    # event time advances through other users' traffic; nothing more arrives for this user
    other = job.user("clock")
    job.send([ev(f"{other}-{i}", other, "order", (290 + 10 * i) * S) for i in range(4)])
    alerts = job.read("alerts", lambda rs: any(a["user_id"] == u for a in rs), timeout=90)
    alert = next(a for a in alerts if a["user_id"] == u)
    assert alert["reason"] == "timer" and alert["rule"]["id"] == "new_device_without_2fa"
    assert alert["ts"] == T0 + 300 * S
    assert alert["rule"]["evidence"]["match"]["steps"]["login"] == [f"{u}-1"]
    assert not any(a["user_id"] == settled for a in alerts)


# -- rule edits through MySQL while the job runs ------------------------------------------------------
def test_scenario_11_hot_rule_change_within_a_second(job: Job) -> None:
    propagation = []
    for limit in (10_000, 12_000, 10_000):
        version, committed = edit_velocity(job, limit)
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
    # Three edits timed on a shared 2-core machine: one may meet a checkpoint or a busy neighbour (CI,
    # 2026-12-03: 1.006 s, then 0.31 and 0.34; the code before that session gave 0.88 s for a first edit
    # too). The median must stay under a second and no edit may take three; the distribution over 25 edits
    # is bench.py's (c), p99 195-423 ms.
    assert sorted(propagation)[1] < 1.0, propagation
    assert max(propagation) < 3.0, propagation


def test_scenario_12_disabled_rule_stops_firing(job: Job) -> None:
    store = rule_store(job)
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


def test_a_state_ttl_up_to_the_largest_setting_decides(stack: Settings, tmp_path: Path) -> None:
    """job.state_ttl_ms takes values up to 2**63 - 1 ms; with the margin, the TTL given to Flink went beyond
    a Java long: the decide operator's open() raised OverflowError ("int too big to convert") at every
    restart and no event was decided. Flink's TTL is now the longest it takes."""
    j = new_job(stack, tmp_path)
    proc = start_job(j, tmp_path / "job.log", {"RISKCTL_JOB_STATE_TTL_MS": str(2**63 - 1)})
    try:
        wait_rules(j, timeout=120)
        u = j.user("ttl")
        e = ev(f"{u}-1", u, "transfer", 0, amount=5)
        j.send([e])
        assert j.decisions_for([e["event_id"]], timeout=60)[e["event_id"]]["action"] == "PASS"
    finally:
        proc.stop()


def test_ctrl_c_stops_riskctl_run_with_one_line_and_status_130(stack: Settings, tmp_path: Path) -> None:
    """'riskctl run' runs until Ctrl-C; Ctrl-C interrupted py4j's wait for the JVM, which logged a traceback
    ('KeyboardInterrupt while sending command.'), then click printed 'Aborted!' and the status was 1."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from riskctl.config import PROJECT_ROOT

    j = new_job(stack, tmp_path)
    log = tmp_path / "run.log"

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "riskctl.cli.main", "run", "--from-empty"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **j.env, "RISKCTL_JOB_RULES_SOURCE": "file"},
            cwd=PROJECT_ROOT,
            start_new_session=True,
            preexec_fn=as_a_terminal_would,  # noqa: PLW1509 - only restores a signal's default
        )
    try:
        deadline = time.monotonic() + 120
        while b"riskctl job starting" not in log.read_bytes() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")
            time.sleep(0.5)
        time.sleep(5)  # the job is submitted and runs: env.execute waits
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        assert proc.wait(timeout=60) == 130, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text(errors="replace")
    assert "riskctl job stopped (Ctrl-C)" in text
    assert "Traceback" not in text and "Aborted!" not in text, text
