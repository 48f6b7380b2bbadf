"""Messages from templates, safely: ``{name}`` fields filled from a fixed mapping of strings.

Rendering walks the template with :class:`string.Formatter`'s parser and joins literal text with the values
of the fields; it never calls ``str.format`` (whose ``{x.__class__}`` and ``{x[0]}`` reach into objects), and
templates with anything but plain names were refused when the file loaded
(:func:`riskctl.alerts.settings.check_template`). Values from the record are cut to a bounded length and
escaped for the channel's markup (``markdown`` for DingTalk, ``slack`` for Slack's mrkdwn, ``text``), so a
user id cannot inject a link or a mention, and :func:`defang`-ed (``http[:]//evil[.]example``), so no client
makes a link of a URL or a host name in it: the configured ``link`` is the only link of a message;
control characters, line breaks (``\\n``, U+0085, U+2028, U+2029)
and bidirectional controls in them are replaced by ``?``, so a value cannot add a line to a message or break
an e-mail header; the other invisible format characters (zero-width ones, soft hyphen, BOM...) by U+FFFD.
A title is one line. The ``link`` is its own template whose values are URL-quoted.

Fields: ``id``/``alert_id``, ``kind``, ``rule`` (the rule ids, comma separated), ``rule_version``,
``rules``, ``action``, ``severity``, ``reason``, ``user_id``, ``event_id``, ``trigger_event_id``, ``ts``
(ms), ``time`` (UTC, ISO 8601), ``ruleset_version``, ``shadow``, ``explanation`` (one line per rule: the
event fields and features its condition read, with their values as JSON, strings in quotes; per sequence
step, the events it matched with what each step read),
``link``; in a digest: ``count``, ``items``, ``channel``.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from riskctl.alerts.model import AlertItem
from riskctl.alerts.settings import Template

#: characters of one value shown in a message
MAX_VALUE_CHARS = 200
#: characters of the explanation of one item
MAX_EXPLANATION_CHARS = 3_000
#: characters of a rendered title / body
MAX_TITLE_CHARS = 256
MAX_BODY_CHARS = 16_000
#: UTF-8 bytes of a body, for the receivers that count bytes: DingTalk refuses a markdown text over 20,000
#: bytes (16,000 characters of CJK or emoji are up to 64,000), so its body is also cut to this (room left for
#: the title, at most 1,024); Slack's limit (40,000 characters) and e-mail's are above MAX_BODY_CHARS
MAX_BODY_BYTES = {"dingtalk": 18_000}
#: backslash-escaped in a value for DingTalk's markdown: its punctuation, and ``&``, which would start a
#: character reference (``&period;``, ``&colon;``, ``&rlm;``: a renderer shows the character, so a value could
#: spell a URL or a bidirectional mark that the escaping and defanging took out)
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&])")
#: replaced in every value shown: C0 and C1 controls (tab and line feed included: a value is one line, so a
#: user id cannot add a line to a message), the Unicode line and paragraph separators, and the bidirectional
#: embedding, override and isolate controls (which can make an id read as another)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: replaced by U+FFFD in every value shown: the other invisible format characters (Unicode category Cf, as of
#: Unicode 15): zero-width space and joiners, LRM/RLM, word joiner, invisible operators, BOM, soft hyphen,
#: Arabic and Mongolian marks, tag characters. Chat clients drop them when they make links, so
#: ``evil\u200b.example`` or ``http:\u200b//evil`` slipped past the defanging (no letter next to the dot,
#: no ``//`` after the colon) and showed as a link; they also make two ids look alike. The reviewer sees that
#: the value held one, and U+FFFD counts as a letter for the dots around it
_FORMAT = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cut_bytes(text: str, limit: int) -> str:
    """``text`` within ``limit`` bytes of UTF-8, cut at a character boundary (then ``...``)."""
    data = text.encode()
    return text if len(data) <= limit else data[: limit - 3].decode(errors="ignore") + "..."


#: Slack's formatting characters (mrkdwn has no escape for them: only ``& < >`` have entities) and the
#: look-alikes shown instead: a backtick always (it opens or closes code anywhere), ``* _ ~`` (and their
#: full-width forms) unless both neighbours are letters or digits (Slack formats only at a word's edge:
#: ``transfer_velocity`` stays as it is, ``_x_`` or ``*x*`` in a value cannot make italics or bold)
_SLACK_LOOKALIKE = {
    "`": "\u02cb",  # MODIFIER LETTER GRAVE ACCENT
    "\uff40": "\u02cb",
    "*": "\u2217",  # ASTERISK OPERATOR
    "\uff0a": "\ufe61",  # SMALL ASTERISK
    "_": "\u02cd",  # MODIFIER LETTER LOW MACRON
    "\uff3f": "\u02cd",
    "~": "\u223c",  # TILDE OPERATOR
    "\uff5e": "\u223c",
}
_SLACK_FORMAT = re.compile(r"`|\uff40|(?<![^\W_])[*_~\uff0a\uff3f\uff5e]|[*_~\uff0a\uff3f\uff5e](?![^\W_])")


def _slack(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SLACK_FORMAT.sub(lambda m: _SLACK_LOOKALIKE[m.group()], text)


#: what makes a client turn text into a link (DingTalk's markdown, Slack, a mail client showing plain text):
#: a scheme's ``://`` (or ``:\\``), ``mailto:``, a protocol-relative ``//host``, and a host name's dots
#: (``www.evil.example``, ``evil.example/login``, the domain of ``a@evil.example``): a dot (or an ideographic
#: or full-width one, which IDNA reads as a dot) between a letter or digit and a letter; and the dots of an
#: IPv4 address
_SCHEME_SEP = re.compile(r":(?=[/\\]{2})|(?<=(?i:mailto)):")
#: a protocol-relative ``//host/...`` (not the ``//`` of a scheme, already ``[:]//``)
_PROTOCOL_RELATIVE = re.compile(r"(?<![:\]\w/\\])//")
_DOT_CHARS = ".\u2024\u3002\ufe52\uff0e\uff61"
_DOT = re.compile(f"[{_DOT_CHARS}]")
_HOST_DOT = re.compile(rf"(?<=[^\W_]|\ufffd)[{_DOT_CHARS}](?=[^\W\d_]|\ufffd)")
_IPV4 = re.compile(rf"(?<![\d{_DOT_CHARS}])\d{{1,3}}(?:\ufffd*[{_DOT_CHARS}]\ufffd*\d{{1,3}}){{3}}(?!\d)")


def defang(text: str) -> str:
    """``text`` that no client shows as a link: ``http://evil.example`` reads ``http[:]//evil[.]example``,
    ``www.evil.example`` ``www[.]evil[.]example``, ``10.0.0.1`` ``10[.]0[.]0[.]1``, ``mailto:x@y``
    ``mailto[:]x@y``, ``//intranet:8080/x`` ``[//]intranet:8080/x``; numbers (``12.5``,
    ``v1.2``) are unchanged."""
    text = _SCHEME_SEP.sub("[:]", text)
    text = _PROTOCOL_RELATIVE.sub("[//]", text)
    text = _IPV4.sub(lambda m: _DOT.sub(_bracket, m.group()), text)
    return _HOST_DOT.sub(_bracket, text)


def _bracket(m: re.Match[str]) -> str:
    return f"[{m.group()}]"


def escape(text: str, style: str, *, links: bool = False) -> str:
    """``text`` made inert for a channel's markup: ``markdown``, ``slack`` or ``text``; unless ``links``
    (text of the configuration, a channel's name), what would show as a link is :func:`defang`-ed."""
    text = _FORMAT.sub("\ufffd", _CONTROL.sub("?", text))
    if not links:
        text = defang(text)
    if style == "markdown":
        return _MD_SPECIAL.sub(r"\\\1", text)
    if style == "slack":
        return _slack(text)
    return text


def _value(value: Any) -> str:
    """A value of the record in the explanation, as JSON: a string in quotes, cut before it is quoted (so its
    closing quote stays), its own quotes and backslashes escaped. Shown bare, a string was read as more of the
    line: a free-text field ``ok, amount = 5 -> PASS`` made ``memo = ok, amount = 5 -> PASS, amount = 9000``,
    a second amount and a verdict, and an event id ``e2 (amount = 1); e3`` forged what a step matched; in
    quotes it is one value, and ``"9000"`` (a string) no longer reads as the number 9000."""
    if isinstance(value, str):
        return orjson.dumps(_cut(value, MAX_VALUE_CHARS)).decode()
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = repr(value)
    return _cut(text, MAX_VALUE_CHARS)


def _values(section: Any) -> list[str]:
    """``name = value`` for each entry of an evidence mapping (``fields`` or ``features``), at most 32."""
    if not isinstance(section, Mapping):
        return []
    return [f"{_cut(str(name), 64)} = {_value(value)}" for name, value in list(section.items())[:32]]


def explanation(item: AlertItem, style: str) -> str:
    """What made each rule fire, escaped for ``style``: one line per rule with the event fields its condition
    read and its features (``evidence.fields``, ``evidence.features``); for a sequence, one line per step with
    the events it matched and, when the record has them (``evidence.match.events``), what each event's step
    read when it was matched.
    """
    lines: list[str] = []
    for r in item.rules:
        ev = r.evidence
        parts = _values(ev.get("fields")) + _values(ev.get("features"))
        for name, value in list(ev.items())[:32]:
            if name not in ("fields", "features", "match") and not isinstance(value, Mapping | list):
                parts.append(f"{_cut(str(name), 64)} = {_value(value)}")
        head = f"{r.id} v{r.version} -> {r.action}"
        lines.append(escape(f"{head}: {', '.join(parts)}" if parts else head, style))
        match = ev.get("match")
        if not isinstance(match, Mapping):
            continue
        raw_events, raw_steps = match.get("events"), match.get("steps")
        events: Mapping[str, Any] = raw_events if isinstance(raw_events, Mapping) else {}
        steps: Mapping[str, Any] = raw_steps if isinstance(raw_steps, Mapping) else {}
        for step in list(dict.fromkeys([*steps, *events]))[:16]:
            matched = events.get(step)
            if isinstance(matched, list) and matched:
                shown = []
                for e in matched[:10]:
                    if not isinstance(e, Mapping):
                        continue
                    read = _values(e.get("fields")) + _values(e.get("features"))
                    eid = _value(e.get("event_id"))
                    shown.append(f"{eid} ({', '.join(read)})" if read else eid)
                text = "; ".join(shown)
            else:
                ids = steps.get(step)
                text = ", ".join(_value(i) for i in ids[:10]) if isinstance(ids, list) else _value(ids)
            lines.append(escape(f"  step {_cut(str(step), 64)}: {text}", style))
    bullet = "- " if style in ("markdown", "slack") else "  "
    return _cut("\n".join(bullet + line for line in lines), MAX_EXPLANATION_CHARS)


def iso_time(ts: int) -> str:
    """Event time (ms) as UTC ISO 8601."""
    try:
        return dt.datetime.fromtimestamp(ts / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` replaced by ``values[name]`` (missing names: empty); no code runs."""
    out: list[str] = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(values.get(name, ""))
    return "".join(out)


def link_for(link_template: str, item: AlertItem, severity: str) -> str:
    """The review link: the ``link`` template with URL-quoted values."""
    if not link_template:
        return ""
    raw = {
        "id": item.id,
        "alert_id": item.id,
        "kind": item.kind,
        "rule": item.rule.id,
        "action": item.action,
        "severity": severity,
        "user_id": item.user_id,
        "event_id": item.event_id or "",
    }
    return render(link_template, {k: quote(v, safe="") for k, v in raw.items()})


def context(item: AlertItem, severity: str, link: str, style: str, channel: str = "") -> dict[str, str]:
    """The values a template of ``style`` can use for one item."""

    def e(text: str) -> str:
        return escape(_cut(text, MAX_VALUE_CHARS), style)

    rule_ids = ", ".join(r.id for r in item.rules)
    return {
        "id": e(item.id),
        "alert_id": e(item.id),
        "kind": item.kind,
        "rule": e(rule_ids),
        "rule_version": str(item.rule.version),
        "rules": e(", ".join(f"{r.id} v{r.version} ({r.action})" for r in item.rules)),
        "action": item.action,
        "severity": severity,
        "reason": e(item.reason),
        "user_id": e(item.user_id),
        "event_id": e(item.event_id or "-"),
        "trigger_event_id": e(item.trigger_event_id or "-"),
        "ts": str(item.ts),
        "time": iso_time(item.ts),
        "ruleset_version": e(item.ruleset_version),
        "shadow": "yes" if item.shadow else "no",
        "explanation": explanation(item, style),
        "link": link,
        "channel": escape(channel, style, links=True),
        "count": "1",
        "items": "",
    }


def message(
    template: Template, values: Mapping[str, str], max_body_bytes: int | None = None
) -> tuple[str, str]:
    """(title, body) of one message, each within its length limit (the body also within ``max_body_bytes``
    of UTF-8 when given: :data:`MAX_BODY_BYTES` of the channel's type); the title is one line (every line
    break of the template's own text, ``\\r`` or U+2028 included, becomes a space: it is an e-mail Subject
    header).
    """
    title = " ".join(render(template.title, values).splitlines())
    body = _cut(render(template.body, values), MAX_BODY_CHARS)
    if max_body_bytes is not None:
        body = _cut_bytes(body, max_body_bytes)
    return _cut(title, MAX_TITLE_CHARS), body


def digest_values(
    entries: Sequence[tuple[AlertItem, str, str]], style: str, channel: str, max_items: int
) -> dict[str, str]:
    """Values of a digest of ``entries`` (item, severity, link): ``count``, ``items`` (one line each, at
    most ``max_items``, then how many more), ``channel``.
    """
    lines = []
    for item, severity, link in entries[:max_items]:
        text = (
            f"[{severity}] {', '.join(r.id for r in item.rules)} {item.action} user {_cut(item.user_id, 64)} "
            f"event {_cut(item.event_id or '-', 64)} at {iso_time(item.ts)}"
        )
        line = escape(text, style)
        if link:
            line += (
                f" {link}"
                if style == "text"
                else (f" [open]({link})" if style == "markdown" else f" <{link}|open>")
            )
        lines.append(("- " if style != "text" else "  ") + line)
    if len(entries) > max_items:
        lines.append(f"... and {len(entries) - max_items} more")
    shown = escape(channel, style, links=True)
    return {"count": str(len(entries)), "items": "\n".join(lines), "channel": shown}


STYLE = {"webhook": "text", "dingtalk": "markdown", "slack": "slack", "email": "text", "sms": "text"}
