"""What a simulated run caught: labelled events against the decisions and alerts the engine produced.

Pure (no I/O): :class:`ReportBuilder` reads the events (with their ``sim`` labels), then the records
(decision and alert dicts as the job writes them, or ``Decision``/``Alert`` objects' ``to_dict()``), one at a
time, so that ``riskctl simulate report`` streams its files; :func:`build_report` does both at once (the demo,
the tests).

* An attack is **caught** when a decision on one of its events is not PASS (the active rules that fired are
  named), or an alert names one of its events (``event_id``, ``trigger_event_id`` or a matched step).
* A **false positive** is a REVIEW/REJECT decision on an event without an attack label, or an alert that names
  no attack event; "legit users hit" counts their distinct users over every user with unlabelled events.
* Coverage: how many events got a decision (a run read from a topic may stop before the job caught up).

Memory does not grow with the size of the files, only with what must be remembered of each event: an event
id and a user id are kept as 8-byte keyed hashes (blake2b, a random key per report, so no file can be made
to collide them), about 8 bytes per event and 16 per distinct user, the attacks as small objects. Whatever a
hostile file could make grow without end is cut, and what was cut is counted in ``skipped``:

* at most :data:`MAX_EVENTS` events (what ``riskctl simulate`` writes at most), later ones are not read;
* at most :data:`MAX_ATTACKS` attacks, the events of later ones are left out;
* at most :data:`MAX_NAMES` distinct action and rule names, later ones are counted as ``(other)``;
* at most :data:`MAX_RULES_PER_ATTACK` rules named per attack.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from riskctl.sim.generator import ATTACKS

#: the most events a report reads (``riskctl simulate`` writes at most this many in one run): ~0.5 GB
MAX_EVENTS = 30_000_000
#: the most attacks a report follows (a run of MAX_EVENTS events with every session an attack has fewer)
MAX_ATTACKS = 3_000_000
#: the most distinct action and rule names counted; later ones are counted under OTHER
MAX_NAMES = 10_000
#: the most rules remembered per attack
MAX_RULES_PER_ATTACK = 64
OTHER = "(other)"
_FLUSH = 1 << 20  # user hashes buffered before they are merged into the sorted, distinct ones


def _d(value: Any) -> Mapping[str, Any]:
    """``value`` when it is an object, else an empty one: records read from a file or a topic may have any
    shape, and a report reads what it can of them instead of failing."""
    return value if isinstance(value, Mapping) else {}


def _alert_event_ids(alert: Mapping[str, Any]) -> set[str]:
    ids = [alert.get("event_id"), alert.get("trigger_event_id")]
    steps = _d(_d(_d(_d(alert.get("rule")).get("evidence")).get("match")).get("steps"))
    for names in steps.values():
        if isinstance(names, list):
            ids.extend(names)
    return {i for i in ids if isinstance(i, str)}


def _merge(sorted_distinct: np.ndarray, more: array) -> np.ndarray:
    if not more:
        return sorted_distinct
    return np.union1d(sorted_distinct, np.frombuffer(more, dtype=np.uint64))


def _find(keys: np.ndarray, h: int) -> int:
    """The index of ``h`` in the sorted ``keys``, or -1."""
    i = int(np.searchsorted(keys, np.uint64(h)))
    return i if i < len(keys) and int(keys[i]) == h else -1


class ReportBuilder:
    """Feed every event (:meth:`add_event`), then every record (:meth:`add_record`); :meth:`result` is the
    report. See the module docstring for what is kept and its bounds."""

    def __init__(self) -> None:
        self._key = os.urandom(16)
        self.events = 0
        self.skipped: Counter[str] = Counter()
        self._ids = array("Q")
        self._attack_ids = array("Q")  # hashes of the attack events, with their attack's index
        self._attack_of = array("q")
        self._attacks: list[dict[str, Any]] = []  # attack_id, attack, user_id
        self._attack_index: dict[str, int] = {}
        self._legit_buf = array("Q")
        self._clock_buf = array("Q")
        self._users_buf = array("Q")
        self._users = np.empty(0, dtype=np.uint64)
        self._legit = np.empty(0, dtype=np.uint64)
        self._clock = np.empty(0, dtype=np.uint64)
        self._frozen = False
        self._names: set[str] = set()
        self._caught: dict[int, set[str]] = {}
        self._fp_users = np.empty(0, dtype=bool)
        self._fp_by_rule: Counter[str] = Counter()
        self._fp_events = 0
        self._actions: Counter[str] = Counter()
        self._decided = np.empty(0, dtype=bool)
        self._decided_n = 0
        self._alerts = 0

    def _h(self, text: str) -> int:
        data = text.encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=self._key).digest(), "little")

    def _name(self, value: Any) -> str:
        name = str(value)
        if name in self._names:
            return name
        if len(self._names) >= MAX_NAMES:
            self.skipped["names_over_max_names"] += 1
            return OTHER
        self._names.add(name)
        return name

    # -- events ---------------------------------------------------------------------------------------------
    def add_event(self, e: Mapping[str, Any]) -> None:
        """One event (``event_id`` and ``user_id`` strings: the caller checks them)."""
        if self._frozen:
            msg = "events after records"
            raise RuntimeError(msg)
        if self.events >= MAX_EVENTS:
            self.skipped["events_over_max_events"] += 1
            return
        label = e.get("sim")
        h = self._h(e["event_id"])
        user = self._h(e["user_id"])
        self._users_buf.append(user)
        if len(self._users_buf) >= _FLUSH:
            self._users, self._users_buf = _merge(self._users, self._users_buf), array("Q")
        if isinstance(label, Mapping) and "attack_id" in label:
            # an attack as the generator labels it (generator.attacks_in); any other label is neither an
            # attack nor a legitimate user's event
            if (
                isinstance(label.get("attack_id"), str)
                and label.get("attack") in ATTACKS
                and type(e.get("ts")) is int
            ):
                index = self._attack_index.get(label["attack_id"])
                if index is None:
                    if len(self._attacks) >= MAX_ATTACKS:
                        self.skipped["events_over_max_attacks"] += 1
                        return
                    index = self._attack_index[label["attack_id"]] = len(self._attacks)
                    self._attacks.append(
                        {"attack_id": label["attack_id"], "attack": label["attack"], "user_id": e["user_id"]}
                    )
                self._attack_ids.append(h)
                self._attack_of.append(index)
        else:
            self._legit_buf.append(user)
            if len(self._legit_buf) >= _FLUSH:
                self._legit, self._legit_buf = _merge(self._legit, self._legit_buf), array("Q")
        if isinstance(label, Mapping) and label.get("role") == "clock":
            self._clock_buf.append(user)
            if len(self._clock_buf) >= _FLUSH:
                self._clock, self._clock_buf = _merge(self._clock, self._clock_buf), array("Q")
        self._ids.append(h)
        self.events += 1

    def _freeze(self) -> None:
        if self._frozen:
            return
        self._frozen = True
        self._ids_sorted = np.unique(np.frombuffer(self._ids, dtype=np.uint64))
        self._ids = array("Q")
        legit = _merge(self._legit, self._legit_buf)
        clock = _merge(self._clock, self._clock_buf)
        self._legit = np.setdiff1d(legit, clock, assume_unique=True)
        self._users = _merge(self._users, self._users_buf)
        self._legit_buf, self._clock_buf, self._users_buf = array("Q"), array("Q"), array("Q")
        self._clock = np.empty(0, dtype=np.uint64)
        keys = np.frombuffer(self._attack_ids, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        self._attack_keys = keys[order]
        self._attack_vals = np.frombuffer(self._attack_of, dtype=np.int64)[order]
        self._decided = np.zeros(len(self._ids_sorted), dtype=bool)
        self._fp_users = np.zeros(len(self._legit), dtype=bool)

    def _attack(self, event_id: str) -> int:
        keys = self._attack_keys
        h = np.uint64(self._h(event_id))
        i = int(np.searchsorted(keys, h, side="right")) - 1  # the last label wins, as in a dict
        return int(self._attack_vals[i]) if i >= 0 and keys[i] == h else -1

    def knows_event(self, event_id: Any) -> bool:
        """Whether ``event_id`` is one of the events read."""
        self._freeze()
        return isinstance(event_id, str) and _find(self._ids_sorted, self._h(event_id)) >= 0

    def knows_user(self, user_id: Any) -> bool:
        """Whether ``user_id`` has events among those read."""
        self._freeze()
        return isinstance(user_id, str) and _find(self._users, self._h(user_id)) >= 0

    def _legit_index(self, user_id: Any) -> int:
        return _find(self._legit, self._h(user_id)) if isinstance(user_id, str) else -1

    def _hit(self, attack: int, rule_id: str) -> None:
        rules = self._caught.setdefault(attack, set())
        if rule_id in rules:
            return
        if len(rules) >= MAX_RULES_PER_ATTACK:
            self.skipped["rules_over_max_rules_per_attack"] += 1
            return
        rules.add(rule_id)

    # -- records --------------------------------------------------------------------------------------------
    def add_record(self, r: Mapping[str, Any]) -> None:
        """One decision or alert record (any shape: read as far as it goes)."""
        self._freeze()
        if r.get("kind") == "alert":
            self._alerts += 1
            if r.get("shadow"):
                return
            rule_id = self._name(_d(r.get("rule")).get("id", "?"))
            hit = {a for a in (self._attack(i) for i in _alert_event_ids(r)) if a >= 0}
            for attack in hit:
                self._hit(attack, rule_id)
            user = self._legit_index(r.get("user_id"))
            if not hit and user >= 0:
                self._fp_users[user] = True
                self._fp_by_rule[rule_id] += 1
            return
        eid = r.get("event_id")
        pos = _find(self._ids_sorted, self._h(str(eid)))
        if pos < 0 or self._decided[pos]:
            return  # another run's record, or a duplicate (at-least-once delivery)
        self._decided[pos] = True
        self._decided_n += 1
        action = str(r.get("action", "PASS"))
        self._actions[self._name(action)] += 1
        if action == "PASS":
            return
        rules = r.get("rules")
        fired = [self._name(_d(x).get("id", "?")) for x in (rules if isinstance(rules, list) else [])]
        attack = self._attack(str(eid))
        if attack >= 0:
            for rule_id in fired:
                self._hit(attack, rule_id)
            return
        user = self._legit_index(r.get("user_id"))
        if user >= 0:
            self._fp_events += 1
            self._fp_users[user] = True
            for rule_id in fired:
                self._fp_by_rule[rule_id] += 1

    # -- the report -----------------------------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        """Attacks caught per scenario and by which rule, missed attacks, false positives."""
        self._freeze()
        scenarios: dict[str, dict[str, Any]] = {}
        missed: list[dict[str, Any]] = []
        kinds = sorted({a["attack"] for a in self._attacks}, key=lambda k: list(ATTACKS).index(k))
        for kind in kinds:
            mine = [(i, a) for i, a in enumerate(self._attacks) if a["attack"] == kind]
            by_rule: Counter[str] = Counter()
            caught = 0
            for i, a in mine:
                rules = self._caught.get(i)
                if rules:
                    caught += 1
                    by_rule.update(rules)
                else:
                    missed.append({"attack_id": a["attack_id"], "attack": kind, "user_id": a["user_id"]})
            expected = ATTACKS[kind]
            scenarios[kind] = {
                "attacks": len(mine),
                "caught": caught,
                "missed": len(mine) - caught,
                "expected_rule": expected,
                "by_expected_rule": by_rule.get(expected, 0),
                "by_rule": dict(by_rule.most_common()),
            }
        total = len(self._attacks)
        caught_total = sum(s["caught"] for s in scenarios.values())
        distinct = len(self._ids_sorted)
        legit = len(self._legit)
        fp_users = int(self._fp_users.sum())
        return {
            "events": self.events,
            "decided": self._decided_n,
            "coverage": round(self._decided_n / distinct, 4) if distinct else 1.0,
            "actions": dict(self._actions),
            "alerts": self._alerts,
            "attacks": total,
            "caught": caught_total,
            "catch_rate": round(caught_total / total, 4) if total else None,
            "scenarios": scenarios,
            "missed": missed,
            "legit_users": legit,
            "false_positive_users": fp_users,
            "false_positive_user_rate": round(fp_users / legit, 4) if legit else 0.0,
            "false_positive_decisions": self._fp_events,
            "false_positives_by_rule": dict(self._fp_by_rule.most_common()),
            "skipped": dict(self.skipped),
        }


def build_report(events: Iterable[Mapping[str, Any]], records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Attacks caught per scenario and by which rule, missed attacks, false positives (see the module doc).
    ``records`` is read after ``events``, once each."""
    builder = ReportBuilder()
    for e in events:
        builder.add_event(e)
    for r in records:
        builder.add_record(r)
    return builder.result()


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a few human-readable lines. Actions, rule ids, attack ids and user ids come from the
    files or topics read (anyone's text): they are shown escaped (:func:`riskctl.cli.common.printable`)."""
    from riskctl.cli.common import printable as p

    lines = [
        f"events {report['events']:,}, decided {report['decided']:,} ({100 * report['coverage']:.1f}%), "
        + "actions "
        + ", ".join(f"{p(k)} {v:,}" for k, v in sorted(report["actions"].items()))
        + f", alerts {report['alerts']:,}",
    ]
    rate = report["catch_rate"]
    lines.append(
        f"attacks caught: {report['caught']}/{report['attacks']}"
        + (f" ({100 * rate:.1f}%)" if rate is not None else "")
    )
    for kind, s in report["scenarios"].items():
        rules = ", ".join(f"{p(r)} {n}" for r, n in s["by_rule"].items()) or "-"
        lines.append(f"  {kind:<18} {s['caught']:>4}/{s['attacks']:<4} missed {s['missed']:<3} by: {rules}")
    if report["missed"]:
        shown = ", ".join(
            f"{p(m['attack_id'])} ({m['attack']}, {p(m['user_id'])})" for m in report["missed"][:5]
        )
        more = len(report["missed"]) - 5
        lines.append(f"missed: {shown}" + (f" and {more} more" if more > 0 else ""))
    skipped = report.get("skipped")
    if skipped:
        lines.append("skipped (over a limit): " + ", ".join(f"{k} {v:,}" for k, v in sorted(skipped.items())))
    fp = ", ".join(f"{p(r)} {n}" for r, n in report["false_positives_by_rule"].items())
    lines.append(
        f"false positives: {report['false_positive_users']} of {report['legit_users']:,} legit users "
        f"({100 * report['false_positive_user_rate']:.2f}%), {report['false_positive_decisions']} decisions"
        + (f" [{fp}]" if fp else "")
    )
    return "\n".join(lines)
