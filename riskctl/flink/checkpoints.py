"""Refuse to start the job from empty state when a newer completed checkpoint of it exists.

Incident (issue 11): a restored job died before its first checkpoint; resubmitted without
``job.restore_from`` it started from empty state at the consumer group's committed offsets, and 26 decisions
differed from ``riskctl replay`` of the same events. ``riskctl submit`` and ``riskctl run`` now look in the
checkpoint folder first: when it holds a completed checkpoint of this job newer than what the job would
start from (nothing, or ``job.restore_from``), they stop and name the checkpoint to restore, unless told
``--from-empty``.

Flink lays checkpoints out as ``<checkpoint_dir>/<job id>/chk-<n>/_metadata``; ``_metadata`` is written
last, when the checkpoint completes, so a ``chk-<n>`` folder without it is not a completed checkpoint. A
checkpoint is *of this job* when its ``_metadata`` names the job's events topic: the Kafka source's split
state (topic, partition, offset), small enough to be kept inside ``_metadata``, holds it (``writeUTF``:
length-prefixed, so a topic that merely starts with the name does not match). Only local folders
(``file://`` or a plain path) are looked at; for a remote checkpoint store (``s3://``, ``hdfs://``) the
check says it cannot look. No PyFlink here: the CLI runs it before any JVM starts.
"""

from __future__ import annotations

import datetime as dt
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from riskctl.config.checks import refused
from riskctl.errors import NewerCheckpointError

#: ``_metadata`` files larger than this are not read (state inlined in it is small; a checkpoint of this job
#: is recognised by the source's split state, which comes early)
MAX_METADATA_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Checkpoint:
    """A completed, retained checkpoint found on disk."""

    path: Path  # the chk-<n> folder
    completed_at: float  # modification time of its _metadata (seconds since the epoch)

    def describe(self) -> str:
        """Its path and completion time, for logs and the CLI."""
        when = dt.datetime.fromtimestamp(self.completed_at, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{self.path} (completed {when})"


def local_path(uri: str) -> Path | None:
    """The local path of a ``file://`` URI or a plain path; None for another scheme."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a plain path (or a Windows drive letter)
        return Path(uri)
    return None


def _metadata(folder: Path) -> Path | None:
    meta = folder / "_metadata"
    if meta.is_file():
        return meta
    if folder.name == "_metadata" and folder.is_file():
        return folder
    return None


def _mentions(meta: Path, marker: bytes) -> bool:
    return _names(meta, marker) is True


def _names(meta: Path, marker: bytes) -> bool | None:
    """Whether ``meta`` holds ``marker``; None when it cannot be read, or is too large to be."""
    try:
        if meta.stat().st_size > MAX_METADATA_BYTES:
            return None
        return marker in meta.read_bytes()
    except OSError:
        return None


def split_marker(topic: str) -> bytes:
    """The bytes a Kafka split of ``topic`` starts with in the source's state (Java ``writeUTF``: a 2-byte
    length, then the name), so that topic ``events`` does not match a checkpoint of ``events-v2``."""
    name = topic.encode("utf-8")
    return struct.pack(">H", len(name)) + name


def completed_checkpoints(checkpoint_dir: str, events_topic: str) -> list[Checkpoint]:
    """Completed checkpoints under ``checkpoint_dir`` whose metadata name ``events_topic``, oldest first."""
    root = local_path(checkpoint_dir)
    if root is None or not root.is_dir():
        return []
    marker = split_marker(events_topic)
    found: list[Checkpoint] = []
    for job_dir in root.iterdir():
        if not job_dir.is_dir():
            continue
        for chk in job_dir.glob("chk-*"):
            meta = _metadata(chk)
            if meta is not None and _mentions(meta, marker):
                try:
                    found.append(Checkpoint(chk, meta.stat().st_mtime))
                except OSError:
                    continue  # removed meanwhile (Flink keeps only the last few)
    return sorted(found, key=lambda c: (c.completed_at, str(c.path)))


def check_start(checkpoint_dir: str, events_topic: str, restore_from: str, *, from_empty: bool) -> str | None:
    """Raise :class:`NewerCheckpointError` when the job would skip a newer completed checkpoint of itself.

    Returns a note for the user when the check could not look (a remote store), else None.
    """
    check_restore_is_of_this_job(restore_from, events_topic)
    if from_empty:
        return None
    root = local_path(checkpoint_dir)
    if root is None:
        return (
            f"note: not checking {checkpoint_dir} for newer checkpoints of this job (only local folders are "
            "read); make sure job.restore_from names the latest one"
        )
    try:
        found = completed_checkpoints(checkpoint_dir, events_topic)
    except OSError as exc:  # a folder this user may not list (PermissionError was a traceback)
        return (
            f"note: cannot look in {checkpoint_dir} for newer checkpoints of this job "
            f"({exc.strerror or exc}); make sure job.restore_from names the latest one"
        )
    if restore_from:
        restore = local_path(restore_from)
        meta = _metadata(restore) if restore is not None else None
        if restore is None or meta is None:
            return None  # a savepoint elsewhere, or a path Flink will reject with its own message
        since = meta.stat().st_mtime
        own = restore.resolve() if restore.name != "_metadata" else restore.parent.resolve()
        newer = [c for c in found if c.completed_at > since and c.path.resolve() != own]
        start = f"{restore_from} (job.restore_from)"
    else:
        newer = found
        start = "empty state (job.restore_from is not set)"
    if not newer:
        return None
    latest = newer[-1]
    msg = (
        f"refusing to start from {start}: {root} holds a newer completed checkpoint of this job "
        f"(events topic {events_topic!r}): {latest.describe()}. Starting without it would decide the "
        "events after the consumer group's committed offsets with older state than the job had. "
        f"Restore it with --set job.restore_from={latest.path.as_uri()} , or pass --from-empty to start from "
        + ("empty state" if not restore_from else "job.restore_from")
        + " anyway"
    )
    raise NewerCheckpointError(msg)


def check_restore_exists(restore_from: str) -> None:
    """Refuse a local ``job.restore_from`` that is not a completed checkpoint or savepoint (no ``_metadata``
    in it): Flink found out only when the job was submitted, and ``riskctl run`` ended with a Java traceback
    of 99 lines ("Cannot find checkpoint or savepoint file/directory").

    For the embedded MiniCluster only, where this process is the cluster: under ``flink run`` the path is
    the JobManager's, which may be another machine's.
    """
    if not restore_from:
        return
    path = local_path(restore_from)
    if path is None or _metadata(path) is not None:
        return  # a remote store (Flink reads it), or a completed checkpoint or savepoint
    what = "no such file or folder" if not path.exists() else "no _metadata in it"
    msg = (
        f"job.restore_from {restore_from!r} is not a completed checkpoint or savepoint ({what}): name a "
        "chk-<n> folder (or a savepoint folder) that holds a _metadata file"
    )
    raise refused(msg)


def check_restore_is_of_this_job(restore_from: str, events_topic: str) -> None:
    """Refuse a local ``job.restore_from`` whose ``_metadata`` does not name ``events_topic`` as the Kafka
    source's state does (the enumerator's assigned partitions, always kept inside ``_metadata``): a
    checkpoint of another job, of this job before its events topic changed, or a ``_metadata`` cut short.

    Flink restored such a checkpoint without a word: the source kept the splits of the other topic and read
    it, from that job's offsets, besides this job's topic, and every checkpoint after carried both; the
    decide operator got the other job's users' state (found in review: a job restored from the checkpoint
    of one reading another topic logged 'Assigned to partition(s): <other topic>-1, <other topic>-0'). A
    ``_metadata`` cut short (a copy interrupted) ended 'riskctl run' in a Java traceback (EOFException).
    A path this machine cannot read (a remote store, another machine's folder) is left to Flink.
    """
    if not restore_from:
        return
    path = local_path(restore_from)
    meta = _metadata(path) if path is not None else None
    if meta is None or _names(meta, split_marker(events_topic)) is not False:
        return
    msg = (
        f"job.restore_from {restore_from!r} is not a checkpoint of this job: its _metadata does not name the "
        f"events topic {events_topic!r} (a checkpoint of another job, or of this one before "
        "job.events_topic changed, or a _metadata cut short). Restoring it would read the other job's topic "
        "and state; name a checkpoint or savepoint of this job"
    )
    raise refused(msg)


def check_checkpoint_dir_writable(checkpoint_dir: str) -> None:
    """Create a local ``job.checkpoint_dir`` and make sure a folder can be made in it, as Flink will (its
    ``<job id>/``, ``shared/``, ``taskowned/``); refuse it otherwise, naming why.

    Flink found out when the job was submitted ("Failed to create checkpoint storage at checkpoint
    coordinator side"), and 'riskctl run' ended in a Java traceback of 116 lines after saying the job was
    starting (found in review: a folder under a file, a read-only file system, another user's folder).
    For the embedded MiniCluster only, where this process writes the checkpoints; a remote store (``s3://``)
    is left to Flink.
    """
    path = local_path(checkpoint_dir)
    if path is None:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        Path(tempfile.mkdtemp(prefix=".riskctl-write-check-", dir=path)).rmdir()
    except OSError as exc:
        msg = (
            f"job.checkpoint_dir {checkpoint_dir!r} cannot be written: {exc.strerror or exc}: name a folder "
            "this user can create and write"
        )
        raise refused(msg) from None
