"""async-profiler attached to a contender's JVM for a few seconds of one phase (``bench.py --profile``).

The library comes from Maven Central (``tools.profiler:async-profiler``, the jar carries it) into
``.cache/profile/``; it is loaded into the running JVM with ``jcmd <pid> JVMTI.agent_load`` (the inner
quotes keep jcmd from splitting the agent's options at ``=``), which starts CPU sampling of every thread,
and a second load stops it and writes collapsed stacks. Read them with
``bench/flink_profile/collapsed_top.py FILE decide``.
"""

from __future__ import annotations

import io
import subprocess
import threading
import urllib.request
import zipfile
from pathlib import Path

from harness import ROOT, log
from harness.sampling import session_jvms

VERSION = "4.2"
URL = f"https://repo1.maven.org/maven2/tools/profiler/async-profiler/{VERSION}/async-profiler-{VERSION}.jar"
LIB = ROOT / ".cache" / "profile" / "linux-x64" / "libasyncProfiler.so"


def ensure_library() -> Path:
    """The profiler's native library, downloaded once."""
    if not LIB.is_file():
        log(f"downloading async-profiler {VERSION} from Maven Central")
        with urllib.request.urlopen(URL, timeout=120) as r:  # noqa: S310 - a fixed https URL
            jar = zipfile.ZipFile(io.BytesIO(r.read()))
        LIB.parent.mkdir(parents=True, exist_ok=True)
        LIB.write_bytes(jar.read("linux-x64/libasyncProfiler.so"))
    return LIB


def jvm_of(session: int | None) -> int | None:
    """The JVM of a contender's session (the MiniCluster's), or None."""
    jvms = session_jvms(session)
    return jvms[0] if jvms else None


def _agent(pid: int, options: str) -> None:
    lib = ensure_library()
    subprocess.run(  # noqa: S603 - jcmd from PATH, our own arguments
        ["jcmd", str(pid), "JVMTI.agent_load", str(lib), f'"{options}"'],  # noqa: S607
        check=True,
        capture_output=True,
        timeout=60,
    )


EVENTS = ("cpu", "wall")


def phase_and_event(wanted: str) -> tuple[str, str]:
    """``--profile``'s value split into the phase and the sampling (``sustained:wall``; ``cpu`` when not
    said); ValueError for a sampling async-profiler is not asked for here."""
    phase, _, event = wanted.partition(":")
    event = event or "cpu"
    if event not in EVENTS:
        msg = f"the sampling after ':' is one of {', '.join(EVENTS)}, got {event!r}"
        raise ValueError(msg)
    return phase, event


class Profile(threading.Thread):
    """Samples (1 ms) of every thread of ``pid`` from ``delay`` s after start, for ``seconds`` s: ``event``
    ``cpu`` (where threads run) or ``wall`` (where they are, running or waiting)."""

    def __init__(self, pid: int, out: Path, delay: float, seconds: float, *, event: str = "cpu") -> None:
        super().__init__(daemon=True)
        if event not in EVENTS:
            msg = f"profile event must be one of {', '.join(EVENTS)}, got {event!r}"
            raise ValueError(msg)
        self.pid, self.out, self.delay, self.seconds, self.event = pid, out, delay, seconds, event
        self.error: str | None = None
        self.stop_flag = threading.Event()

    def run(self) -> None:
        if self.stop_flag.wait(self.delay):
            return
        try:
            _agent(self.pid, f"start,event={self.event},interval=1ms,threads,file={self.out},collapsed")
            self.stop_flag.wait(self.seconds)
            _agent(self.pid, f"stop,file={self.out},collapsed")
            log(f"  profile written: {self.out}")
        except (OSError, subprocess.SubprocessError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log(f"  profiling failed: {self.error}")

    def finish(self) -> str | None:
        """Stop early if still sampling (the phase ended); the file's path, or None if nothing was written."""
        self.stop_flag.set()
        self.join(timeout=90)
        return str(self.out) if self.out.is_file() else None
