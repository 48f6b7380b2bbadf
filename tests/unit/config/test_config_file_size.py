"""The settings file is read up to a limit (found in review).

``tomllib.load`` read the whole file: ``RISKCTL_CONFIG=/dev/zero riskctl config show`` (or a huge file given
by mistake) filled memory until a MemoryError and a traceback. Now a file over ``MAX_CONFIG_BYTES`` is a
ConfigError naming it; a pipe (``--config <(...)``), a directory and bad UTF-8 keep their outcomes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from riskctl.config import load_settings
from riskctl.config.loading import MAX_CONFIG_BYTES
from riskctl.errors import ConfigError


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "riskctl.toml"
    cfg.write_text("[job]\nparallelism = 2\n" + "#" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match=f"config file {cfg} is larger than {MAX_CONFIG_BYTES} bytes"):
        load_settings(cfg, env={})


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_an_endless_file_is_refused_at_once() -> None:
    with pytest.raises(ConfigError, match="/dev/zero is larger than"):
        load_settings(env={"RISKCTL_CONFIG": "/dev/zero"})


def test_a_file_at_the_limit_a_pipe_a_directory_and_bad_utf8(tmp_path: Path) -> None:
    cfg = tmp_path / "riskctl.toml"
    head = "[job]\nparallelism = 2\n"
    cfg.write_text(head + "#" * (MAX_CONFIG_BYTES - len(head) - 1) + "\n")
    assert load_settings(cfg, env={}).job.parallelism == 2
    read, write = os.pipe()
    os.write(write, b"[job]\nparallelism = 3\n")
    os.close(write)
    try:
        assert load_settings(f"/dev/fd/{read}", env={}).job.parallelism == 3
    finally:
        os.close(read)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path, env={})
    cfg.write_bytes(b"\xff")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(cfg, env={})
