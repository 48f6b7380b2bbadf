"""How ``riskctl console`` serves the console: uvicorn, with bounds on connections and on slow clients.

uvicorn alone bounds none of them: no limit on open connections (each may carry a request body of up to
:data:`~riskctl.console.app.MAX_BODY_BYTES`), and no time limit on a request's headers: a connection that sent
nothing, or one header byte now and then, stayed open for ever (its keep-alive timeout only runs between two
requests and stops at the next byte). Here:

* :data:`MAX_CONNECTIONS` connections at once (uvicorn's ``limit_concurrency``): a request on a connection
  beyond it, or beyond as many requests running, is answered 503 at once;
* :data:`MAX_CONNECTIONS_PER_CLIENT` of them from one remote address (:class:`_ClientCap`): a request on a
  connection beyond it is answered the same 503, and the connection does not count toward the total, so one
  browser or script cannot shut the other analysts out;
* a refusal is logged at most once every :data:`LOG_EVERY_S` per reason, with the count of those not logged
  (:func:`quiet_logs`, a :class:`~riskctl.lograte.OncePer`): a client flooding the console with refused
  requests does not flood its log too; the same for the console's own warnings (``riskctl.console``: a
  request while MySQL is away);
* a connection that has not sent a whole request's headers within :data:`HEADER_TIMEOUT_S` of opening (or
  within twice that of its last answer) is closed without an answer (:class:`_Watchdog`);
* a body must arrive within :data:`~riskctl.console.app.BODY_TIMEOUT_S` of its first byte, else 408
  (:class:`~riskctl.console.app.BodyLimit`);
* at shutdown (:class:`Server`), the connections beyond a client's cap end as the others do: closed when
  idle, else once their answer is sent, and waited for.

The client's address the console sees (its login limit, the audit log's "from") is the socket's peer's,
unless the peer is one of ``console.trusted_proxies`` (:func:`server_config`). The cap per client always
counts socket peers: a proxy's clients share its address there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from uvicorn.protocols.http.flow_control import service_unavailable

from riskctl.lograte import OncePer

#: connections open at once, kept-alive ones included (uvicorn's ``limit_concurrency``; also the bound on
#: requests running at once). A request beyond it is answered 503 (``Service Unavailable``, text). A console
#: has a few analysts: a browser keeps up to 6 connections to it, closed after :data:`KEEP_ALIVE_S` idle. The
#: memory of request bodies is bounded by it: a body is read as it arrives (uvicorn reads 64 KiB ahead, then
#: waits for the application), counted against MAX_BODY_BYTES as it arrives, and only a logged-in user's body
#: is read past its headers (form fields in memory, a file spooled to disk past 1 MiB): at most 64 x 8 MiB
#: of logged-in users' bodies; a request of anyone else reads at most /login's 8 fields of 4 KiB
MAX_CONNECTIONS = 64
#: connections of one remote address that count (toward MAX_CONNECTIONS too); one more is answered 503
#: like a connection beyond MAX_CONNECTIONS. A browser keeps up to 6 connections to a site, so 16 leaves
#: room for a few tabs and a script; the other 48 stay for everyone else. Behind a proxy every client has
#: the proxy's address: the console then serves 16 connections in all (limit them per client at the proxy)
MAX_CONNECTIONS_PER_CLIENT = 16
#: seconds between two log lines of the same refusal (connections or requests beyond a limit, requests
#: that are not HTTP); the next line says how many were not logged meanwhile
LOG_EVERY_S = 10.0
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


class _ClientCap:
    """Mixed into uvicorn's HTTP protocol: at most :attr:`max_per_client` connections of one remote address
    count. uvicorn's ``limit_concurrency`` counts every open connection: one client holding 64 (idle ones,
    or a browser's tabs and a script) got everyone else's requests answered 503. A connection beyond the cap
    is taken out of uvicorn's count at once, and its requests go to :func:`_refuse`: the 503 uvicorn answers
    beyond ``limit_concurrency`` (``Connection: close``, so it ends there; one that sends nothing is closed
    by the :class:`_Watchdog`). Counted when the connection opens: O(1) each, whatever is open."""

    max_per_client = MAX_CONNECTIONS_PER_CLIENT
    #: open connections that count, per remote address (one dict per server: see :func:`_protocol`)
    per_client: dict[str, int]
    #: the open connections beyond the cap (one set per server): :class:`Server` ends them at shutdown
    over_cap: set[Any]
    connections: set[Any]
    client: tuple[str, int] | None
    app: Any
    logger: logging.Logger

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._counted: str | None = None
        if self.client is None:  # not a socket with a peer address (a Unix socket): nothing to tell apart
            return
        host = self.client[0]
        n = self.per_client.get(host, 0)
        if n >= self.max_per_client:
            self.connections.discard(self)
            self.over_cap.add(self)
            self.app = self._refuse
            return
        self.per_client[host] = n + 1
        self._counted = host

    def _release(self) -> None:
        host, self._counted = self._counted, None
        if host is not None:
            left = self.per_client[host] - 1
            if left:
                self.per_client[host] = left
            else:
                del self.per_client[host]

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self.over_cap.discard(self)
        super().connection_lost(exc)  # type: ignore[misc]

    def handle_websocket_upgrade(self, *args: Any) -> None:
        # the connection goes to another protocol, whose end this one never sees
        self._release()
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        self.logger.warning("Exceeded the connections of one client (%d).", self.max_per_client)
        await service_unavailable(scope, receive, send)


class Server(uvicorn.Server):
    """uvicorn's server, whose shutdown also ends the connections beyond a client's cap (:class:`_ClientCap`).

    uvicorn's shutdown asks the connections of its set to end (closed when idle, else after the answer
    being sent) and waits until that set is empty (``timeout_graceful_shutdown``, if set, bounds the wait,
    then the answers still running are cancelled). A connection beyond the cap is taken out of that set, so
    that it does not count toward MAX_CONNECTIONS: it was never asked to end nor waited for. One idle then
    stayed open past the shutdown (its client saw no close), and one whose request came in as the wait
    ended had its 503 cancelled mid-write when the loop closed ("Task was destroyed but it is pending").
    At shutdown they go back into the set: ended and waited for like every other."""

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        over_cap: set[Any] = getattr(self.config.http_protocol_class, "over_cap", set())
        self.server_state.connections.update(over_cap)
        over_cap.clear()
        await super().shutdown(sockets)


#: the loggers whose warnings :func:`quiet_logs` bounds: uvicorn's refusals, the console's (MySQL away)
QUIET_LOGGERS = ("uvicorn.error", "riskctl.console")


def quiet_logs(
    every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic, *, background: bool = True
) -> OncePer:
    """Put a :class:`~riskctl.lograte.OncePer` on each of :data:`QUIET_LOGGERS` (in place of one put before);
    returns it (one filter, one count per reason, for them all). A reason is the line's format string
    (:func:`~riskctl.lograte.by_reason`); warnings and below are limited, errors (an exception in the
    application) all pass."""
    once = OncePer(every_s, clock, background=background)
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, OncePer)]:
            logger.removeFilter(old)
        logger.addFilter(once)
    return once


def flush_logs() -> None:
    """Log the counts :func:`quiet_logs`' filter still holds (at the server's shutdown)."""
    filters = {f for name in QUIET_LOGGERS for f in logging.getLogger(name).filters if isinstance(f, OncePer)}
    for once in filters:
        once.flush(final=True)


def _protocol(header_timeout_s: float, max_per_client: int = MAX_CONNECTIONS_PER_CLIENT) -> type:
    """uvicorn's HTTP protocol as its ``http="auto"`` picks it (httptools when installed, else h11), with the
    :class:`_ClientCap` (its count of connections per client, one per call: per server) and the
    :class:`_Watchdog`."""
    base: type
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    namespace = {
        "header_timeout_s": header_timeout_s,
        "max_per_client": max_per_client,
        "per_client": {},
        "over_cap": set(),
    }
    return type(f"Watched{base.__name__}", (_ClientCap, _Watchdog, base), namespace)


def server_config(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    max_per_client: int = MAX_CONNECTIONS_PER_CLIENT,
    log_every_s: float = LOG_EVERY_S,
    trusted_proxies: Sequence[str] = (),
    **overrides: Any,
) -> uvicorn.Config:
    """The uvicorn configuration of ``riskctl console`` (tests start the console with it too), to serve with
    :class:`Server`; puts the :class:`~riskctl.lograte.OncePer` on uvicorn's error logger and the console's
    (:func:`quiet_logs`).

    ``trusted_proxies`` (``console.trusted_proxies``, checked addresses and networks): the peers whose
    X-Forwarded-For and X-Forwarded-Proto are believed, the client being the right-most address of
    X-Forwarded-For that is not one of them (uvicorn's ProxyHeadersMiddleware). uvicorn believed them by
    default from 127.0.0.1, or from whatever its FORWARDED_ALLOW_IPS variable said: any local process
    chose the address the login limit and the audit log saw. Empty: believed from no one, the address is
    the socket's peer's; the list is always given, so that variable no longer widens it."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "server_header": False,
        "limit_concurrency": MAX_CONNECTIONS,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "http": _protocol(header_timeout_s, max_per_client),
        "proxy_headers": bool(trusted_proxies),
        "forwarded_allow_ips": list(trusted_proxies),
        **overrides,
    }
    # uvicorn.Config configures logging (dictConfig), which keeps the filters a logger has: put it after
    config = uvicorn.Config(app, **options)
    quiet_logs(log_every_s)
    return config
