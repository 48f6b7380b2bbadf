from __future__ import annotations

from pathlib import Path

import pytest

from riskctl.config import load_settings
from riskctl.config.settings import engine_dedup
from riskctl.errors import ConfigError


def test_defaults_point_at_the_local_stack(tmp_path: Path) -> None:
    s = load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)})
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert (s.mysql_host, s.mysql_port) == ("127.0.0.1", 13306)


def test_file_then_environment_win(tmp_path: Path) -> None:
    cfg = tmp_path / "riskctl.toml"
    cfg.write_text('[kafka]\nbootstrap = "broker:9092"\n[stack]\nmysql_port = 3307\n')
    s = load_settings(cfg, env={"RISKCTL_STACK_MYSQL_PORT": "3310"})
    assert s.kafka_bootstrap == "broker:9092"
    assert s.mysql_port == 3310


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RISKCTL_STACK_KAFKA_PORT must be an integer"):
        load_settings(env={"RISKCTL_STACK_KAFKA_PORT": "lots"})
    cfg = tmp_path / "riskctl.toml"
    cfg.write_text("[mysql]\npasword = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[mysql\].*pasword"):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_password_from_env_or_stack_file_and_masked(tmp_path: Path) -> None:
    s = load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="RISKCTL_MYSQL_PASSWORD"):
        _ = s.mysql_password
    (tmp_path / "mysql").mkdir()
    (tmp_path / "mysql" / "password").write_text("generated\n")
    assert s.mysql_password == "generated"
    s = load_settings(env={"RISKCTL_MYSQL_PASSWORD": "from-env"})
    assert s.mysql_password == "from-env"
    assert s.redacted()["mysql"]["password"] == "***"
    assert "from-env" not in repr(s.redacted())


def test_job_dedup_is_mapped_to_the_engines_window_and_scope() -> None:
    """The one mapping the job and its replays share: "off" is no window, "all" every event, "api" serve's."""
    assert engine_dedup("api", 600_000) == (600_000, False)
    assert engine_dedup("all", 7_000) == (7_000, True)
    assert engine_dedup("off", 600_000) == (0, False)
