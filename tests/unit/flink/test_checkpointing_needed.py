"""Settings that only work with checkpoints are refused when ``job.checkpoint_interval_ms`` is 0 (none).

Reproduced on the MiniCluster before the check: with CDC rules, an edit committed after the start never
reached the job (no status in 40 s); with exactly-once delivery, a decision was in the topic but never
committed (a read_committed consumer saw nothing in 60 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from riskctl.config import load_settings
from riskctl.errors import ConfigError
from riskctl.flink.job import build_pipeline


def _settings(tmp_path: Path, **job: str) -> object:
    env = {"RISKCTL_STACK_DIR": str(tmp_path), "RISKCTL_JOB_CHECKPOINT_INTERVAL_MS": "0"}
    return load_settings(env=env | {f"RISKCTL_JOB_{k.upper()}": v for k, v in job.items()})


@pytest.mark.parametrize(
    ("job", "needs"),
    [
        ({"rules_source": "cdc"}, r"job\.rules_source cdc needs checkpoints"),
        (
            {"rules_source": "poll", "delivery": "exactly-once"},
            r"job\.delivery exactly-once needs checkpoints",
        ),
        (
            {"rules_source": "file", "delivery": "exactly-once"},
            r"job\.delivery exactly-once needs checkpoints",
        ),
    ],
)
def test_what_needs_checkpoints_is_refused_without_them(
    tmp_path: Path, job: dict[str, str], needs: str
) -> None:
    with pytest.raises(ConfigError, match=needs + r".*job\.checkpoint_interval_ms above 0"):
        build_pipeline(None, _settings(tmp_path, **job))  # type: ignore[arg-type]


@pytest.mark.parametrize("source", ["poll", "file"])
def test_rules_polled_and_at_least_once_run_without_checkpoints(tmp_path: Path, source: str) -> None:
    from riskctl.flink.job import _check_checkpointing

    _check_checkpointing(_settings(tmp_path, rules_source=source))  # type: ignore[arg-type]
    with_checkpoints = load_settings(
        env={"RISKCTL_STACK_DIR": str(tmp_path), "RISKCTL_JOB_DELIVERY": "exactly-once"}
    )
    _check_checkpointing(with_checkpoints)  # cdc, exactly-once, checkpoints every 5 s
