"""The pure core imports no framework: no pyflink, kafka or MySQL client under riskctl/core (checked
by AST).
"""

from __future__ import annotations

import ast
import sys
from importlib.resources import files
from pathlib import Path

import pytest

CORE = Path(str(files("riskctl.core")))  # the source of the package this run imports
FORBIDDEN = ("pyflink", "kafka", "pymysql", "MySQLdb", "mysql", "confluent_kafka", "aiokafka")
ALLOWED_THIRD_PARTY = ("yaml", "orjson")  # the rule loader; JSON of events and decisions (jsoncodec)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.add("<dynamic __import__>")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            names.add("<dynamic import_module>")
    return names


CORE_FILES = sorted(CORE.rglob("*.py"))  # with the modules of its packages (riskctl/core/expr/)


def test_there_are_core_modules() -> None:
    modules = {p.parent.name if p.name == "__init__.py" else p.stem for p in CORE_FILES}
    assert modules >= {"engine", "expr", "rules", "state", "events"}


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_only_stdlib_yaml_and_core(path: Path) -> None:
    for name in imported_modules(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{path.name} imports {name}"
        assert not name.startswith("<dynamic"), f"{path.name} imports dynamically"
        ok = top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or name.startswith("riskctl.core")
        assert ok or top == "__future__", (
            f"{path.name} imports {name} (outside stdlib, yaml, orjson and riskctl.core)"
        )


def test_yaml_only_in_the_rule_loader() -> None:
    users = [p.name for p in CORE_FILES if "yaml" in imported_modules(p)]
    assert users in ([], ["rules.py"])


def test_the_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pyflink.datastream import StreamExecutionEnvironment\n")
    assert "pyflink.datastream" in imported_modules(bad)
