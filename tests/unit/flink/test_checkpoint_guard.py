"""`riskctl submit` / `riskctl run` refuse to skip a newer completed checkpoint of the job (issue 11: a job
resubmitted without restore_from started from empty state, 26 decisions differed from replay).

The checkpoint folders are laid out as Flink lays them out (``<dir>/<job id>/chk-<n>/_metadata``); the
metadata holds the events topic as the Kafka source's split state does. A real checkpoint of the job is
checked in tests/integration/test_outages.py.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from riskctl.flink.checkpoints import (
    NewerCheckpointError,
    check_start,
    completed_checkpoints,
    split_marker,
)
from tests.helpers import run_riskctl

TOPIC = "riskctl.events"


def _chk(root: Path, job: str, n: int, topic: str = TOPIC, age_s: float = 0.0, complete: bool = True) -> Path:
    chk = root / job / f"chk-{n}"
    chk.mkdir(parents=True)
    if complete:
        meta = chk / "_metadata"
        split = split_marker(topic) + struct.pack(">iqq", 0, 42, -(2**63))  # topic, partition, offsets
        meta.write_bytes(b"\x00\x01flink-metadata\x00" + split)
        t = time.time() - age_s
        os.utime(meta, (t, t))
    return chk


def test_empty_start_is_refused_when_a_completed_checkpoint_exists(tmp_path: Path) -> None:
    _chk(tmp_path, "a" * 32, 3, age_s=60)
    latest = _chk(tmp_path, "b" * 32, 7, age_s=10)
    with pytest.raises(NewerCheckpointError) as err:
        check_start(tmp_path.as_uri(), TOPIC, "", from_empty=False)
    text = str(err.value)
    assert "refusing to start from empty state" in text
    assert f"job.restore_from={latest.as_uri()}" in text  # names the checkpoint to use
    assert "--from-empty" in text
    assert check_start(tmp_path.as_uri(), TOPIC, "", from_empty=True) is None  # told to


def test_restoring_an_older_checkpoint_is_refused_and_the_latest_is_accepted(tmp_path: Path) -> None:
    old = _chk(tmp_path, "a" * 32, 3, age_s=60)
    latest = _chk(tmp_path, "b" * 32, 7, age_s=10)
    with pytest.raises(NewerCheckpointError) as err:
        check_start(str(tmp_path), TOPIC, old.as_uri(), from_empty=False)
    assert f"job.restore_from={latest.as_uri()}" in str(err.value)
    assert check_start(str(tmp_path), TOPIC, latest.as_uri(), from_empty=False) is None
    assert check_start(str(tmp_path), TOPIC, str(latest / "_metadata"), from_empty=False) is None


def test_what_is_not_a_completed_checkpoint_of_this_job_does_not_count(tmp_path: Path) -> None:
    _chk(tmp_path, "a" * 32, 1, complete=False)  # in progress, or died before completing
    _chk(tmp_path, "b" * 32, 2, topic="another.events")  # another job's
    _chk(tmp_path, "e" * 32, 2, topic=TOPIC + "-v2")  # a topic whose name starts with this one's
    (tmp_path / ("c" * 32)).mkdir()
    (tmp_path / "stray-file").write_text("x")
    assert completed_checkpoints(tmp_path.as_uri(), TOPIC) == []
    assert check_start(tmp_path.as_uri(), TOPIC, "", from_empty=False) is None
    assert check_start((tmp_path / "missing").as_uri(), TOPIC, "", from_empty=False) is None


def test_a_remote_checkpoint_store_is_not_read_and_says_so() -> None:
    note = check_start("s3://bucket/checkpoints", TOPIC, "", from_empty=False)
    assert note is not None and "s3://bucket/checkpoints" in note


def test_submit_refuses_before_calling_flink(tmp_path: Path) -> None:
    """The real command: it exits 2 with the checkpoint's path and never reaches 'flink run'."""
    latest = _chk(tmp_path / "chk", "d" * 32, 4)
    env = {
        **os.environ,
        "RISKCTL_STACK_DIR": str(tmp_path / "stack"),  # no local Flink client there either
        "RISKCTL_JOB_CHECKPOINT_DIR": (tmp_path / "chk").as_uri(),
        "PATH": "/usr/bin:/bin",
    }
    env.pop("FLINK_HOME", None)
    res = run_riskctl("submit", env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"job.restore_from={latest.as_uri()}" in res.stderr
    # with --from-empty the check passes and the command goes on to look for a Flink client
    res = run_riskctl("submit", "--from-empty", env=env)
    assert "refusing" not in res.stderr
    assert "no Flink client found" in res.stderr


@pytest.mark.parametrize("missing", ["nonexistent/chk-3", "empty/chk-4"])
def test_a_restore_from_without_a_checkpoint_is_a_config_error_before_the_job_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """'riskctl run --set job.restore_from=/nonexistent/chk-3' ended with Flink's 99-line Java traceback
    (FileNotFoundException: Cannot find checkpoint or savepoint) once the job was submitted."""
    from riskctl.config import load_settings
    from riskctl.errors import ConfigError
    from riskctl.flink.main import build

    (tmp_path / "empty" / "chk-4").mkdir(parents=True)
    target = tmp_path / missing
    monkeypatch.delenv("PYFLINK_GATEWAY_PORT", raising=False)  # the MiniCluster's case
    for given in (str(target), target.as_uri()):
        env = {
            "RISKCTL_STACK_DIR": str(tmp_path / "stack"),
            "RISKCTL_JOB_RULES_SOURCE": "file",
            "RISKCTL_JOB_RESTORE_FROM": given,
        }
        with pytest.raises(
            ConfigError, match=r"job\.restore_from .* is not a completed checkpoint or savepoint"
        ):
            build(load_settings(env=env))


def test_a_restore_from_that_is_a_checkpoint_or_elsewhere_is_left_to_flink(tmp_path: Path) -> None:
    from riskctl.flink.checkpoints import check_restore_exists

    chk = _chk(tmp_path, "job", 7)
    for given in ("", str(chk), chk.as_uri(), str(chk / "_metadata"), "s3://bucket/chk-1", "hdfs:///x/chk-2"):
        check_restore_exists(given)


@pytest.mark.parametrize("from_empty", [False, True])
def test_restoring_a_checkpoint_of_another_job_is_refused(tmp_path: Path, from_empty: bool) -> None:
    """Flink restored a checkpoint of a job reading another topic without a word: the source kept reading
    that topic from its offsets besides this job's ('Assigned to partition(s): <other topic>-1, ...'). A
    _metadata cut short ended 'riskctl run' in a Java traceback (EOFException)."""
    from riskctl.errors import ConfigError

    foreign = _chk(tmp_path / "other", "a" * 32, 5, topic="other.events")
    cut = _chk(tmp_path / "cut", "b" * 32, 6)
    (cut / "_metadata").write_bytes((cut / "_metadata").read_bytes()[:10])
    for given in (foreign.as_uri(), str(foreign / "_metadata"), cut.as_uri()):
        with pytest.raises(ConfigError, match=r"is not a checkpoint of this job: .* 'riskctl\.events'") as e:
            check_start((tmp_path / "chk").as_uri(), TOPIC, given, from_empty=from_empty)
        assert not isinstance(e.value, NewerCheckpointError)
    own = _chk(tmp_path / "own", "c" * 32, 7)
    assert check_start((tmp_path / "chk").as_uri(), TOPIC, own.as_uri(), from_empty=from_empty) is None
    # what this machine cannot read is left to Flink: another scheme, no _metadata here
    for elsewhere in ("s3://bucket/chk-1", str(tmp_path / "missing" / "chk-1")):
        assert check_start((tmp_path / "chk").as_uri(), TOPIC, elsewhere, from_empty=from_empty) is None


def test_submit_refuses_a_checkpoint_of_another_job_before_calling_flink(tmp_path: Path) -> None:
    foreign = _chk(tmp_path / "other", "d" * 32, 4, topic="other.events")
    env = {
        **os.environ,
        "RISKCTL_STACK_DIR": str(tmp_path / "stack"),
        "RISKCTL_JOB_CHECKPOINT_DIR": (tmp_path / "chk").as_uri(),
        "PATH": "/usr/bin:/bin",
    }
    env.pop("FLINK_HOME", None)
    res = run_riskctl("submit", "--from-empty", "--set", f"job.restore_from={foreign.as_uri()}", env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "is not a checkpoint of this job" in errors[0], res.stderr
    assert "no Flink client found" not in res.stderr


def test_a_checkpoint_dir_that_cannot_be_written_is_refused_before_the_job_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Flink found out when the job was submitted ('Failed to create checkpoint storage at checkpoint
    coordinator side'): 'riskctl run' said the job was starting, then ended in a 116-line Java traceback."""
    from riskctl.core import native
    from riskctl.flink import main as job_main
    from riskctl.flink.checkpoints import check_checkpoint_dir_writable

    monkeypatch.setattr(native, "default_for_jobs", lambda: None)
    monkeypatch.setattr(job_main, "prepare", lambda settings: None)
    monkeypatch.delenv("PYFLINK_GATEWAY_PORT", raising=False)  # the MiniCluster's case
    (tmp_path / "a-file").write_text("x")
    for name, value in [
        ("RISKCTL_STACK_DIR", str(tmp_path / "stack")),
        ("RISKCTL_JOB_RULES_SOURCE", "file"),
        ("RISKCTL_JOB_CHECKPOINT_DIR", (tmp_path / "a-file" / "chk").as_uri()),
    ]:
        monkeypatch.setenv(name, value)
    assert job_main.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: job.checkpoint_dir ") and "cannot be written: Not a directory" in err
    assert err.count("\n") == 1
    # a folder that can be made is made, and nothing is left in it
    check_checkpoint_dir_writable((tmp_path / "new" / "chk").as_uri())
    assert list((tmp_path / "new" / "chk").iterdir()) == []
    check_checkpoint_dir_writable("s3://bucket/chk")  # left to Flink


def test_a_checkpoint_folder_that_cannot_be_listed_is_a_note_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's folder (mode 700): Path.iterdir raised PermissionError out of 'riskctl run' and
    'riskctl submit', a traceback. (Simulated: the tests run as root, whom no mode stops.)"""
    _chk(tmp_path, "a" * 32, 3)
    real = Path.iterdir

    def denied(self: Path) -> object:
        if self == tmp_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    note = check_start(tmp_path.as_uri(), TOPIC, "", from_empty=False)
    assert note is not None and note.startswith(f"note: cannot look in {tmp_path.as_uri()}")
    assert "Permission denied" in note
