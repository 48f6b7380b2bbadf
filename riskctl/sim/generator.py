"""A traffic generator: legitimate sessions of a user population with labelled attacks mixed in.

Pure: no Kafka, no wall clock. Event time starts at ``SimConfig.start_ts`` (an argument) and the random
generator is seeded, so a seed and a start give the same events every time (a run to Kafka and a backtest of
its JSONL file see the same traffic).

Model
-----
* ``users`` accounts, each with a home city, one or two devices, and a pace of life: sessions start as a
  Poisson process sized so that the whole stream runs at ``rate`` events per second (the mean session length
  is learnt as sessions are generated). A user is in at most one session at a time and rests at least
  ``rest_s`` between two sessions (a human does not click for hours without a pause).
* A legitimate session: a login (from the home city mostly, now and then from a trip; a wrong password now
  and then, retried a few seconds later, never three times in a row), a 2FA check after the first login from a
  device, then one of: shopping (orders, each paid), transfers (log-normal amounts, median ~150), a password
  change. New users register (and shop no sooner than ten seconds later). Humans wait 2-12 s between clicks.
* An attack session (with probability ``attack_fraction`` per session) takes an idle user (or a new account)
  and plays one of :data:`ATTACKS`. Each of its events carries ``"sim": {"attack": kind, "attack_id": id,
  "role": "attacker"|"target"}``, an extra field the engine ignores. Victims rest ``victim_rest_s`` after an
  attack so that the attack's traces (a 5-minute transfer sum) do not spill onto their next session.

Events come out in event-time order (a heap of pending session events; a new session only starts at or after
every event already yielded).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: attack kind -> the rule of ``rules/`` that is meant to catch it (the report shows every rule that fired).
ATTACKS: dict[str, str] = {
    "brute_force": "brute_force_login",
    "account_takeover": "account_takeover_chain",
    "velocity": "transfer_velocity",
    "bot_cadence": "bot_cadence",
    "new_device_no_2fa": "new_device_without_2fa",
    "quick_order": "register_then_quick_order",
}

CITIES = (
    "Paris", "Lyon", "Berlin", "Munich", "Madrid", "Barcelona", "Rome", "Milan", "Lisbon", "Amsterdam",
    "Brussels", "Vienna", "Prague", "Warsaw", "Stockholm", "Oslo", "Dublin", "Zurich", "Athens", "Helsinki",
)  # fmt: skip
ATTACKER_CITIES = ("Lagos", "Minsk", "Jakarta", "Caracas", "Tbilisi", "Hanoi")

S = 1000  # ms per second
WARMUP_S = 60  # sessions start this long before the window (longer than a legitimate session)


@dataclass(frozen=True)
class SimConfig:
    """What to generate. ``attack_fraction`` is the probability that a new session is an attack."""

    users: int = 1000
    rate: float = 100.0  # events per second of event time, overall
    duration_s: float = 60.0  # sessions start within [start_ts, start_ts + duration)
    attack_fraction: float = 0.02
    seed: int = 0
    start_ts: int = 1_700_000_000_000
    user_prefix: str = "u"
    attacks: tuple[str, ...] = tuple(ATTACKS)
    rest_s: float = 10.0
    victim_rest_s: float = 600.0
    #: skew of user activity: 0 is uniform; s > 0 picks the user of rank k with weight 1 / k**s (Zipf)
    zipf: float = 0.0

    def __post_init__(self) -> None:
        if self.users < 1:
            msg = f"users must be at least 1, got {self.users}"
            raise ValueError(msg)
        # finite too: an infinite rate draws gaps of 0 (event time never moves, the heap grows without end),
        # an infinite duration has no end to round to
        if not 0 < self.rate < math.inf:
            msg = f"rate must be positive and finite, got {self.rate}"
            raise ValueError(msg)
        if not 0 < self.duration_s < math.inf:
            msg = f"duration must be positive and finite, got {self.duration_s}"
            raise ValueError(msg)
        if not 0.0 <= self.attack_fraction <= 1.0:
            msg = f"attack fraction must be within [0, 1], got {self.attack_fraction}"
            raise ValueError(msg)
        if not 0.0 <= self.zipf <= 5.0:
            msg = f"zipf exponent must be within [0, 5], got {self.zipf}"
            raise ValueError(msg)
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown or not self.attacks:
            msg = f"unknown attack kind(s) {unknown}: choose among {', '.join(ATTACKS)}"
            raise ValueError(msg)


@dataclass
class User:
    """A simulated user: home city and devices, and what this run has seen of them (for attacks that must
    look new)."""

    user_id: str
    home: str
    devices: list[str]
    seen_devices: set[str] = field(default_factory=set)  # devices this run already logged in from
    seen_cities: set[str] = field(default_factory=set)
    busy_until: int = 0  # event time (ms) before which the user starts no new session


class Simulator:
    """Iterate over it for events (dicts, event-time order); ``attacks`` holds one entry per attack."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.users: list[User] = []
        self._index: dict[str, int] = {}
        self.attacks: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._users_made = itertools.count(0)
        self._attack_ids = itertools.count(1)
        self._seq = itertools.count()
        self._session_events = 6.0  # running mean of events per session (prior)
        self._sessions = 0
        for _ in range(config.users):
            self._add(self._new_user())
        # Zipf weights over the initial population (users registered during the run are picked uniformly)
        self._cum_weights: list[float] | None = (
            list(itertools.accumulate(1.0 / (k**config.zipf) for k in range(1, config.users + 1)))
            if config.zipf > 0
            else None
        )

    # -- the stream ---------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        cfg, rng = self.config, self.rng
        heap: list[tuple[int, int, dict[str, Any]]] = []
        end = cfg.start_ts + round(cfg.duration_s * S)
        # Sessions start a warm-up before the window, so that the window opens on a steady state (users in
        # the middle of their sessions) rather than on a ramp; only what falls in the window is kept.
        t = float(cfg.start_ts - WARMUP_S * S)
        while True:
            t += rng.expovariate(cfg.rate / self._session_events) * S
            if t >= end:
                break
            now = int(t)
            while heap and heap[0][0] <= now:
                yield heapq.heappop(heap)[2]
            events, size = self._session(now, end)
            self._sessions += 1
            # a running mean over every session so far keeps the overall rate at `rate`
            self._session_events += (max(size, 1) - self._session_events) / (self._sessions + 10)
            for e in events:
                heapq.heappush(heap, (e["ts"], next(self._seq), e))
        while heap:
            yield heapq.heappop(heap)[2]

    # -- users -------------------------------------------------------------------------------------------
    def _new_user(self) -> User:
        rng = self.rng
        n = next(self._users_made)
        uid = f"{self.config.user_prefix}{self.config.seed}-{n:06d}"
        devices = [self._device() for _ in range(1 if rng.random() < 0.6 else 2)]
        return User(uid, rng.choice(CITIES), devices)

    def _add(self, user: User) -> User:
        self._index[user.user_id] = len(self.users)
        self.users.append(user)
        return user

    def _device(self) -> str:
        return f"dev-{self.rng.getrandbits(48):012x}"

    def _idle_user(self, now: int) -> User | None:
        if self._cum_weights is not None:
            # the heaviest users are often in a session already: try a few Zipf picks, then any idle user
            ranked = self.users[: self.config.users]
            for u in self.rng.choices(ranked, cum_weights=self._cum_weights, k=8):
                if u.busy_until <= now:
                    return u
        for _ in range(8):
            u = self.rng.choice(self.users)
            if u.busy_until <= now:
                return u
        return None

    # -- events ------------------------------------------------------------------------------------------
    def _event(self, user: User, etype: str, ts: int, **fields: Any) -> dict[str, Any]:
        return {"event_id": f"s{self.config.seed}-{next(self._ids):08d}", "user_id": user.user_id,
                "type": etype, "ts": ts, **fields}  # fmt: skip

    def _gap(self, low: float = 2.0, high: float = 12.0) -> int:
        return round(self.rng.uniform(low, high) * S)

    def _amount(self, median: float, sigma: float) -> float:
        return round(self.rng.lognormvariate(math.log(median), sigma), 2)

    def _session(self, now: int, end: int) -> tuple[list[dict[str, Any]], int]:
        """The events of one session that fall in the window, and the session's full size."""
        cfg, rng = self.config, self.rng
        if now >= cfg.start_ts and rng.random() < cfg.attack_fraction:
            events = self._attack(now, rng.choice(cfg.attacks))
            if events:  # an attack is kept whole, even when it runs past the end of the window
                self._mark_seen(events)
                return events, len(events)
        user = self._idle_user(now)
        if user is None or rng.random() < 0.03:
            user = self._add(self._new_user())
            events = self._registration(user, now)
        else:
            events = self._legit(user, now)
        user.busy_until = events[-1]["ts"] + round(cfg.rest_s * S)
        kept = self._cut(events, cfg.start_ts, end)
        self._mark_seen(kept)
        return kept, len(events)

    @staticmethod
    def _cut(events: list[dict[str, Any]], start: int, end: int) -> list[dict[str, Any]]:
        """The events within [start, end), plus a 2FA that follows a kept login: a login cut from its 2FA
        would look like a new device left without 2FA (a false alert the simulator itself caused)."""
        kept: list[dict[str, Any]] = []
        for e in events:
            if e["ts"] < start:
                continue
            if e["ts"] < end or (e["type"] == "2fa" and kept and kept[-1]["type"] == "login"):
                kept.append(e)
        return kept

    def _mark_seen(self, events: list[dict[str, Any]]) -> None:
        """Devices and cities the engine will have seen (a login cut by the window was never seen)."""
        for e in events:
            if e["type"] == "login" and e.get("success"):
                user = self.users[self._index[e["user_id"]]]
                user.seen_devices.add(e["device_id"])
                user.seen_cities.add(e["city"])

    def _login(
        self, user: User, t: int, device: str, city: str, fails: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """A human login: ``fails`` wrong passwords first (a few seconds apart), then a success and, on a
        device not seen yet, a successful 2FA."""
        out = []
        ip = f"10.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"
        for _ in range(fails):
            out.append(self._event(user, "login", t, success=False, device_id=device, city=city, ip=ip))
            t += self._gap(3, 10)
        out.append(self._event(user, "login", t, success=True, device_id=device, city=city, ip=ip))
        if device not in user.seen_devices:
            t += self._gap(4, 25)
            out.append(self._event(user, "2fa", t, success=True, device_id=device))
        return out, t

    def _legit(self, user: User, now: int) -> list[dict[str, Any]]:
        rng = self.rng
        device = user.devices[0] if rng.random() < 0.8 else rng.choice(user.devices)
        city = user.home if rng.random() < 0.95 else rng.choice(CITIES)
        fails = 0 if rng.random() < 0.92 else rng.choice((1, 1, 1, 2))
        events, t = self._login(user, now, device, city, fails)
        kind = rng.choices(("shop", "transfer", "password", "browse"), weights=(50, 30, 5, 15))[0]
        if kind == "shop":
            for _ in range(rng.choice((1, 1, 2, 3))):
                t += self._gap()
                amount = self._amount(40, 0.9)
                events.append(self._event(user, "order", t, amount=amount, device_id=device))
                t += self._gap(3, 15)
                events.append(self._event(user, "payment", t, amount=amount, device_id=device))
        elif kind == "transfer":
            for _ in range(rng.choice((1, 1, 1, 2))):
                t += self._gap(5, 20)
                events.append(
                    self._event(user, "transfer", t, amount=self._amount(150, 1.0), device_id=device)
                )
        elif kind == "password":
            t += self._gap(5, 20)
            events.append(self._event(user, "password_change", t, device_id=device))
        return events

    def _registration(self, user: User, now: int) -> list[dict[str, Any]]:
        device = user.devices[0]
        events = [self._event(user, "register", now, device_id=device, city=user.home)]
        more, t = self._login(user, now + self._gap(4, 15), device, user.home)
        events += more
        if self.rng.random() < 0.5:
            t += self._gap(10, 30)
            events.append(self._event(user, "order", t, amount=self._amount(40, 0.9), device_id=device))
        return events

    # -- attacks -----------------------------------------------------------------------------------------
    def _attack(self, now: int, kind: str) -> list[dict[str, Any]]:
        if kind in ("quick_order", "bot_cadence"):
            victim = self._add(self._new_user())  # a scripted sign-up or a bot account: fresh accounts
        else:
            found = self._idle_user(now)
            if found is None:
                return []
            victim = found
        build = getattr(self, f"_attack_{kind}")
        events: list[tuple[str, dict[str, Any]]] = build(victim, now)
        if not events:  # this victim cannot be attacked this way (see _attack_account_takeover)
            return []
        attack_id = f"a{self.config.seed}-{next(self._attack_ids):05d}"
        out = []
        for role, e in events:
            e["sim"] = {"attack": kind, "attack_id": attack_id, "role": role}
            out.append(e)
        victim.busy_until = out[-1]["ts"] + round(self.config.victim_rest_s * S)
        self.attacks[attack_id] = {
            "attack_id": attack_id, "attack": kind, "user_id": victim.user_id, "start_ts": out[0]["ts"],
            "end_ts": out[-1]["ts"], "event_ids": [e["event_id"] for e in out],
        }  # fmt: skip
        return out

    def _attacker_login(self, victim: User, t: int, success: bool, device: str, city: str) -> dict[str, Any]:
        ip = f"203.0.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"
        return self._event(victim, "login", t, success=success, device_id=device, city=city, ip=ip)

    def _attack_brute_force(self, victim: User, now: int) -> list[tuple[str, dict[str, Any]]]:
        """3-5 wrong passwords then the right one, a guess every 0.5-2 s: the whole run well within 10 s."""
        device, city = self._device(), self.rng.choice(ATTACKER_CITIES)
        t, out = now, []
        for _ in range(self.rng.randint(3, 5)):
            out.append(("attacker", self._attacker_login(victim, t, False, device, city)))
            t += self._gap(0.5, 1.8)
        out.append(("attacker", self._attacker_login(victim, t, True, device, city)))
        return out

    def _attack_account_takeover(self, victim: User, now: int) -> list[tuple[str, dict[str, Any]]]:
        """A phished account: login from a city the user was never seen in (2FA passed with the stolen code),
        the password changed, then a transfer of 10,000 or more, all within half a minute."""
        fresh = [c for c in ATTACKER_CITIES if c not in victim.seen_cities]
        if not fresh:  # attacked from every attacker city already: a takeover from any would not look new
            return []
        device = self._device()
        city = self.rng.choice(fresh)
        t = now
        out = [("attacker", self._attacker_login(victim, t, True, device, city))]
        t += self._gap(2, 6)
        out.append(("attacker", self._event(victim, "2fa", t, success=True, device_id=device)))
        t += self._gap(3, 10)
        out.append(("attacker", self._event(victim, "password_change", t, device_id=device)))
        t += self._gap(3, 12)
        amount = round(self.rng.uniform(10_000, 45_000), 2)
        out.append(("attacker", self._event(victim, "transfer", t, amount=amount, device_id=device)))
        return out

    def _session_from_home(self, victim: User, now: int) -> tuple[str, int, list[tuple[str, dict[str, Any]]]]:
        """A login as ``victim`` from their first device and home city, so nothing about it looks new: the
        device, the time after the login, and the login's events marked as the attacker's."""
        device = victim.devices[0]
        login, t = self._login(victim, now, device, victim.home)
        return device, t, [("attacker", e) for e in login]

    def _attack_velocity(self, victim: User, now: int) -> list[tuple[str, dict[str, Any]]]:
        """A hijacked session drains the account: transfers summing above 50,000 within half a minute."""
        device, t, out = self._session_from_home(victim, now)
        total = 0.0
        while total <= 50_000:
            t += self._gap(2, 6)
            amount = round(self.rng.uniform(8_000, 19_000), 2)
            total += amount
            out.append(("attacker", self._event(victim, "transfer", t, amount=amount, device_id=device)))
        return out

    def _attack_bot_cadence(self, victim: User, now: int) -> list[tuple[str, dict[str, Any]]]:
        """A bot account: login, 2FA, then 10-16 orders 0.2-0.9 s apart."""
        device, t, out = self._session_from_home(victim, now)
        for _ in range(self.rng.randint(10, 16)):
            t += self._gap(0.2, 0.9)
            amount = self._amount(20, 0.5)
            out.append(("attacker", self._event(victim, "order", t, amount=amount, device_id=device)))
        return out

    def _attack_new_device_no_2fa(self, victim: User, now: int) -> list[tuple[str, dict[str, Any]]]:
        """A login with a stolen password from an unknown device; no 2FA ever passed (an order is tried)."""
        device = self._device()
        t = now
        out = [("attacker", self._attacker_login(victim, t, True, device, victim.home))]
        t += self._gap(5, 30)
        out.append(
            ("attacker", self._event(victim, "order", t, amount=self._amount(300, 0.5), device_id=device))
        )
        return out

    def _attack_quick_order(self, victim: User, now: int) -> list[tuple[str, dict[str, Any]]]:
        """A scripted sign-up: register and order within 3 s."""
        device = victim.devices[0]
        out = [("attacker", self._event(victim, "register", now, device_id=device, city=victim.home))]
        t = now + self._gap(0.3, 2.7)
        out.append(
            ("attacker", self._event(victim, "order", t, amount=self._amount(60, 0.5), device_id=device))
        )
        return out


def generate(config: SimConfig) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """All events of a run (event-time order) and the attacks started, by attack id."""
    sim = Simulator(config)
    events = list(sim)
    return events, sim.attacks


def attacks_in(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The attacks labelled in a list of events (e.g. read back from a JSONL file), by attack id. A label this
    simulator does not write (an attack id that is not a string, an unknown attack kind, an event without an
    integer ``ts``) is not an attack: a file edited by hand or by someone else is read as far as it goes."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        label = e.get("sim")
        if (
            not isinstance(label, dict)
            or not isinstance(label.get("attack_id"), str)
            or label.get("attack") not in ATTACKS
            or type(e.get("ts")) is not int
        ):
            continue
        a = out.setdefault(
            label["attack_id"],
            {"attack_id": label["attack_id"], "attack": label["attack"], "user_id": e["user_id"],
             "start_ts": e["ts"], "end_ts": e["ts"], "event_ids": []},
        )  # fmt: skip
        a["event_ids"].append(e["event_id"])
        a["start_ts"] = min(a["start_ts"], e["ts"])
        a["end_ts"] = max(a["end_ts"], e["ts"])
    return out
