"""Opt-in compiled core: the hot modules built by mypyc, used only when asked for and only when fresh.

``scripts/build_native_core.py OUT`` compiles :data:`COMPILED` (mypyc, about 25-60 s) into ``OUT`` and writes
``OUT/manifest.json`` with the SHA-256 of each source and the interpreter's tag. With the environment
variable ``RISKCTL_NATIVE_CORE=OUT`` set, ``import riskctl.core`` (:func:`enable_from_env`, called by the
package) puts ``OUT`` ahead of the sources on the package's search path, so ``riskctl.core.engine`` and the
others load the compiled modules; the pure-Python sources stay the fallback and the reference:

- variable unset or empty: pure Python, nothing is checked (the default, and what the tests run);
- ``OUT`` missing, unreadable, built for another interpreter, or built from sources that have changed since
  (any hash differs): a :class:`NativeCoreWarning` says why, and the pure-Python modules load. A stale build
  never shadows edited sources.

Same behaviour compiled or not: the whole unit suite passes over the compiled core, and
``bench/engine_ab.py`` checks the benchmark's records are identical (bench/results/engine-issue14.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections.abc import Mapping, MutableSequence
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

ENV = "RISKCTL_NATIVE_CORE"
#: the modules compiled (relative to riskctl/core), the hot path of an event: what the engine runs per event,
#: and the door and validation every record of the job passes first (door.py and events.py: about 8,800 fewer
#: instructions per event on the decide operator's Python side, some 6% of it,
#: bench/results/engine-instructions.md)
COMPILED = (
    "decisions.py",
    "door.py",
    "engine.py",
    "events.py",
    "features.py",
    "patterns.py",
    "runner.py",
    "state.py",
    "stored.py",
)
MANIFEST = "manifest.json"
#: where ``scripts/setup`` builds the core for the job (a checkout's ``.cache``): see :func:`default_for_jobs`
DEFAULT_BUILD = Path(__file__).resolve().parents[2] / ".cache" / "native-core"
#: what ``riskctl.core`` loaded: "python", or "native:<dir>" once the compiled modules are on the path
status = "python"


class NativeCoreWarning(RuntimeWarning):
    """The compiled core was asked for but cannot be used (the pure-Python modules load instead)."""


def source_digests(core_dir: Path) -> dict[str, str]:
    """SHA-256 of each compiled module's source under ``core_dir`` (what a build must match)."""
    return {name: hashlib.sha256((core_dir / name).read_bytes()).hexdigest() for name in COMPILED}


def problem(out: Path, core_dir: Path) -> str | None:
    """Why the build in ``out`` cannot be used for the sources in ``core_dir``; None when it can."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return f"no readable {MANIFEST} in {out} ({type(exc).__name__}: {exc})"
    if not isinstance(manifest, dict):
        return f"{out / MANIFEST} is not a JSON object"
    tag = sys.implementation.cache_tag
    if manifest.get("cache_tag") != tag:
        return f"built for {manifest.get('cache_tag')!r}, this interpreter is {tag!r}"
    built = manifest.get("sources")
    try:
        current = source_digests(core_dir)
    except OSError as exc:
        return f"cannot read the sources ({exc})"
    if built != current:
        changed = sorted(n for n in COMPILED if not isinstance(built, dict) or built.get(n) != current[n])
        return f"stale: {', '.join(changed)} changed since the build (rebuild: scripts/build_native_core.py)"
    if not (out / "riskctl" / "core").is_dir():
        return f"{out}/riskctl/core is missing"
    return None


def enable(out: Path, package_path: MutableSequence[str], core_dir: Path) -> bool:
    """Put the build in ``out`` ahead of ``core_dir`` on ``package_path`` if it matches; else warn. True if
    enabled."""
    global status
    why = problem(out, core_dir)
    if why is not None:
        warnings.warn(f"{ENV}={out}: pure-Python core used: {why}", NativeCoreWarning, stacklevel=3)
        return False
    native = str(out / "riskctl" / "core")
    if native not in package_path:
        package_path.insert(0, native)
    lib = str(out)  # the modules' shared library (<hash>__mypyc), a top-level module
    if lib not in sys.path:
        sys.path.append(lib)
    status = f"native:{out}"
    return True


def enable_from_env(package_path: MutableSequence[str], core_dir: Path) -> bool:
    """:func:`enable` the build named by ``RISKCTL_NATIVE_CORE``, if set (called by ``riskctl.core``)."""
    where = os.environ.get(ENV, "").strip()
    if not where:
        return False
    return enable(Path(where).resolve(), package_path, core_dir)


def default_for_jobs(environ: Mapping[str, str] | None = None, build: Path | None = None) -> str | None:
    """The ``RISKCTL_NATIVE_CORE`` a risk job's processes should get; None: leave their environment as is.

    The job (``riskctl run``, ``flink run`` of jobs/risk_job.py, the stack's TaskManagers) runs the compiled
    core by default when ``scripts/setup`` built a fresh one into :data:`DEFAULT_BUILD`: the decide thread
    spent about 12% less CPU per event with it (bench/flink_profile/README.md). An explicit setting wins, an
    empty one meaning pure Python; a missing or stale default build means pure Python, quietly (a checkout
    whose core was edited since the build). Everything else that imports ``riskctl.core`` (the tests,
    replays, the plain loop) stays pure Python unless the variable is set.
    """
    env = os.environ if environ is None else environ
    if ENV in env:
        return None
    build = DEFAULT_BUILD if build is None else build
    return str(build) if problem(build, Path(__file__).parent) is None else None


def compiled() -> list[str]:
    """The :data:`COMPILED` modules this interpreter has imported from the build (not their sources).

    What the job's decide operators log at open: which core they really run. Whether a module's own file is
    mapped says nothing: the build's modules import each other through the shared library, so a module
    first imported by another compiled one never loads its own small extension file."""
    loaded = []
    for name in COMPILED:
        module = sys.modules.get(f"{__package__}.{name.removesuffix('.py')}")
        if module is not None and str(getattr(module, "__file__", "")).endswith(tuple(EXTENSION_SUFFIXES)):
            loaded.append(name.removesuffix(".py"))
    return loaded


def describe(environ: Mapping[str, str] | None = None) -> str:
    """Which core a job started with ``environ`` runs (its default applied), for its start-up log line."""
    env = os.environ if environ is None else environ
    where = (env.get(ENV) if ENV in env else default_for_jobs(env)) or ""
    where = where.strip()
    if not where:
        return "pure Python"
    why = problem(Path(where).resolve(), Path(__file__).parent)
    return f"compiled ({where})" if why is None else f"pure Python ({why})"
