"""A savepoint is checked against the identity its job recorded, as a checkpoint is (found in review).

'flink stop --savepointPath' writes the savepoint outside the job's checkpoint folder, so the identity the job
recorded there (riskctl-job.json, 3c3c7e1) was not found beside it: a savepoint of another riskctl job on the
same events topic was restored with a note ("only its events topic was checked"), unless the user had copied
the file into it. Flink names a savepoint's folder after its job, savepoint-<first 6 hex digits of the job
id>-<12 random hex digits>, and keeps the job folder (with the identity in it) when the job stops with a
savepoint (its chk-N are removed): the restore check now reads the identity of the job folders in
job.checkpoint_dir whose id begins with those digits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from riskctl.errors import ConfigError
from riskctl.flink.checkpoints import IDENTITY_FILE, check_start, record_identity, savepoint_job_identity
from tests.helpers import run_riskctl
from tests.unit.flink.test_checkpoint_identity import TOPIC, _chk, _identity

JOB = "abc123" + "0" * 26


def _savepoint(parent: Path, job: str = JOB) -> Path:
    """A savepoint of ``job`` as 'flink stop --savepointPath <parent>' leaves it: its own folder, named after
    the job, with the _metadata in it."""
    chk = _chk(parent / "tmp", job, 0, None)
    savepoint = parent / f"savepoint-{job[:6]}-0123456789ab"
    savepoint.mkdir(parents=True)
    (chk / "_metadata").rename(savepoint / "_metadata")
    return savepoint


def _job_folder(checkpoint_dir: Path, job: str, identity: dict[str, Any]) -> Path:
    """The job's checkpoint folder after it stopped with a savepoint: its identity, no chk-N any more."""
    assert record_identity(checkpoint_dir.as_uri(), job, identity) is None
    (checkpoint_dir / job / "shared").mkdir()
    return checkpoint_dir / job


def test_a_savepoint_of_another_job_on_the_same_topic_is_refused_unless_told(tmp_path: Path) -> None:
    chk_dir = tmp_path / "chk"
    folder = _job_folder(chk_dir, JOB, _identity(decisions_topic="shadow.decisions"))
    savepoint = _savepoint(tmp_path / "savepoints")
    with pytest.raises(ConfigError, match="is not a checkpoint of this job") as err:
        check_start(chk_dir.as_uri(), TOPIC, savepoint.as_uri(), from_empty=True, identity=_identity())
    assert "decisions_topic 'shadow.decisions'" in str(err.value)
    assert f"the identity its job recorded in {folder / IDENTITY_FILE}" in str(err.value)
    assert "--restore-foreign" in str(err.value)
    told = check_start(
        chk_dir.as_uri(),
        TOPIC,
        savepoint.as_uri(),
        from_empty=True,
        identity=_identity(),
        restore_foreign=True,
    )
    assert told is None


def test_a_savepoint_of_this_job_restores_without_a_note(tmp_path: Path) -> None:
    chk_dir = tmp_path / "chk"
    _job_folder(chk_dir, JOB, {**_identity(), "riskctl_version": "0.0.1"})
    _job_folder(chk_dir, "f" * 32, _identity(decisions_topic="shadow.decisions"))  # another job, other prefix
    savepoint = _savepoint(tmp_path / "savepoints")
    for given in (savepoint.as_uri(), str(savepoint), str(savepoint / "_metadata")):
        assert check_start(chk_dir.as_uri(), TOPIC, given, from_empty=True, identity=_identity()) is None


def test_job_folders_sharing_the_prefix_must_agree(tmp_path: Path) -> None:
    chk_dir = tmp_path / "chk"
    _job_folder(chk_dir, JOB, _identity())
    _job_folder(chk_dir, "abc123" + "1" * 26, {**_identity(), "riskctl_version": "9.9"})  # the same job again
    savepoint = _savepoint(tmp_path / "savepoints")
    assert (
        check_start(chk_dir.as_uri(), TOPIC, savepoint.as_uri(), from_empty=True, identity=_identity())
        is None
    )
    other = _job_folder(chk_dir, "abc123" + "2" * 26, _identity(alerts_topic="x"))
    recorded, source = savepoint_job_identity(savepoint, chk_dir.as_uri())
    assert source is None and isinstance(recorded, str) and str(other) in recorded
    with pytest.raises(ConfigError, match="its job cannot be told: the job folders .* record different"):
        check_start(chk_dir.as_uri(), TOPIC, savepoint.as_uri(), from_empty=True, identity=_identity())
    # the identity copied into the savepoint settles it (and is checked)
    (savepoint / IDENTITY_FILE).write_text(json.dumps(_identity()))
    assert (
        check_start(chk_dir.as_uri(), TOPIC, savepoint.as_uri(), from_empty=True, identity=_identity())
        is None
    )


def test_an_unreadable_identity_of_the_savepoints_job_is_refused(tmp_path: Path) -> None:
    chk_dir = tmp_path / "chk"
    folder = _job_folder(chk_dir, JOB, _identity())
    (folder / IDENTITY_FILE).write_bytes(b"{not json")
    savepoint = _savepoint(tmp_path / "savepoints")
    with pytest.raises(ConfigError, match=f"its identity file cannot be read: {folder / IDENTITY_FILE}"):
        check_start(chk_dir.as_uri(), TOPIC, savepoint.as_uri(), from_empty=True, identity=_identity())


def test_without_its_jobs_identity_a_savepoint_is_a_note_as_before(tmp_path: Path) -> None:
    chk_dir = tmp_path / "chk"
    _job_folder(chk_dir, "f" * 32, _identity(decisions_topic="shadow.decisions"))
    savepoint = _savepoint(tmp_path / "savepoints")  # its job's folder is not in job.checkpoint_dir
    note = check_start(chk_dir.as_uri(), TOPIC, savepoint.as_uri(), from_empty=True, identity=_identity())
    assert note is not None and "only its events topic was checked" in note
    _job_folder(chk_dir, JOB, _identity(decisions_topic="shadow.decisions"))
    renamed = savepoint.rename(savepoint.parent / "before-upgrade")  # not Flink's name: its job is unknown
    note = check_start(chk_dir.as_uri(), TOPIC, renamed.as_uri(), from_empty=True, identity=_identity())
    assert note is not None and "only its events topic was checked" in note


def test_submit_refuses_another_jobs_savepoint_before_calling_flink(tmp_path: Path) -> None:
    chk_dir = tmp_path / "chk"
    _job_folder(chk_dir, JOB, _identity(decisions_topic="shadow.decisions"))
    savepoint = _savepoint(tmp_path / "savepoints")
    env = {
        **os.environ,
        "RISKCTL_STACK_DIR": str(tmp_path / "stack"),
        "RISKCTL_JOB_CHECKPOINT_DIR": chk_dir.as_uri(),
        "RISKCTL_JOB_RULES_SOURCE": "cdc",
        "PATH": "/usr/bin:/bin",
    }
    env.pop("FLINK_HOME", None)
    res = run_riskctl("submit", "--set", f"job.restore_from={savepoint.as_uri()}", env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "decisions_topic 'shadow.decisions'" in errors[0], res.stderr
    assert "no Flink client found" not in res.stderr
