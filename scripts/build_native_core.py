"""Compile the engine's hot modules with mypyc into OUT, for ``RISKCTL_NATIVE_CORE=OUT`` (see
riskctl/core/native.py).

    .venv/bin/python scripts/build_native_core.py OUT      # about 25-60 s; needs a C compiler and mypy (dev)

Builds from this checkout's sources, outside the source tree (the sources are never shadowed by a build), and
writes ``OUT/manifest.json``: the interpreter tag and the SHA-256 of each compiled source, which
``riskctl.core`` checks before using the build. Rebuild after changing any module of
``riskctl.core.native.COMPILED``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from riskctl.core.native import COMPILED, MANIFEST, source_digests  # noqa: E402


def build(out: Path) -> dict[str, object]:
    from mypyc.build import mypycify  # dev dependency (mypy), imported only to build
    from setuptools import setup

    core = ROOT / "riskctl" / "core"
    digests = source_digests(core)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.rglob("*.so"):
        old.unlink()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="riskctl-native-") as tmp:
        cwd = os.getcwd()
        os.chdir(ROOT)  # mypyc names the modules after their paths relative to the working directory
        try:
            modules = mypycify([f"riskctl/core/{name}" for name in COMPILED], opt_level="3", target_dir=tmp)
            setup(
                name="riskctl-native-core",
                ext_modules=modules,
                script_args=["-q", "build_ext", "--build-lib", str(out), "--build-temp", tmp],
            )
        finally:
            os.chdir(cwd)
    if source_digests(core) != digests:
        sys.exit("the sources changed during the build: run it again")
    manifest = {
        "cache_tag": sys.implementation.cache_tag,
        "sources": digests,
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the build directory (created; its old modules are replaced)")
    args = ap.parse_args()
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        sys.exit("no C compiler (cc or gcc) on PATH: the compiled core cannot be built here")
    manifest = build(args.out.resolve())
    print(f"built {len(COMPILED)} modules into {args.out} in {manifest['build_seconds']} s")
    print(f"use it with: RISKCTL_NATIVE_CORE={args.out.resolve()}")


if __name__ == "__main__":
    main()
