"""The dispatcher's file: channels, routes, severities, templates, delivery and rate limits.

YAML (read with the bounded loader of the rule files: no aliases, anchors, merge keys or duplicate keys,
limited depth and size) or JSON. Every problem is collected and reported at once, as a
:class:`~riskctl.errors.ConfigError` whose lines read ``<field>: <reason>``; nothing starts with a bad file.

Secrets (webhook URLs carry tokens, the DingTalk secret, a bearer token, the SMTP password) are given either
in the file or, better, as ``{env: VARIABLE}``: read from the environment when the file loads, refused when
the variable is missing or empty, and (never stripped) when a secret holds a control character, a token is not
Latin-1 (an HTTP header) or a password not ASCII (smtplib's login): such values would fail every delivery.
They never appear in ``describe()`` or in error messages. See
docs/alerts.md and alerts.example.yaml.
"""

from __future__ import annotations

import fnmatch
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from riskctl.alerts.model import ACTIONS, DEFAULT_MAX_RECORD_BYTES
from riskctl.errors import ConfigError

SEVERITIES = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK = {name: i for i, name in enumerate(SEVERITIES)}
#: severities of the actions when the file has no ``severity.actions`` (when it has, actions it does not name
#: take ``severity.default``)
DEFAULT_ACTION_SEVERITY = {"REJECT": "high", "REVIEW": "medium", "PASS": "low"}
CHANNEL_TYPES = ("webhook", "dingtalk", "slack", "email", "sms")
KINDS = ("alert", "review")
#: bytes of the file
MAX_FILE_BYTES = 262_144
MAX_CHANNELS = 64
#: a webhook's body (``max_body_bytes``): by default 1 MiB, what a receiver behind nginx accepts unless told
#: otherwise (``client_max_body_size``; more is refused with 413, a permanent failure); at least 128 KiB, room
#: for the title and text (16,000 characters, JSON-escaped) with no item; at most 64 MiB
DEFAULT_WEBHOOK_BODY_BYTES = 1_048_576
MIN_WEBHOOK_BODY_BYTES = 131_072
MAX_WEBHOOK_BODY_BYTES = 67_108_864
MAX_ROUTES = 256
#: characters of one template
MAX_TEMPLATE_CHARS = 8_192
#: names a template may use (see riskctl.alerts.templates.context)
TEMPLATE_FIELDS = frozenset(
    {
        "id",
        "alert_id",
        "kind",
        "rule",
        "rule_version",
        "rules",
        "action",
        "severity",
        "reason",
        "user_id",
        "event_id",
        "trigger_event_id",
        "ts",
        "time",
        "ruleset_version",
        "shadow",
        "explanation",
        "link",
        "count",
        "items",
        "channel",
    }
)
#: fields a link template may use (their values are URL-quoted)
LINK_FIELDS = frozenset({"id", "alert_id", "kind", "rule", "action", "severity", "user_id", "event_id"})
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEADER_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
#: characters no secret may hold: C0 and C1 controls (a line break at the end of a mounted secret file among
#: them) and the Unicode line separators; they would break the header or signature the secret goes into
_SECRET_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class RateLimit:
    """At most ``max`` messages per ``window_s`` seconds; the rest go out as one digest when it ends."""

    max: int
    window_s: float


@dataclass(frozen=True)
class Template:
    title: str
    body: str


DIGEST_TEMPLATE = Template(
    "[riskctl] {count} alerts on {channel} (rate limit reached)",
    "{count} alerts arrived beyond the rate limit of {channel}:\n{items}",
)
#: an SMS digest says how many, not which: a list would not fit a segment or two
SMS_DIGEST_TEMPLATE = Template(
    "[riskctl] {count} alerts on {channel}",
    "[riskctl] {count} more alerts held back by the rate limit of {channel}",
)
#: an SMS sender: a phone number in E.164 (+ and up to 15 digits), a Twilio Messaging Service SID, or an
#: alphanumeric sender ID (1-11 letters, digits and spaces, at least one letter)
_PHONE_RE = re.compile(r"\+[1-9][0-9]{6,14}")
_SMS_FROM_RE = re.compile(r"\+[1-9][0-9]{6,14}|MG[0-9a-fA-F]{32}|(?=[A-Za-z0-9 ]*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_ACCOUNT_SID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Channel:
    """One destination. ``url`` and ``secret``/``token``/``password`` are secrets (from the environment)."""

    name: str
    type: str
    template: Template
    url: str = ""
    secret: str = ""  # dingtalk: the signing secret (SEC...)
    token: str = ""  # webhook: sent as "Authorization: Bearer <token>"
    headers: Mapping[str, str] = field(default_factory=dict)
    #: webhook: the largest JSON body sent; a digest's ``items`` beyond it are left out and counted
    max_body_bytes: int = DEFAULT_WEBHOOK_BODY_BYTES
    rate_limit: RateLimit | None = None
    #: the message that lists what the rate limit held back (fields count, items, channel)
    digest_template: Template = field(default_factory=lambda: DIGEST_TEMPLATE)
    # email
    host: str = ""
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str = ""
    password: str = ""
    sender: str = ""
    to: tuple[str, ...] = ()
    #: sms: the most segments one message may take (riskctl.alerts.sms); ``username`` is the account SID,
    #: ``password`` the auth token, ``url`` the API's base (empty: Twilio's)
    max_segments: int = 2

    def describe(self) -> dict[str, Any]:
        """What is safe to print: no URL (webhook URLs carry tokens), no secret."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.url:
            parts = urlsplit(self.url)
            out["url"] = f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}/..."
        if self.type == "email":
            out.update({"host": self.host, "port": self.port, "to": list(self.to)})
        if self.type == "sms":
            out.update({"provider": "twilio", "to": list(self.to), "max_segments": self.max_segments})
        if self.type == "webhook":
            out["max_body_bytes"] = self.max_body_bytes
        out["signed"] = bool(self.secret)
        if self.rate_limit:
            out["rate_limit"] = {"max": self.rate_limit.max, "window_s": self.rate_limit.window_s}
        return out


@dataclass(frozen=True)
class Match:
    """A route's condition; an empty list (or None) matches anything."""

    rules: tuple[str, ...] = ()  # fnmatch patterns of rule ids
    actions: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    min_severity: str | None = None


@dataclass(frozen=True)
class Route:
    match: Match
    channels: tuple[str, ...]
    stop: bool = False


@dataclass(frozen=True)
class Delivery:
    """Attempts per message before it is dead-lettered, and the backoff between them."""

    attempts: int = 5
    backoff_ms: int = 500
    max_backoff_ms: int = 30_000
    timeout_ms: int = 5_000


@dataclass(frozen=True)
class AlertsConfig:
    channels: Mapping[str, Channel]
    routes: tuple[Route, ...]
    default_channels: tuple[str, ...] = ()
    severity_default: str = "medium"
    severity_by_action: Mapping[str, str] = field(default_factory=dict)
    severity_by_rule: Mapping[str, str] = field(default_factory=dict)
    link: str = ""
    review_decisions: bool = False
    delivery: Delivery = field(default_factory=Delivery)
    dedup_size: int = 100_000
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    digest_max_items: int = 50
    #: per channel while it is failing: items queued, being retried or held for a digest; beyond, new items
    #: for the channel are dead-lettered at once ("backlog full"), so a channel that is down cannot stall
    #: the consumer
    max_backlog: int = 1_000
    #: records read and not finished (every channel delivered or dead-lettered); beyond, reading pauses
    max_in_flight: int = 5_000

    def describe(self) -> dict[str, Any]:
        """The configuration without secrets, for ``riskctl alerts check``."""
        return {
            "channels": [c.describe() for c in self.channels.values()],
            "routes": [
                {
                    "match": {k: v for k, v in vars(r.match).items() if v},
                    "channels": list(r.channels),
                    "stop": r.stop,
                }
                for r in self.routes
            ],
            "default_channels": list(self.default_channels),
            "review_decisions": self.review_decisions,
            "delivery": vars(self.delivery),
        }


DEFAULT_TEMPLATES = {
    "webhook": Template("[{severity}] {rule}: {action} for user {user_id}", "{explanation}\n{link}"),
    "dingtalk": Template(
        "[{severity}] {rule} {action}",
        "### [{severity}] {rule} ({action})\n\n- user: {user_id}\n- event: {event_id}\n- reason: {reason}\n"
        "- time: {time}\n\n{explanation}\n\n[open in review]({link})",
    ),
    "slack": Template(
        "[{severity}] {rule} {action}",
        "*[{severity}] {rule}* ({action}) user `{user_id}` event `{event_id}` reason {reason} at {time}\n"
        "{explanation}\n<{link}|open in review>",
    ),
    "sms": Template(
        "[riskctl {severity}] {rule} {action}",
        # the link before the values: a long user id is what the cut to max_segments drops, not the link
        "[riskctl {severity}] {rule} {action} {link} user {user_id} event {event_id}",
    ),
    "email": Template(
        "[riskctl {severity}] {rule}: {action} for user {user_id}",
        "Rule {rule} (version {rule_version}) asks for {action}.\n\nuser: {user_id}\nevent: {event_id}\n"
        "reason: {reason}\ntime: {time}\n\nWhy:\n{explanation}\n\nReview: {link}\n",
    ),
}


class _Errors:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, reason: str) -> None:
        self.lines.append(f"{where}: {reason}")


def _mapping(value: Any, where: str, errs: _Errors, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errs.add(where, f"must be a mapping, got {type(value).__name__}")
        return {}
    for key in value:
        if key not in keys:
            close = [k for k in keys if k.startswith(str(key)[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errs.add(f"{where}.{key}" if where else str(key), f"unknown key{hint}; known: {', '.join(keys)}")
    return value


def _int(value: Any, where: str, errs: _Errors, low: int, high: int, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errs.add(where, f"must be an integer between {low} and {high}, got {str(value)[:40]!r}")
        return default
    return value


def _bool(value: Any, where: str, errs: _Errors, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        errs.add(where, f"must be true or false, got {str(value)[:40]!r}")
        return default
    return value


def _str_list(
    value: Any, where: str, errs: _Errors, choices: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 256 for v in value):
        errs.add(where, "must be a list of non-empty strings")
        return ()
    if choices is not None:
        for v in value:
            if v not in choices:
                errs.add(where, f"{v!r} is not one of {', '.join(choices)}")
    return tuple(value)


def _secret(
    value: Any,
    where: str,
    errs: _Errors,
    env: Mapping[str, str],
    *,
    required: bool,
    encoding: str | None = None,
    use: str = "",
) -> str:
    """A plain string, or ``{env: NAME}`` read from the environment; refused (never stripped) when it holds
    a control character, or characters ``encoding`` cannot write (``use`` says where it goes).
    """
    got = _secret_text(value, where, errs, env, required=required)
    bad = _SECRET_CONTROL.search(got)
    if bad is not None:
        errs.add(
            where,
            f"contains a control character (U+{ord(bad.group()):04X}; a line break at the end of a secret "
            "file or variable is one): remove it (the value is not shown)",
        )
    elif encoding is not None:
        try:
            got.encode(encoding)
        except UnicodeEncodeError as exc:
            errs.add(
                where,
                f"contains a character that is not {encoding.upper()} (U+{ord(got[exc.start]):04X}), "
                f"which {use} cannot carry (the value is not shown)",
            )
    return got


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _secret_text(value: Any, where: str, errs: _Errors, env: Mapping[str, str], *, required: bool) -> str:
    if value is None:
        if required:
            errs.add(where, "missing")
        return ""
    if isinstance(value, Mapping):
        if set(value) != {"env"} or not isinstance(value["env"], str):
            errs.add(where, "must be a string or {env: VARIABLE_NAME}")
            return ""
        name = value["env"]
        got = env.get(name, "")
        if not got:
            errs.add(where, f"the environment variable {name} is not set (or empty)")
        return got
    if not isinstance(value, str) or (required and not value):
        errs.add(where, "must be a non-empty string or {env: VARIABLE_NAME}")
        return ""
    return value


def _url(value: str, where: str, errs: _Errors) -> None:
    if not value:
        return
    try:
        parts = urlsplit(value)
        ok = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and (parts.port is None or parts.port > 0)
        )
    except ValueError:  # a port that is not a number, or out of range
        ok = False
    if not ok or any(c in value for c in "\r\n\t "):
        msg = (
            "must be an http:// or https:// URL with a host and a valid port "
            "(value not shown: it may hold a token)"
        )
        errs.add(where, msg)


def check_template(text: Any, where: str, errs: _Errors, allowed: frozenset[str] = TEMPLATE_FIELDS) -> str:
    """A template: text with ``{name}`` fields from ``allowed``; no attribute, index, conversion or format
    spec (``{x.__class__}``, ``{x[0]}``, ``{x!r}``, ``{x:>99999}`` are refused), so rendering runs no code.
    """
    if not isinstance(text, str):
        errs.add(where, "must be a string")
        return ""
    if len(text) > MAX_TEMPLATE_CHARS:
        errs.add(where, f"too long ({len(text)} characters, limit {MAX_TEMPLATE_CHARS})")
        return ""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        errs.add(where, f"not a valid template: {exc} (write {{{{ and }}}} for literal braces)")
        return ""
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in allowed:
            errs.add(where, f"unknown field {{{name[:40]}}}; known: {', '.join(sorted(allowed))}")
        elif spec or conversion:
            errs.add(where, f"{{{name}}}: format specs and conversions are not allowed")
    return text


def _template(raw: Any, where: str, errs: _Errors, default: Template) -> Template:
    doc = _mapping(raw, where, errs, ("title", "body"))
    title = check_template(doc["title"], f"{where}.title", errs) if "title" in doc else default.title
    body = check_template(doc["body"], f"{where}.body", errs) if "body" in doc else default.body
    return Template(title, body)


_CHANNEL_KEYS = {
    "webhook": (
        "type",
        "url",
        "token",
        "headers",
        "max_body_bytes",
        "rate_limit",
        "template",
        "digest_template",
    ),
    "dingtalk": ("type", "url", "secret", "rate_limit", "template", "digest_template"),
    "slack": ("type", "url", "rate_limit", "template", "digest_template"),
    "sms": (
        "type",
        "url",
        "account_sid",
        "auth_token",
        "from",
        "to",
        "max_segments",
        "rate_limit",
        "template",
        "digest_template",
    ),
    "email": (
        "type",
        "host",
        "port",
        "starttls",
        "ssl",
        "username",
        "password",
        "from",
        "to",
        "rate_limit",
        "template",
        "digest_template",
    ),
}


def _channel(name: str, raw: Any, errs: _Errors, env: Mapping[str, str]) -> Channel | None:
    where = f"channels.{name}"
    if not _NAME_RE.fullmatch(name):
        errs.add(where, "a channel name is 1-64 of A-Z a-z 0-9 _ . - and starts with a letter or digit")
    if not isinstance(raw, Mapping):
        errs.add(where, "must be a mapping")
        return None
    kind = raw.get("type")
    if kind not in CHANNEL_TYPES:
        errs.add(f"{where}.type", f"must be one of {', '.join(CHANNEL_TYPES)}, got {str(kind)[:40]!r}")
        return None
    doc = _mapping(raw, where, errs, _CHANNEL_KEYS[kind])
    rate = None
    if doc.get("rate_limit") is not None:
        r = _mapping(doc["rate_limit"], f"{where}.rate_limit", errs, ("max", "window_s"))
        window = r.get("window_s", 60)
        if isinstance(window, bool) or not isinstance(window, int | float) or not 0.1 <= window <= 86_400:
            errs.add(f"{where}.rate_limit.window_s", "must be a number of seconds between 0.1 and 86400")
            window = 60
        rate = RateLimit(_int(r.get("max"), f"{where}.rate_limit.max", errs, 1, 100_000, 1), float(window))
    template = _template(doc.get("template"), f"{where}.template", errs, DEFAULT_TEMPLATES[kind])
    digest = _template(
        doc.get("digest_template"),
        f"{where}.digest_template",
        errs,
        SMS_DIGEST_TEMPLATE if kind == "sms" else DIGEST_TEMPLATE,
    )
    if kind == "sms":
        return _sms_channel(name, doc, errs, env, template, digest, rate)
    if kind == "email":
        port = _int(doc.get("port"), f"{where}.port", errs, 1, 65_535, 25)
        host = doc.get("host")
        if not isinstance(host, str) or not host or len(host) > 253:
            errs.add(f"{where}.host", "missing (the SMTP server's host name)")
            host = ""
        sender = doc.get("from")
        if (
            not isinstance(sender, str)
            or "@" not in sender
            or len(sender) > 254
            or set(sender) & set("\r\n, ")
        ):
            errs.add(f"{where}.from", "must be an e-mail address")
            sender = ""
        to = _str_list(doc.get("to"), f"{where}.to", errs)
        if not to or any("@" not in a or set(a) & set("\r\n, ") for a in to):
            errs.add(f"{where}.to", "must be a non-empty list of e-mail addresses")
        username = doc.get("username", "")
        if not isinstance(username, str):
            errs.add(f"{where}.username", "must be a string")
            username = ""
        password = _secret(
            doc.get("password"),
            f"{where}.password",
            errs,
            env,
            required=bool(username),
            encoding="ascii",
            use="the SMTP login (smtplib sends it as ASCII)",
        )
        starttls = _bool(doc.get("starttls"), f"{where}.starttls", errs, False)
        ssl = _bool(doc.get("ssl"), f"{where}.ssl", errs, False)
        if starttls and ssl:
            errs.add(f"{where}.ssl", "give starttls or ssl, not both")
        return Channel(
            name,
            kind,
            template,
            rate_limit=rate,
            digest_template=digest,
            host=host,
            port=port,
            starttls=starttls,
            ssl=ssl,
            username=username,
            password=password,
            sender=sender,
            to=to,
        )
    url = _secret(doc.get("url"), f"{where}.url", errs, env, required=True)
    _url(url, f"{where}.url", errs)
    headers: dict[str, str] = {}
    if kind == "webhook" and doc.get("headers") is not None:
        h = doc["headers"]
        if not isinstance(h, Mapping) or not all(
            isinstance(k, str)
            and _HEADER_RE.fullmatch(k)
            and isinstance(v, str)
            and len(v) <= 1024
            and _SECRET_CONTROL.search(v) is None
            and _latin1(v)
            for k, v in h.items()
        ):
            errs.add(
                f"{where}.headers",
                "must map header names (A-Z a-z 0-9 -) to one-line strings of Latin-1 characters (what an "
                "HTTP header carries) without control characters",
            )
        else:
            headers = dict(h)
    return Channel(
        name,
        kind,
        template,
        url=url,
        secret=_secret(doc.get("secret"), f"{where}.secret", errs, env, required=False),
        token=_secret(
            doc.get("token"),
            f"{where}.token",
            errs,
            env,
            required=False,
            encoding="latin-1",
            use="an HTTP header (Authorization: Bearer)",
        ),
        headers=headers,
        max_body_bytes=_int(
            doc.get("max_body_bytes"),
            f"{where}.max_body_bytes",
            errs,
            MIN_WEBHOOK_BODY_BYTES,
            MAX_WEBHOOK_BODY_BYTES,
            DEFAULT_WEBHOOK_BODY_BYTES,
        ),
        rate_limit=rate,
        digest_template=digest,
    )


def _sms_channel(
    name: str,
    doc: Mapping[str, Any],
    errs: _Errors,
    env: Mapping[str, str],
    template: Template,
    digest: Template,
    rate: RateLimit | None,
) -> Channel:
    from riskctl.alerts.sms import DEFAULT_SEGMENTS, MAX_RECIPIENTS, MAX_SEGMENTS

    where = f"channels.{name}"
    url = doc.get("url", "")
    if not isinstance(url, str):
        errs.add(f"{where}.url", "must be a string")
        url = ""
    _url(url, f"{where}.url", errs)
    sid = doc.get("account_sid")
    if not isinstance(sid, str) or not _ACCOUNT_SID_RE.fullmatch(sid):
        errs.add(
            f"{where}.account_sid", "must be the account's SID (1-64 of A-Z a-z 0-9 _ -), e.g. AC0123..."
        )
        sid = ""
    token = _secret(
        doc.get("auth_token"),
        f"{where}.auth_token",
        errs,
        env,
        required=True,
        encoding="latin-1",
        use="an HTTP header (Authorization: Basic)",
    )
    sender = doc.get("from")
    if not isinstance(sender, str) or not _SMS_FROM_RE.fullmatch(sender):
        errs.add(
            f"{where}.from",
            "must be a phone number in E.164 (+ and 7-15 digits), a Messaging Service SID (MG...) or an "
            "alphanumeric sender ID (1-11 letters, digits, spaces)",
        )
        sender = ""
    to = _str_list(doc.get("to"), f"{where}.to", errs)
    if not 1 <= len(to) <= MAX_RECIPIENTS or not all(_PHONE_RE.fullmatch(n) for n in to):
        errs.add(
            f"{where}.to", f"must be a list of 1 to {MAX_RECIPIENTS} phone numbers in E.164 (+4915112345678)"
        )
    segments = _int(doc.get("max_segments"), f"{where}.max_segments", errs, 1, MAX_SEGMENTS, DEFAULT_SEGMENTS)
    return Channel(
        name,
        "sms",
        template,
        url=url,
        rate_limit=rate,
        digest_template=digest,
        username=sid,
        password=token,
        sender=sender,
        to=to,
        max_segments=segments,
    )


def _route(i: int, raw: Any, errs: _Errors, channels: Mapping[str, Any]) -> Route:
    where = f"routes[{i}]"
    doc = _mapping(raw, where, errs, ("match", "channels", "stop"))
    m = _mapping(
        doc.get("match"), f"{where}.match", errs, ("rules", "actions", "kinds", "reasons", "min_severity")
    )
    min_sev = m.get("min_severity")
    if min_sev is not None and min_sev not in SEVERITIES:
        errs.add(
            f"{where}.match.min_severity",
            f"must be one of {', '.join(SEVERITIES)}, got {str(min_sev)[:40]!r}",
        )
        min_sev = None
    match = Match(
        rules=_str_list(m.get("rules"), f"{where}.match.rules", errs),
        actions=_str_list(m.get("actions"), f"{where}.match.actions", errs, ACTIONS),
        kinds=_str_list(m.get("kinds"), f"{where}.match.kinds", errs, KINDS),
        reasons=_str_list(m.get("reasons"), f"{where}.match.reasons", errs),
        min_severity=min_sev,
    )
    names = _str_list(doc.get("channels"), f"{where}.channels", errs)
    if not names and "channels" not in doc:
        errs.add(f"{where}.channels", "missing: the channels this route sends to")
    for n in names:
        if n not in channels:
            errs.add(f"{where}.channels", f"no channel named {n!r} (known: {', '.join(sorted(channels))})")
    return Route(match, names, _bool(doc.get("stop"), f"{where}.stop", errs, False))


_TOP_KEYS = (
    "channels",
    "routes",
    "default_channels",
    "severity",
    "link",
    "review_decisions",
    "delivery",
    "dedup_size",
    "max_record_bytes",
    "digest_max_items",
    "max_backlog",
    "max_in_flight",
)


def parse_config(doc: Any, env: Mapping[str, str], source: str = "<alerts config>") -> AlertsConfig:
    """Validate a loaded document; raises :class:`ConfigError` listing every ``field: reason``."""
    errs = _Errors()
    if not isinstance(doc, Mapping):
        msg = f"{source}: the file must hold a mapping (channels:, routes:, ...)"
        raise ConfigError(msg)
    top = _mapping(doc, "", errs, _TOP_KEYS)
    raw_channels = top.get("channels")
    channels: dict[str, Channel] = {}
    if not isinstance(raw_channels, Mapping) or not raw_channels:
        errs.add("channels", "missing: at least one channel")
        raw_channels = {}
    elif len(raw_channels) > MAX_CHANNELS:
        errs.add("channels", f"too many ({len(raw_channels)}, limit {MAX_CHANNELS})")
        raw_channels = {}
    for name, raw in raw_channels.items():
        ch = _channel(str(name), raw, errs, env)
        if ch is not None:
            channels[ch.name] = ch
    raw_routes = top.get("routes", [])
    if not isinstance(raw_routes, list) or len(raw_routes) > MAX_ROUTES:
        errs.add("routes", f"must be a list of at most {MAX_ROUTES} routes")
        raw_routes = []
    routes = tuple(_route(i, r, errs, raw_channels) for i, r in enumerate(raw_routes))
    default_channels = _str_list(top.get("default_channels"), "default_channels", errs)
    for n in default_channels:
        if n not in raw_channels:
            errs.add("default_channels", f"no channel named {n!r}")
    if not routes and not default_channels:
        errs.add("routes", "missing: give routes, default_channels, or both (otherwise nothing is sent)")
    sev = _mapping(top.get("severity"), "severity", errs, ("default", "actions", "rules"))
    sev_default = sev.get("default", "medium")
    if sev_default not in SEVERITIES:
        errs.add("severity.default", f"must be one of {', '.join(SEVERITIES)}")
        sev_default = "medium"
    by_action = (
        dict(_mapping(sev["actions"], "severity.actions", errs, ACTIONS))
        if "actions" in sev
        else dict(DEFAULT_ACTION_SEVERITY)
    )
    by_rule_raw = sev.get("rules") or {}
    if not isinstance(by_rule_raw, Mapping):
        errs.add("severity.rules", "must map rule ids (or patterns) to severities")
        by_rule_raw = {}
    by_rule = dict(by_rule_raw)
    for where, table in (("severity.actions", by_action), ("severity.rules", by_rule)):
        for k, v in table.items():
            if v not in SEVERITIES:
                errs.add(f"{where}.{k}", f"must be one of {', '.join(SEVERITIES)}, got {str(v)[:40]!r}")
    link = top.get("link", "")
    if link:
        link = check_template(link, "link", errs, LINK_FIELDS)
    d = _mapping(
        top.get("delivery"), "delivery", errs, ("attempts", "backoff_ms", "max_backoff_ms", "timeout_ms")
    )
    delivery = Delivery(
        attempts=_int(d.get("attempts"), "delivery.attempts", errs, 1, 100, 5),
        backoff_ms=_int(d.get("backoff_ms"), "delivery.backoff_ms", errs, 0, 600_000, 500),
        max_backoff_ms=_int(d.get("max_backoff_ms"), "delivery.max_backoff_ms", errs, 0, 3_600_000, 30_000),
        timeout_ms=_int(d.get("timeout_ms"), "delivery.timeout_ms", errs, 100, 120_000, 5_000),
    )
    in_flight = _int(top.get("max_in_flight"), "max_in_flight", errs, 2, 1_000_000, 5_000)
    config = AlertsConfig(
        channels=channels,
        routes=routes,
        default_channels=default_channels,
        severity_default=sev_default,
        severity_by_action=by_action,
        severity_by_rule=by_rule,
        link=link,
        review_decisions=_bool(top.get("review_decisions"), "review_decisions", errs, False),
        delivery=delivery,
        dedup_size=_int(top.get("dedup_size"), "dedup_size", errs, 1, 10_000_000, 100_000),
        max_record_bytes=_int(
            top.get("max_record_bytes"), "max_record_bytes", errs, 1024, 1_048_576, DEFAULT_MAX_RECORD_BYTES
        ),
        digest_max_items=_int(top.get("digest_max_items"), "digest_max_items", errs, 1, 1000, 50),
        max_backlog=_int(
            top.get("max_backlog"), "max_backlog", errs, 1, 1_000_000, min(1_000, max(1, in_flight // 5))
        ),
        max_in_flight=in_flight,
    )
    if config.max_backlog >= config.max_in_flight:
        errs.add(
            "max_backlog",
            f"must be less than max_in_flight ({config.max_in_flight}): else a channel that is down holds "
            "every record in flight before its backlog is shed, and reading pauses for every channel",
        )
    if errs.lines:
        msg = f"{source} is not a valid alerts configuration:\n  " + "\n  ".join(errs.lines)
        raise ConfigError(msg)
    return config


def load_config(path: str | Path, env: Mapping[str, str]) -> AlertsConfig:
    """Read and validate the file (YAML, or JSON when it ends in ``.json``)."""
    from riskctl.core.errors import RuleSetError
    from riskctl.core.jsondoc import load_json_document
    from riskctl.core.rules import _load_yaml  # the bounded YAML loader of the rule files

    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError as exc:
        msg = f"alerts configuration {file}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    if size > MAX_FILE_BYTES:
        msg = f"alerts configuration {file}: too large ({size} bytes, limit {MAX_FILE_BYTES})"
        raise ConfigError(msg)
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"alerts configuration {file}: not valid UTF-8 (byte {exc.start})"
        raise ConfigError(msg) from None
    try:
        if file.suffix == ".json":
            doc: Any = load_json_document(text, source=str(file))
        else:
            docs = [d for d in _load_yaml(text, str(file)) if d is not None]
            if len(docs) != 1:
                msg = f"alerts configuration {file}: must hold exactly one YAML document, found {len(docs)}"
                raise ConfigError(msg)
            doc = docs[0]
    except RuleSetError as exc:
        lines = [f"{e.field or '(file)'}: {e.reason}" for e in exc.errors]
        msg = f"{file} is not a valid alerts configuration:\n  " + "\n  ".join(lines)
        raise ConfigError(msg) from None
    return parse_config(doc, env, str(file))


def severity_of(config: AlertsConfig, rule_ids: tuple[str, ...], action: str) -> str:
    """The severity of an item: the highest of its rules' (exact id, then patterns in file order), else its
    action's, else the default.
    """
    best: str | None = None
    for rid in rule_ids:
        sev = config.severity_by_rule.get(rid)
        if sev is None:
            sev = next((s for p, s in config.severity_by_rule.items() if fnmatch.fnmatchcase(rid, p)), None)
        if sev is not None and (best is None or SEVERITY_RANK[sev] > SEVERITY_RANK[best]):
            best = sev
    if best is not None:
        return best
    return config.severity_by_action.get(action, config.severity_default)
