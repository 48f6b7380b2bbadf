"""bench/harness/loadgen.py, the API bench's open-loop load generator, against a small asyncio server on
loopback: every request answered and timed from when it was due, errors counted, the offered rate held
while the server is slow."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture(scope="module")
def loadgen() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        from harness import loadgen as module

        yield module
    finally:
        sys.path.remove(str(BENCH))


class Server(asyncio.Protocol):
    """Answers each request after ``delay`` s with its body echoed as {"got": ...}; 500 for path /fail; closes
    the connection without answering for /drop."""

    delay = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].decode()
            length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4 : end + 4 + length], self.buf[end + 4 + length :]
            path = head.split(" ")[1]
            asyncio.get_running_loop().call_later(self.delay, self.answer, path, body)

    def answer(self, path: str, body: bytes) -> None:
        if path == "/drop":
            self.t.close()
            return
        out = json.dumps({"got": json.loads(body)}).encode()
        status = "500 Oops" if path == "/fail" else "200 OK"
        self.t.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(out)}\r\n\r\n".encode() + out)


def run(
    loadgen: ModuleType, paths: list[str], rate: float, delay: float = 0.0, connections: int = 8
) -> object:
    async def go() -> object:
        Server.delay = delay
        server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        requests = [loadgen.post("127.0.0.1", port, p, json.dumps(i).encode()) for i, p in enumerate(paths)]
        try:
            total = len(requests)
            return await loadgen.run("127.0.0.1", port, requests, total, rate, connections=connections)
        finally:
            server.close()

    return asyncio.run(go())


def test_every_request_answered_in_order_of_its_body(loadgen: ModuleType) -> None:
    res = run(loadgen, ["/ok"] * 300, rate=3000)
    assert res.errors == 0 and len(res.latencies_ms) == 300
    assert sorted(b["got"] for b in res.bodies) == list(range(300))
    assert res.send_seconds == pytest.approx(0.1, abs=0.08)


def test_statuses_and_lost_connections_are_errors(loadgen: ModuleType) -> None:
    res = run(loadgen, ["/ok", "/fail", "/ok", "/drop", "/ok"], rate=200, connections=2)
    assert res.statuses.get(500) == 1
    assert res.errors == 2 and len(res.latencies_ms) == 3


def test_a_slow_server_does_not_slow_the_offered_load(loadgen: ModuleType) -> None:
    """Open loop: with 2 connections and 50 ms per answer the server can take 40 requests/s; 200/s are still
    sent on time, wait for a free connection, and their latency counts that wait."""
    t0 = time.perf_counter()
    res = run(loadgen, ["/ok"] * 40, rate=200, delay=0.05, connections=2)
    assert res.errors == 0 and res.send_seconds < 0.35
    assert max(res.latencies_ms) > 500  # the last ones waited ~20 answers of 50 ms for a connection
    assert time.perf_counter() - t0 > 0.9
