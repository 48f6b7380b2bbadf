"""Callers of the API: keys (401), each caller's share (429), event_ids owned by their caller (409), and the
refusal to serve other machines without keys."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import threading
import time
from typing import Any

import pytest

from riskctl.client import AsyncDecisionClient, DecisionClient, RequestRefused
from riskctl.config import load_settings
from riskctl.errors import ConfigError
from riskctl.serve.app import Api
from riskctl.serve.callers import ANONYMOUS, MAX_KEY_CHARS, Callers, is_loopback, parse_api_keys
from riskctl.serve.request import ApiError
from tests.unit.serve.fakes import FakeBus, cli_serve, running_api, settings_for_tests

KEY_A = "kA9x-checkout-0123456789abcdefXYZ"
KEY_B = "kB7y-login-0123456789abcdefXYZ012"
KEYS = f"checkout:{KEY_A}, login:{KEY_B}"
JSON = {"Content-Type": "application/json"}


def event(eid: str = "e1", **fields: Any) -> dict[str, Any]:
    return {"event_id": eid, "user_id": "u1", "type": "transfer", "ts": int(time.time() * 1000), **fields}


def call(
    base: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null"), resp
    finally:
        conn.close()


def auth(key: str) -> dict[str, str]:
    return {**JSON, "Authorization": f"Bearer {key}"}


# -- the keys setting ---------------------------------------------------------------------------------------
def test_api_keys_parse_into_names_and_keys() -> None:
    assert parse_api_keys(KEYS) == {"checkout": KEY_A, "login": KEY_B}
    assert parse_api_keys("") == {} and parse_api_keys(" , ") == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (KEY_A, "expected name:key"),
        (f"check out:{KEY_A}", "expected name:key"),
        (f"checkout:{KEY_A},checkout:{KEY_B}", "named twice"),
        (f"checkout:{KEY_A},login:{KEY_A}", "another caller's too"),
        ("checkout:short-key-1", "must be 20-256 characters"),
        (f"checkout:{KEY_A} {KEY_B}", "must be 20-256 characters"),
        (f"checkout:{KEY_A}\r\nX-Injected: 1", "must be 20-256 characters"),
        (
            f"checkout:{KEY_A}\u00e9",
            "pair 1: the key of 'checkout' must be 20-256 characters",
        ),  # no client sends it
    ],
)
def test_malformed_api_keys_are_refused_without_showing_a_key(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        parse_api_keys(text)
    assert KEY_A not in str(info.value) and KEY_B not in str(info.value)


def test_config_show_masks_the_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKCTL_SERVE_API_KEYS", KEYS)
    settings = load_settings(None)
    assert settings.serve.api_keys == KEYS
    assert KEY_A not in json.dumps(settings.redacted())


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.5", False), ("api.internal", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serving_other_machines_without_keys_is_refused_unless_said_so() -> None:
    with pytest.raises(ConfigError, match=r"serve\.api_keys is empty.*serve\.anonymous"):
        Api(settings_for_tests(host="0.0.0.0"), FakeBus(), instance="t")  # type: ignore[arg-type]
    Api(settings_for_tests(host="0.0.0.0", anonymous=True), FakeBus(), instance="t")  # type: ignore[arg-type]
    Api(settings_for_tests(host="0.0.0.0", api_keys=KEYS), FakeBus(), instance="t")  # type: ignore[arg-type]
    Api(settings_for_tests(host="127.0.0.1"), FakeBus(), instance="t")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be 20-256"):
        Api(settings_for_tests(api_keys="a:b"), FakeBus(), instance="t")  # type: ignore[arg-type]


# -- the share of a caller (pure) ---------------------------------------------------------------------------
def test_the_rate_of_a_caller_is_a_bucket_of_one_second_and_others_keep_theirs() -> None:
    now = [100.0]
    callers = Callers(KEYS, max_in_flight=100, rate_per_client=3, clock=lambda: now[0])
    a = callers.identify(f"Bearer {KEY_A}")
    b = callers.identify(f"bearer   {KEY_B} ")
    for _ in range(3):
        callers.admit(a)
    with pytest.raises(ApiError) as info:
        callers.admit(a)
    assert info.value.status == 429 and info.value.retry_after == 0  # its next token within 0.34 s
    callers.admit(b)  # the other caller is untouched
    now[0] += 0.34  # one more token
    callers.admit(a)
    with pytest.raises(ApiError):
        callers.admit(a)
    now[0] += 60  # a long pause refills one second's worth, no more
    for _ in range(3):
        callers.admit(a)
    with pytest.raises(ApiError):
        callers.admit(a)
    assert callers.stats()["checkout"] == {"requests": 10, "limited": 3, "in_flight": 0}


@pytest.mark.parametrize(("rate", "retry_after"), [(1, 1), (200, 0)])
def test_the_retry_after_of_a_rate_limit_is_the_wait_for_the_next_token_rounded(
    rate: int, retry_after: int
) -> None:
    """It was rounded up to a second: a caller allowed 200 requests/s was told to wait 1 s for 5 ms, and the
    clients honour Retry-After."""
    callers = Callers(KEYS, max_in_flight=100, rate_per_client=rate, clock=lambda: 100.0)
    a = callers.identify(f"Bearer {KEY_A}")
    for _ in range(rate):
        callers.admit(a)
    with pytest.raises(ApiError) as info:
        callers.admit(a)
    assert info.value.status == 429 and info.value.retry_after == retry_after


def test_the_default_share_in_flight_is_half_the_instance_and_a_setting_never_exceeds_it() -> None:
    assert Callers(KEYS, max_in_flight=100).max_in_flight == 50
    assert Callers(KEYS, max_in_flight=1).max_in_flight == 1
    assert Callers(KEYS, max_in_flight=100, max_in_flight_per_client=7).max_in_flight == 7
    assert Callers(KEYS, max_in_flight=100, max_in_flight_per_client=500).max_in_flight == 100
    anonymous = Callers("", max_in_flight=10)
    assert anonymous.max_in_flight == 10  # alone: no other caller to leave room for
    assert not anonymous.required and anonymous.identify(None).name == ANONYMOUS
    assert anonymous.identify("Bearer whatever").name == ANONYMOUS


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "an API key is required"),
        ("", "must be 'Bearer <key>'"),
        (f"Basic {KEY_A}", "must be 'Bearer <key>'"),
        ("Bearer ", "must be 'Bearer <key>'"),
        ("Bearer not-a-key-of-anyone-0123456789", "unknown API key"),
        (f"Bearer {KEY_A}x", "unknown API key"),
        (f"Bearer {KEY_A[:-1]}", "unknown API key"),
        ("Bearer " + "k" * 100_000, "unknown API key"),
        ("Bearer \udcff\udcfe\udcc3", "unknown API key"),  # undecodable bytes, as aiohttp keeps them
        (f"Bearer {KEY_A[:10]}\u00e9{KEY_A[11:]}", "unknown API key"),
    ],
)
def test_a_request_without_a_known_key_is_401_naming_the_header(header: str | None, says: str) -> None:
    callers = Callers(KEYS, max_in_flight=10)
    with pytest.raises(ApiError, match=says) as info:
        callers.identify(header)
    assert info.value.status == 401 and info.value.field == "Authorization"
    assert callers.unauthorized == 1


def test_a_key_of_the_longest_length_is_taken_whole_not_as_a_prefix_of_the_header() -> None:
    """The header was cut at 'Bearer ' + 256 characters before the lookup: with a key of 256 characters,
    the key followed by anything was that caller's key, and with two spaces after Bearer the key was cut."""
    longest = "L" * MAX_KEY_CHARS
    callers = Callers(f"long:{longest}", max_in_flight=10)
    assert callers.identify(f"Bearer {longest}").name == "long"
    assert callers.identify(f" Bearer  {longest} ").name == "long"  # 1*SP (RFC 9110), blanks around
    for header in (f"Bearer {longest}x", f"Bearer {longest}{'x' * 5000}", f"Bearer {longest} other"):
        with pytest.raises(ApiError, match="unknown API key"):
            callers.identify(header)
    assert callers.unauthorized == 3


# -- over HTTP ----------------------------------------------------------------------------------------------
def test_decisions_and_stats_need_a_key_probes_and_the_document_do_not() -> None:
    bus = FakeBus()
    with running_api(settings_for_tests(api_keys=KEYS), bus) as (base, api, _):
        body = json.dumps(event(amount=12_000)).encode()
        status, out, resp = call(base, "POST", "/v1/decisions", body, JSON)
        assert status == 401 and out["error"]["field"] == "Authorization"
        assert resp.getheader("WWW-Authenticate") == 'Bearer realm="riskctl"'
        # refused before the body is looked at: a wrong Content-Type is not what it hears about
        status, out, _ = call(
            base, "POST", "/v1/decisions", body, {"Authorization": "Bearer nope-0123456789abcdefgh"}
        )
        assert status == 401 and out["error"]["reason"] == "unknown API key"
        assert bus.produced == []
        status, out, _ = call(base, "POST", "/v1/decisions", body, auth(KEY_A))
        assert status == 200 and out["action"] == "REJECT"
        assert call(base, "GET", "/v1/stats")[0] == 401
        status, stats, _ = call(base, "GET", "/v1/stats", None, auth(KEY_B))
        assert status == 200 and stats["unauthorized"] == 3
        assert stats["callers"]["checkout"]["requests"] == 1 and stats["callers"]["login"]["requests"] == 0
        assert call(base, "GET", "/healthz")[0] == 200
        assert call(base, "GET", "/readyz")[0] in {200, 503}
        status, doc, _ = call(base, "GET", "/openapi.json")
        assert status == 200 and doc["paths"]["/v1/decisions"]["post"]["security"] == [{"apiKey": []}]
        assert "401" in doc["paths"]["/v1/decisions"]["post"]["responses"]
        assert KEY_A not in json.dumps(doc)


def test_an_event_id_belongs_to_its_caller_another_gets_409_never_the_decision() -> None:
    bus = FakeBus()
    with running_api(settings_for_tests(api_keys=KEYS), bus) as (base, _, _):
        body = json.dumps(event("order-1001", amount=12_000)).encode()
        status, first, _ = call(base, "POST", "/v1/decisions", body, auth(KEY_A))
        assert status == 200 and first["action"] == "REJECT"
        status, out, _ = call(base, "POST", "/v1/decisions", body, auth(KEY_B))
        assert status == 409 and out["error"]["field"] == "event_id"
        assert "REJECT" not in json.dumps(out)
        status, again, _ = call(base, "POST", "/v1/decisions", body, auth(KEY_A))  # the owner's retry
        assert status == 200 and again["replay"] and again["action"] == "REJECT"
        assert len(bus.produced) == 1


def test_a_caller_at_its_share_gets_429_while_another_is_answered() -> None:
    bus = FakeBus(delay=None)  # the job never answers: requests wait out their timeout
    settings = settings_for_tests(api_keys=KEYS, max_in_flight_per_client=2)
    with running_api(settings, bus) as (base, api, _):
        results: list[int] = []

        def slow(eid: str) -> None:
            body = json.dumps(event(eid)).encode()
            results.append(call(base, "POST", "/v1/decisions?timeout_ms=3000", body, auth(KEY_A))[0])

        threads = [threading.Thread(target=slow, args=(f"slow-{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while api.callers.callers["checkout"].in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, out, resp = call(base, "POST", "/v1/decisions", json.dumps(event("a3")).encode(), auth(KEY_A))
        assert status == 429 and "max_in_flight_per_client" in out["error"]["reason"]
        assert resp.getheader("Retry-After") == "1"
        status, out, _ = call(
            base, "POST", "/v1/decisions?timeout_ms=50", json.dumps(event("b1")).encode(), auth(KEY_B)
        )
        assert status == 200 and out["degraded"] == "timeout"  # answered: its fallback, not a refusal
        for t in threads:
            t.join(10)
        assert results == [200, 200]
        assert api.callers.callers["checkout"].in_flight == 0 and api.callers.callers["login"].in_flight == 0
        assert sorted(e["event_id"] for _, e in bus.produced) == ["b1", "slow-0", "slow-1"]


def test_both_clients_send_their_key_and_a_401_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_api(settings_for_tests(api_keys=KEYS), FakeBus()) as (base, api, _):
        with DecisionClient(base, api_key=KEY_A) as client:
            assert client.decide(event("s1", amount=20_000)).action == "REJECT"
        monkeypatch.setenv("RISKCTL_API_KEY", KEY_B)
        with DecisionClient(base) as client:  # the key from the environment
            assert client.decide(event("s2")).action == "PASS"
        with DecisionClient(base, api_key="", retries=3) as client, pytest.raises(RequestRefused) as info:
            client.decide(event("s3"))
        assert info.value.status == 401 and info.value.field == "Authorization"
        assert api.callers.unauthorized == 1  # one attempt, no retry

        async def run() -> None:
            async with AsyncDecisionClient(base, api_key=KEY_A) as client:
                assert (await client.decide(event("a1", amount=20_000))).action == "REJECT"
            async with AsyncDecisionClient(base, api_key="wrong-key-0123456789abcdef") as client:
                with pytest.raises(RequestRefused, match="unknown API key"):
                    await client.decide(event("a2"))

        asyncio.run(run())
        stats = api.callers.stats()
        assert stats["checkout"]["requests"] == 2 and stats["login"]["requests"] == 1
        assert api.callers.unauthorized == 2


def test_a_client_refuses_a_key_that_would_inject_a_header() -> None:
    with pytest.raises(ValueError, match="line break"):
        DecisionClient("http://127.0.0.1:9", api_key=f"{KEY_A}\r\nX-Evil: 1")


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("key", "says"),
    [
        (
            f"{KEY_A}\u043a\u043b\u044e\u0447",
            "a character outside ASCII (character 34 of 37",
        ),  # beyond Latin-1
        (f"{KEY_A}\u00e9", "a character outside ASCII (character 34 of 34"),  # Latin-1, not ASCII
        (f"\u201c{KEY_A}\u201d", "a character outside ASCII (character 1 of 35"),  # pasted with its quotes
        (f"{KEY_A}\t", "a line break or another control character (character 34 of 34"),
    ],
)
def test_a_client_refuses_a_key_that_is_not_printable_ascii_naming_it_not_showing_it(
    monkeypatch: pytest.MonkeyPatch, kind: str, key: str, says: str
) -> None:
    """A key beyond Latin-1 made every call of the sync client fail deep in http.client with a
    UnicodeEncodeError; a Latin-1 one was sent as Latin-1 by the sync client and as UTF-8 by the async one,
    and no key of serve.api_keys is either. Refused when the client is built, the key never repeated."""
    cls = DecisionClient if kind == "sync" else AsyncDecisionClient
    with pytest.raises(ValueError, match="^api_key holds " + re.escape(says)) as info:
        cls("http://127.0.0.1:9", api_key=key)
    assert KEY_A not in str(info.value) and "printable ASCII" in str(info.value)
    monkeypatch.setenv("RISKCTL_API_KEY", key)
    with pytest.raises(
        ValueError, match=r"^api_key \(from RISKCTL_API_KEY\) holds " + re.escape(says)
    ) as info:
        cls("http://127.0.0.1:9")
    assert KEY_A not in str(info.value)


def test_cli_serve_on_all_addresses_without_keys_stops_with_the_reason_before_kafka() -> None:
    res = cli_serve(RISKCTL_SERVE_HOST="0.0.0.0", RISKCTL_SERVE_API_KEYS=None)
    assert res.returncode == 3 and "serve.api_keys is empty" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and "broker" not in res.stderr


def test_a_keys_setting_of_blanks_and_commas_asks_no_key_and_says_none() -> None:
    with running_api(settings_for_tests(api_keys=" , "), FakeBus()) as (base, _, _):
        status, doc, _ = call(base, "GET", "/openapi.json")
        assert "security" not in doc["paths"]["/v1/decisions"]["post"]
        status, out, _ = call(base, "POST", "/v1/decisions", json.dumps(event("blank")).encode(), JSON)
        assert status == 200 and out["action"] == "PASS"


def test_an_authorization_header_of_raw_bytes_is_401_not_500() -> None:
    with running_api(settings_for_tests(api_keys=KEYS), FakeBus()) as (base, api, _):
        host, port = base.removeprefix("http://").split(":")
        for value in (b"Bearer \xff\xfe\xc3", b"Bearer \xc3\xa9t\xc3\xa9-0123456789abcdefghij", b"\xff"):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.putrequest("POST", "/v1/decisions")
                conn.putheader("Authorization", value)
                conn.putheader("Content-Type", "application/json")
                conn.putheader("Content-Length", "2")
                conn.endheaders(b"{}")
                resp = conn.getresponse()
                assert resp.status == 401, value
                assert json.loads(resp.read())["error"]["field"] == "Authorization"
            finally:
                conn.close()
        assert api.callers.unauthorized == 3


def test_a_caller_that_goes_away_gives_its_share_back_at_once() -> None:
    """A request whose client left (the socket closed after sending it, an async call cancelled) waited out
    its timeout_ms to answer nobody, in its caller's share: the caller got 429 with nothing waiting."""
    settings = settings_for_tests(api_keys=KEYS, max_in_flight_per_client=2)
    with running_api(settings, FakeBus(delay=None)) as (base, api, _):
        host, port = base.removeprefix("http://").split(":")
        body = json.dumps(event("gone-1")).encode()
        with socket.create_connection((host, int(port))) as sock:
            head = (
                f"POST /v1/decisions?timeout_ms=8000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n"
            )
            sock.sendall(
                f"{head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            )
            sock.sendall(body)
            wait_for(lambda: api.callers.callers["checkout"].in_flight == 1)

        async def cancelled() -> None:
            async with AsyncDecisionClient(base, api_key=KEY_A, timeout_ms=8000) as client:
                call = asyncio.ensure_future(client.decide(event("gone-2")))
                await asyncio.to_thread(wait_for, lambda: "gone-2" in api.service.waiters)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call

        asyncio.run(cancelled())
        wait_for(lambda: api.callers.callers["checkout"].in_flight == 0)
        assert api.service.in_flight == 0
        status, out, _ = call(
            base, "POST", "/v1/decisions?timeout_ms=50", json.dumps(event("a1")).encode(), auth(KEY_A)
        )
        assert status == 200 and out["degraded"] == "timeout", out  # its fallback, not a 429


def wait_for(condition: Any, seconds: float = 3.0) -> None:
    """Until ``condition()`` holds; it is asserted after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def _expecting(base: str, headers: str, body: bytes | None, expect: str = "100-continue") -> bytes:
    """A request with ``Expect: 100-continue``: what the API answers before the body, and after it when
    ``body`` is sent once 100 Continue came."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nExpect: {expect}\r\n{headers}\r\n".encode())
        first = sock.recv(65_536)
        if body is None or not first.startswith(b"HTTP/1.1 100"):
            return first
        sock.sendall(body)
        answer = b""
        while not answer.rstrip().endswith(b"}"):
            answer += sock.recv(65_536)
        return first + answer


def test_expect_100_continue_is_refused_before_the_body_when_the_headers_say_so() -> None:
    """aiohttp answered 100 Continue to every request: one without a key, or announcing 10 MB, was told to
    send its body, then refused."""
    body = json.dumps(event("x1")).encode()
    ok = f"Authorization: Bearer {KEY_A}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    with running_api(settings_for_tests(api_keys=KEYS), FakeBus()) as (base, api, _):
        refused = {
            "no key": ok.replace(f"Authorization: Bearer {KEY_A}\r\n", ""),
            "too large": ok.replace(f"Content-Length: {len(body)}", "Content-Length: 10000000"),
            "not json": ok.replace("application/json", "text/plain"),
            "brotli": ok + "Content-Encoding: br\r\n",
        }
        for case, headers in refused.items():
            answer = _expecting(base, headers, None)
            assert answer.split(b"\r\n")[0][9:12] in (b"401", b"413", b"415"), (case, answer[:80])
            assert b'"error"' in answer, case
        assert b"WWW-Authenticate: Bearer" in _expecting(base, refused["no key"], None)
        assert api.callers.unauthorized == 2
        answer = _expecting(base, ok, body)
        assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"), answer[:80]
        assert b'"event_id":"x1"' in answer
        odd = _expecting(base, ok, None, expect="something-else")
        assert odd.startswith(b"HTTP/1.1 417") and b'"field":"Expect"' in odd, odd[:200]
