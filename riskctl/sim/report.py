"""What a simulated run caught: labelled events against the decisions and alerts the engine produced.

Pure (no I/O): :func:`build_report` takes the events (with their ``sim`` labels) and the records (decision
and alert dicts as the job writes them, or ``Decision``/``Alert`` objects' ``to_dict()``), so the CLI, the
demo and the tests share it.

* An attack is **caught** when a decision on one of its events is not PASS (the active rules that fired are
  named), or an alert names one of its events (``event_id``, ``trigger_event_id`` or a matched step).
* A **false positive** is a REVIEW/REJECT decision on an event without an attack label, or an alert that names
  no attack event; "legit users hit" counts their distinct users over every user with unlabelled events.
* Coverage: how many events got a decision (a run read from a topic may stop before the job caught up).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from riskctl.sim.generator import ATTACKS, attacks_in


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


def build_report(events: Iterable[Mapping[str, Any]], records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Attacks caught per scenario and by which rule, missed attacks, false positives (see the module doc)."""
    events = list(events)
    attacks = attacks_in([dict(e) for e in events])
    attack_of: dict[str, str] = {eid: a["attack_id"] for a in attacks.values() for eid in a["event_ids"]}
    legit_users = {
        e["user_id"] for e in events if not isinstance(e.get("sim"), Mapping) or "attack_id" not in e["sim"]
    }
    legit_users -= {
        e["user_id"] for e in events if isinstance(e.get("sim"), Mapping) and e["sim"].get("role") == "clock"
    }
    event_ids = {e["event_id"] for e in events}

    caught_by: dict[str, Counter[str]] = {a: Counter() for a in attacks}
    fp_users: set[str] = set()
    fp_by_rule: Counter[str] = Counter()
    fp_events = 0
    actions: Counter[str] = Counter()
    decided: set[str] = set()
    alerts = 0
    for r in records:
        if r.get("kind") == "alert":
            alerts += 1
            rule_id = str(_d(r.get("rule")).get("id", "?"))
            if r.get("shadow"):
                continue
            hit = {attack_of[i] for i in _alert_event_ids(r) if i in attack_of}
            for aid in hit:
                caught_by[aid][rule_id] += 1
            if not hit and isinstance(r.get("user_id"), str) and r["user_id"] in legit_users:
                fp_users.add(str(r["user_id"]))
                fp_by_rule[rule_id] += 1
            continue
        eid = str(r.get("event_id"))
        if eid not in event_ids or eid in decided:
            continue  # another run's record, or a duplicate (at-least-once delivery)
        decided.add(eid)
        action = str(r.get("action", "PASS"))
        actions[action] += 1
        if action == "PASS":
            continue
        rules = r.get("rules")
        fired = [str(_d(x).get("id", "?")) for x in (rules if isinstance(rules, list) else [])]
        attack_id = attack_of.get(eid)
        if attack_id is not None:
            for rule_id in fired:
                caught_by[attack_id][rule_id] += 1
        elif isinstance(r.get("user_id"), str) and r["user_id"] in legit_users:
            fp_events += 1
            fp_users.add(str(r["user_id"]))
            for rule_id in fired:
                fp_by_rule[rule_id] += 1

    scenarios: dict[str, dict[str, Any]] = {}
    missed: list[dict[str, Any]] = []
    for kind in sorted({a["attack"] for a in attacks.values()}, key=lambda k: list(ATTACKS).index(k)):
        mine = [a for a in attacks.values() if a["attack"] == kind]
        by_rule: Counter[str] = Counter()
        caught = 0
        for a in mine:
            rules = caught_by[a["attack_id"]]
            if rules:
                caught += 1
                by_rule.update(set(rules))
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
    total = len(attacks)
    caught_total = sum(s["caught"] for s in scenarios.values())
    return {
        "events": len(events),
        "decided": len(decided),
        "coverage": round(len(decided) / len(event_ids), 4) if event_ids else 1.0,
        "actions": dict(actions),
        "alerts": alerts,
        "attacks": total,
        "caught": caught_total,
        "catch_rate": round(caught_total / total, 4) if total else None,
        "scenarios": scenarios,
        "missed": missed,
        "legit_users": len(legit_users),
        "false_positive_users": len(fp_users),
        "false_positive_user_rate": round(len(fp_users) / len(legit_users), 4) if legit_users else 0.0,
        "false_positive_decisions": fp_events,
        "false_positives_by_rule": dict(fp_by_rule.most_common()),
    }


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
    fp = ", ".join(f"{p(r)} {n}" for r, n in report["false_positives_by_rule"].items())
    lines.append(
        f"false positives: {report['false_positive_users']} of {report['legit_users']:,} legit users "
        f"({100 * report['false_positive_user_rate']:.2f}%), {report['false_positive_decisions']} decisions"
        + (f" [{fp}]" if fp else "")
    )
    return "\n".join(lines)
