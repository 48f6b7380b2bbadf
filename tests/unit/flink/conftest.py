"""Each test starts with a fresh interpreter's collector, as a new TaskManager would have it."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_open_decide_functions() -> Iterator[None]:
    """Forget the decide functions a test opened without closing them (most do: they test one open).

    Their places at ``GC_SWITCH`` would otherwise keep counting into later tests, where an open would find
    functions of other jobs open and leave the collector alone. Looked up only if a test imported the module
    (it imports PyFlink).
    """
    yield
    switch = getattr(sys.modules.get("riskctl.flink.risk_function"), "GC_SWITCH", None)
    if switch is not None:
        with switch.lock:
            switch.places.clear()
    gc.enable()
    gc.unfreeze()
