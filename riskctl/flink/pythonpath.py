"""The import path handed to the Python interpreter that pemja embeds in a Flink JVM (thread mode).

pemja starts the *base* interpreter of ``python.executable``, which does not know a virtualenv's
site-packages (the job fails with ``No module named 'pemja'``): the JVM's environment must carry this
interpreter's import path as ``PYTHONPATH``. No PyFlink import here: the stack uses it before any JVM exists.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: the folder riskctl is imported from: the checkout itself with an editable install (``pip install -e``),
#: whose import hook is set up by a ``.pth`` file that an interpreter given site-packages through
#: ``PYTHONPATH`` never reads
RISKCTL_ROOT = str(Path(__file__).resolve().parents[2])


def python_path() -> str:
    """``PYTHONPATH``: the current one first, then the folder riskctl is imported from, then every existing
    folder of this interpreter's sys.path.

    Without riskctl's folder, a job started outside the checkout ('riskctl run' from another directory) failed
    every attempt with ``No module named 'riskctl'``: the editable install's import hook is not in the job's
    interpreter, and only a current directory that happened to be the checkout made riskctl importable."""
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    entries = [RISKCTL_ROOT, *(p for p in sys.path if p and Path(p).is_dir())]
    seen = set(current)
    out = list(current)
    for p in entries:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return os.pathsep.join(out)
