"""tests/unit mirrors the package (issue 12): a folder per area of riskctl, each folder a Python package.

Every folder that holds tests has an ``__init__.py``: pytest's default import mode then names a test module by
its package path (``tests.unit.cli.test_x``), so two areas may hold files of the same name, and
``tests.helpers`` is importable from every test.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PACKAGE = Path(str(files("riskctl")))
TESTS = Path(__file__).resolve().parents[1]
UNIT = TESTS / "unit"
OUTSIDE_THE_PACKAGE = {"bench"}  # the benchmark harness, bench/ at the repository's root


def areas() -> set[str]:
    """The subpackages and modules of riskctl, by name: what a folder of tests/unit may be named after."""
    names = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    names |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return names


def test_every_subpackage_of_riskctl_has_a_folder_of_unit_tests() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert {"cli", "core", "flink", "store"} <= packages, PACKAGE
    missing = packages - {p.name for p in UNIT.iterdir() if p.is_dir()}
    assert not missing, f"no tests/unit/<area>/ for riskctl.{', riskctl.'.join(sorted(missing))}"


def test_every_folder_of_unit_tests_is_named_after_an_area() -> None:
    folders = {p.parent.name for p in UNIT.glob("*/test_*.py")}
    assert folders, UNIT
    strangers = folders - areas() - OUTSIDE_THE_PACKAGE
    assert not strangers, (
        f"tests/unit/{sorted(strangers)} mirror nothing in riskctl/ (areas: {sorted(areas())})"
    )


def test_every_folder_with_tests_is_a_package() -> None:
    folders = {p.parent for p in TESTS.rglob("test_*.py")} | {p.parent for p in TESTS.rglob("conftest.py")}
    assert UNIT / "core" in folders
    missing = sorted(str(f.relative_to(TESTS)) for f in folders if not (f / "__init__.py").exists())
    assert not missing, f"no __init__.py in {missing}"
