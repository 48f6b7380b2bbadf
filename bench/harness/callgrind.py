"""Instructions a child process executes, counted by Valgrind's callgrind (Debian's ``valgrind``).

On a shared box the time of a few per cent of change is lost in the noise; an instruction count is not:
the same code over the same input, with ``PYTHONHASHSEED=0``, counts the same to within a few hundredths of
a per cent whatever else runs. The tools that count (``bench/engine_ab.py --instructions``,
``bench/decide_budget.py --instructions``) run a child twice, once over N more events than the other, side
by side, and take the difference per event: start-up, imports and reading the workload are in both runs.
Instructions are not time (a cache miss costs hundreds of cycles): a change found this way is confirmed in
time too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: what a child is started under: callgrind, its output file discarded (the total is on stderr)
WRAPPER = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
_COLLECTED = re.compile(r"==\d+== Collected : (\d+)")


def require(tool: str) -> None:
    """Exit with how to get valgrind when it is not on the PATH."""
    if shutil.which("valgrind") is None:
        sys.exit(f"{tool} --instructions needs valgrind on the PATH (Debian: apt-get install valgrind)")


def start(args: Sequence[str], env: Mapping[str, str], cwd: str | Path) -> subprocess.Popen[str]:
    """``args`` started under callgrind, its output and errors captured."""
    return subprocess.Popen(
        [*WRAPPER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=dict(env)
    )


def collected(stderr: str) -> int | None:
    """The instructions callgrind counted, from the child's errors (None: it reported none)."""
    found = _COLLECTED.findall(stderr)
    return int(found[-1]) if found else None
