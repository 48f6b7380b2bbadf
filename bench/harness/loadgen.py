"""An open-loop HTTP/1.1 load generator that costs the shared cores little (bench/api_bench.py).

On this 2-core machine the load generator shares the cores with the API, the job and Kafka, so whatever it
spends is taken from the system it measures. vegeta (Go) spent 170-230 µs of CPU per request here and a
Python aiohttp client more; this one writes pre-built requests on pre-opened keep-alive connections from
an asyncio protocol and parses only the status line, Content-Length and the JSON body (bench/results/api.md
has the measured cost of each in the same run).

Open loop: request i is due at t0 + i/rate whatever the answers. It goes out on an idle connection; when
none is idle it waits in a queue for the first one that frees (like a client's connection pool), and its
latency counts from when it was due, so a slow server cannot slow the offered load down (no coordinated
omission). A request not answered within ``timeout`` of when it was due is an error, as is a status other
than 200 or a connection lost with requests on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Result:
    """What came back: latencies (ms, from when each request was due) and the answers' bodies."""

    latencies_ms: list[float] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    send_seconds: float = 0.0
    total_seconds: float = 0.0


class _Connection(asyncio.Protocol):
    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.buf = bytearray()
        self.due: deque[float] = deque()  # when each request in flight on it was due (HTTP/1.1: in order)
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, due: float, request: bytes) -> None:
        assert self.transport is not None
        self.due.append(due)
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:  # every answer of riskctl serve has a length; anything else is an error
                self.gen.failed(self, "no content-length")
                return
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            if len(buf) < end + 4 + length:
                return
            status = int(head[9:12])
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            self.gen.answered(self, self.due.popleft(), status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gen.lost(self)


class _Generator:
    def __init__(self, timeout: float, keep_bodies: bool) -> None:
        self.timeout = timeout
        self.keep_bodies = keep_bodies
        self.idle: list[_Connection] = []
        self.waiting: deque[tuple[float, bytes]] = deque()
        self.result = Result()
        self.outstanding = 0
        self.drained = asyncio.Event()

    def submit(self, due: float, request: bytes) -> None:
        self.outstanding += 1
        self.drained.clear()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                conn.send(due, request)
                return
        self.waiting.append((due, request))

    def answered(self, conn: _Connection, due: float, status: int, body: bytes) -> None:
        ms = (time.perf_counter() - due) * 1000
        r = self.result
        r.statuses[status] = r.statuses.get(status, 0) + 1
        if status != 200 or ms > self.timeout * 1000:
            r.errors += 1
        else:
            r.latencies_ms.append(ms)
            if self.keep_bodies:
                r.bodies.append(orjson.loads(body))
        self._finished(1)
        if not conn.due:
            if self.waiting:
                conn.send(*self.waiting.popleft())
            else:
                self.idle.append(conn)

    def failed(self, conn: _Connection, _reason: str) -> None:
        if conn.transport is not None:
            conn.transport.close()

    def lost(self, conn: _Connection) -> None:
        self.result.errors += len(conn.due)
        self._finished(len(conn.due))
        conn.due.clear()

    def _finished(self, n: int) -> None:
        self.outstanding -= n
        if self.outstanding <= 0 and not self.waiting:
            self.drained.set()


async def run(
    host: str,
    port: int,
    requests: Sequence[bytes] | Callable[[int], bytes],
    total: int,
    rate: float,
    *,
    connections: int = 256,
    timeout: float = 5.0,
    keep_bodies: bool = True,
) -> Result:
    """Send ``total`` requests at ``rate`` per second; ``requests[i]`` (or ``requests(i)``) is the i-th
    request, whole (request line, headers and body). Returns when every request is answered, failed or timed
    out."""
    loop = asyncio.get_running_loop()
    gen = _Generator(timeout, keep_bodies)
    conns = [
        (await loop.create_connection(lambda: _Connection(gen), host, port))[1] for _ in range(connections)
    ]
    gen.idle = list(conns)
    build = requests if callable(requests) else requests.__getitem__
    start = time.perf_counter()
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and start + i / rate <= now:  # everything due by now, each with its own due time
            gen.submit(start + i / rate, build(i))
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
    gen.result.send_seconds = time.perf_counter() - start
    if total:
        try:
            await asyncio.wait_for(gen.drained.wait(), timeout + 1)
        except TimeoutError:
            gen.result.errors += gen.outstanding
    gen.result.total_seconds = time.perf_counter() - start
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    return gen.result


def post(host: str, port: int, path: str, body: bytes, content_type: str = "application/json") -> bytes:
    """One whole HTTP/1.1 POST request."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body
