"""The import path handed to the Python interpreter that pemja embeds in a Flink JVM (thread mode).

pemja starts the *base* interpreter of ``python.executable``, which does not know a virtualenv's
site-packages (the job fails with ``No module named 'pemja'``): the JVM's environment must carry this
interpreter's import path as ``PYTHONPATH``. No PyFlink import here: the stack uses it before any JVM exists.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def python_path() -> str:
    """``PYTHONPATH``: the current one first, then every existing folder of this interpreter's sys.path."""
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    entries = [p for p in sys.path if p and Path(p).is_dir() and p not in current]
    return os.pathsep.join(current + entries)
