"""job.compaction_nice: the decide operator lowers the CPU priority of RocksDB's compaction threads in its
process (thread mode: the TaskManager's JVM), and leaves every other thread as it is."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from riskctl.flink.risk_function import lower_compaction_priority

PR_SET_NAME = 15


@contextmanager
def native_thread(name: str) -> Iterator[int]:
    """A thread of this process whose kernel name (``/proc/self/task/<tid>/comm``) is ``name``, as RocksDB
    names its pool's threads; yields its tid while it lives."""
    named = threading.Event()
    stop = threading.Event()
    tid: list[int] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.prctl(PR_SET_NAME, name.encode(), 0, 0, 0) == 0, ctypes.get_errno()
        tid.append(threading.get_native_id())
        named.set()
        stop.wait(30)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert named.wait(10)
    try:
        yield tid[0]
    finally:
        stop.set()
        thread.join(10)


def nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def test_only_the_compaction_threads_get_the_niceness() -> None:
    with (
        native_thread("rocksdb:low0") as low0,
        native_thread("rocksdb:low1") as low1,
        native_thread("rocksdb:high0") as high,
        native_thread("decide -> (*ano") as decide,
    ):
        others = {high: nice_of(high), decide: nice_of(decide), threading.get_native_id(): nice_of(0)}
        assert nice_of(low0) < 19
        assert lower_compaction_priority(19) == 2
        assert nice_of(low0) == nice_of(low1) == 19
        assert {tid: nice_of(tid) for tid in others} == others  # the flushes, the task, this one: unchanged
        # a thread already lower keeps its niceness (raising a priority would need a privilege): counted
        assert lower_compaction_priority(10) == 2 and nice_of(low0) == 19


def test_zero_leaves_every_thread_and_no_proc_is_no_error(tmp_path: Path) -> None:
    assert lower_compaction_priority(0) == 0
    assert lower_compaction_priority(19, tmp_path / "absent") == 0
    task = tmp_path / "123456789"  # a thread of the listing that has ended by the time it is changed
    task.mkdir()
    (task / "comm").write_text("rocksdb:low0\n")
    assert lower_compaction_priority(19, tmp_path) == 0
    (tmp_path / "self").mkdir()  # not a thread id
    (tmp_path / "self" / "comm").write_text("rocksdb:low1\n")
    assert lower_compaction_priority(19, tmp_path) == 0
