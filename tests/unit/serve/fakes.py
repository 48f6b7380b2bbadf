"""An in-memory bus for the API's unit tests: it "decides" each produced event after a delay (or never)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from riskctl.config import Settings
from riskctl.serve.app import Api, make_runner


def reject_big(event: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for the job: REJECT when amount >= 10,000, else PASS."""
    big = (event.get("amount") or 0) >= 10_000
    rules = [{"id": "big", "version": 3, "action": "REJECT", "evidence": {"features": {}}}] if big else []
    return {
        "kind": "decision",
        "event_id": event["event_id"],
        "user_id": event["user_id"],
        "type": event["type"],
        "ts": event["ts"],
        "action": "REJECT" if big else "PASS",
        "rules": rules,
        "shadow": [],
        "ruleset_version": "v-test",
        "late": False,
        "too_late": False,
        "duplicate": False,
        "ahead_ms": 0,
    }


class FakeBus:
    """``produce`` records the event; its decision comes back after ``delay`` s (None: never)."""

    reply_key = "fake:0"
    kafka_ok = True
    kafka_error = ""
    partition = 0

    def __init__(
        self, delay: float | None = 0.005, decide: Callable[[dict[str, Any]], dict[str, Any]] = reject_big
    ):
        self.delay = delay
        self.decide = decide
        self.produced: list[tuple[bytes, dict[str, Any]]] = []
        self.fail_with: str | None = None
        self.on_decision: Callable[[dict[str, Any]], Any] | None = None

    def produce(self, key: bytes, value: bytes, on_failure: Callable[[str], None]) -> None:
        event = orjson.loads(value)
        self.produced.append((key, event))
        loop = asyncio.get_running_loop()
        if self.fail_with is not None:
            loop.call_soon(on_failure, self.fail_with)
            return
        if self.delay is not None:
            assert self.on_decision is not None
            loop.call_later(self.delay, self.on_decision, self.decide(event))


def settings_for_tests(**serve: Any) -> Settings:
    s = Settings()
    s.serve.port = 0
    s.serve.probe_interval_ms = 0
    for k, v in serve.items():
        setattr(s.serve, k, v)
    return s


@contextmanager
def running_api(settings: Settings, bus: FakeBus) -> Iterator[tuple[str, Api, asyncio.AbstractEventLoop]]:
    """The API on 127.0.0.1:<free port> in a thread of its own; yields (base url, api, its loop)."""
    from aiohttp import web

    api = Api(settings, bus, instance="unit")  # type: ignore[arg-type]
    bus.on_decision = api.service.on_decision
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        runner = make_runner(api, settings)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["port"] = runner.addresses[0][1]
        box["stop"] = stop
        started.set()
        await stop.wait()
        await api.shut_down(runner)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"http://127.0.0.1:{box['port']}", api, loop
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        loop.close()


def cli_serve(**env: str | None) -> subprocess.CompletedProcess[str]:
    """``riskctl serve`` run as a command against no broker (127.0.0.1:9), on any free port, with the
    environment's ``RISKCTL_*`` changes of ``env`` (None removes one); its result once it exits."""
    full = {**os.environ, "RISKCTL_KAFKA_BOOTSTRAP": "127.0.0.1:9", "RISKCTL_SERVE_PORT": "0"}
    for name, value in env.items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    return subprocess.run(
        [sys.executable, "-m", "riskctl.cli.main", "serve"],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
    )
