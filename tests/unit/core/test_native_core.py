"""The opt-in compiled core (riskctl/core/native.py): used only when asked for and fresh, else pure Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from riskctl.core import native

CORE = Path(native.__file__).parent
ROOT = CORE.parents[1]


def _manifest(out: Path, **override: object) -> None:
    (out / "riskctl" / "core").mkdir(parents=True, exist_ok=True)
    doc: dict[str, object] = {
        "cache_tag": sys.implementation.cache_tag,
        "sources": native.source_digests(CORE),
    }
    doc.update(override)
    (out / native.MANIFEST).write_text(json.dumps(doc))


def _enable(out: Path) -> tuple[bool, list[str], list[str]]:
    path = [str(CORE)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = native.enable(out, path, CORE)
    return ok, path, [str(w.message) for w in caught if issubclass(w.category, native.NativeCoreWarning)]


def test_the_default_is_the_pure_python_core() -> None:
    env = {k: v for k, v in os.environ.items() if k != native.ENV}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import riskctl.core.engine as e, riskctl.core.native as n; print(e.__file__, n.status)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(CORE / "engine.py"), "python"]


def test_a_missing_build_warns_and_keeps_the_sources(tmp_path: Path) -> None:
    ok, path, warned = _enable(tmp_path / "nowhere")
    assert not ok and path == [str(CORE)]
    assert len(warned) == 1 and "no readable manifest.json" in warned[0]


def test_a_stale_build_never_shadows_the_sources(tmp_path: Path) -> None:
    sources = native.source_digests(CORE)
    sources["engine.py"] = "0" * 64
    _manifest(tmp_path, sources=sources)
    ok, path, warned = _enable(tmp_path)
    assert not ok and path == [str(CORE)]
    assert "stale: engine.py changed" in warned[0]


def test_a_build_for_another_interpreter_is_refused(tmp_path: Path) -> None:
    _manifest(tmp_path, cache_tag="cpython-27")
    ok, _, warned = _enable(tmp_path)
    assert not ok and "built for 'cpython-27'" in warned[0]


@pytest.mark.parametrize("body", ["[1, 2]", "{not json"])
def test_a_hostile_manifest_is_refused(tmp_path: Path, body: str) -> None:
    (tmp_path / native.MANIFEST).write_text(body)
    ok, _, warned = _enable(tmp_path)
    assert not ok and warned


def test_a_fresh_build_goes_first_on_the_package_path(tmp_path: Path) -> None:
    _manifest(tmp_path)
    before = list(sys.path)
    try:
        ok, path, warned = _enable(tmp_path)
        assert ok and not warned
        assert path == [str(tmp_path / "riskctl" / "core"), str(CORE)]
        assert sys.path[-1] == str(tmp_path)
    finally:
        sys.path[:] = before
        native.status = "python"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled core, shared by this module's tests: the build ``scripts/setup`` made with the same script
    (the one a job runs) when it is fresh for these sources, else a new build (mypyc, 20-60 s)."""
    if native.problem(native.DEFAULT_BUILD, CORE) is None:
        return native.DEFAULT_BUILD
    pytest.importorskip("mypyc")
    out = tmp_path_factory.mktemp("native")
    build = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_native_core.py"), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0 and "no C compiler" in build.stderr:
        pytest.skip("no C compiler here")
    assert build.returncode == 0, build.stderr[-2000:]
    return out


def test_the_compiled_core_decides_exactly_as_the_sources(built: Path) -> None:
    """Compare every record of a replay of the benchmark's workload, compiled and not."""
    out = built
    probe = (
        "import json, sys; sys.path.insert(0, 'bench'); import engine_bench as eb, riskctl.core.native as n;"
        "from riskctl.core.engine import Engine; from riskctl.core.rules import load_rules;"
        "from riskctl.core.runner import LocalRunner; import riskctl.core.engine as m;"
        "r = LocalRunner(Engine(load_rules('rules'), lateness=5000));"
        "recs = [x.to_dict() for x in r.run(eb.generate(5000, 300))];"
        "print(json.dumps({'status': n.status, 'file': m.__file__, 'compiled': n.compiled(),"
        " 'records': recs}, sort_keys=True))"
    )
    runs = {}
    for mode in ("python", "native"):
        env = {k: v for k, v in os.environ.items() if k != native.ENV}
        env["PYTHONPATH"] = str(ROOT)
        if mode == "native":
            env[native.ENV] = str(out)
        got = subprocess.run(
            [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, check=True
        )
        runs[mode] = json.loads(got.stdout)
    assert runs["python"]["status"] == "python"
    assert runs["native"]["status"] == f"native:{out}"
    assert runs["native"]["file"].endswith(".so")
    # every compiled module the replay imported came from the build, also those only the engine imports
    assert runs["python"]["compiled"] == []
    assert runs["native"]["compiled"] == [m.removesuffix(".py") for m in native.COMPILED]
    assert len(runs["python"]["records"]) > 5000  # decisions and alerts
    assert runs["native"]["records"] == runs["python"]["records"]


def test_the_core_s_tests_pass_over_the_compiled_core(built: Path) -> None:
    """The core's unit tests and the job's state cache's, run over the build (the rest of the suite runs the
    sources). mypyc checks the declared types where Python does not: a user's stored code for a name no rule
    in force has (an int where the engine declared a str) failed every event of that user in the job, and
    passed over the sources (bench/flink_profile/README.md, 2026-12-06 afternoon)."""
    env = {**os.environ, native.ENV: str(built), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error::riskctl.core.native.NativeCoreWarning",  # a stale build would test the sources
            "tests/unit/core",
            "tests/unit/flink/test_flink_keyed_state.py",
            "--ignore=tests/unit/core/test_native_core.py",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-6000:]
    assert " passed" in run.stdout.splitlines()[-1]
    probe = "import riskctl.core.native as n, riskctl.core.state as s; print(n.status, s.__file__)"
    got = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True)
    status, module = got.stdout.split()
    assert status == f"native:{built}" and module.endswith(".so")  # what the tests above ran


def test_a_job_gets_the_fresh_default_build_unless_told_otherwise(tmp_path: Path) -> None:
    _manifest(tmp_path)
    assert native.default_for_jobs({}, tmp_path) == str(tmp_path)
    assert native.default_for_jobs({native.ENV: ""}, tmp_path) is None  # "" turns it off
    assert native.default_for_jobs({native.ENV: "/elsewhere"}, tmp_path) is None  # an explicit build wins
    assert native.describe({native.ENV: str(tmp_path)}) == f"compiled ({tmp_path})"
    assert native.describe({native.ENV: ""}) == "pure Python"


def test_a_missing_or_stale_default_build_means_pure_python_quietly(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.default_for_jobs({}, tmp_path / "none") is None
        _manifest(tmp_path, sources={name: "0" * 64 for name in native.COMPILED})
        assert native.default_for_jobs({}, tmp_path) is None
    assert native.describe({native.ENV: str(tmp_path)}).startswith("pure Python (stale: ")


@pytest.mark.usefixtures("changes_environ")  # main() sets the variable for the JVM it would start
def test_the_job_entry_point_sets_the_default_before_the_jvm_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riskctl.config.checks import refused
    from riskctl.flink import main as job_main

    monkeypatch.delenv(native.ENV, raising=False)
    monkeypatch.setattr(native, "default_for_jobs", lambda: str(tmp_path))

    def refuse() -> None:
        assert os.environ[native.ENV] == str(tmp_path)  # already set when the settings load
        raise refused("stop here")  # a refused setting: exit 2

    monkeypatch.setattr(job_main, "load_settings", refuse)
    assert job_main.main([]) == 2
    assert os.environ[native.ENV] == str(tmp_path)


def test_the_stacks_taskmanagers_get_the_default_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riskctl.config import load_settings
    from riskctl.stack.services import FlinkCluster

    monkeypatch.delenv(native.ENV, raising=False)
    cluster = FlinkCluster(load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path)}))
    monkeypatch.setattr(native, "DEFAULT_BUILD", tmp_path / "none")
    assert native.ENV not in cluster._env()
    monkeypatch.setattr(native, "default_for_jobs", lambda env: "/the/build")
    assert cluster._env()[native.ENV] == "/the/build"


@pytest.mark.parametrize("cls", ["Decision", "Alert", "Result", "FiredRule"])
def test_the_records_own_init_takes_exactly_their_fields(cls: str) -> None:
    """The records made per event write their ``__init__`` out (the compiled core compiles it; the one
    ``@dataclass`` writes would run as Python code): a field added to the class without it would be left
    unset, or a default drift. Each parameter is a field, in order, with the field's default."""
    import dataclasses
    import importlib.util
    import inspect

    # the sources, whichever core runs the tests (a compiled __init__ shows no signature)
    spec = importlib.util.spec_from_file_location("_decisions_source", CORE / "decisions.py")
    assert spec is not None and spec.loader is not None
    decisions = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = decisions  # dataclasses resolve the module's annotations through it
    try:
        spec.loader.exec_module(decisions)
    finally:
        del sys.modules[spec.name]
    record = getattr(decisions, cls)
    params = list(inspect.signature(record.__init__).parameters.values())[1:]
    fields = dataclasses.fields(record)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        if f.default is not dataclasses.MISSING:
            assert p.default == f.default, f.name
        elif f.default_factory is not dataclasses.MISSING:
            assert p.default is None, f.name  # None stands for a fresh default_factory() value
        else:
            assert p.default is inspect.Parameter.empty, f.name


def test_a_fired_rule_gets_its_own_evidence_dict() -> None:
    from riskctl.core.decisions import FiredRule

    a, b = FiredRule("r", 1, "PASS"), FiredRule("r", 1, "PASS")
    a.evidence["x"] = 1
    assert b.evidence == {} and a == FiredRule("r", 1, "PASS", {"x": 1})
