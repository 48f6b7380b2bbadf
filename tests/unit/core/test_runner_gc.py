"""tune_gc: a collection scans only what is new since the previous one; survivors are frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from riskctl.core import runner
from riskctl.core.runner import GC_GEN0_THRESHOLD, tune_gc


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic GC can free it


@pytest.fixture
def tuned() -> Iterator[None]:
    before = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        while runner._freeze_survivors in gc.callbacks:
            gc.callbacks.remove(runner._freeze_survivors)
        gc.unfreeze()
        gc.set_threshold(*before)
        gc.collect()


@pytest.mark.usefixtures("tuned")
def test_thresholds_and_one_callback_however_often_it_is_called() -> None:
    tune_gc()
    assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
    assert gc.callbacks.count(runner._freeze_survivors) == 1


@pytest.mark.usefixtures("tuned")
def test_a_cycle_that_dies_before_the_next_collection_is_collected() -> None:
    node = Node()
    ref = weakref.ref(node)
    del node
    assert ref() is not None  # reference counting alone cannot free it
    gc.collect(0)
    assert ref() is None


@pytest.mark.usefixtures("tuned")
def test_survivors_of_a_collection_are_not_scanned_again() -> None:
    kept = [Node() for _ in range(100)]
    frozen = gc.get_freeze_count()
    gc.collect(0)
    assert gc.get_freeze_count() >= frozen + len(kept)
    # the documented trade: a cycle among frozen objects is not collected any more
    ref = weakref.ref(kept[0])
    del kept
    gc.collect()
    assert ref() is not None
