"""Fixtures of the configuration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No RISKCTL_* variable of the developer's shell and no riskctl.toml in the working directory."""
    for name in list(os.environ):
        if name.startswith("RISKCTL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path
