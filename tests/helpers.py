"""Helpers shared by several test areas: run the real ``riskctl`` command, bound a call in time, a free port.

Fixtures live in the conftest.py of the area that uses them; here are the plain functions and paths that the
tests of more than one area (core, flink, cli, stack, the docs, the integration tests) call directly.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from riskctl.config import PROJECT_ROOT

HOSTILE_RULES = Path(__file__).parent / "unit" / "core" / "hostile_rules"
"""The hostile rule corpus: one file per attack, refused by every rule input path (core, job, CLI)."""

TIMEOUT_S = 10.0


def run_riskctl(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120, cwd: Path = PROJECT_ROOT
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m riskctl.cli.main *args`` in a child process, as a user runs the command.

    ``env`` is the child's whole environment (None: this process's), so a test can also remove a variable.
    The working directory is the project root by default: ``-m`` puts it first on the child's sys.path, so
    the child imports this checkout's riskctl. The exit code is the test's to check (``check=False``).
    """
    return subprocess.run(
        [sys.executable, "-m", "riskctl.cli.main", *args],
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


#: free_port's ports lie below the kernel's ephemeral range, where no outgoing connection takes a local port
#: (a port the OS handed out with bind(0) was taken by another socket before the job's JVM bound it, seconds
#: later: CI of 2026-12-06); each one is handed out once per process, so two picks of a test never collide
_FREE_LOW = 20_000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port() -> int:
    """A port nothing listens on right now, below the ephemeral range and not handed out before by this
    process: free for a server that binds it seconds later (unless another server takes it meanwhile)."""
    high = _ephemeral_low()
    for _ in range(1000):
        port = random.randrange(_FREE_LOW, high) if high > _FREE_LOW + 100 else 0
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_FREE_LOW}-{high - 1} after 1000 tries")


def within(fn: Callable[[], Any], seconds: float = TIMEOUT_S) -> Any:
    """Run ``fn`` on a daemon thread; fail the test if it has not finished after ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"did not finish within {seconds} s (a hang or an unbounded expansion)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def resolve_command(args: list[str]) -> tuple[Any, Any, list[str]]:
    """``riskctl *args`` resolved to (its click command, that command's context, the arguments left for its
    options), each context with its command's own settings (-h among the help options), as click's
    make_context does: a context without them made click cache a help option without -h on the command, for
    every later test. Raises click.UsageError for a command that does not exist."""
    import click

    from riskctl.cli.main import cli

    cmd: click.Command = cli
    ctx = click.Context(cli, info_name="riskctl", **cli.context_settings)
    rest = list(args)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            msg = f"no command {rest[0]!r}"
            raise click.UsageError(msg)
        cmd, rest = sub, rest[1:]
        ctx = click.Context(cmd, info_name=cmd.name, parent=ctx, **cmd.context_settings)
    return cmd, ctx, rest


def as_a_terminal_would() -> None:
    """Popen's ``preexec_fn`` for a child that a test stops with Ctrl-C (SIGINT): SIGINT back to its default.
    A shell's background job ignores SIGINT, and CI runs the suite as one: a Python started with SIGINT
    ignored never raises KeyboardInterrupt (the rules CLI's Ctrl-C tests passed at a terminal, and in CI the
    command ran to its end). A terminal's foreground job has the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def serve_in_thread(config: Any, timeout_s: float = TIMEOUT_S) -> Callable[[], None]:
    """Run the console's uvicorn server (:class:`riskctl.console.server.Server`) of ``config`` in a thread and
    return once it listens (a server that does not start fails the test; its log is above); returns the
    function that stops it and waits for its thread."""
    import time

    from riskctl.console.server import Server

    server = Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        assert thread.is_alive(), "the server did not start (see its log above)"
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout_s)
        assert not thread.is_alive(), "the server did not stop"

    return stop


class PatchedEngine:
    """An engine with some of its methods replaced (``PatchedEngine(engine, process=failing)``), for a test's
    fault injection: every other attribute is the engine's own, read and written through.

    The compiled core's ``Engine`` is a native class: its methods cannot be replaced on an instance
    (``monkeypatch.setattr(engine, "process", ...)`` raises there), so a test puts this in front of the
    engine instead (``monkeypatch.setattr(fn, "engine", PatchedEngine(fn.engine, process=failing))``).
    """

    def __init__(self, engine: Any, **methods: Callable[..., Any]) -> None:
        object.__setattr__(self, "_engine", engine)
        object.__setattr__(self, "_methods", methods)

    def __getattr__(self, name: str) -> Any:
        methods: dict[str, Callable[..., Any]] = object.__getattribute__(self, "_methods")
        if name in methods:
            return methods[name]
        return getattr(object.__getattribute__(self, "_engine"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_engine"), name, value)
