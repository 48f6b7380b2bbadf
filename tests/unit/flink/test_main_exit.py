"""The job's entry point ends an error before the job starts with the exit code every riskctl command gives
its class: a refused setting 2, a service that does not answer 3. It gave 2 for both, so 'riskctl run' with
Kafka down said "bad usage" (found in review)."""

from __future__ import annotations

import pytest

from riskctl.core import native
from riskctl.errors import ServiceError
from riskctl.flink import main as job_main


@pytest.fixture(autouse=True)
def _no_native_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() puts the compiled core in the environment for the JVM it starts: not for this test process
    monkeypatch.setattr(native, "default_for_jobs", lambda: None)


def test_a_refused_setting_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert job_main.main(["--set", "job.parallelism=four"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "job.parallelism" in err and err.count("\n") == 1


def test_a_service_that_does_not_answer_is_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def down(settings: object) -> None:
        raise ServiceError("Kafka", "cannot connect to 127.0.0.1:1\x1b[2J")

    monkeypatch.setattr(job_main, "prepare", down)
    assert job_main.main([]) == 3
    assert capsys.readouterr().err == "error: Kafka: cannot connect to 127.0.0.1:1\\x1b[2J\n"


@pytest.mark.usefixtures("changes_environ")  # main() names the JVM's log folder (FLINK_LOG_DIR) first
def test_a_value_the_job_refuses_while_it_is_built_is_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused by the job's own checks rather than by the settings' loader (Flink's shortest checkpoint
    interval): a bad setting all the same."""
    monkeypatch.setattr(job_main, "prepare", lambda settings: None)
    assert job_main.main(["--set", "job.checkpoint_interval_ms=5"]) == 2
