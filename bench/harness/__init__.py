"""The side-by-side benchmark's harness, behind ``bench/bench.py`` (the command) and its contenders.

One module per concern, in the order a run uses them:

* :mod:`harness.workload`: what is measured (the plan of a run; the simulator's events, generated once and
  cached; the random live events of the chaos and end-to-end benches).
* :mod:`harness.kafka_io`: the bench's Kafka clients: preloading, sending at a fixed rate, reading decisions,
  fresh topics per contender.
* :mod:`harness.contenders`: the processes that turn events into decisions (the riskctl job in its modes, the
  plain loop, MATCH_RECOGNIZE), started and stopped by the bench; and the command line they share
  (the scripts in ``bench/contenders/``).
* :mod:`harness.sampling`: CPU and memory of every process, once a second.
* :mod:`harness.measures`: throughput, latency and the pure engine's speed; :mod:`harness.propagation`: rule
  propagation from a MySQL commit to a decision.
* :mod:`harness.run`: one contender from its fresh topics to its stop, every measurement in order.
* :mod:`harness.report`: the verdicts against the targets, the markdown tables and the plots.

Import it as ``harness`` with ``bench/`` on ``sys.path`` (a script in ``bench/`` has it there already), not
as ``bench.harness``: ``bench/bench.py`` would shadow a ``bench`` package.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / ".work"  # the cached workload, contenders' logs and checkpoints (ignored by git)


def log(msg: str) -> None:
    """Progress to stderr with the time of day; stdout is left for the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process a bench starts: this one's, ``extra``, and this tree first on
    ``PYTHONPATH``. Without it a script run from a second checkout (a git worktree sharing the virtualenv)
    imports ``riskctl`` through the virtualenv's editable install, from the main checkout, and a before/after
    comparison runs the same code twice; the job hands its ``PYTHONPATH`` on to the TaskManager's embedded
    interpreter."""
    env = {**os.environ, **(extra or {})}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])
    return env


def tree_child(spec: str) -> tuple[str, list[str], dict[str, str]]:
    """How the before/after tools (``bench/engine_ab.py``, ``bench/decide_budget.py --instructions``) start a
    Python child of a source tree: ``spec`` is ``TREE`` or ``TREE+native=BUILD``. Gives the tree's resolved
    path, the interpreter and its arguments, and the environment: ``PYTHONHASHSEED=0`` (the same objects in
    the same order, so a count repeats); the compiled core ``BUILD`` only when named (an inherited
    ``RISKCTL_NATIVE_CORE`` is dropped: a build of another tree would be refused as stale), and then a refused
    build (``NativeCoreWarning``) fails the run instead of falling back to the pure-Python core."""
    tree, _, build = spec.partition("+native=")
    env = {k: v for k, v in os.environ.items() if k != "RISKCTL_NATIVE_CORE"}
    env["PYTHONHASHSEED"] = "0"
    args = [sys.executable]
    if build:
        env["RISKCTL_NATIVE_CORE"] = str(Path(build).resolve())
        args += ["-W", "error::RuntimeWarning"]
    return str(Path(tree).resolve()), args, env


def free_port() -> int:
    """A TCP port free on this machine now (the OS picks it; it is free again once the socket closes): a
    MiniCluster's REST port or an API instance's, so that two never clash."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
