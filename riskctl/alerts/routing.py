"""Which channels an item goes to: the routes of the file, by rule, action, kind, reason and severity.

Routes are tried in file order; every route whose ``match`` holds adds its channels (each channel once, in
order of first mention); a matching route with ``stop: true`` ends the walk. When no route matched, the
item goes to ``default_channels`` (possibly none: it is then acknowledged without a message, and counted).
In ``match``, an empty or missing list matches anything; ``rules`` are shell patterns (``ato_*``) and hold
when any rule of the item matches one; ``min_severity`` holds for that severity and above.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from riskctl.alerts.model import AlertItem
from riskctl.alerts.settings import SEVERITY_RANK, AlertsConfig, Match, severity_of


@dataclass(frozen=True, slots=True)
class Routed:
    severity: str
    channels: tuple[str, ...]
    matched: bool  # False: no route matched (default channels, if any)


def matches(match: Match, item: AlertItem, severity: str) -> bool:
    """Whether one route's condition holds for ``item`` of ``severity``."""
    if match.actions and item.action not in match.actions:
        return False
    if match.kinds and item.kind not in match.kinds:
        return False
    if match.reasons and item.reason not in match.reasons:
        return False
    if match.min_severity is not None and SEVERITY_RANK[severity] < SEVERITY_RANK[match.min_severity]:
        return False
    if match.rules and not any(fnmatch.fnmatchcase(r.id, p) for r in item.rules for p in match.rules):
        return False
    return True


def route(config: AlertsConfig, item: AlertItem) -> Routed:
    """The severity of ``item`` and the channels it goes to."""
    severity = severity_of(config, tuple(r.id for r in item.rules), item.action)
    chosen: dict[str, None] = {}
    matched = False
    for r in config.routes:
        if matches(r.match, item, severity):
            matched = True
            chosen.update(dict.fromkeys(r.channels))
            if r.stop:
                break
    if not matched:
        chosen = dict.fromkeys(config.default_channels)
    return Routed(severity, tuple(chosen), matched)
