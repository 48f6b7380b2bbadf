"""Who calls ``riskctl serve``: API keys, and each caller's share of the instance (docs/api.md, "Callers").

A business service presents its key as ``Authorization: Bearer <key>``. With ``serve.api_keys`` set, a request
to ``/v1/decisions`` or ``/v1/stats`` without a known key gets 401 before its body is read; ``/healthz``,
``/readyz`` and ``/openapi.json`` stay open for load balancers. Without keys every request is the caller
``anonymous``, which ``riskctl serve`` allows only on a loopback address unless ``serve.anonymous`` says so:
an API that anyone on the network can feed events to lets them shape any user's features (a victim's failed
logins, say) and so the decisions the business takes on that victim.

Each caller is held to its share, so one that floods (a retry loop gone wrong, a stolen key) gets 429 while
the others are answered as before:

* ``serve.max_in_flight_per_client`` requests waiting at once (0: half of ``serve.max_in_flight`` with keys,
  all of it for ``anonymous``);
* ``serve.rate_per_client`` requests per second, in a token bucket holding one second's worth (0: no rate
  bound).

A caller also owns the event_ids it sent: a request from another caller reusing one gets 409 (see
:mod:`riskctl.serve.service`), never the first caller's decision.

Keys are compared by their SHA-256 digest, looked up in a dict: what a timing difference could reveal is a
prefix of a digest, not of a key. :class:`Callers` keeps only the digests, but the keys themselves stay in the
process's memory for its life: in the settings' ``serve.api_keys`` (``/openapi.json`` reads it) and in the
environment when they came from ``RISKCTL_SERVE_API_KEYS``. A dump of the process's memory reveals them, as
it does any secret the process holds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from riskctl.config.settings import API_KEY_CHARS, MAX_KEY_CHARS, parse_api_keys
from riskctl.serve.request import ApiError

#: the caller of every request when no key is configured
ANONYMOUS = "anonymous"
CHALLENGE = 'Bearer realm="riskctl"'


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(slots=True)
class Caller:
    """One caller's share and counts (in ``/v1/stats``)."""

    name: str
    in_flight: int = 0
    tokens: float = 0.0
    refilled: float = 0.0
    requests: int = 0
    limited: int = 0


class Callers:
    """The callers of one instance: who a request is from, and whether its share admits it."""

    def __init__(
        self,
        api_keys: str,
        *,
        max_in_flight: int,
        max_in_flight_per_client: int = 0,
        rate_per_client: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        keys = parse_api_keys(api_keys)
        self.required = bool(keys)
        self._by_digest = {_digest(key): name for name, key in keys.items()}
        if max_in_flight_per_client > 0:
            self.max_in_flight = min(max_in_flight_per_client, max_in_flight)
        else:  # one caller alone (anonymous) has no other to leave room for
            self.max_in_flight = max(1, max_in_flight // 2) if keys else max_in_flight
        self.rate = rate_per_client
        self.clock = clock
        names = list(keys) if keys else [ANONYMOUS]
        self.callers = {name: Caller(name, tokens=rate_per_client, refilled=clock()) for name in names}
        #: requests refused for a missing, malformed or unknown key
        self.unauthorized = 0

    def identify(self, authorization: str | None) -> Caller:
        """The caller that ``authorization`` (the header's value) names; ApiError 401 when keys are
        required and it names none."""
        if not self.required:
            return self.callers[ANONYMOUS]
        if authorization is None:
            reason = "an API key is required: send the header Authorization: Bearer <key>"
        else:
            # the whole header (aiohttp bounds it at 8,190 bytes): a key cut to the longest length a key may
            # have, then compared, let a 256-character key followed by anything in
            scheme, _, key = authorization.strip().partition(" ")
            key = key.strip()
            if scheme.lower() != "bearer" or not key:
                reason = "the Authorization header must be 'Bearer <key>'"
            else:
                # only what a configured key could be is hashed: a header of other bytes (aiohttp keeps
                # undecodable ones as surrogates, which UTF-8 cannot encode) is simply nobody's key
                could_be = len(key) <= MAX_KEY_CHARS and API_KEY_CHARS.fullmatch(key)
                name = self._by_digest.get(_digest(key)) if could_be else None
                if name is not None:
                    return self.callers[name]
                reason = "unknown API key"
        self.unauthorized += 1
        raise ApiError(401, reason, "Authorization")

    def admit(self, caller: Caller) -> None:
        """Count one request of ``caller``; ApiError 429 (with ``retry_after``) beyond its share."""
        caller.requests += 1
        if caller.in_flight >= self.max_in_flight:
            caller.limited += 1
            msg = (
                f"this caller already has {caller.in_flight} requests waiting "
                "(serve.max_in_flight_per_client)"
            )
            raise ApiError(429, msg, retry_after=1)
        if self.rate > 0:
            now = self.clock()
            caller.tokens = min(self.rate, caller.tokens + (now - caller.refilled) * self.rate)
            caller.refilled = now
            if caller.tokens < 1:
                caller.limited += 1
                # the seconds until its next token, rounded: 0 when under half a second (a client honouring
                # Retry-After waited a whole second for the 5 ms of a caller allowed 200 requests/s)
                wait = math.floor((1 - caller.tokens) / self.rate + 0.5)
                msg = f"this caller sends more than serve.rate_per_client ({self.rate} requests/s)"
                raise ApiError(429, msg, retry_after=wait)
            caller.tokens -= 1

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            c.name: {"requests": c.requests, "limited": c.limited, "in_flight": c.in_flight}
            for c in self.callers.values()
        }
