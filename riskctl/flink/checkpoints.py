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
length-prefixed, so a topic that merely starts with the name does not match), and, when the job that wrote
it recorded one, its *identity* matches this job's (:func:`job_identity`: its topics, rules source and the
layout of its state). Only local folders
(``file://`` or a plain path) are looked at; for a remote checkpoint store (``s3://``, ``hdfs://``) the
check says it cannot look. No PyFlink here: the CLI runs it before any JVM starts.

The identity: the events topic alone let a checkpoint of another riskctl job reading the same topic (another
decisions topic, rules source or state layout) be restored, silently, or fail the job at start with Flink's
trace (state of an operator the new job does not have). The job records its identity, when it is submitted,
in ``<checkpoint_dir>/<job id>/riskctl-job.json`` (:func:`record_identity`); a restore compares it with this
job's and refuses a difference (exit 2) unless told ``--restore-foreign``. A savepoint ('flink stop') holds
none, but its folder is named after its job: the identity its job recorded in ``<checkpoint_dir>`` is compared
(:func:`savepoint_job_identity`). A checkpoint or savepoint without one (its job's folder gone, a job of an
older riskctl) is checked by its events topic only, and the command says so.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from riskctl.config.checks import refused
from riskctl.errors import NewerCheckpointError

if TYPE_CHECKING:
    from riskctl.config import Settings

#: ``_metadata`` files larger than this are not read (state inlined in it is small; a checkpoint of this job
#: is recognised by the source's split state, which comes early)
MAX_METADATA_BYTES = 64 * 2**20
#: the layout of the job's state: the decide operator's keyed state (one encoded dict of states per user,
#: under their names' codes: riskctl.core.state.EncodedKeyedState and riskctl.core) and its broadcast
#: rules. Raise it with a change after which a checkpoint would be read wrongly on the other side of it, by
#: this version (state of the previous layout) or by the previous one (state of this layout): a restore
#: across it is then refused, unless this version lists the older layout in READABLE_LAYOUTS (a riskctl
#: version of the same layout restores as before).
#: tests/unit/flink/test_state_layout.py holds it to the structure of that state: it fails when what the job
#: stores changes shape while this number does not, and says how to record the new layout's signature.
#: Layout 2: a pattern with nothing pending but its buffer stores a tuple, not a list (riskctl.core.patterns).
#: Layout 3: a pattern's buffer keeps an event that arrived in order and that no condition holds for as its
#: time alone (an int), not as a tuple.
#: Layout 4: a user's dict holds each value under its name's code (riskctl.core.state.state_code),
#: not under the name.
#: Layout 5: a user's dict is stored in marshal's format (riskctl.core.state.encode_state), not pickled.
STATE_LAYOUT = 5
#: the layouts this version reads correctly, so restores: its own, and the older ones it still reads as they
#: are (layout 1: pattern states are all lists, which the matcher reads as before; layouts 1 and 2: every
#: buffered place a tuple, which the matcher still reads, and still writes for a place arriving late; layouts
#: 1-3: a dict keyed by the names, which FlinkKeyedState recodes as it decodes it; layouts 1-4: a pickle,
#: which decode_state tells from a marshal by its first byte). A
#: riskctl of an older layout refuses this one's checkpoints (its identity check sees another number): it
#: would misread them.
READABLE_LAYOUTS = frozenset({1, 2, 3, 4, 5})
#: the job's identity, recorded in its checkpoint folder ``<checkpoint_dir>/<job id>/``
IDENTITY_FILE = "riskctl-job.json"
#: identity files larger than this are not read (one is ~400 bytes)
MAX_IDENTITY_BYTES = 65_536


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


def job_identity(settings: Settings) -> dict[str, Any]:
    """What makes a checkpoint this job's: the topics it reads and writes, its rules source (and table), and
    the layout of its state (:data:`STATE_LAYOUT`). Another value of any of them is another job's state:
    another operator graph (a rules source, a replies sink), other outputs, other state."""
    job = settings.job
    return {
        "events_topic": job.events_topic,
        "decisions_topic": job.decisions_topic,
        "alerts_topic": job.alerts_topic,
        "dead_letter_topic": job.dead_letter_topic,
        "rule_status_topic": job.rule_status_topic,
        "replies_topic": settings.serve.replies_topic,
        "rules_source": job.rules_source,
        "rules_table": job.rules_table if job.rules_source != "file" else "",
        "state_layout": STATE_LAYOUT,
    }


def record_identity(checkpoint_dir: str, job_id: str, identity: Mapping[str, Any]) -> str | None:
    """Write ``identity`` (with the riskctl version, for people) into the job's checkpoint folder
    ``<checkpoint_dir>/<job_id>/``; returns a warning when it cannot (the job runs on without it), None when
    written or when the folder is not local."""
    from riskctl import __version__

    root = local_path(checkpoint_dir)
    if root is None:
        return None
    folder = root / job_id
    doc = {**identity, "riskctl_version": __version__}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{IDENTITY_FILE}.tmp"
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, folder / IDENTITY_FILE)
    except OSError as exc:
        return (
            f"cannot record the job's identity in {folder / IDENTITY_FILE} ({exc.strerror or exc}): a "
            "restore of its checkpoints will be checked by their events topic only"
        )
    return None


class _Unreadable(str):
    """Why an identity file that exists could not be read."""


class _Ambiguous(_Unreadable):
    """Why the job of a savepoint cannot be told (job folders of other identities share its id's prefix)."""


#: the folder Flink makes for a savepoint ('flink stop', 'flink savepoint', the REST API), whatever its target
#: directory: ``savepoint-<the first 6 hex digits of the job id>-<12 random hex digits>``
#: (AbstractFsCheckpointStorageAccess.createSavepointDirectory)
_SAVEPOINT_FOLDER = re.compile(r"savepoint-([0-9a-f]{6})-[0-9a-f]{12}")
#: a job's checkpoint folder, ``<checkpoint_dir>/<job id>``
_JOB_FOLDER = re.compile(r"[0-9a-f]{32}")


def recorded_identity(checkpoint: Path, checkpoint_dir: str = "") -> dict[str, Any] | _Unreadable | None:
    """The identity recorded for ``checkpoint`` (a chk-<n> or savepoint folder, or its ``_metadata``): the
    file in the folder itself (a savepoint it was copied into) or in its parent (the job's checkpoint folder);
    with ``checkpoint_dir``, for a savepoint that holds none, its job's (:func:`savepoint_job_identity`).
    None when there is none; an :class:`_Unreadable` (the reason) when one exists but cannot be read."""
    return _find_identity(checkpoint, checkpoint_dir)[0]


def _find_identity(
    checkpoint: Path, checkpoint_dir: str = ""
) -> tuple[dict[str, Any] | _Unreadable | None, Path | None]:
    """:func:`recorded_identity`, and the file it was read from (None when none, or ambiguous)."""
    folder = checkpoint.parent if checkpoint.name == "_metadata" else checkpoint
    for candidate in (folder / IDENTITY_FILE, folder.parent / IDENTITY_FILE):
        try:
            if not candidate.is_file():
                continue
        except OSError as exc:
            return _Unreadable(f"{candidate}: {exc.strerror or exc}"), candidate
        return _read_identity(candidate), candidate
    if not checkpoint_dir:
        return None, None
    return savepoint_job_identity(folder, checkpoint_dir)


def _read_identity(path: Path) -> dict[str, Any] | _Unreadable:
    try:
        if path.stat().st_size > MAX_IDENTITY_BYTES:
            return _Unreadable(f"{path} is larger than {MAX_IDENTITY_BYTES:,} bytes")
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        return _Unreadable(f"{path}: {exc.strerror or exc}")
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _Unreadable(f"{path} is not a JSON document")
    if not isinstance(doc, dict):
        return _Unreadable(f"{path} is not a JSON object")
    return doc


def savepoint_job_identity(
    savepoint: Path, checkpoint_dir: str
) -> tuple[dict[str, Any] | _Unreadable | None, Path | None]:
    """The identity a savepoint's job recorded in ``checkpoint_dir``, and its file.

    A savepoint is written outside the job's checkpoint folder (``flink stop --savepointPath``), so the
    identity the job recorded there is not beside it; but Flink names the savepoint's folder after its job
    (``savepoint-<first 6 hex digits of the job id>-...``, :data:`_SAVEPOINT_FOLDER`), and the job folders
    ``<checkpoint_dir>/<job id>`` whose id begins with those digits are its job's. Their identities (the
    riskctl version aside) must agree: job folders of two identities sharing the prefix (one chance in 16.7
    million for two jobs) make an :class:`_Ambiguous`. (None, None) for a folder not named so, a remote
    ``checkpoint_dir``, or no job folder there with an identity (the job's checkpoints were elsewhere, its
    folder was removed, an older riskctl)."""
    match = _SAVEPOINT_FOLDER.fullmatch(savepoint.name)
    root = local_path(checkpoint_dir)
    if match is None or root is None:
        return None, None
    try:
        files = sorted(
            job / IDENTITY_FILE
            for job in root.glob(f"{match[1]}*")
            if _JOB_FOLDER.fullmatch(job.name) and (job / IDENTITY_FILE).is_file()
        )
    except OSError:
        return None, None
    found: dict[str, tuple[dict[str, Any], Path]] = {}
    for path in files:
        doc = _read_identity(path)
        if isinstance(doc, _Unreadable):
            return doc, path
        found.setdefault(
            json.dumps({k: v for k, v in doc.items() if k != "riskctl_version"}, sort_keys=True), (doc, path)
        )
    if len(found) > 1:
        folders = ", ".join(str(path.parent) for _, path in found.values())
        return (
            _Ambiguous(
                f"its job cannot be told: the job folders {folders} (ids beginning with {match[1]}, as the "
                f"savepoint's name does) record different identities; copy the right one's {IDENTITY_FILE} "
                "into the savepoint's folder"
            ),
            None,
        )
    return next(iter(found.values()), (None, None))


def identity_differences(recorded: Mapping[str, Any], identity: Mapping[str, Any]) -> list[str]:
    """The fields of ``identity`` that ``recorded`` gives another value (a field it lacks is not compared:
    a file of an older riskctl). An older state layout this version reads (:data:`READABLE_LAYOUTS`) is no
    difference."""
    return [
        f"{name} {_short(recorded[name])} (this job: {_short(value)})"
        for name, value in identity.items()
        if name in recorded
        and recorded[name] != value
        and not (name == "state_layout" and value == STATE_LAYOUT and _readable(recorded[name]))
    ]


def _readable(layout: Any) -> bool:
    return type(layout) is int and layout in READABLE_LAYOUTS


def _short(value: Any) -> str:
    from riskctl.cli.common import printable

    text = printable(repr(value))
    return text if len(text) <= 100 else text[:100] + "..."


def _foreign(checkpoint: Path, identity: Mapping[str, Any] | None) -> bool:
    """Whether ``checkpoint``'s recorded identity says it is another job's."""
    if identity is None:
        return False
    recorded = recorded_identity(checkpoint)
    return isinstance(recorded, dict) and bool(identity_differences(recorded, identity))


def completed_checkpoints(
    checkpoint_dir: str, events_topic: str, identity: Mapping[str, Any] | None = None
) -> list[Checkpoint]:
    """Completed checkpoints under ``checkpoint_dir`` whose metadata name ``events_topic``, oldest first;
    with ``identity``, not those whose recorded identity is another (:func:`job_identity`)."""
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
            if meta is not None and _mentions(meta, marker) and not _foreign(chk, identity):
                try:
                    found.append(Checkpoint(chk, meta.stat().st_mtime))
                except OSError:
                    continue  # removed meanwhile (Flink keeps only the last few)
    return sorted(found, key=lambda c: (c.completed_at, str(c.path)))


def check_start(
    checkpoint_dir: str,
    events_topic: str,
    restore_from: str,
    *,
    from_empty: bool,
    identity: Mapping[str, Any] | None = None,
    restore_foreign: bool = False,
) -> str | None:
    """Raise :class:`NewerCheckpointError` when the job would skip a newer completed checkpoint of itself,
    a refusal (ConfigError, exit 2) when ``restore_from`` is another job's
    (:func:`check_restore_is_of_this_job`).

    Returns a note for the user when a check could not look (a remote store, no identity recorded), else None.
    """
    note = check_restore_is_of_this_job(
        restore_from,
        events_topic,
        identity=identity,
        restore_foreign=restore_foreign,
        checkpoint_dir=checkpoint_dir,
    )
    if from_empty:
        return note
    newer_note = _check_newer(checkpoint_dir, events_topic, restore_from, identity)
    return "\n".join(n for n in (note, newer_note) if n) or None


def _check_newer(
    checkpoint_dir: str, events_topic: str, restore_from: str, identity: Mapping[str, Any] | None
) -> str | None:
    root = local_path(checkpoint_dir)
    if root is None:
        return (
            f"note: not checking {checkpoint_dir} for newer checkpoints of this job (only local folders are "
            "read); make sure job.restore_from names the latest one"
        )
    try:
        found = completed_checkpoints(checkpoint_dir, events_topic, identity)
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


def check_restore_is_of_this_job(
    restore_from: str,
    events_topic: str,
    *,
    identity: Mapping[str, Any] | None = None,
    restore_foreign: bool = False,
    checkpoint_dir: str = "",
) -> str | None:
    """Refuse a local ``job.restore_from`` that is another job's; returns a note when only its events topic
    could be checked (no identity recorded with it), else None.

    * Its ``_metadata`` must name ``events_topic`` as the Kafka source's state does (the enumerator's
      assigned partitions, always kept inside ``_metadata``): not so for a checkpoint of another job, of this
      job before its events topic changed, or a ``_metadata`` cut short. Flink restored such a checkpoint
      without a word: the source kept the splits of the other topic and read it, from that job's offsets,
      besides this job's topic, and every checkpoint after carried both; the decide operator got the other
      job's users' state (found in review: a job restored from the checkpoint of one reading another topic
      logged 'Assigned to partition(s): <other topic>-1, <other topic>-0'). A ``_metadata`` cut short (a copy
      interrupted) ended 'riskctl run' in a Java traceback (EOFException). Never lifted.
    * With ``identity`` (:func:`job_identity`), the identity recorded with it must not differ: another
      riskctl job reading the same topic (other outputs, rules source, state layout) was restored silently,
      or the job failed at start with Flink's trace. ``restore_foreign`` lifts this one; an identity file
      that cannot be read is refused likewise. A savepoint holds none (unless one was copied into it): the
      one its job recorded in ``checkpoint_dir`` is compared (:func:`savepoint_job_identity`). Before, a
      savepoint was checked by its events topic only: another job's on the same topic was restored.

    A path this machine cannot read (a remote store, another machine's folder) is left to Flink.
    """
    if not restore_from:
        return None
    path = local_path(restore_from)
    meta = _metadata(path) if path is not None else None
    if meta is None:
        return None
    if _names(meta, split_marker(events_topic)) is False:
        msg = (
            f"job.restore_from {restore_from!r} is not a checkpoint of this job: its _metadata does not name "
            f"the events topic {events_topic!r} (a checkpoint of another job, or of this one before "
            "job.events_topic changed, or a _metadata cut short). Restoring it would read the other job's "
            "topic and state; name a checkpoint or savepoint of this job"
        )
        raise refused(msg)
    if identity is None or restore_foreign:
        return None
    recorded, source = _find_identity(meta, checkpoint_dir)
    if recorded is None:
        return (
            f"note: no riskctl identity recorded with {restore_from} ({IDENTITY_FILE} in its folder or its "
            "job's: a savepoint of a job whose checkpoint folder is not in job.checkpoint_dir any more, or a "
            "checkpoint of an older riskctl): only its events topic was checked"
        )
    if isinstance(recorded, _Ambiguous):
        differences = [str(recorded)]
    elif isinstance(recorded, _Unreadable):
        differences = [f"its identity file cannot be read: {recorded}"]
    else:
        differences = identity_differences(recorded, identity)
    if not differences:
        return None
    where = ""
    if source is not None and source.parent not in (meta.parent, meta.parent.parent):
        where = f" (the identity its job recorded in {source})"
    msg = (
        f"job.restore_from {restore_from!r} is not a checkpoint of this job: "
        + "; ".join(differences)
        + where
        + ". Restoring it would give this job another job's state (or fail it at start on state of "
        "operators it does not have); name a checkpoint or savepoint of this job, or pass --restore-foreign "
        "to restore it anyway"
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
