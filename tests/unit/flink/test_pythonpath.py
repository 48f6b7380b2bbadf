"""The import path the job's embedded interpreter gets (riskctl/flink/pythonpath.py).

pemja starts the *base* interpreter of ``python.executable``, with this process's import path as its
``PYTHONPATH``. Started outside the checkout, 'riskctl run' gave it site-packages but not the checkout: an
editable install's import hook (a ``.pth`` file) is read only for a site directory, never for a
``PYTHONPATH`` entry, and every attempt of the job failed with ``No module named 'riskctl'``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import riskctl
from riskctl.flink.pythonpath import RISKCTL_ROOT


def test_riskctl_root_is_the_folder_riskctl_is_imported_from() -> None:
    assert Path(riskctl.__file__).resolve().parent == Path(RISKCTL_ROOT) / "riskctl"


def test_the_base_interpreter_imports_riskctl_with_the_path_computed_outside_the_checkout(
    tmp_path: Path,
) -> None:
    """As 'riskctl run' does from another directory: its sys.path has no checkout (only the console script's
    folder and site-packages); the base interpreter, given the PYTHONPATH computed there, imports riskctl and
    pyflink from an empty folder, as the JVM's embedded one must."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    computed = subprocess.run(
        [sys.executable, "-c", "from riskctl.flink.pythonpath import python_path; print(python_path())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    base = getattr(sys, "_base_executable", sys.executable)
    probe = "import riskctl, pyflink; print(riskctl.__file__)"
    done = subprocess.run(
        [base, "-s", "-c", probe],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": computed},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()).resolve() == Path(riskctl.__file__).resolve()
