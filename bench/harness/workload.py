"""What the bench measures with: the plan of a run (sizes and durations) and the events.

The side-by-side bench reads the simulator's traffic (``riskctl.sim``, attacks mixed in, Zipf-skewed
activity), generated once into ``bench/.work/`` as JSON lines, so every contender reads the same records.
The chaos and end-to-end benches send live random events instead (:class:`EventMaker`): their event time is
the wall clock, which a pre-generated file cannot have.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from dataclasses import dataclass
from typing import Any

from harness import ROOT, WORK, log

#: events decided between the cold and the sustained phase of the full run, unmeasured: with only the cold
#: 30,000 behind it the JVM's JIT compilers still took 14-21% of the job's CPU during the sustained phase
#: (2026-12-03), so the sustained figure measured a JVM still compiling
SETTLE_EVENTS = 120_000


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run: ``--quick`` (small workload, short phases) or the full run."""

    users: int
    warmup_events: int  # decided first, from a cold start (JIT compilation, caches): the cold figure
    settle_events: int  # behind them, decided unmeasured: the JIT is still busy after the cold ones
    throughput_events: int  # preloaded behind them, drained by the warmed-up contender: the sustained figure
    throughput_limit_s: float  # stop measuring a contender's drain after this long
    phase_s: float  # length of one fixed-rate latency phase
    rates: tuple[int, ...]
    edits: int
    engine_events: int

    @classmethod
    def of(cls, quick: bool) -> Plan:
        """The plan of ``--quick`` or of the full run."""
        if quick:
            # no settling: its sustained figure is flagged as not warm (the JIT's share of the JVM's CPU)
            return cls(100_000, 10_000, 0, 20_000, 60, 10, (200, 1000, 5000), 20, 20_000)
        return cls(100_000, 30_000, SETTLE_EVENTS, 100_000, 180, 30, (200, 1000, 5000), 25, 100_000)

    @property
    def backlog_events(self) -> int:
        """The events preloaded before a contender starts: cold, settling and sustained."""
        return self.warmup_events + self.settle_events + self.throughput_events

    def events_needed(self) -> int:
        """Events the workload must hold: warm-up, throughput backlog, every latency phase and a reserve."""
        reserve_for_80pct = 10_000 * self.phase_s  # up to 10k events/s at 80% of a contender's maximum
        return int(self.backlog_events + sum(self.rates) * self.phase_s + reserve_for_80pct)


# -- the simulator's events (side-by-side bench) --------------------------------------------------------
def workload(users: int, events: int, seed: int = 42) -> list[bytes]:
    """The simulator's events (attacks included, Zipf 1.0 activity), one JSON document each, cached."""
    from riskctl.sim import SimConfig, Simulator

    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"workload-u{users}-n{events}-s{seed}.jsonl"
    larger = [
        f
        for f in WORK.glob(f"workload-u{users}-n*-s{seed}.jsonl")
        if int(f.name.split("-n", 1)[1].split("-", 1)[0]) >= events
    ]
    if larger:
        path = min(larger, key=lambda f: f.stat().st_size)  # a larger file: its first events are as good
    else:
        log(f"generating {events:,} events for {users:,} users into {path.relative_to(ROOT)}")
        rate = 1000.0
        config = SimConfig(
            users=users,
            rate=rate,
            duration_s=events / rate * 1.1 + 5,
            attack_fraction=0.02,
            seed=seed,
            start_ts=1_700_000_000_000,
            zipf=1.0,
        )
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # its own: two processes may make the same file at once
        with tmp.open("w", encoding="utf-8") as out:
            for n, e in enumerate(Simulator(config)):
                if n >= events:
                    break
                out.write(json.dumps(e, separators=(",", ":")) + "\n")
        tmp.replace(path)
    lines = path.read_bytes().splitlines()
    if len(lines) < events:
        msg = f"{path} has {len(lines)} events, fewer than {events}: delete it and run again"
        raise SystemExit(msg)
    return lines[:events]


def key_of(raw: bytes) -> tuple[bytes, str]:
    """(Kafka key, event id) of a workload record: keyed by user, as the job's producers key them."""
    doc = json.loads(raw)
    return str(doc["user_id"]).encode(), str(doc["event_id"])


# -- live random events (chaos and end-to-end benches) ------------------------------------------------------
TYPES = ["login", "order", "payment", "transfer", "register", "password_change", "2fa"]
WEIGHTS = [40, 20, 15, 10, 5, 5, 5]
CITIES = ["Paris", "Lyon", "Berlin", "Madrid", "Oslo", "Rome", "Lisbon", "Vienna"]


class EventMaker:
    """Valid random events of ``users`` users, stamped with the event time the caller gives.

    Each user logs in from a few devices and mostly one city, so the rules see ordinary traffic with some
    new-device and new-city logins. ``login_success`` (the share of successful logins) and ``transfer_mu``
    (the log-mean of transfer amounts) let a bench tune how often the failed-login and large-transfer rules
    fire; event ids are ``<run>-<n>``, with a fresh ``run`` per maker.
    """

    def __init__(
        self, users: int, seed: int, *, login_success: float = 0.9, transfer_mu: float = 7.0
    ) -> None:
        self.rng = random.Random(seed)
        self.users = users
        self.login_success = login_success
        self.transfer_mu = transfer_mu
        self.run = uuid.uuid4().hex[:8]
        self.n = 0

    def make(self, ts_ms: int) -> dict[str, Any]:
        """The next event, with event time ``ts_ms``."""
        r = self.rng
        self.n += 1
        uid = f"u{r.randrange(self.users)}"
        etype = r.choices(TYPES, WEIGHTS)[0]
        e: dict[str, Any] = {"event_id": f"{self.run}-{self.n}", "user_id": uid, "type": etype, "ts": ts_ms}
        if etype == "login":
            e["success"] = r.random() < self.login_success
            e["device_id"] = f"d{hash(uid) % 7 if r.random() < 0.95 else r.randrange(1000)}"
            e["city"] = CITIES[hash(uid) % len(CITIES)] if r.random() < 0.97 else r.choice(CITIES)
        elif etype in ("order", "payment"):
            e["amount"] = round(r.uniform(5, 500), 2)
        elif etype == "transfer":
            e["amount"] = round(r.lognormvariate(self.transfer_mu, 1.2), 2)
        return e
