"""``riskctl serve``: the HTTP API (aiohttp, chosen in bench/results/api-choice.md). See docs/api.md.

Routes: ``POST /v1/decisions`` (one event -> the job's decision), ``GET /healthz`` (the process answers),
``GET /readyz`` (Kafka reachable and a decision round-tripped within ``serve.ready_window_ms``; 503 while
shutting down), ``GET /openapi.json``, ``GET /v1/stats``.

Shutdown (SIGTERM or SIGINT): /readyz turns 503, the listening socket closes, requests in flight get up to
``serve.shutdown_timeout_ms`` to finish (their decision or their fallback), then the producer delivers what
it holds and the Kafka clients close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError

from riskctl.config import Settings
from riskctl.config.settings import MAX_EVENT_DEPTH
from riskctl.core.door import Limits
from riskctl.errors import ConfigError
from riskctl.serve.callers import CHALLENGE, Callers, is_loopback
from riskctl.serve.openapi import openapi_document
from riskctl.serve.request import (
    ApiError,
    DecisionRequest,
    check_content_type,
    decoder,
    parse_event_request,
    parse_timeout,
)
from riskctl.serve.service import Bus, DecisionService

LOG = logging.getLogger(__name__)
PROBE_TYPE = "riskctl_probe"
_READ_CHUNK = 65_536
_SHUTDOWN_MARGIN_S = 0.5
#: with a grace of 0, how long the handlers get to write the answers they have (their fallback) once shutdown
#: begins: aiohttp reads a shutdown timeout of 0 as none at all
_SHUTDOWN_FLUSH_S = 0.1

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _refusal(exc: ApiError) -> web.Response:
    response = _json(exc.body(), exc.status)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = CHALLENGE
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


class Api:
    """The aiohttp application of one instance, over a :class:`DecisionService` and its bus."""

    def __init__(self, settings: Settings, bus: Bus, *, instance: str) -> None:
        s = settings.serve
        self.settings = settings
        self.limits: Limits = settings.job.limits()
        if self.limits.max_depth > MAX_EVENT_DEPTH:  # settings built in code skip the loader's checks
            msg = f"job.max_depth must be at most {MAX_EVENT_DEPTH}, got {self.limits.max_depth}"
            raise ConfigError(msg)
        if not 1 <= s.min_timeout_ms <= s.timeout_ms <= s.max_timeout_ms:
            msg = (
                "serve.min_timeout_ms <= serve.timeout_ms <= serve.max_timeout_ms must hold, got "
                f"{s.min_timeout_ms}, {s.timeout_ms}, {s.max_timeout_ms}"
            )
            raise ConfigError(msg)
        if s.idempotency_max_entries < s.max_in_flight:
            msg = (
                f"serve.idempotency_max_entries ({s.idempotency_max_entries}) must be >= serve.max_in_flight "
                f"({s.max_in_flight}): each request waiting for a decision holds an entry of the memory"
            )
            raise ConfigError(msg)
        if s.producer_queue_max_bytes < self.limits.max_event_bytes:
            msg = (
                f"serve.producer_queue_max_bytes ({s.producer_queue_max_bytes}) must be >= "
                f"job.max_event_bytes ({self.limits.max_event_bytes}): the producer refuses an event larger "
                "than its whole queue"
            )
            raise ConfigError(msg)
        self.callers = Callers(
            s.api_keys,
            max_in_flight=s.max_in_flight,
            max_in_flight_per_client=s.max_in_flight_per_client,
            rate_per_client=s.rate_per_client,
        )
        if not self.callers.required and not s.anonymous and not is_loopback(s.host):
            msg = (
                f"serve.host is {s.host!r}, reachable from other machines, and serve.api_keys is empty: "
                "anyone there could send events for any user. Set serve.api_keys (RISKCTL_SERVE_API_KEYS, "
                "name:key pairs), or serve.anonymous=true when a gateway in front authenticates the callers"
            )
            raise ConfigError(msg)
        self.bus = bus
        self.instance = instance
        self.service = DecisionService(
            bus,
            self.limits,
            fallback=s.fallback,
            ttl_ms=s.idempotency_ttl_ms,
            max_entries=s.idempotency_max_entries,
            max_bytes=s.idempotency_max_bytes,
            max_in_flight=s.max_in_flight,
        )
        self.draining = False
        self.started = time.monotonic()
        self.gc_pauses = GcPauses()
        self.connections = Connections(s.max_connections)  # counted by the runner (make_runner)
        #: the deadlines of the bodies being read now: shut_down ends them (aiohttp reads nothing more)
        self._reading: set[asyncio.Timeout] = set()
        self._probe_n = 0
        self.app = web.Application(middlewares=[self._errors])
        self.app.router.add_post("/v1/decisions", self.decisions, expect_handler=self._expect)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/openapi.json", self.openapi)
        self.app.router.add_get("/v1/stats", self.stats)

    # -- handlers -------------------------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _refusal(exc)
        except web.HTTPException as exc:  # aiohttp's own: 404, 405, 413 ... as JSON with the reason
            if exc.status < 400:
                raise
            response = _json(
                {"error": {"status": exc.status, "field": None, "reason": exc.reason}}, exc.status
            )
            if "Allow" in exc.headers:  # a 405 names the methods the path takes (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
            return response

    async def decisions(self, request: web.Request) -> web.Response:
        if self.draining:
            raise ApiError(503, "shutting down")
        # who, and whether its share admits one more, before anything of the request is read
        caller = self.callers.identify(request.headers.get("Authorization"))
        self.callers.admit(caller)
        caller.in_flight += 1
        try:
            check_content_type(request.headers.get("Content-Type"))
            timeout_ms = parse_timeout(
                request.query.get("timeout_ms"),
                self.settings.serve.timeout_ms,
                self.settings.serve.min_timeout_ms,
                self.settings.serve.max_timeout_ms,
            )
            body = await self._body(request)
            parsed = parse_event_request(body, self.limits, int(time.time() * 1000), timeout_ms)
            return _json(await self.service.decide(parsed, caller.name))
        finally:
            caller.in_flight -= 1

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: what the headers alone refuse (401, 413, 415, 503) is answered before the
        client sends its body, the rest gets 100 Continue. aiohttp's own handler said 100 Continue to any
        request, one without a key or announcing 10 MB included, and the client sent its body for nothing."""
        try:
            if request.headers.get("Expect", "").strip().lower() != "100-continue":
                raise ApiError(417, "the only expectation understood is 100-continue", "Expect")
            if self.draining:
                raise ApiError(503, "shutting down")
            self.callers.identify(request.headers.get("Authorization"))
            check_content_type(request.headers.get("Content-Type"))
            decoder(request.headers.get("Content-Encoding", ""))
            self._check_length(request)
        except ApiError as exc:
            return _refusal(exc)
        if request.version == HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # as aiohttp's own: the response has not begun
        return None

    def _check_length(self, request: web.Request) -> None:
        limit = self.limits.max_event_bytes
        if request.content_length is not None and request.content_length > limit:
            msg = f"body of {request.content_length} bytes is larger than max_event_bytes ({limit})"
            raise ApiError(413, msg)

    async def _body(self, request: web.Request) -> bytes:
        """The body, decoded (``Content-Encoding`` gzip or deflate; others 415), refused with 413 as soon as
        it is known to be too large, on the wire or inflated (never inflated past the limit)."""
        self._check_length(request)
        limit = self.limits.max_event_bytes
        encoding = request.headers.get("Content-Encoding", "")
        inflate = decoder(encoding)
        chunks: list[bytes] = []
        wire = size = 0
        wait_ms = self.settings.serve.body_timeout_ms
        try:
            async with asyncio.timeout(wait_ms / 1000) as reading:
                self._reading.add(reading)
                try:
                    while True:
                        chunk = await request.content.read(_READ_CHUNK)
                        if not chunk:
                            break
                        wire += len(chunk)
                        if inflate is not None:
                            chunk = inflate.decompress(chunk, limit - size + 1)  # at most one byte over
                        size += len(chunk)
                        if size > limit or wire > limit:
                            msg = f"body larger than max_event_bytes ({limit})"
                            raise ApiError(413, msg)
                        chunks.append(chunk)
                finally:
                    self._reading.discard(reading)
            if inflate is not None and (not inflate.eof or inflate.unused_data):
                msg = "truncated, or followed by other data"
                raise zlib.error(msg)
        except zlib.error:
            msg = f"the body cannot be decoded as Content-Encoding {encoding[:40]!r}"
            raise ApiError(400, msg, "Content-Encoding") from None
        except web.RequestPayloadError as exc:  # aiohttp's: a chunked body that breaks off, ...
            msg = f"the body cannot be read: {' '.join(str(exc).split())[:200]}"
            raise ApiError(400, msg) from None
        except TimeoutError:
            if self.draining:  # ended by shut_down: the rest of the body is not read any more
                raise ApiError(503, "shutting down: the rest of the body was not read") from None
            msg = f"the body did not arrive within serve.body_timeout_ms ({wait_ms} ms)"
            raise ApiError(408, msg) from None
        if not size:
            raise ApiError(400, "empty body: send one event as a JSON object")
        return b"".join(chunks)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "instance": self.instance})

    def readiness(self) -> tuple[bool, list[str]]:
        reasons = []
        if self.draining:
            reasons.append("shutting down")
        if not getattr(self.bus, "kafka_ok", True):
            reasons.append(f"kafka: {getattr(self.bus, 'kafka_error', 'unreachable')}")
        window = self.settings.serve.ready_window_ms / 1000
        last = self.service.stats.last_roundtrip
        if not last or time.monotonic() - last > window:
            reasons.append(f"no decision round trip within {self.settings.serve.ready_window_ms} ms")
        return not reasons, reasons

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reasons = self.readiness()
        last = self.service.stats.last_roundtrip
        body = {
            "ready": ready,
            "reasons": reasons,
            "instance": self.instance,
            "last_roundtrip_ms_ago": round((time.monotonic() - last) * 1000) if last else None,
        }
        return _json(body, 200 if ready else 503)

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document(self.settings))

    async def stats(self, request: web.Request) -> web.Response:
        self.callers.identify(request.headers.get("Authorization"))
        st = self.service.stats
        return _json(
            {
                "instance": self.instance,
                "requests": st.requests,
                "decided": st.decided,
                "timeouts": st.timeouts,
                "replays": st.replays,
                "produce_failures": st.produce_failures,
                "late_decisions": st.late_decisions,
                "foreign_decisions": st.foreign_decisions,
                "in_flight": self.service.in_flight,
                "gc_pause_max_ms": round(self.gc_pauses.max_ms, 1),
                "gc_full_collections": self.gc_pauses.full,
                "remembered": len(self.service.entries),
                "remembered_bytes": self.service.bytes,
                "reply_key": self.bus.reply_key,
                "reply_partition": getattr(self.bus, "partition", None),
                "unauthorized": self.callers.unauthorized,
                "callers": self.callers.stats(),
                "connections": self.connections.to_dict(),
            }
        )

    # -- shutdown -------------------------------------------------------------------------------------------
    async def shut_down(self, runner: web.AppRunner) -> None:
        """Stop listening and let the requests in flight finish within ``serve.shutdown_timeout_ms``: those
        still waiting for their decision near its end get their fallback (``"degraded": "shutdown"``). aiohttp
        cancels a handler still running at the end, and its client got no answer at all (its connection
        closed): a request with a timeout_ms longer than the grace, or any request with a grace of 0. Those
        whose body is still arriving get 503 at once: aiohttp reads no more of it."""
        self.draining = True
        # aiohttp reads nothing more from any connection once its shutdown begins: a body still arriving
        # never ends. Its request is answered 503 now; it waited for serve.body_timeout_ms, which held the
        # exit as long, and then got a 408 that blamed its client, whose body had arrived meanwhile.
        now = asyncio.get_running_loop().time()
        for reading in list(self._reading):
            with contextlib.suppress(RuntimeError):  # expiring already
                reading.reschedule(now)
        grace = self.settings.serve.shutdown_timeout_ms / 1000
        # the margin lets the handlers write their fallback before aiohttp's own deadline
        give_up = asyncio.get_running_loop().call_later(
            grace - min(grace / 2, _SHUTDOWN_MARGIN_S), self.service.give_up, "shutdown"
        )
        try:
            await runner.cleanup()
        finally:
            give_up.cancel()

    # -- probes ---------------------------------------------------------------------------------------------
    def probe_request(self) -> DecisionRequest:
        """A synthetic event of this instance's own probe user (type ``riskctl_probe``): a round trip."""
        self._probe_n += 1
        event_id = f"riskctl-probe-{self.instance}-{uuid.uuid4().hex[:12]}"
        user_id = f"riskctl-probe-{self.instance}"
        ts = int(time.time() * 1000)
        doc = {"event_id": event_id, "user_id": user_id, "type": PROBE_TYPE, "ts": ts}
        return DecisionRequest(event_id, user_id, doc, uuid.uuid4().hex, 5_000, ts)

    async def probe_loop(self) -> None:
        interval = self.settings.serve.probe_interval_ms / 1000
        if interval <= 0:
            return
        while not self.draining:
            last = self.service.stats.last_roundtrip
            if not last or time.monotonic() - last >= interval:
                try:
                    await self.service.decide(self.probe_request())
                except ApiError as exc:
                    LOG.warning("serve %s: probe refused: %s", self.instance, exc.reason)
            await asyncio.sleep(interval)


@dataclass
class Connections:
    """The connections open now, the most at once (serve.max_connections, lowered to the open-file limit by
    :func:`make_runner`) and those refused for it since the start (/v1/stats)."""

    max: int
    open: int = 0
    refused: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"open": self.open, "max": self.max, "refused": self.refused}


class GcPauses:
    """The longest pause of Python's cyclic collector in this process, and its full collections (/v1/stats):
    every request of the instance waits while it runs."""

    def __init__(self) -> None:
        self.max_ms = 0.0
        self.full = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        self.max_ms = max(self.max_ms, (time.perf_counter() - self._start) * 1000)
        if info.get("generation") == 2:
            self.full += 1


class _MalformedRequests(logging.Filter):
    """aiohttp logs each request it cannot parse (a header line beyond 8,190 bytes, more than 128 headers, a
    request line that is not HTTP) with a traceback at ERROR: one WARNING line each instead, so that whoever
    sends them cannot fill the logs with tracebacks. Other errors (a handler that failed) keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = " ".join(str(exc.message).split())[:200]
            record.msg, record.args = (
                "refused a malformed request from %s: %s",
                (*(record.args or ()), reason),
            )
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


#: the logger of aiohttp's request handling (its parse errors on one line)
HTTP_LOG = logging.getLogger("riskctl.serve.http")
HTTP_LOG.addFilter(_MalformedRequests())


#: descriptors kept for the rest of the process (the Kafka clients' sockets, logs) below the open-file limit
FD_RESERVE = 256
#: seconds a connection refused for serve.max_connections stays open after its answer (for the client to read
#: it before the close)
_REFUSED_CLOSE_S = 0.5
#: the most refused connections that wait for that close at once; one more is reset at once, without an
#: answer. Each holds a descriptor: unbounded, connections opened faster than they closed (600 a second
#: with 768 held, ulimit -n 1024) took the whole FD_RESERVE, and the process could open no file or socket
_MAX_LINGERING = FD_RESERVE // 4
#: the answer to a connection beyond serve.max_connections, written as it opens (nothing of it is read)
_FULL_BODY = orjson.dumps(
    {"error": {"status": 503, "field": None, "reason": "too many connections open: try again"}}
)
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Retry-After: 1\r\nContent-Length: " + str(len(_FULL_BODY)).encode() + b"\r\n\r\n" + _FULL_BODY
)


def connection_bound(configured: int) -> int:
    """serve.max_connections, lowered to the process's open-file limit less :data:`FD_RESERVE`."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - FD_RESERVE))


class _Runner(web.AppRunner):
    """An AppRunner whose server takes at most ``max_connections`` connections at once: one more gets a 503
    written as it opens, and is closed half a second later (at most :data:`_MAX_LINGERING` such connections
    at once: one more is reset as it opens). aiohttp bounds none; its server tells each connection's opening
    and closing (``connection_made``, ``connection_lost``, called by every connection's handler), and they
    count them here: a few operations per connection, nothing per request."""

    def __init__(self, app: web.Application, *, connections: Connections, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.connections = connections

    async def setup(self) -> None:
        await super().setup()
        server = self.server
        assert server is not None
        made, lost = server.connection_made, server.connection_lost
        count = self.connections

        def connection_made(handler: Any, transport: Any) -> None:
            made(handler, transport)
            count.open += 1
            if count.open > count.max:
                # nothing of it is read (its handler gets no byte): the answer, the end of what the server
                # sends, and the close a moment later: closed at once with a request unread, the kernel
                # resets the connection and the client may lose the answer
                count.refused += 1
                transport.pause_reading()
                if count.open > count.max + _MAX_LINGERING:  # the refused ones open count too
                    transport.abort()
                    return
                transport.write(_FULL)
                if transport.can_write_eof():
                    transport.write_eof()
                asyncio.get_running_loop().call_later(_REFUSED_CLOSE_S, transport.close)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            count.open -= 1
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]


def make_runner(api: Api, settings: Settings) -> web.AppRunner:
    """The aiohttp runner of ``api``: its shutdown grace, its idle timeout (see serve.idle_timeout_ms) and
    its bound on connections (serve.max_connections, :func:`connection_bound`)."""
    s = settings.serve
    bound = connection_bound(s.max_connections)
    if bound < s.max_connections:
        LOG.warning(
            "serve: serve.max_connections is %d, the open-file limit (ulimit -n) allows %d: at most %d "
            "connections at once",
            s.max_connections,
            bound + FD_RESERVE,
            bound,
        )
    api.connections.max = bound
    return _Runner(
        api.app,
        connections=api.connections,
        # 0 would be no bound at all to aiohttp: a body trickling in held the exit for serve.body_timeout_ms,
        # an answer written to a client that reads nothing for ever
        shutdown_timeout=s.shutdown_timeout_ms / 1000 or _SHUTDOWN_FLUSH_S,
        keepalive_timeout=s.idle_timeout_ms / 1000,
        # the body is decoded by Api._body, bounded, and any other Content-Encoding is a 415 naming the
        # header: aiohttp's own decoding answered br or zstd (libraries absent) with a plain-text 400 that
        # named the missing package, after logging a traceback per request
        auto_decompress=False,
        # a client that goes away (its own deadline, a cancelled call, a request sent and the socket closed)
        # ends its handler at once: it held its caller's share and a place in serve.max_in_flight for up to
        # its timeout_ms, waiting to answer nobody, and one that left mid-body logged a traceback
        handler_cancellation=True,
        access_log=None,
        logger=HTTP_LOG,
    )


def default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run one instance until SIGTERM/SIGINT (or ``stop``), then shut down gracefully."""
    from riskctl.serve.kafka_bus import KAFKA_LOG_LIMIT, KafkaBus, instance_name

    s = settings.serve
    if not s.replies_topic:
        msg = "serve.replies_topic is empty: the job writes no replies, so no request would get its decision"
        raise ConfigError(msg)
    instance = instance_name(s.instance or default_instance())
    bus = KafkaBus(
        settings.kafka_bootstrap,
        settings.job.events_topic,
        s.replies_topic,
        instance,
        reply_partition=s.reply_partition,
        produce_timeout_ms=s.produce_timeout_ms,
        linger_ms=s.produce_linger_ms,
        queue_max_bytes=s.producer_queue_max_bytes,
        max_in_flight=s.max_in_flight,
    )
    loop = asyncio.get_running_loop()
    api = Api(settings, bus, instance=instance)
    runner = make_runner(api, settings)
    await loop.run_in_executor(None, bus.start, loop, api.service.on_decision)
    try:
        await runner.setup()
        site = web.TCPSite(runner, s.host, s.port, reuse_address=True)
        await site.start()
    except BaseException as exc:
        # the Kafka clients' threads would keep the process alive behind a traceback: close them first
        await runner.cleanup()
        await loop.run_in_executor(None, bus.close)
        if isinstance(exc, OSError):  # the port is taken, the host is not this machine's ...
            msg = f"serve cannot listen on {s.host}:{s.port}: {exc.strerror or exc}"
            raise ConfigError(msg) from None
        raise
    gc.callbacks.append(api.gc_pauses)
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests run it in one)
            pass
    port = runner.addresses[0][1] if runner.addresses else s.port
    LOG.warning("serve %s: listening on http://%s:%s", instance, s.host, port)
    probes = asyncio.create_task(api.probe_loop())
    # What is alive now (modules, the app, the Kafka clients) stays alive: out of the collector's way, a full
    # collection only walks what requests created since (85 ms of a full collection at start otherwise).
    gc.collect()
    gc.freeze()
    if on_ready is not None:
        on_ready(port)
    try:
        await stop.wait()
    finally:
        probes.cancel()
        await api.shut_down(runner)  # stop listening, let in-flight requests finish (shutdown_timeout)
        await loop.run_in_executor(None, bus.close)
        KAFKA_LOG_LIMIT.flush(final=True)  # the clients are closed: log the counts of lines held back
        gc.callbacks.remove(api.gc_pauses)
        LOG.warning("serve %s: stopped", instance)
