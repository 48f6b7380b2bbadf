"""``riskctl replay`` and ``riskctl rules validate``: the real commands, one of them as a real subprocess."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from click.testing import CliRunner

from riskctl.cli.main import cli
from riskctl.config import PROJECT_ROOT
from riskctl.testing import EventFactory
from tests.helpers import PatchedEngine, run_riskctl

ROOT = PROJECT_ROOT
RULES = ROOT / "rules"


def write_events(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def brute_force_lines() -> list[str]:
    ev = EventFactory("u1")
    events = [ev.login(0, success=False), ev.login(2, success=False), ev.login(4, success=False)]
    events.append(ev.login(6, success=True))
    return [json.dumps(e) for e in events]


def test_replay_as_a_real_subprocess(tmp_path: Path) -> None:
    lines = brute_force_lines()
    lines.insert(1, "{not json")
    lines.insert(2, json.dumps({"event_id": "x", "type": "login", "ts": 1}))  # no user id
    lines.insert(
        3, json.dumps({"event_id": "y", "user_id": "u", "type": "transfer", "ts": 1, "amount": "abc"})
    )
    events = write_events(tmp_path / "events.jsonl", lines)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = run_riskctl("replay", "--rules", str(RULES), str(events), env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines_out = [json.loads(line) for line in proc.stdout.splitlines()]
    records = [r for r in lines_out if r["kind"] == "decision"]
    assert [r["event_id"] for r in records] == ["u1-1", "u1-2", "u1-3", "u1-4"]
    assert records[-1]["action"] == "REJECT" and records[-1]["rules"][0]["id"] == "brute_force_login"
    dead = [r for r in lines_out if r["kind"] == "dead_letter"]
    assert [(d["line"], d["field"]) for d in dead] == [(2, None), (3, "user_id"), (4, "amount")]
    assert dead[0]["raw"] == "{not json" and dead[0]["raw_bytes"] == 9
    assert "line 2: not valid JSON" in proc.stderr
    assert "line 3: user_id: required field is missing" in proc.stderr
    assert "line 4: amount: must be a number" in proc.stderr
    assert "4 events" in proc.stderr and "3 bad lines" in proc.stderr
    assert "REJECT 1" in proc.stderr and "brute_force_login 1" in proc.stderr
    assert "\r" not in proc.stderr  # no progress display when stderr is not a terminal


def test_output_file_progress_and_json_summary(tmp_path: Path) -> None:
    ev = EventFactory("u1")
    lines = [json.dumps(ev.event("page_view", i * 2.0)) for i in range(10_000)]
    events = write_events(tmp_path / "events.jsonl", lines)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        cli, ["replay", "--rules", str(RULES), str(events), "-o", str(out), "--progress", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert len(out.read_text().splitlines()) == 10_000
    assert "events/s" in result.stderr and "\r" in result.stderr  # the progress line
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["events"] == 10_000 and summary["actions"] == {"PASS": 10_000}
    assert summary["bad_lines"] == 0 and summary["users_with_state"] == 0  # released at the end


def test_only_hits(tmp_path: Path) -> None:
    events = write_events(tmp_path / "e.jsonl", brute_force_lines())
    result = CliRunner().invoke(cli, ["replay", "--rules", str(RULES), str(events), "--only-hits"])
    assert result.exit_code == 0
    assert [json.loads(line)["event_id"] for line in result.stdout.splitlines()] == ["u1-4"]


def test_replay_refuses_bad_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("id: r\naction: PASS\nwhen: 'evnt.x > 1'\n")
    events = write_events(tmp_path / "e.jsonl", brute_force_lines())
    result = CliRunner().invoke(cli, ["replay", "--rules", str(rules), str(events)])
    assert result.exit_code == 1
    assert (
        "sequence" not in result.stderr
        and "field 'when'" in result.stderr
        and "nothing replayed" in result.stderr
    )


def test_replay_bad_duration_option(tmp_path: Path) -> None:
    events = write_events(tmp_path / "e.jsonl", brute_force_lines())
    result = CliRunner().invoke(cli, ["replay", "--rules", str(RULES), str(events), "--lateness", "5 sec"])
    assert result.exit_code == 2 and "lateness" in result.stderr


def test_rules_validate_ok() -> None:
    result = CliRunner().invoke(cli, ["rules", "validate", str(RULES)])
    assert result.exit_code == 0, result.output
    assert "ok  brute_force_login v1" in result.stdout
    result = CliRunner().invoke(cli, ["rules", "validate", str(RULES), "--json"])
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and len(doc["rules"]) >= 8


def test_rules_validate_prints_every_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: a\nactoin: PASS\nwhen: 'true'\n")
    (tmp_path / "b.yaml").write_text(
        "id: b\naction: REVIEW\nsequence:\n  within: 1m\n  steps:\n"
        "    - {name: x, when: 'event.type == \"a\"'}\n"
        "    - {name: y, when: 'event.type ==', contiguty: strict}\n"
    )
    result = CliRunner().invoke(cli, ["rules", "validate", str(tmp_path)])
    assert result.exit_code == 1
    out = result.stderr  # errors go to stderr, as in every command
    assert "field 'actoin': unknown field 'actoin' (did you mean 'action'?)" in out
    assert "field 'action'" in out  # the missing action of rule a
    assert "sequence.steps[1].when" in out and "sequence.steps[1].contiguty" in out
    assert "4 errors" in result.stderr
    result = CliRunner().invoke(cli, ["rules", "validate", str(tmp_path), "--json"])
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert {e["field"] for e in doc["errors"]} == {
        "actoin",
        "action",
        "sequence.steps[1].when",
        "sequence.steps[1].contiguty",
    }


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert "replay" in result.stdout and "rules" in result.stdout


def hostile_lines(now: int) -> list[bytes]:
    """Issue 11's records that stopped replay with a traceback, each between valid events."""
    base = {"event_id": "h", "user_id": "hostile", "type": "transfer", "ts": now - 60_000}

    def splice(field: str, text: str) -> bytes:
        return (json.dumps(base)[:-1] + f', "{field}": {text}' + "}").encode()

    return [
        bytes(range(256)) * 3907,  # 1 MB binary (a line per byte 10 in it: each gets a dead letter)
        json.dumps({**base, "city": "X"}).encode().replace(b'"X"', b'"\xff\xfe"'),
        splice("meta", '{"a":' * 1024 + "1" + "}" * 1024),
        b'{"event_id":"\\ud800","user_id":"u","type":"t","ts":1}',
        b'{"event_id":"e","user_id":"u","type":"\\ud800","ts":1}',
        b'{"event_id":"e","user_id":"\\ud800","type":"t","ts":1}',
        splice("amount", "9" * 4300),
        splice("amount", "9" * 4300),
        splice("amount", "1" + "0" * 400),
        splice("amount", "1.5"),
        splice("meta", '{"a":' * 500 + "1" + "}" * 500),
    ]


def test_replay_gives_every_hostile_line_an_outcome_and_finishes(tmp_path: Path) -> None:
    now = 1_700_000_000_000
    ev = EventFactory("u1", start=now - 30_000)
    good = [json.dumps(ev.login(i, success=False)).encode() for i in range(12)]
    hostile = hostile_lines(now)
    lines: list[bytes] = []
    for g, h in zip(good, hostile, strict=False):
        lines += [g, h]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    physical = path.read_bytes().count(b"\n")
    result = CliRunner().invoke(
        cli, ["replay", "--rules", str(RULES), str(path), "--now", str(now), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    decisions = [r for r in out if r["kind"] == "decision"]
    dead = [r for r in out if r["kind"] == "dead_letter"]
    assert [d["event_id"] for d in decisions if d["user_id"] == "u1"] == [f"u1-{i}" for i in range(1, 12)]
    assert [d["user_id"] for d in decisions if d["event_id"] == "h"] == ["hostile"]  # the amount 1.5
    assert len(decisions) + len(dead) == physical  # every line an outcome (the binary MB splits in lines)
    assert all(len(json.dumps(d).encode()) <= 262_144 for d in dead)
    fields = [d["field"] for d in dead if d["field"]]
    assert fields.count("event_id") == fields.count("type") == fields.count("user_id") == 1
    assert fields.count("amount") == 3 and "meta" + ".a" * 15 in fields
    assert any("not valid UTF-8" in d["reason"] and d["raw_base64"] for d in dead)
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["events"] == 11 + 1  # the 1.5 amount is a valid event
    assert summary["internal_errors"] == 0 and summary["timer_errors"] == 0


def test_far_future_event_of_another_user_does_not_blind_brute_force(tmp_path: Path) -> None:
    """Issue 11: fail, fail, <another user's event at 9999-12-31>, fail, success gave PASS."""
    now = 1_700_000_100_000
    ev = EventFactory("victim", start=now - 10_000)
    other = EventFactory("attacker")
    lines = [ev.login(0, success=False), ev.login(1, success=False)]
    lines.append(other.login(ts=253_402_300_799_999))
    lines += [ev.login(2, success=False), ev.login(3, success=True)]
    events = write_events(tmp_path / "e.jsonl", [json.dumps(e) for e in lines])
    result = CliRunner().invoke(
        cli, ["replay", "--rules", str(RULES), str(events), "--now", "2023-11-14T22:28:20Z"]
    )
    assert result.exit_code == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    dead = [r for r in out if r["kind"] == "dead_letter"]
    assert [(d["line"], d["field"]) for d in dead] == [(3, "ts")] and "ahead of now" in dead[0]["reason"]
    last = [r for r in out if r["kind"] == "decision"][-1]
    assert last["event_id"] == "victim-4" and last["action"] == "REJECT"


def test_an_event_ahead_of_the_clock_fires_no_other_user_s_deadline(tmp_path: Path) -> None:
    """Event time moves at most to the clock (job.event_time_past_clock false, as in the job): an event of one
    user stamped 4 min 59 s ahead, within the skew, is decided, and fired another user's absence deadline
    before that user's 2FA came (a false new_device_without_2fa alert)."""
    now = 1_800_000_000_000
    lines = [
        {"event_id": "v-login", "user_id": "victim", "type": "login", "success": True, "device_id": "d-new",
         "ts": now - 60_000},
        {"event_id": "a-1", "user_id": "attacker", "type": "page_view", "ts": now + 299_000},
        {"event_id": "v-2fa", "user_id": "victim", "type": "2fa", "success": True, "ts": now - 30_000},
    ]  # fmt: skip
    events = write_events(tmp_path / "e.jsonl", [json.dumps(e) for e in lines])
    args = ["replay", "--rules", str(RULES), str(events), "--now", str(now)]

    def records(env: dict[str, str]) -> list[tuple[str, str]]:
        result = CliRunner(env=env).invoke(cli, args)
        assert result.exit_code == 0, result.stderr
        out = [json.loads(line) for line in result.stdout.splitlines()]
        return [(r["kind"], r["event_id"]) for r in out]

    decided = [("decision", "v-login"), ("decision", "a-1"), ("decision", "v-2fa")]
    assert records({}) == decided
    before = records({"RISKCTL_JOB_EVENT_TIME_PAST_CLOCK": "true"})  # what every run did before
    assert before == [*decided[:2], ("alert", "v-login"), decided[2]]


def test_an_event_ahead_of_the_clock_does_not_make_its_user_s_transfers_too_late(tmp_path: Path) -> None:
    """An event stamped 4 min 59 s ahead of ``--now`` is decided at ``--now`` (job.event_time_past_clock
    false, as the job decides one at its clock): the same user's transfers after it, at ``--now``, count,
    and the one that takes the 5-minute sum past 50,000 is REVIEWed. Before, the forged time became the
    user's newest, and every transfer after it was too late, counted by no feature: all PASS."""
    now = 1_800_000_000_000
    forged = {"event_id": "f", "user_id": "mallory", "type": "page_view", "ts": now + 299_000}
    transfers = [
        {
            "event_id": f"t{i}",
            "user_id": "mallory",
            "type": "transfer",
            "amount": 19_000,
            "ts": now,
        }
        for i in range(3)
    ]
    events = write_events(tmp_path / "e.jsonl", [json.dumps(e) for e in [forged, *transfers]])
    args = ["replay", "--rules", str(RULES), str(events), "--now", str(now)]

    def decisions(env: dict[str, str]) -> list[tuple[str, str, bool, int]]:
        result = CliRunner(env=env).invoke(cli, args)
        assert result.exit_code == 0, result.stderr
        out = [json.loads(line) for line in result.stdout.splitlines()]
        return [(r["event_id"], r["action"], r["too_late"], r["ahead_ms"]) for r in out]

    assert decisions({}) == [
        ("f", "PASS", False, 299_000),
        ("t0", "PASS", False, 0),
        ("t1", "PASS", False, 0),
        ("t2", "REVIEW", False, 0),
    ]
    before = decisions({"RISKCTL_JOB_EVENT_TIME_PAST_CLOCK": "true"})  # what every run did before
    assert before == [("f", "PASS", False, 0)] + [(f"t{i}", "PASS", True, 0) for i in range(3)]


def test_job_too_late_action_holds_transfers_stamped_behind_their_user_s_newest_event(tmp_path: Path) -> None:
    """A client that stamps its transfers 6 s behind its own newest event (lateness 5 s) keeps them out of
    transfer_velocity's sum: too late, all PASS. Replay follows job.too_late_action as the job does: REVIEW
    holds them; a value that is not an action is refused with the setting's name."""
    now = 1_800_000_000_000
    lines = [{"event_id": "view", "user_id": "mallory", "type": "page_view", "ts": now - 10_000}]
    lines += [
        {
            "event_id": f"t{i}",
            "user_id": "mallory",
            "type": "transfer",
            "amount": 19_000,
            "ts": now - 16_000 + i,
        }
        for i in range(3)
    ]
    events = write_events(tmp_path / "e.jsonl", [json.dumps(e) for e in lines])
    args = ["replay", "--rules", str(RULES), str(events), "--now", str(now)]

    def decided(env: dict[str, str]) -> list[tuple[str, bool, str]]:
        result = CliRunner(env=env).invoke(cli, args)
        assert result.exit_code == 0, result.stderr
        out = [json.loads(line) for line in result.stdout.splitlines()]
        return [(r["event_id"], r["too_late"], r["action"]) for r in out]

    assert decided({}) == [("view", False, "PASS")] + [(f"t{i}", True, "PASS") for i in range(3)]
    held = decided({"RISKCTL_JOB_TOO_LATE_ACTION": "REVIEW"})
    assert held == [("view", False, "PASS")] + [(f"t{i}", True, "REVIEW") for i in range(3)]
    bad = CliRunner(env={"RISKCTL_JOB_TOO_LATE_ACTION": "HOLD"}).invoke(cli, args)
    assert bad.exit_code != 0 and "too_late_action" in bad.stderr


def test_an_internal_error_dead_letters_the_event_with_type_and_rule(tmp_path: Path) -> None:
    import io

    from riskctl.cli.replay import Replay
    from riskctl.core.engine import Engine
    from riskctl.core.rules import load_rules

    engine = Engine(load_rules(str(RULES)), lateness=5000)
    real = engine.process

    def failing(state: object, event: dict, clock: int | None = None) -> object:
        if event["event_id"] == "u1-2":
            engine.current_rule = "brute_force_login"
            msg = "boom"
            raise ZeroDivisionError(msg)
        return real(state, event, clock)  # type: ignore[arg-type]

    out = io.StringIO()
    run = Replay(PatchedEngine(engine, process=failing), out, now=None)  # type: ignore[arg-type]
    ev = EventFactory("u1")
    for i in range(3):
        run.feed(json.dumps(ev.login(i)).encode() + b"\n", i + 1)
    run.finish()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["kind"] for r in records] == ["decision", "dead_letter", "decision"]
    dl = records[1]
    assert dl["error"] == "ZeroDivisionError" and dl["rule_id"] == "brute_force_login"
    assert dl["reason"] == "internal error while deciding: ZeroDivisionError: boom" and dl["line"] == 2
    assert run.summary(1.0)["internal_errors"] == 1


def test_now_option_takes_ms_or_iso(tmp_path: Path) -> None:
    events = write_events(tmp_path / "e.jsonl", brute_force_lines())
    bad = CliRunner().invoke(cli, ["replay", "--rules", str(RULES), str(events), "--now", "yesterday"])
    assert bad.exit_code != 0 and "ISO-8601" in bad.stderr
    for now in ("1700000000000", "2023-11-14T22:13:20+00:00", "2023-11-14T22:13:20"):
        ok = CliRunner().invoke(cli, ["replay", "--rules", str(RULES), str(events), "--now", now, "--json"])
        assert json.loads(ok.stderr.strip().splitlines()[-1])["now"] == 1_700_000_000_000


def test_a_line_far_over_the_size_limit_is_never_held_whole(tmp_path: Path) -> None:
    ev = EventFactory("u1")
    path = tmp_path / "long.jsonl"
    with path.open("wb") as fh:
        fh.write(json.dumps(ev.login(0)).encode() + b"\n")
        fh.write(b'{"x": "' + b"y" * 5_000_000 + b'"}\n')  # 5 MB in one line
        fh.write(b"z" * 3_000_000)  # and a last line without a line break
        fh.write(b"\n" + json.dumps(ev.login(1)).encode() + b"\n")
    result = CliRunner().invoke(
        cli, ["replay", "--rules", str(RULES), str(path), "--json", "--now", "1700000000000"]
    )
    assert result.exit_code == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["kind"] for r in out] == ["decision", "dead_letter", "dead_letter", "decision"]
    big, tail = out[1], out[2]
    assert big["raw_bytes"] == 5_000_009 and big["truncated"] is True and big["line"] == 2
    assert big["reason"] == "record of 5000009 bytes is larger than max_event_bytes (65536)"
    assert tail["raw_bytes"] == 3_000_000 and tail["raw"].startswith("zzz") and tail["truncated"] is True
    assert all(len(json.dumps(r, separators=(",", ":")).encode()) <= 262_144 for r in out)


def test_simulated_file_is_not_ahead_of_the_clock(tmp_path: Path) -> None:
    """simulate --output writes traffic that has already happened: replay with the wall clock (no --now)
    dead-letters none of it for clock skew (a ten-minute run starting now would have lost its last 5 min)."""
    events = tmp_path / "sim.jsonl"
    sim = CliRunner().invoke(
        cli,
        [
            "simulate",
            "--users",
            "50",
            "--rate",
            "20",
            "--duration",
            "900",
            "--seed",
            "7",
            "-o",
            str(events),
            "--no-progress",
        ],
    )
    assert sim.exit_code == 0, sim.output
    result = CliRunner().invoke(
        cli, ["replay", "--rules", str(RULES), str(events), "--json", "-o", os.devnull]
    )
    assert result.exit_code == 0, result.output
    s = json.loads(result.stderr.strip().splitlines()[-1])
    assert s["events"] > 10_000
    assert s["dead_letters"] == {}, s


def test_summary_counts_too_late_events(tmp_path: Path) -> None:
    lines = [
        json.dumps({"event_id": f"e{i}", "user_id": "u1", "type": "login", "ts": ts, "success": True})
        for i, ts in enumerate((1_000_000, 1_060_000, 1_000_500, 1_058_000))
    ]  # e2 is 59.5 s behind u1's newest event (lateness 5 s): too late; e3 (2 s behind) is not
    events = write_events(tmp_path / "late.jsonl", lines)
    result = CliRunner().invoke(
        cli, ["replay", "--rules", str(RULES), str(events), "--json", "-o", os.devnull]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stderr.strip().splitlines()[-1])["too_late"] == 1


def test_replay_decides_a_repeated_event_as_the_job_does(tmp_path: Path) -> None:
    """--dedup api (the job's default): an event the API sent, repeated, is a duplicate; --dedup off: not."""
    lines = brute_force_lines()
    success = {**json.loads(lines[-1]), "reply_to": "api-a"}
    lines[-1] = json.dumps(success)
    events = write_events(tmp_path / "e.jsonl", [*lines, json.dumps({**success, "reply_to": "api-b"})])

    def replay(*options: str) -> tuple[list[dict[str, object]], dict[str, object]]:
        result = CliRunner().invoke(cli, ["replay", "--rules", str(RULES), str(events), "--json", *options])
        assert result.exit_code == 0, result.stderr
        records = [json.loads(line) for line in result.stdout.splitlines()]
        return [r for r in records if r["kind"] == "decision"], json.loads(
            result.stderr.strip().splitlines()[-1]
        )

    decisions, summary = replay()
    assert [(d["action"], d["duplicate"]) for d in decisions[-2:]] == [("REJECT", False), ("REJECT", True)]
    assert summary["duplicates"] == 1
    decisions, summary = replay("--dedup", "off")
    assert [(d["action"], d["duplicate"]) for d in decisions[-2:]] == [("REJECT", False), ("PASS", False)]
    assert summary["duplicates"] == 0
    decisions, _ = replay("--dedup-window", "0")
    assert decisions[-1]["action"] == "PASS"
    result = CliRunner().invoke(cli, ["replay", "--rules", str(RULES), str(events), "--dedup", "some"])
    assert result.exit_code == 2 and "--dedup" in result.stderr


def test_rules_validate_quotes_an_excerpt_of_a_huge_value(tmp_path: Path) -> None:
    # found in review: a 1 MB status in a rule document was printed whole, in the text and --json output
    doc = {"id": "big", "action": "REVIEW", "when": "true", "status": "x" * 1_000_000}
    (tmp_path / "big.json").write_text(json.dumps(doc))
    result = CliRunner().invoke(cli, ["rules", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "status must be one of active, shadow, disabled, got 'xxx" in result.stderr
    assert len(result.stderr) < 2_000
    result = CliRunner().invoke(cli, ["rules", "validate", str(tmp_path), "--json"])
    assert result.exit_code == 1 and len(result.output) < 3_000


def test_replay_decides_by_the_job_s_settings_unless_a_flag_says_otherwise(tmp_path: Path) -> None:
    """Replay's lateness, state TTL and deduplication were its flags' defaults (5 s, 24 h, api), whatever the
    job was configured with: a job at lateness 0 takes an event 2 s behind its user's newest as too late,
    and its replay did not. Now they are the job's settings (``job.*``), and a flag given overrides one; the
    summary says which it decided by."""
    from riskctl.cli.replay import JOB_DEFAULTS

    lines = [
        json.dumps({"event_id": f"e{i}", "user_id": "u1", "type": "login", "ts": ts, "success": True})
        for i, ts in enumerate((1_000_000, 1_060_000, 1_058_000))
    ]  # e2: 2 s behind u1's newest event
    events = write_events(tmp_path / "late.jsonl", lines)

    def summary(env: dict[str, str], *flags: str) -> dict[str, object]:
        args = ["replay", "--rules", str(RULES), str(events), "--json", "-o", os.devnull, *flags]
        result = CliRunner(env=env).invoke(cli, args)
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stderr.strip().splitlines()[-1]))

    assert summary({})["too_late"] == 0
    assert summary({"RISKCTL_JOB_LATENESS_MS": "0"})["too_late"] == 1
    assert summary({"RISKCTL_JOB_LATENESS_MS": "0"}, "--lateness", "5s")["too_late"] == 0
    assert summary({}, "--lateness", "0")["too_late"] == 1
    said = summary({"RISKCTL_JOB_LATENESS_MS": "0", "RISKCTL_JOB_DEDUP": "off"}, "--lateness", "2s")[
        "settings"
    ]
    assert said == {**JOB_DEFAULTS.to_dict(), "lateness_ms": 2000, "dedup": "off"}
    shown = CliRunner().invoke(cli, ["replay", "--rules", str(RULES), str(events), "-o", os.devnull])
    assert "decided by: lateness_ms 5000, state_ttl_ms 86400000, dedup api" in shown.stderr, shown.stderr


def test_replay_settings_are_the_job_s() -> None:
    """:meth:`ReplaySettings.of` takes every value the job's engine is built with, and the engine it builds
    has them."""
    from riskctl.cli.replay import JOB_DEFAULTS, ReplaySettings
    from riskctl.config.settings import JobSettings

    assert ReplaySettings.of(JobSettings()) == JOB_DEFAULTS
    job = JobSettings(
        lateness_ms=1234,
        state_ttl_ms=99_000,
        dedup="all",
        dedup_window_ms=7000,
        too_late_action="REJECT",
        event_time_past_clock=True,
        max_event_bytes=4096,
    )
    settings = ReplaySettings.of(job)
    engine = settings.engine([])
    assert (engine.lateness, engine.state_ttl, engine.dedup_window, engine.dedup_all) == (
        1234,
        99_000,
        7000,
        True,
    )
    assert engine.too_late_rank == 2 and settings.limits.max_event_bytes == 4096
    assert settings.to_dict() == {
        "lateness_ms": 1234,
        "state_ttl_ms": 99_000,
        "dedup": "all",
        "dedup_window_ms": 7000,
        "too_late_action": "REJECT",
        "event_time_past_clock": True,
    }
    off = ReplaySettings.of(JobSettings(dedup="off"))
    assert off.engine([]).dedup_window == 0
    # job.event_time_past_clock: a replay's clock does not cap event time
    assert settings.replay([], io.StringIO(), now=5).clock is None
    assert JOB_DEFAULTS.replay([], io.StringIO(), now=5).clock == 5
