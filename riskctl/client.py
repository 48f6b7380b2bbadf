"""``riskctl.client``: call ``riskctl serve`` from a business service, synchronously or with asyncio.

::

    from riskctl.client import DecisionClient

    with DecisionClient("http://127.0.0.1:8088") as client:
        event = {"event_id": "o-1", "user_id": "u-1", "type": "transfer", "ts": ts, "amount": 900}
        result = client.decide(event)
        if result.action == "REJECT": ...

    async with AsyncDecisionClient("http://127.0.0.1:8088") as client:
        result = await client.decide(event, timeout_ms=80)

Retries: a connection error (refused, reset, the HTTP read timed out), a 503 (or another 5xx, or a 200 whose
body is not a decision, such as a proxy's page, JSON nested too deep to read or a document whose action is
none of PASS, REVIEW, REJECT) is retried up to ``retries`` times with the *same* event (same ``event_id``), so
the API's idempotency makes the retry safe: the event is produced once and the retry gets the same decision. A
4xx is never retried: it raises :class:`RequestRefused` with the status, the field and the reason. The HTTP
wait for an answer is the decision timeout plus ``network_margin_ms``: the API answers with its fallback at
the timeout.

Redirects: a 3xx is neither followed nor retried: :class:`Unavailable` at once, naming where it pointed. The
event is sent to ``base_url`` and nowhere else, and a decision is taken from the API alone (a redirect to
another host made the async client post the event there and return that host's answer).

Budgets: ``deadline_ms`` (per client or per call) bounds the whole call, every attempt and backoff included:
no attempt starts or waits beyond it, and :class:`Unavailable` is raised then, so the caller can apply its own
fallback within its budget. Each attempt's wait bounds the whole exchange, not each socket operation: a
server or proxy that answers a byte at a time is cut off (the synchronous client shuts its socket down, the
async one uses aiohttp's total timeout), and so is the resolution of the host name (a DNS server that does not
answer): the attempt fails at its time like one to a slow server. Both clients look a name up in a thread of
their own, a daemon, one per name however many calls wait for it (:func:`riskctl.deadline.lookup`): the async
client's lookups ran in the loop's default executor, and ``asyncio.run`` waited for a hung one when it ended,
the program held for as long as the resolver (the call itself had returned in time). An answer larger than
``max_answer_bytes`` (4 MiB) is not read whole: the call fails.

API keys: ``api_key`` (default: the environment variable ``RISKCTL_API_KEY``) is sent as
``Authorization: Bearer <key>`` when the API asks for keys (``serve.api_keys``). A key that is not printable
ASCII (a character beyond it, a line break) is refused with ValueError when the client is built. A missing or
unknown key is a 401, raised as :class:`RequestRefused`; a caller over its share
(``serve.max_in_flight_per_client``, ``serve.rate_per_client``) gets 429, retried like a 503 within the
deadline.

``Retry-After``: a 429 or 503 that carries one (in seconds) is retried no sooner than it says, at most
:data:`MAX_RETRY_AFTER_S` later; when the deadline leaves no time for that wait the call ends at once with
:class:`Unavailable` instead of retrying early into the same refusal.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import math
import os
import select
import socket
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from riskctl.deadline import Deadline, HTTPConnection, HTTPSConnection, lookup

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver

#: where the clients read their API key when none is given (``api_key=``)
API_KEY_ENV = "RISKCTL_API_KEY"
#: the longest any attempt waits for its answer
_MAX_WAIT_S = 86_400.0
#: the actions of a decision (riskctl.core.ruleset.ACTIONS): a 200 with any other is not a decision
ACTIONS = ("PASS", "REVIEW", "REJECT")
#: the longest a ``Retry-After`` (429, 503) makes a call wait before its next attempt
MAX_RETRY_AFTER_S = 30.0

__all__ = ["AsyncDecisionClient", "DecisionClient", "DecisionResult", "RequestRefused", "Unavailable"]


class RequestRefused(ValueError):
    """The API refused the request (4xx): ``status``, ``field`` (or None) and ``reason``."""

    def __init__(self, status: int, reason: str, field: str | None = None) -> None:
        super().__init__(f"{status}: {field + ': ' if field else ''}{reason}")
        self.status = status
        self.reason = reason
        self.field = field


class Unavailable(ConnectionError):
    """No answer after every retry (connection errors, 503, 5xx)."""


@dataclass(frozen=True)
class DecisionResult:
    """The API's answer: the job's decision, or the fallback when ``degraded`` is set."""

    event_id: str
    action: str
    rules: list[dict[str, Any]]
    shadow: list[dict[str, Any]]
    ruleset_version: str | None
    elapsed_ms: float
    degraded: str | None
    replay: bool
    source: str
    raw: dict[str, Any] = field(repr=False)
    #: the job had decided the same event before (a retry through another instance): its action, no rules
    duplicate: bool = False

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> DecisionResult:
        """The result of the API's decision document; ValueError (or KeyError, TypeError) for a document of
        another shape, which is no decision: an action outside PASS, REVIEW, REJECT (``null`` became the
        action ``'None'``, which a caller testing ``== "REJECT"`` let pass), rules that are not a list of
        objects (a string became its characters, and ``fired`` raised AttributeError), an ``elapsed_ms``
        beyond a float (an integer of 400 digits raised OverflowError out of ``decide``)."""
        if doc["action"] not in ACTIONS:
            msg = f"action {doc['action']!r} is none of {', '.join(ACTIONS)}"
            raise ValueError(msg)
        for name in ("rules", "shadow"):
            fired = doc.get(name)
            if fired is not None and not (
                isinstance(fired, list) and all(isinstance(r, dict) for r in fired)
            ):
                msg = f"{name} is not a list of objects"
                raise ValueError(msg)
        for name in ("ruleset_version", "degraded"):
            if doc.get(name) is not None and not isinstance(doc[name], str):
                msg = f"{name} is not a string"
                raise ValueError(msg)
        try:
            elapsed_ms = float(doc.get("elapsed_ms") or 0.0)
        except OverflowError:
            msg = "elapsed_ms is beyond a float"
            raise ValueError(msg) from None
        return cls(
            event_id=str(doc["event_id"]),
            action=str(doc["action"]),
            rules=list(doc.get("rules") or []),
            shadow=list(doc.get("shadow") or []),
            ruleset_version=doc.get("ruleset_version"),
            elapsed_ms=elapsed_ms,
            degraded=doc.get("degraded"),
            replay=bool(doc.get("replay")),
            source=str(doc.get("source") or "job"),
            raw=dict(doc),
            duplicate=doc.get("duplicate") is True,
        )

    @property
    def fired(self) -> list[str]:
        """Ids of the rules that fired (not the shadow ones)."""
        return [str(r.get("id")) for r in self.rules]


def _path(timeout_ms: int | None) -> str:
    return "/v1/decisions" + (f"?timeout_ms={timeout_ms}" if timeout_ms is not None else "")


def _timeout(value: Any) -> int | None:
    """``timeout_ms`` as a whole number of milliseconds (None: the API's default); anything else is refused
    here, with its name (``int(nan)`` said 'cannot convert float NaN to integer')."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"timeout_ms must be a number of milliseconds, got {value!r}"
        raise ValueError(msg)
    return int(value)


def _number(name: str, value: Any, *, low: float | None, integer: bool = False) -> Any:
    """A parameter of the clients checked where it is given, with its name: a string (a setting read from the
    environment), NaN or a value out of range raised TypeError or ValueError('Timeout value out of range') at
    the first call, outside the two exceptions the client documents, and deadline_ms=NaN made every call
    Unavailable without a request sent (found in review)."""
    kind = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or not math.isfinite(value)
        or (low is not None and value < low)
    ):
        what = ("an integer" if integer else "a number") + (f" >= {low:g}" if low is not None else "")
        msg = f"{name} must be {what}, got {value!r}"
        raise ValueError(msg)
    return value


def _deadline(value: Any) -> float | None:
    """``deadline_ms`` (None: unbounded) checked like the other parameters."""
    return None if value is None else _number("deadline_ms", value, low=0)


def _json(body: bytes) -> Any:
    """``body`` read as JSON; ValueError for anything that is not, nesting too deep for the standard library
    included: its RecursionError left ``decide`` as itself, neither :class:`Unavailable` nor
    :class:`RequestRefused`, for an answer of ``[[[...]]]`` (a proxy's, a hostile server's) or for an event
    given as such bytes (found in review)."""
    try:
        return json.loads(body)
    except RecursionError:
        msg = "JSON nested too deep to read"
        raise ValueError(msg) from None


def _event_id(event: Mapping[str, Any] | bytes, body: bytes) -> str | None:
    """The event_id the answer must carry (as the API reads it: an integer as its digits); None when the
    request has none the API would accept (the API refuses it, with the field)."""
    if isinstance(event, bytes):
        try:
            event = _json(body)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
    eid = event.get("event_id")
    if isinstance(eid, bool) or not isinstance(eid, str | int):
        return None
    return str(eid)


def _result(
    status: int, body: bytes, expected: str | None, location: str | None = None
) -> DecisionResult | None:
    """The result of a 200, an exception for a 4xx or a redirect; None for what deserves a retry (503, 5xx,
    and a 200 whose body is not the decision of this event: a proxy's page, an answer cut short, a cache's or
    a misrouted answer for another event)."""
    if 300 <= status < 400:
        # not followed: the event would go to another address, its decision taken from whoever answers there
        # (the async client followed a 307 to another host and returned that host's answer as the API's);
        # not retried: the same address redirects again
        where = f" to {location[:200]!r}" if location else ""
        msg = (
            f"HTTP {status}: a redirect{where}, not followed: base_url must be the decision API's own address"
        )
        raise Unavailable(msg)
    if status == 200:
        try:
            result = DecisionResult.of(_json(body))
        except (ValueError, KeyError, TypeError):  # not JSON, not an object, no event_id or action ...
            return None
        return result if expected is None or result.event_id == expected else None
    if 400 <= status < 500 and status != 429:
        try:
            err = _json(body)["error"]
            reason, fld = str(err["reason"]), err.get("field")
        except (ValueError, KeyError, TypeError):
            reason, fld = body[:200].decode("utf-8", "replace"), None
        raise RequestRefused(status, reason, fld if isinstance(fld, str) else None)
    return None


def _retry_after(status: int, value: str | None) -> float:
    """The seconds a 429 or 503 asks to wait before the next attempt (its ``Retry-After`` in seconds, at most
    :data:`MAX_RETRY_AFTER_S`); 0 for other answers and for a value that is not a number of seconds."""
    text = (value or "").strip()
    if status not in (429, 503) or not text.isascii() or not text.isdigit():
        return 0.0
    return min(float(text[:10]), MAX_RETRY_AFTER_S)


def _out_of_time(last: BaseException | str, attempt: int, pause: float) -> str:
    """Why a call ends before its attempt number ``attempt`` (deadline_ms), after ``last`` failed."""
    if not attempt:
        return "deadline_ms already spent"
    waited = f" for its Retry-After ({pause:g} s)" if pause else ""
    return f"{last}; no time left within deadline_ms{waited}"


def _failed(status: int, body: bytes, expected: str | None) -> str:
    """Why an attempt answered ``status`` with ``body`` failed."""
    if status == 200:
        try:
            other = _json(body)["event_id"]
        except (ValueError, KeyError, TypeError):
            other = None
        if other is not None and expected is not None and str(other) != expected:
            return f"HTTP 200 with the decision of another event ({str(other)[:100]!r})"
    return f"HTTP {status}{' without a decision' if status == 200 else ''}: {body[:200]!r}"


def _check_key(key: Any, name: str) -> None:
    """An API key the clients can send: printable ASCII, as the API's keys are (serve.api_keys: letters,
    digits and ``. _ ~ + / = -``). Another character made the sync client fail at every call with a
    UnicodeEncodeError from http.client (beyond Latin-1), while the async one sent it as UTF-8, so the same
    key reached the API as other bytes from each; a line break would add a header of its own. Refused here,
    naming the parameter and the position, never the key."""
    if not isinstance(key, str):
        msg = f"{name} must be a string, got a {type(key).__name__}"
        raise ValueError(msg)
    for at, char in enumerate(key, 1):
        if not " " <= char <= "~":
            what = (
                "a line break or another control character" if char.isascii() else "a character outside ASCII"
            )
            msg = (
                f"{name} holds {what} (character {at} of {len(key)}, not shown: a secret); an API key is "
                "printable ASCII, as serve.api_keys are"
            )
            raise ValueError(msg)


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_ms: int | None = None,
        retries: int = 2,
        backoff_ms: int = 20,
        network_margin_ms: int = 200,
        deadline_ms: int | None = None,
        max_answer_bytes: int = 4 << 20,
        api_key: str | None = None,
    ) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.username is not None or url.password is not None:
            # the sync client sent no credentials from the URL, the async one sent them as Basic auth, and
            # both repeated base_url, password included, in every Unavailable (found in review)
            msg = (
                f"base_url must not hold credentials (user:password@), got one for host {url.hostname!r}: "
                "give the API key as api_key (or RISKCTL_API_KEY)"
            )
            raise ValueError(msg)
        if url.scheme not in {"http", "https"} or not url.hostname or url.query or url.fragment:
            # a query or a fragment: the async client posted to <base_url>/v1/decisions, after the '?' or '#'
            msg = f"base_url must be http(s)://host[:port][/path], without ? or #, got {base_url[:200]!r}"
            raise ValueError(msg)
        self.base_url = base_url.rstrip("/")
        self.url = url
        #: a path in base_url (a prefix behind a proxy, "http://h/risk"): both clients post below it
        self.path_prefix = url.path.rstrip("/")
        self.timeout_ms = _timeout(timeout_ms)
        self.retries = _number("retries", retries, low=0, integer=True)
        self.backoff_ms = _number("backoff_ms", backoff_ms, low=0)
        #: may be negative (give up before the API's own timeout), the wait stays above 0 (_wait_s)
        self.network_margin_ms = _number("network_margin_ms", network_margin_ms, low=None)
        #: the whole call's bound (every attempt and backoff), None: only each attempt's wait
        self.deadline_ms = _deadline(deadline_ms)
        self.max_answer_bytes = _number("max_answer_bytes", max_answer_bytes, low=1, integer=True)
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        _check_key(key, "api_key" if api_key is not None else f"api_key (from {API_KEY_ENV})")
        #: the request headers: the API key (serve.api_keys) as a bearer token when there is one
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def _wait_s(self, timeout_ms: int | None) -> float:
        # at most a day: a socket refuses a timeout beyond ~292 years with an OverflowError (no server waits
        # that long anyway: serve.max_timeout_ms is at most 10 minutes, it answers 422 beyond)
        # at least a millisecond: a negative margin beyond the timeout gave the socket a negative timeout, and
        # the sync client raised ValueError('Timeout value out of range') instead of Unavailable
        wait = ((timeout_ms or self.timeout_ms or 1000) + self.network_margin_ms) / 1000
        return min(max(wait, 0.001), _MAX_WAIT_S)

    def _end(self, deadline_ms: int | None) -> float | None:
        """When the call must be over (time.monotonic()), None when unbounded."""
        ms = _deadline(deadline_ms) if deadline_ms is not None else self.deadline_ms
        return None if ms is None else time.monotonic() + ms / 1000

    def _attempt_wait(self, timeout_ms: int | None, end: float | None, backoff_s: float) -> float | None:
        """How long the next attempt (after ``backoff_s``) may wait; None: no time left for one."""
        wait = self._wait_s(timeout_ms)
        if end is None:
            return wait
        left = end - time.monotonic() - backoff_s
        return min(wait, left) if left > 0.001 else None

    def _too_large(self) -> str:
        return f"the answer is larger than max_answer_bytes ({self.max_answer_bytes})"

    @staticmethod
    def _body(event: Mapping[str, Any] | bytes) -> bytes:
        return event if isinstance(event, bytes) else json.dumps(event).encode()


class DecisionClient(_Base):
    """A synchronous client (standard library only); one keep-alive connection, not thread-safe."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self, wait_s: float) -> http.client.HTTPConnection:
        if self._conn is not None and self._conn.sock is not None and _dropped(self._conn.sock):
            self.close()  # the server closed the kept-alive connection (serve.idle_timeout_ms): a new one
        if self._conn is None:
            cls = HTTPSConnection if self.url.scheme == "https" else HTTPConnection
            self._conn = cls(self.url.hostname or "", self.url.port, timeout=wait_s)
        self._conn.timeout = wait_s
        if self._conn.sock is not None:
            self._conn.sock.settimeout(wait_s)
        return self._conn

    def decide(
        self,
        event: Mapping[str, Any] | bytes,
        *,
        timeout_ms: int | None = None,
        deadline_ms: int | None = None,
    ) -> DecisionResult:
        """The decision for ``event`` (a dict, or its JSON bytes); see the module docstring for retries and
        the deadline."""
        body = self._body(event)
        expected = _event_id(event, body)
        timeout_ms = _timeout(timeout_ms if timeout_ms is not None else self.timeout_ms)
        end = self._end(deadline_ms)
        last: BaseException | str = "no attempt"
        pause = 0.0  # the last answer's Retry-After
        for attempt in range(self.retries + 1):
            backoff_s = max(self.backoff_ms * attempt / 1000, pause)
            wait = self._attempt_wait(timeout_ms, end, backoff_s)
            if wait is None:
                last = _out_of_time(last, attempt, pause)
                break
            time.sleep(backoff_s)
            conn = self._connection(wait)
            failure: BaseException | str | None = None
            with Deadline(wait) as deadline:
                deadline.watch(lambda c=conn: c.sock)  # type: ignore[misc]
                try:
                    path = self.path_prefix + _path(timeout_ms)
                    conn.request("POST", path, body, self.headers)
                    resp = conn.getresponse()
                    data = resp.read(self.max_answer_bytes + 1)
                except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out
                    failure = exc
            if deadline.expired:
                failure = TimeoutError(f"no whole answer within {wait * 1000:.0f} ms")
            elif failure is None and len(data) > self.max_answer_bytes:
                failure = self._too_large()
            if failure is not None or not resp.isclosed():
                self.close()  # cut short, or some of the answer left unread: the connection is spent
            if failure is not None:
                last, pause = failure, 0.0
                continue
            pause = _retry_after(resp.status, resp.getheader("Retry-After"))
            result = _result(resp.status, data, expected, resp.getheader("Location"))
            if result is not None:
                return result
            last = _failed(resp.status, data, expected)
        msg = f"no decision from {self.base_url} after {self.retries + 1} attempt(s): {last}"
        raise Unavailable(msg)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> DecisionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection cannot carry a request: readable without a request sent means
    its end (the server closed it) or bytes nobody asked for. Reused, its request failed (a broken pipe, or
    the server's close read as the answer): an attempt lost, the whole call with retries=0."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):  # closed underneath
        return True


@functools.cache
def _daemon_resolver() -> type[AbstractResolver]:
    """aiohttp's resolver over :func:`riskctl.deadline.lookup` (defined when first used: the synchronous
    client needs no aiohttp). aiohttp's ThreadedResolver looked names up in the loop's default executor,
    whose threads ``asyncio.run`` joins at its end: a lookup that hung held the program's exit."""
    from aiohttp.abc import AbstractResolver, ResolveResult

    class DaemonResolver(AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            # cancelled (aiohttp's total timeout), the wait ends; the lookup, which cannot be, goes on
            infos = await asyncio.wrap_future(lookup(host, port))
            hosts: list[ResolveResult] = []
            for found, _, proto, _, address in infos:
                if found not in (socket.AF_INET, socket.AF_INET6) or family and found != family:
                    continue
                where, at = address[:2]
                if found == socket.AF_INET6 and address[3]:  # link-local: its scope too ('fe80::1%eth0')
                    where, at = socket.getnameinfo(address, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
                flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV  # what aiohttp's own resolver says
                hosts.append(
                    ResolveResult(
                        hostname=host, host=where, port=int(at), family=found, proto=proto, flags=flags
                    )
                )
            return hosts

        async def close(self) -> None:
            pass

    return DaemonResolver


class AsyncDecisionClient(_Base):
    """An asyncio client over one aiohttp session (connection pool); safe for concurrent calls."""

    def __init__(self, base_url: str, *, max_connections: int = 100, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        #: at least 1: aiohttp reads 0 as no limit, a pool that grows with every concurrent call
        self.max_connections = _number("max_connections", max_connections, low=1, integer=True)
        self._session: Any = None

    def _sess(self) -> Any:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, resolver=_daemon_resolver()()),
                raise_for_status=False,
            )
        return self._session

    async def decide(
        self,
        event: Mapping[str, Any] | bytes,
        *,
        timeout_ms: int | None = None,
        deadline_ms: int | None = None,
    ) -> DecisionResult:
        import aiohttp

        body = self._body(event)
        expected = _event_id(event, body)
        timeout_ms = _timeout(timeout_ms if timeout_ms is not None else self.timeout_ms)
        url = self.base_url + _path(timeout_ms)
        end = self._end(deadline_ms)
        last: BaseException | str = "no attempt"
        pause = 0.0  # the last answer's Retry-After
        for attempt in range(self.retries + 1):
            backoff_s = max(self.backoff_ms * attempt / 1000, pause)
            wait = self._attempt_wait(timeout_ms, end, backoff_s)
            if wait is None:
                last = _out_of_time(last, attempt, pause)
                break
            await asyncio.sleep(backoff_s)
            try:
                async with self._sess().post(
                    url,
                    data=body,
                    headers=self.headers,
                    timeout=aiohttp.ClientTimeout(total=wait),
                    allow_redirects=False,
                ) as resp:
                    status, data = resp.status, bytearray()
                    location = resp.headers.get("Location")
                    pause = _retry_after(status, resp.headers.get("Retry-After"))
                    async for chunk in resp.content.iter_chunked(65_536):
                        data += chunk
                        if len(data) > self.max_answer_bytes:
                            break
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                # aiohttp's total timeout is a TimeoutError without a word: the Unavailable ended in ': '
                last = exc if str(exc) else f"no whole answer within {wait * 1000:.0f} ms"
                pause = 0.0
                continue
            if len(data) > self.max_answer_bytes:
                last = self._too_large()
                continue
            result = _result(status, bytes(data), expected, location)
            if result is not None:
                return result
            last = _failed(status, bytes(data), expected)
        msg = f"no decision from {self.base_url} after {self.retries + 1} attempt(s): {last}"
        raise Unavailable(msg)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncDecisionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
