"""A user's recent events replayed with the current rules: each event's decision and the values of every
feature of every condition rule at that event (what a reviewer asks: "what did the engine see?").

Feature values come from the engine itself: each condition rule with features is run a second time as a
*probe*, a copy whose condition reads every feature and is always true (``f1 == f1 or ... or true``; the
validator refuses unused features, and the engine's evidence holds the feature values a condition saw), so
the values are the engine's, computed by the same code as in the job. Sequence rules have no probe: their
features show in the evidence of their matches. The events go through the door like ``riskctl replay``'s, and
are decided by the job's settings (:class:`~riskctl.cli.replay.ReplaySettings`) at the wall clock.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from riskctl.cli.replay import JOB_DEFAULTS, ReplaySettings
from riskctl.console.backtest import Budget
from riskctl.core.errors import RuleSetError
from riskctl.core.rules import Rule, parse_rule

#: events of one user replayed at most (the newest are kept)
MAX_USER_EVENTS = 2_000
PROBE_PREFIX = "probe."


def probe(document: Mapping[str, Any]) -> dict[str, Any] | None:
    """The probe of a condition rule with features, or None."""
    features = document.get("features")
    if not isinstance(features, Mapping) or not features or "when" not in document:
        return None
    if document.get("status") == "disabled":  # the job does not run it: no values to show
        return None
    reads = " or ".join(f"{name} == {name}" for name in features)
    return {
        "id": f"{PROBE_PREFIX}{document['id']}"[:64],
        "action": "PASS",
        "status": "active",
        "features": dict(features),
        "when": f"{reads} or true",
    }


def _run(
    rules: list[Rule], lines: Sequence[bytes], settings: ReplaySettings, now: int, budget: Budget, what: str
) -> list[dict[str, Any]]:
    out = io.StringIO()
    run = settings.replay(rules, out, now=now)
    for lineno, line in enumerate(lines, 1):
        budget.check(lineno, len(lines), what)
        run.feed(line, lineno)
    run.finish()
    return [json.loads(text) for text in out.getvalue().splitlines()]


def user_lines(data: bytes, user_id: str) -> list[bytes]:
    """The lines of ``data`` whose ``user_id`` is ``user_id`` (the newest :data:`MAX_USER_EVENTS`)."""
    mine: list[bytes] = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("user_id") == user_id:
            mine.append(line)
    return mine[-MAX_USER_EVENTS:]


def replay_user(
    documents: Sequence[Mapping[str, Any]],
    lines: Sequence[bytes],
    *,
    settings: ReplaySettings = JOB_DEFAULTS,
    now: int | None = None,
    seconds: float | None = None,
) -> list[dict[str, Any]]:
    """Per event (in order): id, type, ts, the decision's action, rules and shadow rules, whether it was
    late or too late and how far ahead of the clock, and ``features``: rule id -> {feature: value}; decided
    as the job does by ``settings``, ``now`` the clock (default: the wall clock). Rules that do not load are
    left out (the job refuses them too). Both runs (rules, probes) within ``seconds``
    (:data:`~riskctl.console.backtest.MAX_SECONDS`), else :class:`~riskctl.console.backtest.TimeLimitError`.
    """
    budget = Budget(seconds)
    at = int(time.time() * 1000) if now is None else now
    rules, probes = [], []
    for doc in documents:
        try:
            rules.append(parse_rule(doc))
            extra = probe(doc)
            if extra is not None:
                probes.append(parse_rule(extra))
        except RuleSetError:
            continue
    decided = _run(rules, lines, settings, at, budget, "the rules")
    probes_run = _run(probes, lines, settings, at, budget, "the feature values")
    probed = {r["event_id"]: r for r in probes_run if r.get("kind") == "decision"}
    out = []
    for record in decided:
        if record.get("kind") != "decision":
            continue
        seen = probed.get(record["event_id"], {})
        features = {
            fired["id"][len(PROBE_PREFIX) :]: fired["evidence"].get("features", {})
            for fired in seen.get("rules", [])
        }
        out.append(
            {
                "event_id": record["event_id"],
                "type": record["type"],
                "ts": record["ts"],
                "action": record["action"],
                "rules": [r["id"] for r in record["rules"]],
                "shadow": [r["id"] for r in record["shadow"]],
                "late": record["late"],
                "too_late": record["too_late"],
                "ahead_ms": record["ahead_ms"],
                "features": features,
            }
        )
    return out
