"""How ``riskctl console`` serves the console: uvicorn, with bounds on connections and on slow clients.

uvicorn alone bounds none of them: no limit on open connections (each may carry a request body of up to
:data:`~riskctl.console.app.MAX_BODY_BYTES`), and no time limit on a request's headers: a connection that sent
nothing, or one header byte now and then, stayed open for ever (its keep-alive timeout only runs between two
requests and stops at the next byte). Here:

* :data:`MAX_CONNECTIONS` connections at once (uvicorn's ``limit_concurrency``): a request on a connection
  beyond it, or beyond as many requests running, is answered 503 at once;
* a connection that has not sent a whole request's headers within :data:`HEADER_TIMEOUT_S` of opening (or
  within twice that of its last answer) is closed without an answer (:class:`_Watchdog`);
* a body must arrive within :data:`~riskctl.console.app.BODY_TIMEOUT_S` of its first byte, else 408
  (:class:`~riskctl.console.app.BodyLimit`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

#: connections open at once, kept-alive ones included (uvicorn's ``limit_concurrency``; also the bound on
#: requests running at once). A request beyond it is answered 503 (``Service Unavailable``, text). A console
#: has a few analysts: a browser keeps up to 6 connections to it, closed after :data:`KEEP_ALIVE_S` idle. The
#: memory of request bodies is bounded by it: a body is read as it arrives (uvicorn reads 64 KiB ahead, then
#: waits for the application), counted against MAX_BODY_BYTES as it arrives, and only a logged-in user's body
#: is read past its headers (form fields in memory, a file spooled to disk past 1 MiB): at most 64 x 8 MiB
#: of logged-in users' bodies; a request of anyone else reads at most /login's 8 fields of 4 KiB
MAX_CONNECTIONS = 64
#: seconds a connection has to send a whole request's headers after it opens (a connection that sent nothing
#: or trickles a header is closed without an answer), or, after an answer, within twice this
HEADER_TIMEOUT_S = 10.0
#: seconds an idle kept-alive connection stays open (uvicorn's ``timeout_keep_alive``, its default)
KEEP_ALIVE_S = 5


class _Watchdog:
    """Mixed into uvicorn's HTTP protocol: every :data:`HEADER_TIMEOUT_S` it looks at the connection and
    closes it when no request began since its last look and none is being answered (it sent nothing, or
    not a whole request's headers). One timer per connection, nothing per request."""

    header_timeout_s = HEADER_TIMEOUT_S
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._seen: Any = None
        self._watch: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout_s, self._look)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _look(self) -> None:
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        if answering or (cycle is not None and cycle is not self._seen):
            self._seen = cycle
            self._watch = self.loop.call_later(self.header_timeout_s, self._look)
            return
        self._watch = None
        if not self.transport.is_closing():
            self.transport.close()


def _protocol(header_timeout_s: float) -> type:
    """uvicorn's HTTP protocol as its ``http="auto"`` picks it (httptools when installed, else h11), with the
    :class:`_Watchdog`."""
    base: type
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    return type(f"Watched{base.__name__}", (_Watchdog, base), {"header_timeout_s": header_timeout_s})


def server_config(
    app: Any, host: str, port: int, *, header_timeout_s: float = HEADER_TIMEOUT_S, **overrides: Any
) -> uvicorn.Config:
    """The uvicorn configuration of ``riskctl console`` (tests start the console with it too)."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "server_header": False,
        "limit_concurrency": MAX_CONNECTIONS,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "http": _protocol(header_timeout_s),
        **overrides,
    }
    return uvicorn.Config(app, **options)
