"""Tests of bench/: its modules are imported with bench/ on the path, as its scripts import them."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from riskctl.config import PROJECT_ROOT

BENCH = PROJECT_ROOT / "bench"


def bench_module(name: str) -> ModuleType:
    """``name`` imported as bench/'s scripts import it (``harness.report``, ``decide_budget``)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
