"""The benchmark harness (bench/harness/) where it decides something without Kafka or Flink: the commands it
gives the contender scripts, the random live events, the MATCH_RECOGNIZE check.

The harness is imported as ``harness`` with bench/ on the path, the way bench/bench.py imports it.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture(scope="module")
def harness() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        importlib.import_module("harness.contenders")
        importlib.import_module("harness.run")
        importlib.import_module("harness.workload")
        yield sys.modules["harness"]
    finally:
        sys.path.remove(str(BENCH))


def _contender(harness: ModuleType, kind: str, tmp_path: Path, parallelism: int = 1) -> Any:
    topics = harness.kafka_io.Topics.fresh("t")
    settings = SimpleNamespace(kafka_bootstrap="127.0.0.1:19092")
    return getattr(harness.contenders, kind)(kind, parallelism, settings, topics, tmp_path)


@pytest.mark.parametrize(
    ("kind", "script", "group"),
    [("PlainLoop", "plain_loop.py", "plain"), ("MatchRecognize", "match_recognize.py", "mr")],
)
def test_a_contender_script_gets_the_options_its_shared_parser_reads(
    harness: ModuleType, tmp_path: Path, kind: str, script: str, group: str
) -> None:
    contender = _contender(harness, kind, tmp_path)
    ((cmd, env),) = contender.commands()
    assert (
        cmd[0] == sys.executable and Path(cmd[1]) == BENCH / "contenders" / script and Path(cmd[1]).is_file()
    )
    args, rest = harness.contenders.contender_parser("doc").parse_known_args(cmd[2:])
    assert args.bootstrap == "127.0.0.1:19092"
    assert args.events_topic == contender.topics.events
    assert args.group_id == f"{contender.topics.events}-{group}"
    assert env == {}
    assert "--bootstrap" not in rest and "--events-topic" not in rest and "--group-id" not in rest


def test_the_plain_loop_runs_one_process_per_unit_of_parallelism_each_with_its_stats_file(
    harness: ModuleType, tmp_path: Path
) -> None:
    contender = _contender(harness, "PlainLoop", tmp_path, parallelism=2)
    commands = [cmd for cmd, _ in contender.commands()]
    assert len(commands) == 2
    stats = [cmd[cmd.index("--stats-file") + 1] for cmd in commands]
    assert stats == [str(tmp_path / f"PlainLoop-stats-{i}.json") for i in range(2)]
    t = contender.topics
    for cmd in commands:
        assert cmd[cmd.index("--decisions-topic") + 1] == t.decisions
        assert cmd[cmd.index("--dead-letter-topic") + 1] == t.dead


def test_match_recognize_writes_to_the_decisions_topic_at_its_parallelism(
    harness: ModuleType, tmp_path: Path
) -> None:
    ((cmd, _),) = _contender(harness, "MatchRecognize", tmp_path, parallelism=2).commands()
    assert cmd[cmd.index("--out-topic") + 1].endswith("-decisions")
    assert cmd[cmd.index("--parallelism") + 1] == "2"


def test_the_riskctl_job_gets_the_extra_flink_options_after_its_own(
    harness: ModuleType, tmp_path: Path
) -> None:
    contender = _contender(harness, "RiskctlProcessJob", tmp_path)
    contender.flink_options = ["taskmanager.numberOfTaskSlots=3"]
    ((_, env),) = contender.commands()
    options = env["RISKCTL_FLINK_OPTIONS"].split(";")
    assert options[0] == f"rest.port={contender.rest_port}"
    assert "python.execution-mode=process" in options
    assert options[-1] == "taskmanager.numberOfTaskSlots=3"


def test_event_maker_is_reproducible_by_seed_and_valid(harness: ModuleType) -> None:
    from riskctl.core.events import parse_event

    a = harness.workload.EventMaker(50, 7, login_success=0.8, transfer_mu=8.0)
    b = harness.workload.EventMaker(50, 7, login_success=0.8, transfer_mu=8.0)
    events_a = [a.make(1_700_000_000_000 + i) for i in range(300)]
    events_b = [b.make(1_700_000_000_000 + i) for i in range(300)]
    strip = [{k: v for k, v in e.items() if k != "event_id"} for e in events_a]
    assert strip == [{k: v for k, v in e.items() if k != "event_id"} for e in events_b]
    assert len({e["event_id"] for e in events_a}) == 300
    assert [e["ts"] for e in events_a] == [1_700_000_000_000 + i for i in range(300)]
    for e in events_a:
        parse_event(json.dumps(e).encode())  # raises on an invalid event
    logins = [e for e in events_a if e["type"] == "login"]
    assert logins and all(isinstance(e["success"], bool) for e in logins)


def test_event_maker_login_success_sets_the_share_of_successful_logins(harness: ModuleType) -> None:
    def share(success: float) -> float:
        maker = harness.workload.EventMaker(100, 1, login_success=success)
        logins = [e for e in (maker.make(0) for _ in range(4000)) if e["type"] == "login"]
        return sum(e["success"] for e in logins) / len(logins)

    assert share(1.0) == 1.0
    assert share(0.0) == 0.0
    assert 0.75 < share(0.8) < 0.85


def _run(name: str, hits: list[str]) -> dict[str, Any]:
    return {"contender": name, "parallelism": 1, "brute_force_hits": hits}


def test_match_recognize_is_compared_only_on_successes_the_final_watermark_passed(
    harness: ModuleType,
) -> None:
    seen = [json.dumps({"event_id": f"e{i}", "ts": 1000 * i}).encode() for i in range(20)]
    # final watermark: newest ts 19,000 - 5,000 = 14,000: e15..e19 are after it
    runs = [_run("riskctl-thread", ["e3", "e9", "e17"]), _run("match-recognize", ["e3", "e9"])]
    check = harness.run.match_recognize_check(runs, seen)
    assert check is not None
    assert check["against"] == "riskctl-thread"
    assert check["agree"] is True and check["common"] == 2
    assert check["reference_hits_after_the_final_watermark"] == 1

    runs[1]["brute_force_hits"] = ["e3"]
    check = harness.run.match_recognize_check(runs, seen)
    assert check is not None and check["agree"] is False and check["only_riskctl"] == ["e9"]


def test_match_recognize_check_falls_back_to_the_plain_loop_and_needs_both_runs(harness: ModuleType) -> None:
    seen = [json.dumps({"event_id": "e1", "ts": 0}).encode()]
    mr = _run("match-recognize", [])
    check = harness.run.match_recognize_check([_run("plain-loop", []), mr], seen)
    assert check is not None and check["against"] == "plain-loop"
    assert harness.run.match_recognize_check([mr], seen) is None
    assert harness.run.match_recognize_check([_run("riskctl-thread", [])], seen) is None


def test_a_stop_kills_what_the_contender_left_in_its_session(harness: ModuleType) -> None:
    import os
    import signal
    import subprocess
    import time

    contenders = sys.modules["harness.contenders"]
    # a parent in its own session whose child sits in another process group (as PyFlink's gateway JVM does)
    code = "import subprocess, time; subprocess.Popen(['sleep', '60'], process_group=0); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        child = None
        while child is None and time.monotonic() < deadline:
            kids = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
            child = int(kids[0]) if kids else None
            time.sleep(0.05)
        assert child is not None
        os.killpg(parent.pid, signal.SIGKILL)  # what stop() does first: the child survives it
        parent.wait(10)
        assert os.path.exists(f"/proc/{child}")
        assert contenders.kill_session(parent.pid) == [child]

        def gone() -> bool:
            try:
                return Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                return True

        for _ in range(100):
            if gone():
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the child outlived kill_session")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_the_profiler_attaches_only_when_asked_and_only_to_a_minicluster_jvm(
    harness: ModuleType, tmp_path: Path, monkeypatch: Any
) -> None:
    import os

    run, contenders, profiler = harness.run, harness.contenders, importlib.import_module("harness.profiler")
    calls: list[tuple[int, str]] = []
    monkeypatch.setattr(profiler, "_agent", lambda pid, options: calls.append((pid, options)))
    monkeypatch.setattr(run, "jvm_of", lambda session: 4242)
    job = contenders.RiskctlJob("riskctl-thread", 1, None, None, tmp_path)
    cluster = contenders.ClusterJob("riskctl-cluster", 2, None, None, tmp_path)
    loop = contenders.PlainLoop("plain-loop", 1, None, None, tmp_path)
    assert run._profile(job, None, "sustained", delay=0, seconds=0) is None
    assert run._profile(job, "1000", "sustained", delay=0, seconds=0) is None
    assert run._profile(cluster, "sustained", "sustained", delay=0, seconds=0) is None
    assert run._profile(loop, "sustained", "sustained", delay=0, seconds=0) is None
    early = run._profile(job, "200", "200", delay=60, seconds=10)
    assert early.finish() is None and calls == []  # the phase ended before sampling began: nothing attached
    profiling = run._profile(job, "1000", "1000", delay=0, seconds=60)
    profiling.join(timeout=0.5)  # sampling: stopped by finish(), not after 60 s
    out = profiling.out
    out.write_text("[decide] 1\n")
    assert profiling.finish() == str(out)
    assert [pid for pid, _ in calls] == [4242, 4242]
    assert calls[0][1].startswith("start,event=cpu") and calls[1][1].startswith("stop,")
    assert os.path.basename(out) == "profile-riskctl-thread-p1-1000-cpu.collapsed"
    wall = run._profile(job, "sustained:wall", "sustained", delay=0, seconds=60)
    wall.join(timeout=0.5)
    wall.finish()
    assert calls[2][1].startswith("start,event=wall") and wall.out.name.endswith("-sustained-wall.collapsed")
    assert profiler.phase_and_event("1000") == ("1000", "cpu")
    assert profiler.phase_and_event("sustained:wall") == ("sustained", "wall")
    with pytest.raises(ValueError, match="cpu, wall"):
        profiler.phase_and_event("sustained:heap")


def test_checkpoint_failures_give_flinks_message_or_say_they_were_only_counted(harness: ModuleType) -> None:
    failures = harness.contenders.checkpoint_failures
    assert failures({"counts": {"failed": 0}, "history": [{"id": 3, "status": "COMPLETED"}]}) == []
    trigger_only = {"counts": {"failed": 1}, "history": [{"id": 2, "status": "COMPLETED"}], "latest": {}}
    assert failures(trigger_only) == ["1 without details (refused at trigger, or older than the history)"]
    declined = {"id": 7, "status": "FAILED", "failure_message": "Checkpoint expired before completing."}
    overview = {
        "counts": {"failed": 3},
        "history": [declined, {"id": 8, "status": "COMPLETED"}],
        "latest": {"failed": declined},  # the latest failure is also in the history: counted once
    }
    assert failures(overview) == [
        "Checkpoint expired before completing.",
        "2 without details (refused at trigger, or older than the history)",
    ]
    older = {"id": 1, "status": "FAILED", "failure_message": "x" * 1000}  # scrolled out, kept as the latest
    assert failures({"counts": {"failed": 1}, "history": [], "latest": {"failed": older}}) == ["x" * 300]


def test_the_bench_starts_its_processes_with_its_own_tree_first_on_the_import_path(
    harness: ModuleType, monkeypatch: Any
) -> None:
    """A second checkout's bench must run that checkout's riskctl, not the one the editable install names."""
    import os

    root = str(harness.ROOT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", root]))
    env = harness.process_env({"RISKCTL_JOB_PARALLELISM": "2"})
    assert env["PYTHONPATH"].split(os.pathsep) == [root, "/elsewhere"]
    assert env["RISKCTL_JOB_PARALLELISM"] == "2" and env["PATH"] == os.environ["PATH"]
    monkeypatch.delenv("PYTHONPATH")
    assert harness.process_env()["PYTHONPATH"] == root


def test_a_process_added_during_a_run_is_sampled_from_then_on(harness: ModuleType) -> None:
    """The cluster run's JVMs start just before it: their CPU is sampled from there, the others' unchanged."""
    import os
    import time

    sampling = importlib.import_module("harness.sampling")
    sampler = sampling.Sampler({"bench": os.getpid()})
    sampler.start()
    try:
        time.sleep(0.2)
        before = time.monotonic()
        sampler.add_roles({"flink cluster jobmanager 1": os.getppid()})
        time.sleep(2.3)  # two samples or more after the addition (one a second)
    finally:
        sampler.stop()
        sampler.join()
    first, *_ = sampler.samples
    assert set(first[1]) == {"bench"}  # before the addition: only the role it started with
    after = [snap for t, snap in sampler.samples if t > before]
    assert after and all(set(snap) == {"bench", "flink cluster jobmanager 1"} for snap in after)
    assert set(sampler.window(before, time.monotonic())) == {"bench", "flink cluster jobmanager 1"}


def test_the_floor_contender_runs_its_script_in_the_risk_jobs_environment_without_rules(
    harness: ModuleType, tmp_path: Path
) -> None:
    floor = _contender(harness, "PyFlinkFloor", tmp_path)
    job = _contender(harness, "RiskctlJob", tmp_path)
    job.topics = floor.topics
    ((cmd, env),) = floor.commands()
    ((_, job_env),) = job.commands()
    assert cmd == [sys.executable, str(BENCH / "contenders" / "pyflink_floor.py")] and Path(cmd[1]).is_file()
    # the job's variables: its topics, consumer group, checkpoints (a folder of its own) and Flink options
    assert env.keys() == job_env.keys()
    same = ("TOPIC", "GROUP_ID", "PARALLELISM")
    assert all(env[k] == job_env[k] for k in env if k.endswith(same)), env
    assert env["RISKCTL_JOB_CHECKPOINT_DIR"].endswith("/chk-PyFlinkFloor")
    assert env["RISKCTL_FLINK_OPTIONS"].split(";")[1:] == job_env["RISKCTL_FLINK_OPTIONS"].split(";")[1:]
    assert not floor.reads_rules and job.reads_rules  # the run installs no rules table for it
