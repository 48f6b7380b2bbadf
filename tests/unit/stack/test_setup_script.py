"""scripts/setup on a copy of the project with fake tools (python, pip, mvn, java, mariadbd, chromium): what
it does on a fresh machine, on a second run, and after a run that was interrupted."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from riskctl.config import PROJECT_ROOT

COPIED = (
    "scripts/setup",
    "scripts/build_native_core.py",
    "riskctl/core/native.py",
    "pyproject.toml",
    "constraints.txt",
    "deps/flink-jars/pom.xml",
    "deps/kafka-broker/pom.xml",
)

FAKES = {
    # the system Python: `-c` checks pass, `-m venv [--clear] DIR` makes a venv of fakes
    "python3.11": """#!/bin/sh
echo "python $*" >>"$FAKE_LOG"
case "$1" in
  -c) exit 0 ;;
  -m) shift 2; if [ "$1" = --clear ]; then rm -rf "$2"; shift; fi
      mkdir -p "$1/bin" && cp "$FAKE_BIN/venv-python" "$1/bin/python" && cp "$FAKE_BIN/pip" "$1/bin/pip" ;;
esac
""",
    "venv-python": """#!/bin/sh
case "$1" in
  -c) case "$2" in *cache_tag*) echo cpython-311 ;; esac ;;
  scripts/build_native_core.py) mkdir -p "$2" && echo '{}' >"$2/manifest.json" ;;
esac
""",
    "pip": '#!/bin/sh\necho "pip $*" >>"$FAKE_LOG"\n',
    "mvn": """#!/bin/sh
for a; do case $a in -DoutputDirectory=*) d=${a#-DoutputDirectory=} ;; esac; done
mkdir -p "$d" && : >"$d/some.jar"
""",
    "java": "#!/bin/sh\n",
    "mariadbd": "#!/bin/sh\necho 'mariadbd  Ver 10.11.19'\n",
    "chromium": "#!/bin/sh\necho 'Chromium 131'\n",
    "chromedriver": "#!/bin/sh\n",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name in COPIED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, root / name)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name, text in FAKES.items():
        (fake_bin / name).write_text(text)
        (fake_bin / name).chmod((fake_bin / name).stat().st_mode | stat.S_IXUSR)
    return root


def setup(root: Path) -> subprocess.CompletedProcess[str]:
    fake_bin = root.parent / "bin"
    env = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "RISKCTL_PYTHON": str(fake_bin / "python3.11"),
        "FAKE_BIN": str(fake_bin),
        "FAKE_LOG": str(root.parent / "calls.log"),
    }
    return subprocess.run(
        ["bash", str(root / "scripts" / "setup")],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def calls(root: Path) -> list[str]:
    log = root.parent / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_a_fresh_machine_then_a_second_run_that_has_nothing_to_do(project: Path) -> None:
    first = setup(project)
    assert first.returncode == 0, first.stderr
    assert any(c.startswith("python -m venv") for c in calls(project))
    assert any(c.startswith("pip install -q -c constraints.txt -e") for c in calls(project))
    assert (project / ".cache" / "jars" / "some.jar").exists()
    second = setup(project)
    assert second.returncode == 0, second.stderr
    assert "nothing to do: everything is in place" in second.stderr


def test_a_virtualenv_whose_creation_was_interrupted_is_made_again(project: Path) -> None:
    """`python -m venv` killed during ensurepip (its last step) leaves .venv/bin/python without pip: every
    later run failed on '.venv/bin/pip: No such file or directory'."""
    (project / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(project.parent / "bin" / "venv-python", project / ".venv" / "bin" / "python")
    res = setup(project)
    assert res.returncode == 0, res.stderr
    assert "python -m venv --clear .venv" in calls(project)
    assert (project / ".venv" / "bin" / "pip").exists()
