"""A restore is refused when the checkpoint is another riskctl job's, not only another topic's (found in
review).

Before: a checkpoint was "of this job" when its _metadata named the job's events topic, nothing more. A
checkpoint of another riskctl job reading the same topic (another decisions topic, rules source or replies
sink, another state layout) was restored without a word, or the job failed at start with Flink's trace
(state of an operator the new job does not have); and such a job's newer checkpoint made 'riskctl run' and
'submit' refuse to start from empty state, telling the user to restore the other job's checkpoint. Now the
job records its identity in <checkpoint_dir>/<job id>/riskctl-job.json when it is submitted, and a restore
compares it (exit 2, naming each difference) unless --restore-foreign.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import load_settings
from riskctl.errors import ConfigError, NewerCheckpointError
from riskctl.flink.checkpoints import (
    IDENTITY_FILE,
    READABLE_LAYOUTS,
    STATE_LAYOUT,
    check_start,
    completed_checkpoints,
    identity_differences,
    job_identity,
    record_identity,
    recorded_identity,
    split_marker,
)
from tests.helpers import run_riskctl

TOPIC = "riskctl.events"


def _identity(**changes: Any) -> dict[str, Any]:
    settings = load_settings(env={"RISKCTL_JOB_RULES_SOURCE": "cdc"})
    return {**job_identity(settings), **changes}


def _chk(root: Path, job: str, n: int, identity: dict[str, Any] | None, age_s: float = 0.0) -> Path:
    chk = root / job / f"chk-{n}"
    chk.mkdir(parents=True)
    meta = chk / "_metadata"
    meta.write_bytes(b"\x00\x01flink-metadata\x00" + split_marker(TOPIC) + struct.pack(">iqq", 0, 42, -1))
    t = time.time() - age_s
    os.utime(meta, (t, t))
    if identity is not None:
        assert record_identity(root.as_uri(), job, identity) is None
    return chk


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"decisions_topic": "shadow.decisions"}, "decisions_topic 'shadow.decisions' (this job: 'riskctl."),
        ({"rules_source": "file", "rules_table": ""}, "rules_source 'file' (this job: 'cdc')"),
        ({"replies_topic": ""}, "replies_topic '' (this job: 'riskctl.replies')"),
        ({"state_layout": STATE_LAYOUT + 1}, f"state_layout {STATE_LAYOUT + 1} (this job: {STATE_LAYOUT})"),
        ({"state_layout": 0}, f"state_layout 0 (this job: {STATE_LAYOUT})"),
        ({"state_layout": True}, f"state_layout True (this job: {STATE_LAYOUT})"),
        ({"state_layout": "1"}, f"state_layout '1' (this job: {STATE_LAYOUT})"),
    ],
)
def test_a_checkpoint_of_another_job_on_the_same_topic_is_refused_unless_told(
    tmp_path: Path, changes: dict[str, Any], named: str
) -> None:
    mine = _identity()
    foreign = _chk(tmp_path, "a" * 32, 3, _identity(**changes))
    for given in (foreign.as_uri(), str(foreign / "_metadata")):
        with pytest.raises(ConfigError, match="is not a checkpoint of this job") as err:
            check_start(tmp_path.as_uri(), TOPIC, given, from_empty=False, identity=mine)
        assert not isinstance(err.value, NewerCheckpointError)
        assert named in str(err.value) and "--restore-foreign" in str(err.value)
        note = check_start(
            tmp_path.as_uri(), TOPIC, given, from_empty=False, identity=mine, restore_foreign=True
        )
        assert note is None


def test_a_checkpoint_of_an_older_layout_this_version_reads_restores(tmp_path: Path) -> None:
    """Layouts 2 and 3 changed only how an idle pattern state and a place in its buffer are written, layout 4
    the key a value is stored under (its name's code), layout 5 the format of a user's bytes (marshal, not
    pickle); this version reads layouts 1 to 4 as they are, so their checkpoints restore. (A riskctl of an
    older layout refuses layout 5's: its own check sees another number.)"""
    assert STATE_LAYOUT == 5 and READABLE_LAYOUTS == {1, 2, 3, 4, 5}
    mine = _identity()
    for layout in (1, 2, 3, 4):
        older = _chk(tmp_path, f"{layout}" * 32, 7, _identity(state_layout=layout))
        assert identity_differences(_identity(state_layout=layout), mine) == []
        assert check_start(tmp_path.as_uri(), TOPIC, older.as_uri(), from_empty=False, identity=mine) is None
        # seen from a job of the older layout, a checkpoint of layout 5 is another layout
        assert identity_differences(mine, _identity(state_layout=layout)) == [
            f"state_layout 5 (this job: {layout})"
        ]


def test_a_checkpoint_of_this_job_restores_and_one_without_identity_is_a_note(tmp_path: Path) -> None:
    mine = _identity()
    own = _chk(tmp_path, "a" * 32, 3, {**mine, "riskctl_version": "0.0.1"})  # another version: same layout
    assert check_start(tmp_path.as_uri(), TOPIC, own.as_uri(), from_empty=False, identity=mine) is None
    savepoint = _chk(tmp_path / "savepoints", "savepoint-abc123-0123456789ab", 0, None).parent
    (savepoint / "chk-0" / "_metadata").rename(savepoint / "_metadata")
    note = check_start(tmp_path.as_uri(), TOPIC, savepoint.as_uri(), from_empty=True, identity=mine)
    assert note is not None and "only its events topic was checked" in note
    # a savepoint with the job's identity copied into it is checked as a checkpoint is
    (savepoint / IDENTITY_FILE).write_text(json.dumps(_identity(alerts_topic="x")))
    with pytest.raises(ConfigError, match="alerts_topic 'x'"):
        check_start(tmp_path.as_uri(), TOPIC, savepoint.as_uri(), from_empty=True, identity=mine)


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b" " * 70_000 + b"{}"])
def test_an_identity_file_that_cannot_be_read_is_refused_naming_it(tmp_path: Path, content: bytes) -> None:
    chk = _chk(tmp_path, "a" * 32, 3, None)
    (chk.parent / IDENTITY_FILE).write_bytes(content)
    with pytest.raises(ConfigError, match="its identity file cannot be read: .*riskctl-job.json"):
        check_start(tmp_path.as_uri(), TOPIC, chk.as_uri(), from_empty=True, identity=_identity())


def test_a_newer_checkpoint_of_another_job_is_not_named_as_this_jobs(tmp_path: Path) -> None:
    mine = _identity()
    _chk(tmp_path, "b" * 32, 9, _identity(decisions_topic="shadow.decisions"), age_s=5)
    assert completed_checkpoints(tmp_path.as_uri(), TOPIC, mine) == []
    assert check_start(tmp_path.as_uri(), TOPIC, "", from_empty=False, identity=mine) is None
    own = _chk(tmp_path, "c" * 32, 2, mine, age_s=60)
    with pytest.raises(NewerCheckpointError) as err:
        check_start(tmp_path.as_uri(), TOPIC, "", from_empty=False, identity=mine)
    assert f"job.restore_from={own.as_uri()}" in str(err.value)


def test_the_job_records_its_identity_when_submitted(tmp_path: Path) -> None:
    from riskctl.flink.main import record_identity as record_on_submit

    class Submitted:
        def get_job_id(self) -> str:
            return "f" * 32

    settings = load_settings(env={"RISKCTL_JOB_CHECKPOINT_DIR": (tmp_path / "chk").as_uri()})
    record_on_submit(settings, Submitted())
    recorded = recorded_identity(tmp_path / "chk" / ("f" * 32) / "chk-1")
    assert isinstance(recorded, dict)
    assert {k: recorded[k] for k in job_identity(settings)} == job_identity(settings)
    assert recorded["riskctl_version"]


def test_run_and_submit_refuse_another_jobs_checkpoint_before_calling_flink(tmp_path: Path) -> None:
    foreign = _chk(tmp_path / "chk", "d" * 32, 4, _identity(decisions_topic="shadow.decisions"))
    env = {
        **os.environ,
        "RISKCTL_STACK_DIR": str(tmp_path / "stack"),
        "RISKCTL_JOB_CHECKPOINT_DIR": (tmp_path / "chk").as_uri(),
        "RISKCTL_JOB_RULES_SOURCE": "cdc",
        "PATH": "/usr/bin:/bin",
    }
    env.pop("FLINK_HOME", None)
    restore = ["--set", f"job.restore_from={foreign.as_uri()}"]
    res = run_riskctl("submit", *restore, env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "decisions_topic 'shadow.decisions'" in errors[0], res.stderr
    assert "no Flink client found" not in res.stderr
    res = run_riskctl("submit", "--restore-foreign", *restore, env=env)  # told: goes on to 'flink run'
    assert "no Flink client found" in res.stderr and "is not a checkpoint" not in res.stderr
