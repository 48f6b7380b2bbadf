"""A deadline for one network exchange made of blocking socket calls (standard library only).

A socket's timeout bounds each operation, not the exchange: a peer (or a proxy) answering a byte at a time,
each within the timeout, keeps a request going for as long as it likes. :class:`Deadline` bounds the whole:
past its time, the sockets it watches are shut down (both ways), so whatever blocks on them returns at once
with an error or the end of the stream, and :attr:`Deadline.expired` says why. Used by the alerts' senders
(a delivery attempt) and by :class:`riskctl.client.DecisionClient` (a decision call within its budget).

Before there is a socket to shut down, a host name is resolved: ``getaddrinfo`` blocks in the C library for as
long as the resolver likes (an unreachable DNS server: 5 s per try and server, and a socket timeout does not
apply). :func:`create_connection` resolves in a thread of its own and waits for it within the deadline, so the
exchange ends in time even then. The async decision client awaits the same lookups (:func:`lookup`).
"""

from __future__ import annotations

import heapq
import http.client
import ipaddress
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any

__all__ = ["Deadline", "HTTPConnection", "HTTPSConnection", "create_connection", "current", "lookup"]

#: the watchdog's longest wait: it looks at its heap again at least this often
_MAX_WAIT_S = 3600.0


class Deadline:
    """The end of one exchange: past ``seconds``, every socket :meth:`watch`-ed is shut down (both ways), so
    whatever blocks on it returns at once with an error; :attr:`expired` then says why. Used as a context
    manager around the exchange, in the thread making it (:func:`current` finds it there). One watchdog
    thread per process serves every deadline (a heap), so a deadline costs no thread of its own."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        #: when it expires (time.monotonic()), set on entering it
        self.end = math.inf
        self.expired = False
        self._done = False
        self._watched: list[Callable[[], object]] = []
        self._lock = threading.Lock()

    def watch(self, sock: Callable[[], object] | socket.socket) -> None:
        """Shut ``sock`` down at the deadline (a callable: the socket it returns then, or None)."""
        get = sock if callable(sock) and not isinstance(sock, socket.socket) else (lambda: sock)
        with self._lock:
            self._watched.append(get)
            late = self.expired
        if late:
            _shut(get())

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            watched = list(self._watched)
        for get in watched:
            _shut(get())

    def __enter__(self) -> Deadline:
        _local.deadline = self
        self.end = time.monotonic() + self.seconds
        _WATCHDOG.add(self.end, self)
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        _local.deadline = None
        with self._lock:
            self._done = True
            self._watched.clear()


class _Watchdog:
    """The thread that expires deadlines in time order (started at the first one; a daemon)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, at: float, deadline: Deadline) -> None:
        if self._pid != os.getpid():  # a forked child (a pre-forking server): its own thread and heap
            self.__init__()  # type: ignore[misc]
        with self._cond:
            heapq.heappush(self._heap, (at, next(self._seq), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="riskctl-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:  # the earliest now: wake the thread to wait less
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2]._done:  # finished in time: forget it
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                at, _, deadline = self._heap[0]
                left = at - time.monotonic()
                if left > 0:
                    # bounded: Condition.wait refuses more than threading.TIMEOUT_MAX (292 years) with an
                    # OverflowError, which ended this thread, and with it every later deadline
                    self._cond.wait(min(left, _MAX_WAIT_S))
                    continue
                heapq.heappop(self._heap)
            deadline._expire()


_WATCHDOG = _Watchdog()
_local = threading.local()


def current() -> Deadline | None:
    """The :class:`Deadline` of the exchange this thread is making, if any."""
    return getattr(_local, "deadline", None)


def _shut(sock: object) -> None:
    # socket.socket's own shutdown, also for an SSL socket (whose shutdown would drop its TLS state under a
    # thread reading it); a socket already closed has no descriptor and refuses (EBADF): nothing to do
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


#: the resolutions under way, by (host, port): a call that comes while one runs waits for it rather than
#: starting another, so a resolver that hangs holds one thread per name, not one per attempt
_resolving: dict[tuple[str, Any], Future[list[Any]]] = {}
_resolving_lock = threading.Lock()


def _resolve_into(host: str, port: Any, future: Future[list[Any]]) -> None:
    try:
        future.set_result(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
    except BaseException as exc:  # handed to the waiters (a gaierror is an OSError, a connection error)
        future.set_exception(exc)
    finally:
        with _resolving_lock:
            _resolving.pop((host, port), None)


def lookup(host: str, port: Any) -> Future[list[Any]]:
    """``socket.getaddrinfo(host, port, 0, SOCK_STREAM)``, to come: the lookup of that name under way, else a
    new one in a thread of its own, a daemon (a lookup that hangs holds neither a pool's thread nor the exit
    of the program). It cannot be cancelled (its other waiters want its answer): a waiter that gives up just
    stops waiting, as :func:`asyncio.wrap_future`'s does when it is cancelled."""
    with _resolving_lock:
        future = _resolving.get((host, port))
        if future is None:
            future = _resolving[(host, port)] = Future()
            future.set_running_or_notify_cancel()  # running: cancel() is refused from now on
            thread = threading.Thread(
                target=_resolve_into, args=(host, port, future), name="riskctl-resolve", daemon=True
            )
            thread.start()
    return future


def resolve(host: str, port: Any, seconds: float) -> list[Any]:
    """``socket.getaddrinfo(host, port, 0, SOCK_STREAM)`` within ``seconds``: TimeoutError beyond (the lookup
    goes on in its thread, a daemon, and a later call for the same name waits for it: :func:`lookup`). An
    address written as digits is read at once, without a thread."""
    try:
        ipaddress.ip_address(host)
    except ValueError:  # a name, to be looked up
        pass
    else:
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    future = lookup(host, port)
    try:
        return future.result(timeout=max(seconds, 0.0))
    except TimeoutError:
        msg = f"{host[:200]!r} not resolved within {seconds * 1000:.0f} ms"
        raise TimeoutError(msg) from None


def create_connection(
    address: tuple[str, Any], timeout: Any = None, source_address: tuple[str, int] | None = None
) -> socket.socket:
    """``socket.create_connection`` that ends by ``timeout`` (seconds) and by the :func:`current` deadline,
    whichever comes first, name resolution included (:func:`resolve`), with the new socket watched by that
    deadline from its creation (a connect is cut as well). Without a timeout or a deadline, the standard one.
    For ``http.client.HTTPConnection._create_connection``."""
    deadline = current()
    limit = timeout if isinstance(timeout, int | float) else None
    end = min(
        deadline.end if deadline is not None else math.inf,
        time.monotonic() + limit if limit is not None else math.inf,
    )
    if end == math.inf:
        return socket.create_connection(address, timeout, source_address)
    host, port = address
    infos = resolve(host, port, end - time.monotonic())
    errors: list[OSError] = []
    for family, kind, proto, _, where in infos:
        left = end - time.monotonic()
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        if deadline is not None:
            deadline.watch(sock)
        try:
            sock.settimeout(left)
            if source_address:
                sock.bind(source_address)
            sock.connect(where)
            # each later read or write waits up to ``timeout`` again, as with socket.create_connection (the
            # deadline, when there is one, still shuts the socket at its end)
            sock.settimeout(limit)
            return sock
        except OSError as exc:
            errors.append(exc)
            sock.close()
    if errors:
        raise errors[0]
    msg = f"no time left to connect to {host[:200]!r}"
    raise TimeoutError(msg)


class HTTPConnection(http.client.HTTPConnection):
    """Its host name resolved and connected by :func:`create_connection`, within the connection's timeout and
    the current deadline: http.client's own getaddrinfo blocked for as long as the resolver took (a DNS server
    that does not answer: seconds, past any budget). For the decision client and the alerts' senders."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = create_connection


class HTTPSConnection(http.client.HTTPSConnection):
    """As :class:`HTTPConnection`, then TLS."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = create_connection
