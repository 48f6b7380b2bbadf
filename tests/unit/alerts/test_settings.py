"""The alerts file: the example loads; every error is refused at start with its field and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from riskctl.alerts.settings import MAX_FILE_BYTES, load_config, parse_config
from riskctl.config import PROJECT_ROOT
from riskctl.errors import ConfigError

EXAMPLE = PROJECT_ROOT / "alerts.example.yaml"


def minimal(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
        "routes": [{"match": {}, "channels": ["hook"]}],
    }
    doc.update(over)
    return doc


def errors_of(doc: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env or {})
    return str(info.value)


def test_the_example_file_loads_with_its_secrets_from_the_environment(env: dict[str, str]) -> None:
    config = load_config(EXAMPLE, env)
    assert set(config.channels) == {
        "risk-oncall",
        "fraud-team",
        "case-system",
        "reviewers-mail",
        "oncall-phone",
    }
    assert config.channels["oncall-phone"].password == "twilio-token"
    ding = config.channels["risk-oncall"]
    assert ding.secret == "SECtest" and ding.url.endswith("access_token=tok")
    assert config.channels["reviewers-mail"].password == "smtp-pw"
    assert config.channels["case-system"].token == "case-token"
    assert config.review_decisions is True
    text = str(config.describe())
    for secret in env.values():
        assert secret not in text, "describe() must not show secrets"


def test_missing_environment_variables_are_named(env: dict[str, str]) -> None:
    del env["RISKCTL_DINGTALK_SECRET"]
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, env)
    assert "channels.risk-oncall.secret: the environment variable RISKCTL_DINGTALK_SECRET is not set" in str(
        info.value
    )


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (minimal(chanels={}), "chanels: unknown key (did you mean 'channels'?)"),
        (minimal(channels={}), "channels: missing: at least one channel"),
        (
            minimal(channels={"h": {"type": "pager"}}),
            "channels.h.type: must be one of webhook, dingtalk, slack, email",
        ),
        (minimal(channels={"h": {"type": "webhook"}}), "channels.h.url: missing"),
        (
            minimal(channels={"h": {"type": "webhook", "url": "file:///etc/passwd"}}),
            "channels.h.url: must be an http",
        ),
        (
            minimal(channels={"h": {"type": "slack", "url": "https://x/y", "secret": "s"}}),
            "channels.h.secret: unknown key",
        ),
        (
            minimal(channels={"bad name": {"type": "slack", "url": "https://x/y"}}),
            "channels.bad name: a channel name",
        ),
        (
            minimal(channels={"h": {"type": "webhook", "url": "http://127.0.0.1:notaport/x?token=SECRET"}}),
            "channels.h.url: must be an http:// or https:// URL with a host and a valid port",
        ),
        (
            minimal(channels={"h": {"type": "webhook", "url": "http://127.0.0.1:99999/x"}}),
            "channels.h.url: must be an http:// or https:// URL with a host and a valid port",
        ),
        (
            minimal(channels={"h": {"type": "webhook", "url": "http://a/x y"}}),
            "channels.h.url: must be an http:// or https:// URL",
        ),
        (
            minimal(channels={"m": {"type": "email", "host": "h", "from": "a@b\r\nBcc: x@y", "to": ["x@y"]}}),
            "channels.m.from: must be an e-mail address",
        ),
        (
            minimal(channels={"h": {"type": "webhook", "url": {"env": "NOPE"}}}),
            "channels.h.url: the environment variable NOPE is not set",
        ),
        (
            minimal(channels={"h": {"type": "webhook", "url": {"file": "/x"}}}),
            "channels.h.url: must be a string or {env: VARIABLE_NAME}",
        ),
        (
            minimal(
                channels={"h": {"type": "webhook", "url": "http://a/b", "headers": {"X-A": "1\r\nX-B: 2"}}}
            ),
            "channels.h.headers: must map header names",
        ),
        (
            minimal(max_backlog=5_000, max_in_flight=5_000),
            "max_backlog: must be less than max_in_flight (5000)",
        ),
        (  # http.client refuses it at every delivery: refused when the file loads instead
            minimal(channels={"h": {"type": "webhook", "url": "http://a/b", "headers": {"X-Team": "风控"}}}),
            "channels.h.headers: must map header names (A-Z a-z 0-9 -) to one-line strings of Latin-1",
        ),
        (
            minimal(channels={"h": {"type": "webhook", "url": "http://a/b", "headers": {"X-A": "1\u2028"}}}),
            "channels.h.headers: must map header names",
        ),
        (
            minimal(channels={"h": {"type": "webhook", "url": "http://a/b", "rate_limit": {"max": 0}}}),
            "channels.h.rate_limit.max: must be an integer between 1 and 100000",
        ),
        (
            minimal(
                channels={
                    "h": {"type": "webhook", "url": "http://a/b", "rate_limit": {"max": 2, "window_s": "1m"}}
                }
            ),
            "channels.h.rate_limit.window_s: must be a number of seconds",
        ),
        (
            minimal(channels={"m": {"type": "email", "host": "h", "from": "a@b", "to": ["nobody"]}}),
            "channels.m.to: must be a non-empty list of e-mail addresses",
        ),
        (
            minimal(
                channels={"m": {"type": "email", "host": "h", "from": "a@b", "to": ["x@y"], "username": "u"}}
            ),
            "channels.m.password: missing",
        ),
        (
            minimal(
                channels={"m": {"type": "email", "host": "h", "from": "a@b", "to": ["x@y"], "port": 70000}}
            ),
            "channels.m.port: must be an integer between 1 and 65535",
        ),
        (
            minimal(routes=[{"match": {}, "channels": ["nope"]}]),
            "routes[0].channels: no channel named 'nope'",
        ),
        (minimal(routes=[{"match": {"actions": ["BLOCK"]}, "channels": ["hook"]}]), "'BLOCK' is not one of"),
        (
            minimal(routes=[{"match": {"min_severity": "huge"}, "channels": ["hook"]}]),
            "routes[0].match.min_severity",
        ),
        (
            minimal(routes=[{"match": {"rule": ["x"]}, "channels": ["hook"]}]),
            "routes[0].match.rule: unknown key",
        ),
        (minimal(routes=[{"match": {}}]), "routes[0].channels: missing"),
        (minimal(routes=[]), "routes: missing: give routes, default_channels, or both"),
        (minimal(routes="all"), "routes: must be a list"),
        (minimal(severity={"rules": {"r": "urgent"}}), "severity.rules.r: must be one of info, low"),
        (minimal(delivery={"attempts": 0}), "delivery.attempts: must be an integer between 1 and 100"),
        (minimal(delivery={"attempts": 10**40}), "delivery.attempts: must be an integer between 1 and 100"),
        (minimal(delivery={"attempts": True}), "delivery.attempts: must be an integer"),
        (minimal(review_decisions="yes"), "review_decisions: must be true or false"),
        (minimal(link="https://x/{user_id.__class__}"), "link: unknown field {user_id.__class__}"),
        (minimal(link="https://x/{explanation}"), "link: unknown field {explanation}"),
        ([1, 2], "the file must hold a mapping"),
    ],
)
def test_a_bad_file_is_refused_with_the_field_and_the_reason(doc: Any, expected: str) -> None:
    assert expected in errors_of(doc)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{user_id.__class__.__mro__}", "unknown field {user_id.__class__.__mro__}"),
        ("{user_id[0]}", "unknown field {user_id[0]}"),
        ("{user_id!r}", "{user_id}: format specs and conversions are not allowed"),
        ("{user_id:>99999999}", "{user_id}: format specs and conversions are not allowed"),
        ("{0}", "unknown field {0}"),
        ("{}", "unknown field {}"),
        ("{user_id", "not a valid template"),
        ("x" * 9000, "too long (9000 characters, limit 8192)"),
    ],
)
def test_templates_that_could_run_code_or_blow_up_are_refused(body: str, expected: str) -> None:
    doc = minimal(channels={"hook": {"type": "webhook", "url": "http://a/b", "template": {"body": body}}})
    assert f"channels.hook.template.body: {expected}" in errors_of(doc)


def test_every_error_of_a_file_is_listed_at_once() -> None:
    text = errors_of(minimal(delivery={"attempts": 0, "backoff_ms": -1}, review_decisions=1))
    assert "delivery.attempts" in text and "delivery.backoff_ms" in text and "review_decisions" in text


def write(tmp_path: Path, text: str | bytes, name: str = "alerts.yaml") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("base: &a {type: slack}\nchannels: {x: *a}\n", "not allowed"),
        ("channels: {}\nchannels: {}\n", "duplicate key 'channels'"),
        ("channels: [\n", "not valid YAML"),
        ("a: 1\n---\nb: 2\n", "exactly one YAML document, found 2"),
        ("x: " + "[" * 100 + "]" * 100, "nested deeper than 32"),
        (b"channels: {\xff}", "not valid UTF-8 (byte 11)"),
        ("- 1\n", "the file must hold a mapping"),
    ],
)
def test_a_hostile_file_is_refused(tmp_path: Path, text: str | bytes, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    assert expected in str(info.value)


def test_an_oversized_or_missing_file_is_refused_unread(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"too large .* limit {MAX_FILE_BYTES}"):
        load_config(write(tmp_path, "#" * (MAX_FILE_BYTES + 1)), {})
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "none.yaml", {})


def test_json_files_load_too(tmp_path: Path) -> None:
    import json

    config = load_config(write(tmp_path, json.dumps(minimal()), "alerts.json"), {})
    assert list(config.channels) == ["hook"]


def test_the_example_is_valid_yaml_with_the_documented_top_keys() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    assert {"channels", "routes", "default_channels", "severity", "link", "delivery"} <= set(doc)


@pytest.mark.parametrize(
    ("channel", "field", "expected"),
    [
        # a mounted secret file read into a variable keeps its trailing newline: http.client refuses the
        # header at run time, so every webhook alert was dead-lettered ("the channel's URL cannot be used")
        ({"type": "webhook", "url": "http://127.0.0.1:9/x", "token": {"env": "S"}}, "token", "U+000A"),
        ({"type": "webhook", "url": "http://127.0.0.1:9/x", "token": "tk\r"}, "token", "U+000D"),
        (
            {"type": "webhook", "url": "http://127.0.0.1:9/x", "token": "t\u20ack"},
            "token",
            "not LATIN-1 (U+20AC)",
        ),
        (
            {"type": "dingtalk", "url": "https://oapi.dingtalk.com/x", "secret": {"env": "S"}},
            "secret",
            "U+000A",
        ),
        ({"type": "dingtalk", "url": "https://oapi.dingtalk.com/x", "secret": "SEC\x85"}, "secret", "U+0085"),
        (
            {
                "type": "email",
                "host": "h",
                "from": "a@b",
                "to": ["x@y"],
                "username": "u",
                "password": {"env": "S"},
            },
            "password",
            "U+000A",
        ),
        (
            {
                "type": "email",
                "host": "h",
                "from": "a@b",
                "to": ["x@y"],
                "username": "u",
                "password": "p\u00e4ss",
            },
            "password",
            "not ASCII (U+00E4)",
        ),
        ({"type": "slack", "url": {"env": "U"}}, "url", "U+000A"),
    ],
)
def test_a_secret_the_channel_could_not_send_is_refused_at_load(
    channel: dict[str, Any], field: str, expected: str
) -> None:
    env = {"S": "s3cr3t-value\n", "U": "https://hooks.slack.com/services/T/B/s3cr3t-value\n"}
    text = errors_of(minimal(channels={"c": channel}, routes=[{"match": {}, "channels": ["c"]}]), env)
    assert f"channels.c.{field}: contains a" in text and expected in text, text
    assert "s3cr3t" not in text and "t\u20ack" not in text and "p\u00e4ss" not in text


def test_a_latin_1_token_and_a_unicode_dingtalk_secret_are_accepted() -> None:
    doc = minimal(
        channels={
            "hook": {"type": "webhook", "url": "http://127.0.0.1:9/x", "token": "t\u00f6k"},
            "ding": {"type": "dingtalk", "url": "https://oapi.dingtalk.com/x", "secret": "SEC\u4e2d"},
        }
    )
    config = parse_config(doc, {})
    assert config.channels["hook"].token == "t\u00f6k" and config.channels["ding"].secret == "SEC\u4e2d"
