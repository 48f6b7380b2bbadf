"""Fixtures of the command-line tests: ``clean`` (no RISKCTL_* variable of the developer's shell, no
riskctl.toml in the working directory) is the configuration tests' own."""

from __future__ import annotations

from tests.unit.config.conftest import clean

__all__ = ["clean"]
