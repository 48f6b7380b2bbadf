"""How long ``riskctl rules validate`` takes on each hostile rule file (issue 11, item 5).

Runs the real command (``python -m riskctl.cli.main rules validate FILE``, a fresh process each time: the
figure includes the interpreter's start-up and imports) on every file of ``tests/unit/core/hostile_rules/``
and on files generated at the limits (largest text, most values), plus the rules in ``rules/`` as a baseline.
Reports the median and the maximum wall time of ``--repeat`` runs, the exit status, and whether a traceback
appeared; writes ``results/hostile_rules.md``.

    .venv/bin/python bench/hostile_rules.py [--repeat 5] [--timeout 60]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "unit" / "core" / "hostile_rules"
RESULTS = ROOT / "bench" / "results" / "hostile_rules.md"


def generated(folder: Path) -> list[Path]:
    """Files at the loader's limits, too large to keep in the repository."""
    sys.path.insert(0, str(ROOT))
    from riskctl.core.rules import MAX_RULE_TEXT, MAX_YAML_NODES

    head = "id: big\naction: REVIEW\nwhen: 'true'\n"
    files = {
        "gen_max_text.yaml": head + "description: " + "x" * (MAX_RULE_TEXT - len(head) - 20) + "\n",
        "gen_over_text.yaml": head + "description: " + "x" * MAX_RULE_TEXT + "\n",
        "gen_max_values.yaml": head + "tags: [" + ",".join(["a"] * (MAX_YAML_NODES - 10)) + "]\n",
        "gen_over_values.yaml": head + "tags: [" + ",".join(["a"] * MAX_YAML_NODES) + "]\n",
        "gen_deep_json_1M.json": '{"id": "d", "tags": ' + "[" * 500_000 + "]" * 500_000 + "}",
    }
    out = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text)
        out.append(path)
    return out


def run(path: Path, timeout: float) -> tuple[float, int, bool]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "riskctl.cli.main", "rules", "validate", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return timeout, -1, False
    return time.perf_counter() - start, proc.returncode, "Traceback" in proc.stdout + proc.stderr


def in_process(path: Path, repeat: int) -> float:
    """Median seconds of ``load_rules(path)`` in this process (the loader alone, no start-up)."""
    from riskctl.core.errors import RuleSetError
    from riskctl.core.rules import load_rules

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            load_rules(path)
        except RuleSetError:
            pass
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [ROOT / "rules", *sorted(CORPUS.iterdir()), *generated(Path(tmp))]
        rows = []
        for path in paths:
            times, code, trace = [], 0, False
            for _ in range(args.repeat):
                seconds, code, tb = run(path, args.timeout)
                times.append(seconds)
                trace = trace or tb
            name = "rules/ (8 valid rules, baseline)" if path.name == "rules" else path.name
            size = sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size
            inner = in_process(path, args.repeat)
            rows.append((name, size, statistics.median(times), max(times), inner, code, trace))
            print(
                f"{name:<40} {size:>9} B  median {statistics.median(times):.3f} s  max {max(times):.3f} s  "
                f"load_rules {inner * 1000:.1f} ms  exit {code}  traceback {'YES' if trace else 'no'}",
                flush=True,
            )
    lines = [
        "# `riskctl rules validate` on hostile rule files",
        "",
        f"`.venv/bin/python bench/hostile_rules.py --repeat {args.repeat}`: wall time of the whole command",
        "(a fresh Python process each run: start-up and imports are most of it), and the median of",
        "`load_rules(file)` in one process (the loader alone); exit 1 = refused. On a shared 2-core machine.",
        "",
        "| file | bytes | command median s | command max s | load_rules ms | exit | traceback |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {n} | {b} | {m:.3f} | {x:.3f} | {i * 1000:.1f} | {c} | {'YES' if t else 'no'} |"
        for n, b, m, x, i, c, t in rows
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
