"""``riskctl replay /dev/zero`` is refused, not read for ever (found in review).

Before: /dev/zero is one endless line; replay skipped it 1 MiB at a time for ever, printing nothing (killed
by a 10 s timeout, exit 124). Now a character or block device is bad usage (exit 2, one line); stdin is '-'.
"""

from __future__ import annotations

import subprocess
import sys

from riskctl.config import PROJECT_ROOT


def test_a_device_is_refused_at_once() -> None:
    args = [sys.executable, "-m", "riskctl.cli.main", "replay", "--rules", str(PROJECT_ROOT / "rules")]
    res = subprocess.run([*args, "/dev/zero"], capture_output=True, text=True, timeout=20, check=False)
    assert res.returncode == 2, res.stderr
    assert res.stderr == "error: '/dev/zero' is a device, not a JSON-lines file (stdin: '-')\n"
