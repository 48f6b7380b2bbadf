"""Warm TaskManagers: start the job's Python in every idle TaskManager before a restart needs it.

In thread mode each TaskManager JVM embeds one Python interpreter (pemja). It is created when the first
Python operator opens there and lives as long as the JVM, across jobs. Its first imports (PyFlink's operations
pull in Apache Beam and pandas) took 5.5 s on a loaded 2-core box: that is what the risk job waits for when a
restart puts it on a TaskManager that never ran Python, e.g. the replacement of one that died
(docs/operations.md).

:func:`warm` runs a short job, ``riskctl-warm-up`` (submitted through the REST API: :func:`submit`),
with one Python subtask per idle TaskManager (one whose slots are all free). With the cluster setting
``cluster.evenly-spread-out-slots: true`` (the local stack sets it) Flink gives each subtask a slot on the
least used TaskManager, so each idle one gets one. The subtask's function imports what the risk job's
operators import; the job ends in seconds and frees the slots. If it still runs at the timeout it is
cancelled, so it never holds slots that a restarting risk job waits for.

Nothing here imports PyFlink at module level: the TaskManager unpickles :func:`_warm` from this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from riskctl.errors import ServiceError

JOB_NAME = "riskctl-warm-up"
MARKER = "riskctl warm-up: the risk job's Python is imported in pid"
WARM_JOB = Path(__file__).resolve().parents[2] / "jobs" / "warm_job.py"
_SERVICE = "flink"
_TERMINAL = {"FINISHED", "FAILED", "CANCELED"}


@dataclass(frozen=True)
class WarmResult:
    """What :func:`warm` did: the idle TaskManagers it found, those its subtasks ran on, how it ended."""

    idle: list[str] = field(default_factory=list)  # registered with all slots free when it looked
    warmed: list[str] = field(default_factory=list)
    job_id: str = ""
    state: str = "NOTHING_TO_WARM"  # or the warm-up job's last state
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rest(rest_url: str, path: str, method: str = "GET") -> Any:
    req = urllib.request.Request(f"{rest_url}{path}", method=method)  # noqa: S310 (an http(s) setting)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            body = resp.read()
    except (OSError, urllib.error.URLError) as exc:
        msg = f"{method} {rest_url}{path}: {exc}"
        raise ServiceError(_SERVICE, msg) from exc
    if not body:
        return {}
    # Flink's REST API answers JSON objects; anything else (a proxy's login page, another service at that
    # address) ended 'riskctl warm' with a JSONDecodeError or AttributeError traceback
    try:
        doc = json.loads(body)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        doc = None
    if not isinstance(doc, dict):
        msg = (
            f"{method} {rest_url}{path}: the answer is not a JSON object: is flink.rest_url Flink's REST API?"
        )
        raise ServiceError(_SERVICE, msg)
    return doc


def taskmanagers(rest_url: str) -> list[dict[str, Any]]:
    """The registered TaskManagers, as the REST API lists them (``id``, ``slotsNumber``, ``freeSlots``...)."""
    listed = _rest(rest_url, "/taskmanagers").get("taskmanagers", [])
    if not isinstance(listed, list):
        msg = (
            f"GET {rest_url}/taskmanagers: 'taskmanagers' is not a list: is flink.rest_url Flink's REST API?"
        )
        raise ServiceError(_SERVICE, msg)
    return [t for t in listed if isinstance(t, dict) and "id" in t]


def idle_of(listed: list[dict[str, Any]]) -> list[str]:
    """The ids of the TaskManagers whose slots are all free (no task of any job runs there)."""
    return sorted(str(t["id"]) for t in listed if 0 < int(t.get("slotsNumber", 0)) == t.get("freeSlots"))


def idle_taskmanagers(rest_url: str) -> list[str]:
    """The ids of the registered TaskManagers whose slots are all free."""
    return idle_of(taskmanagers(rest_url))


def _ran_on(rest_url: str, job_id: str) -> list[str]:
    """The TaskManagers that ran a subtask of the job's Python vertex."""
    job = _rest(rest_url, f"/jobs/{job_id}")
    out: set[str] = set()
    for vertex in job.get("vertices", []):
        if "Source" in vertex.get("name", ""):
            continue
        tms = _rest(rest_url, f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")
        out.update(str(t.get("taskmanager-id", "")) for t in tms.get("taskmanagers", []))
    return sorted(t for t in out if t)


def _manifest_jar() -> bytes:
    """An empty jar: the entry class, PyFlink's ``PythonDriver``, is on the cluster's class path (lib/)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n\n")
    return buf.getvalue()


def _post(rest_url: str, path: str, body: bytes, content_type: str, timeout: float) -> Any:
    req = urllib.request.Request(  # noqa: S310 (an http(s) setting)
        f"{rest_url}{path}", data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[-1500:]
        msg = f"POST {rest_url}{path}: HTTP {exc.code}: {detail}"
        raise ServiceError(_SERVICE, msg) from exc
    except OSError as exc:
        msg = f"POST {rest_url}{path}: {exc}"
        raise ServiceError(_SERVICE, msg) from exc


def submit(rest_url: str, parallelism: int, timeout: float = 60.0) -> str:
    """Submit the warm-up job through the JobManager's REST API; return its job id.

    The JobManager runs ``jobs/warm_job.py`` with PyFlink's ``PythonDriver`` (the web submission of a jar
    whose entry class is on its class path), so no client JVM starts here: ``flink run`` took 30-50 s on the
    loaded 2-core box of the fault suite, long enough to delay the very recovery it prepares for. Needs
    ``web.submit.enable`` (Flink's default) and this checkout at the same path on the JobManager's machine.
    """
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="jarfile"; filename="riskctl-warm-up.jar"\r\n'
        "Content-Type: application/x-java-archive\r\n\r\n"
    ).encode()
    body = head + _manifest_jar() + f"\r\n--{boundary}--\r\n".encode()
    uploaded = _post(rest_url, "/jars/upload", body, f"multipart/form-data; boundary={boundary}", timeout)
    jar_id = str(uploaded["filename"]).rsplit("/", 1)[-1]
    run = {
        "entryClass": "org.apache.flink.client.python.PythonDriver",
        "programArgsList": ["-py", str(WARM_JOB), "--parallelism", str(parallelism)],
        "parallelism": parallelism,
    }
    try:
        body = json.dumps(run).encode()
        started = _post(rest_url, f"/jars/{jar_id}/run", body, "application/json", timeout)
    finally:
        with contextlib.suppress(ServiceError):
            _rest(rest_url, f"/jars/{jar_id}", method="DELETE")
    return str(started["jobid"])


def warm(
    rest_url: str,
    *,
    idle: list[str] | None = None,
    expect: int = 0,
    wait_s: float = 0.0,
    timeout_s: float = 60.0,
) -> WarmResult:
    """Warm the idle TaskManagers of the cluster at ``rest_url``.

    ``idle``: the idle TaskManagers if the caller just listed them (:func:`idle_of`), else they are listed
    here. ``expect``: TaskManagers started but not in that list yet; the job asks for a slot for each, so
    that its subtask runs there as soon as one registers (the JobManager builds the job meanwhile).
    ``wait_s``: with nothing idle nor expected, how long to wait for an idle TaskManager; 0 looks once.
    ``timeout_s``: the submission and the run together; a warm-up job still running then is cancelled.
    """
    started = time.monotonic()
    if idle is None:
        idle = idle_taskmanagers(rest_url)
    while not idle and not expect and time.monotonic() - started < wait_s:
        time.sleep(0.5)
        idle = idle_taskmanagers(rest_url)
    if not idle and not expect:
        return WarmResult(seconds=round(time.monotonic() - started, 2))
    job_id = submit(rest_url, len(idle) + expect, timeout=max(1.0, timeout_s - (time.monotonic() - started)))
    state = "CREATED"
    while time.monotonic() - started < timeout_s:
        state = str(_rest(rest_url, f"/jobs/{job_id}").get("state", ""))
        if state in _TERMINAL:
            break
        time.sleep(0.25)
    else:
        _rest(rest_url, f"/jobs/{job_id}?mode=cancel", method="PATCH")
        state = "CANCELED"
    return WarmResult(
        idle=idle,
        warmed=_ran_on(rest_url, job_id),
        job_id=job_id,
        state=state,
        seconds=round(time.monotonic() - started, 2),
    )


# -- the warm-up job (jobs/warm_job.py, run by the JobManager's PythonDriver) ------------------------------
def _warm(x: int) -> int:
    """Import the risk job's operator modules (PyFlink's embedded operations are imported to call this)."""
    import os  # noqa: PLC0415

    import riskctl.flink.risk_function  # noqa: F401, PLC0415

    # on the TaskManager's stdout (its .out file): which TaskManager process was warmed
    print(f"{MARKER} {os.getpid()}", flush=True)  # noqa: T201
    return x


def build(env: Any, parallelism: int) -> None:
    """Add the warm-up pipeline: ``parallelism`` Python map subtasks, one record each, nothing written."""
    from pyflink.common import Types

    records = env.from_collection(list(range(parallelism)), type_info=Types.INT()).rebalance()
    mapped = records.map(_warm, output_type=Types.INT()).set_parallelism(parallelism)
    mapped.filter(lambda x: x < 0).print()


def main(argv: list[str] | None = None) -> int:
    import argparse

    from riskctl.config import load_settings
    from riskctl.flink.env import EnvOptions, create_env

    p = argparse.ArgumentParser(prog="warm_job", description="The riskctl warm-up job (see riskctl warm).")
    p.add_argument("--parallelism", type=int, required=True)
    args = p.parse_args(argv)
    settings = load_settings()
    env = create_env(
        EnvOptions(jars_dir=settings.flink.jars_dir, parallelism=args.parallelism, checkpoint_interval_ms=0)
    )
    build(env, args.parallelism)
    env.execute(JOB_NAME)
    return 0
