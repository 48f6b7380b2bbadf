"""What the console's security rests on, without I/O: password hashing, roles and permissions, CSRF tokens,
session tokens, the login rate limiter.

- Passwords: ``hashlib.scrypt`` (standard library, RFC 7914; memory-hard), n=2**14, r=8, p=1, a 16-byte
  random salt, stored as ``scrypt$n$r$p$salt$hash`` (base64) so the cost can be raised later and old hashes
  still verify. Compared with :func:`hmac.compare_digest`.
- Roles are ordered: ``viewer`` < ``analyst`` < ``approver``; :data:`PERMISSIONS` says the least role of each
  action, and :func:`allowed` is the only place that decides.
- Time is an argument (``now``, seconds): the rate limiter is tested without sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import deque
from dataclasses import dataclass, field

ROLES = ("viewer", "analyst", "approver")
_RANK = {role: rank for rank, role in enumerate(ROLES)}

#: action -> the least role that may do it (every action needs a session; there is no anonymous access)
PERMISSIONS: dict[str, str] = {
    "view": "viewer",  # rules list, rule pages, history, diffs, decisions, review queue
    "draft": "analyst",  # open the editor, validate a draft, backtest it
    "label": "analyst",  # mark a review case fraud or legitimate
    "publish": "approver",  # write a new version (create or edit)
    "set_status": "approver",  # enable, disable, shadow
    "rollback": "approver",  # a new version with an older version's document
}

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
#: a password longer than this is refused before hashing (scrypt's cost does not grow with it, but a
#: megabyte-long form field is not a password)
MAX_PASSWORD_CHARS = 1024
MIN_PASSWORD_CHARS = 10


class PasswordError(ValueError):
    """A password that cannot be set (too short, too long)."""


def check_password_rules(password: str) -> None:
    """Raise :class:`PasswordError` when ``password`` is too short or too long."""
    if len(password) < MIN_PASSWORD_CHARS:
        msg = f"password too short: at least {MIN_PASSWORD_CHARS} characters"
        raise PasswordError(msg)
    if len(password) > MAX_PASSWORD_CHARS:
        msg = f"password too long: at most {MAX_PASSWORD_CHARS} characters"
        raise PasswordError(msg)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, maxmem=2**26, dklen=_KEY_BYTES
    )


def hash_password(password: str) -> str:
    """The stored form of ``password``: ``scrypt$n$r$p$salt$hash``."""
    check_password_rules(password)
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (a :func:`hash_password` result); False for any malformed
    stored value or oversized password, never an exception."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        n_i, r_i, p_i = int(n), int(r), int(p)
        if not (2 <= n_i <= 2**20 and 1 <= r_i <= 32 and 1 <= p_i <= 16):
            return False
        expected = base64.b64decode(key, validate=True)
        got = _scrypt(password, base64.b64decode(salt, validate=True), n_i, r_i, p_i)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


#: hashed when the user does not exist, so a login takes as long whether or not the name is known
DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def allowed(role: str, action: str) -> bool:
    """Whether a user of ``role`` may do ``action`` (unknown role or action: no)."""
    need = PERMISSIONS.get(action)
    if need is None or role not in _RANK:
        return False
    return _RANK[role] >= _RANK[need]


def new_token() -> str:
    """A random 256-bit token, URL-safe (43 characters): session cookies and CSRF tokens."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored of a session token (SHA-256, hex): a leaked sessions table opens no session."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same_token(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of a submitted CSRF token with the session's; False when either is missing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


@dataclass
class RateLimiter:
    """Failed logins per key (a user name, a client address): at most ``max_failures`` in ``window_s``
    seconds; past that the key is refused until its oldest failure leaves the window.

    In memory, per console process (one process serves the console); at most ``max_keys`` keys are tracked,
    so a flood of made-up names cannot exhaust memory. A full table drops (:meth:`_make_room`) a key whose
    failures all left the window, else the oldest key under its limit, and a locked key only when every key
    is locked: dropping the oldest key first dropped the lock of the name under attack (the oldest), and a
    flood of other names from other addresses gave its attacker 5 more guesses each time.
    """

    max_failures: int = 5
    window_s: float = 300.0
    max_keys: int = 10_000
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        times = self._recent(key, now)
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[0] + self.window_s - now)

    def failed(self, key: str, now: float) -> None:
        """Record one failure of ``key`` at ``now``."""
        times = self._recent(key, now)
        if key not in self._failures:
            if len(self._failures) >= self.max_keys:
                self._make_room(now)
            self._failures[key] = times
        times.append(now)

    def _make_room(self, now: float) -> None:
        """Drop one key or more of a full table: every one whose failures left the window, else the oldest
        under its limit, else (all locked) the oldest. A scan of the table, only when it is full."""
        expired = [k for k, times in self._failures.items() if not times or times[-1] <= now - self.window_s]
        for key in expired:
            del self._failures[key]
        if len(self._failures) < self.max_keys:
            return
        cutoff = now - self.window_s
        unlocked = (
            k for k, times in self._failures.items() if sum(t > cutoff for t in times) < self.max_failures
        )
        victim = next(unlocked, None)
        del self._failures[next(iter(self._failures)) if victim is None else victim]

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key`` (a successful login)."""
        self._failures.pop(key, None)

    def attempt(self, keys: tuple[str, ...], now: float) -> float:
        """Start an attempt of ``keys``: the seconds to wait when one of them is over its limit (nothing
        recorded), else 0 and one failure recorded for each, in the same step, so concurrent attempts count
        at once; :meth:`forgive` takes it back when the attempt succeeds (or never ran)."""
        wait = max(self.retry_after(key, now) for key in keys)
        if wait > 0:
            return wait
        for key in keys:
            self.failed(key, now)
        return 0.0

    def forgive(self, key: str, now: float) -> None:
        """Take back the failure of ``key`` recorded at ``now`` by :meth:`attempt`."""
        times = self._failures.get(key)
        if times is None:
            return
        try:
            times.remove(now)
        except ValueError:
            return
        if not times:
            del self._failures[key]
