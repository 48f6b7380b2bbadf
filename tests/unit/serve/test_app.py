"""The HTTP API over real sockets (in-memory bus): status codes, bodies, health, OpenAPI, shutdown, client."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import logging
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from riskctl.client import AsyncDecisionClient, DecisionClient, RequestRefused, Unavailable
from tests.unit.serve.fakes import FakeBus, cli_serve, running_api, settings_for_tests


def event(eid: str = "e1", **fields: Any) -> dict[str, Any]:
    return {"event_id": eid, "user_id": "u1", "type": "transfer", "ts": int(time.time() * 1000), **fields}


def call(
    base: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


JSON = {"Content-Type": "application/json"}


def test_round_trip_reject_and_pass() -> None:
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        status, out = call(base, "POST", "/v1/decisions", json.dumps(event(amount=12_000)).encode(), JSON)
        assert status == 200 and out["action"] == "REJECT" and out["rules"][0]["id"] == "big"
        status, out = call(base, "POST", "/v1/decisions", json.dumps(event("e2", amount=5)).encode(), JSON)
        assert status == 200 and out["action"] == "PASS" and out["degraded"] is None


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        (b'{"event_id": 1', JSON, 400, None),
        (b"", JSON, 400, None),
        (b"\xc3\x28", JSON, 400, None),
        (json.dumps(event()).encode(), {"Content-Type": "text/plain"}, 415, "Content-Type"),
        (json.dumps(event()).encode(), {}, 415, "Content-Type"),
        (json.dumps(event(note="x" * 70_000)).encode(), JSON, 413, None),
        (json.dumps({"user_id": "u", "type": "t", "ts": 1}).encode(), JSON, 422, "event_id"),
        (json.dumps(event(amount=10**30)).encode(), JSON, 422, "amount"),
        (b'{"a":' * 30 + b"1" + b"}" * 30, JSON, 422, ".".join(["a"] * 16)),
        (json.dumps(event(reply_to="x:1")).encode(), JSON, 422, "reply_to"),
    ],
    ids=[
        "cut-json",
        "empty",
        "invalid-utf8",
        "text-plain",
        "no-content-type",
        "over-64k",
        "no-event-id",
        "huge-amount",
        "nested-30",
        "reply-to",
    ],  # stable names: the events' ts is the wall clock
)
def test_bad_requests_get_4xx_with_field_and_reason(
    body: bytes, headers: dict[str, str], status: int, field: str | None
) -> None:
    bus = FakeBus()
    with running_api(settings_for_tests(), bus) as (base, _, _):
        got, out = call(base, "POST", "/v1/decisions", body, headers)
        assert got == status, out
        assert out["error"]["status"] == status and out["error"]["field"] == field and out["error"]["reason"]
        # and the service is still there, nothing was produced
        assert call(base, "GET", "/healthz")[0] == 200
    assert bus.produced == []


def test_oversized_body_sent_in_chunks_without_length_is_413() -> None:
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        chunks = (b"x" * 16_384 for _ in range(10))  # 160 KB, chunked transfer encoding
        conn.request(
            "POST", "/v1/decisions", chunks, {"Content-Type": "application/json"}, encode_chunked=True
        )
        resp = conn.getresponse()
        assert resp.status == 413 and json.loads(resp.read())["error"]["status"] == 413
        conn.close()


def test_timeout_query_parameter_and_bounds() -> None:
    settings = settings_for_tests(fallback="reject", min_timeout_ms=10, max_timeout_ms=500)
    with running_api(settings, FakeBus(delay=None)) as (base, _, _):
        t0 = time.monotonic()
        status, out = call(base, "POST", "/v1/decisions?timeout_ms=30", json.dumps(event()).encode(), JSON)
        assert status == 200 and out["action"] == "REJECT" and out["degraded"] == "timeout"
        assert time.monotonic() - t0 < 0.5
        status, out = call(
            base, "POST", "/v1/decisions?timeout_ms=501", json.dumps(event("x")).encode(), JSON
        )
        assert status == 422 and out["error"]["field"] == "timeout_ms"


def test_a_memory_smaller_than_the_requests_in_flight_is_refused_naming_both_settings() -> None:
    from riskctl.errors import ConfigError
    from riskctl.serve.app import Api

    bad = settings_for_tests(idempotency_max_entries=100, max_in_flight=101)
    with pytest.raises(
        ConfigError, match=r"serve.idempotency_max_entries \(100\) .*serve.max_in_flight \(101\)"
    ):
        Api(bad, FakeBus(), instance="unit")  # type: ignore[arg-type]
    Api(settings_for_tests(idempotency_max_entries=101, max_in_flight=101), FakeBus(), instance="unit")  # type: ignore[arg-type]


def test_a_max_depth_beyond_what_orjson_writes_is_refused_and_the_deepest_accepted_event_is_no_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """job.max_depth=300 let the door accept an event nested 260 deep that orjson could not write: 500."""
    from riskctl.config import Settings, load_settings
    from riskctl.config.loading import apply_overrides
    from riskctl.config.settings import MAX_EVENT_DEPTH
    from riskctl.errors import ConfigError
    from riskctl.serve.app import Api

    monkeypatch.chdir(tmp_path)  # no riskctl.toml
    with pytest.raises(ConfigError, match="RISKCTL_JOB_MAX_DEPTH .*job.max_depth"):
        load_settings(env={"RISKCTL_JOB_MAX_DEPTH": "300"})
    with pytest.raises(ConfigError, match="job.max_depth"):
        apply_overrides(Settings(), ["job.max_depth=300"])
    too_deep = settings_for_tests()
    too_deep.job.max_depth = 300  # built in code, not loaded: the API checks too
    with pytest.raises(ConfigError, match="job.max_depth must be at most 250"):
        Api(too_deep, FakeBus(), instance="unit")  # type: ignore[arg-type]

    s = apply_overrides(settings_for_tests(), [f"job.max_depth={MAX_EVENT_DEPTH}"])
    assert s.job.max_depth == MAX_EVENT_DEPTH == 250

    def nested(eid: str, depth: int) -> bytes:  # the event object is depth 1, "x" holds depth - 1 more
        head = json.dumps(event(eid))[:-1].encode() + b', "x": '
        return head + b'{"a":' * (depth - 1) + b"1" + b"}" * (depth - 1) + b"}"

    with running_api(s, FakeBus()) as (base, _, _):
        status, out = call(base, "POST", "/v1/decisions", nested("d1", MAX_EVENT_DEPTH), JSON)
        assert status == 200 and out["source"] == "job", out
        status, out = call(base, "POST", "/v1/decisions", nested("d2", MAX_EVENT_DEPTH + 10), JSON)
        assert status == 422 and "max_depth" in out["error"]["reason"], out


def test_wrong_method_and_unknown_path_are_json_errors() -> None:
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        assert call(base, "GET", "/v1/decisions")[0] == 405
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("DELETE", "/v1/decisions")
        resp = conn.getresponse()
        # the 405 names the methods the path takes (the JSON body replaced aiohttp's, and its Allow header)
        assert resp.status == 405 and resp.getheader("Allow") == "POST" and json.loads(resp.read())["error"]
        conn.close()
        status, out = call(base, "GET", "/nope")
        assert status == 404 and out["error"]["status"] == 404


def test_readyz_needs_a_recent_round_trip_and_kafka() -> None:
    bus = FakeBus()
    with running_api(settings_for_tests(ready_window_ms=10_000), bus) as (base, _, _):
        status, out = call(base, "GET", "/readyz")
        assert status == 503 and any("round trip" in r for r in out["reasons"])
        call(base, "POST", "/v1/decisions", json.dumps(event()).encode(), JSON)
        assert call(base, "GET", "/readyz")[0] == 200
        bus.kafka_ok, bus.kafka_error = False, "broker down"
        status, out = call(base, "GET", "/readyz")
        assert status == 503 and "kafka: broker down" in out["reasons"]


def test_probe_makes_an_idle_instance_ready() -> None:
    bus = FakeBus()
    with running_api(settings_for_tests(probe_interval_ms=50), bus) as (base, api, loop):
        asyncio.run_coroutine_threadsafe(api.probe_loop(), loop)
        deadline = time.monotonic() + 5
        while call(base, "GET", "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert call(base, "GET", "/readyz")[0] == 200
        assert bus.produced and bus.produced[0][1]["type"] == "riskctl_probe"
        api.draining = True


def test_openapi_document_names_the_limits() -> None:
    with running_api(settings_for_tests(max_timeout_ms=777), FakeBus()) as (base, _, _):
        status, doc = call(base, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    post = doc["paths"]["/v1/decisions"]["post"]
    assert post["parameters"][0]["schema"]["maximum"] == 777
    assert {"400", "413", "415", "417", "422"} <= set(post["responses"])


def test_openapi_decision_lists_every_field_of_the_answer() -> None:
    """The schema named event_id, user_id, action, rules, shadow, ruleset_version and the API's own fields,
    not kind, type, ts, late, too_late and duplicate, which every answer carries."""
    from riskctl.core.decisions import Decision

    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        status, doc = call(base, "GET", "/openapi.json")
    assert status == 200
    record = set(Decision("e", "u", "t", 0, "PASS", [], [], "v").to_dict())
    extra = {"elapsed_ms", "degraded", "replay", "source"}
    assert set(doc["components"]["schemas"]["Decision"]["properties"]) == record | extra


def test_graceful_shutdown_finishes_the_request_in_flight() -> None:
    bus = FakeBus(delay=0.4)
    results: list[tuple[int, dict[str, Any]]] = []
    with running_api(settings_for_tests(timeout_ms=2000), bus) as (base, _, _):
        t = threading.Thread(
            target=lambda: results.append(
                call(base, "POST", "/v1/decisions", json.dumps(event()).encode(), JSON)
            )
        )
        t.start()
        time.sleep(0.1)  # the request is waiting for its decision; leaving the block stops the server
    t.join(10)
    assert results and results[0][0] == 200 and results[0][1]["source"] == "job"
    with pytest.raises(OSError):
        call(base, "GET", "/healthz")


@pytest.mark.parametrize("grace_ms", [0, 600])
def test_shutdown_answers_a_request_still_waiting_with_its_fallback(grace_ms: int) -> None:
    # the request waits longer than the grace: aiohttp cancelled its handler and closed the connection
    # without an answer (RemoteDisconnected); now it gets the fallback before the grace is over
    results: list[Any] = []

    def post(base: str) -> None:
        try:
            results.append(
                call(base, "POST", "/v1/decisions?timeout_ms=8000", json.dumps(event()).encode(), JSON)
            )
        except OSError as exc:
            results.append(exc)

    settings = settings_for_tests(shutdown_timeout_ms=grace_ms)
    with running_api(settings, FakeBus(delay=None)) as (base, api, _):
        t = threading.Thread(target=post, args=(base,))
        t.start()
        deadline = time.monotonic() + 5
        while not api.service.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert api.service.in_flight == 1
        start = time.monotonic()
    t.join(10)
    assert time.monotonic() - start < 4  # not the request's own 8 s
    assert results and not isinstance(results[0], BaseException), results
    status, out = results[0]
    assert status == 200 and out["source"] == "fallback" and out["degraded"] == "shutdown"


# -- the client -------------------------------------------------------------------------------------------
def test_sync_client_typed_result_and_refusal() -> None:
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _), DecisionClient(base) as client:
        result = client.decide(event(amount=20_000))
        assert result.action == "REJECT" and result.fired == ["big"] and result.degraded is None
        again = client.decide(event(amount=20_000) | {"ts": result.raw["ts"]})
        assert again.replay and again.action == "REJECT"
        with pytest.raises(RequestRefused) as info:
            client.decide({"event_id": "x"})
        assert info.value.status == 422 and info.value.field == "user_id"


def test_client_retries_connection_errors_with_the_same_event_then_gives_up() -> None:
    client = DecisionClient("http://127.0.0.1:9", retries=2, backoff_ms=1)  # discard port: refused
    with pytest.raises(Unavailable, match="3 attempt"):
        client.decide(event())


def test_both_clients_post_below_the_path_of_their_base_url() -> None:
    """DecisionClient("http://h:p/prefix") posted to /v1/decisions, AsyncDecisionClient to /prefix/v1/...."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    paths: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            paths.append(self.path)
            doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = json.dumps({**doc, "action": "PASS", "rules": [], "shadow": [], "source": "job"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    async def async_calls(base: str) -> None:
        for url in (base + "/risk/api", base + "/risk/api/", base):
            async with AsyncDecisionClient(url, timeout_ms=100) as client:
                await client.decide(event("a"))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for url in (base + "/risk/api", base + "/risk/api/", base):
            with DecisionClient(url, timeout_ms=100) as client:
                assert client.decide(event("s")).action == "PASS"
        sync_paths, paths[:] = list(paths), []
        asyncio.run(async_calls(base))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    expected = ["/risk/api/v1/decisions?timeout_ms=100"] * 2 + ["/v1/decisions?timeout_ms=100"]
    assert sync_paths == paths == expected


def test_async_client_concurrent_calls_and_fallback() -> None:
    async def go(base: str) -> None:
        async with AsyncDecisionClient(base) as client:
            results = await asyncio.gather(
                *(client.decide(event(f"a{i}", amount=i * 1000)) for i in range(20))
            )
            assert [r.action for r in results] == ["PASS"] * 10 + ["REJECT"] * 10
            with pytest.raises(RequestRefused):
                await client.decide(b"[]")

    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        asyncio.run(go(base))


def test_async_client_retry_reaches_the_same_decision() -> None:
    """A retry after the client gave up (network timeout) gets the decision, produced once."""

    async def go(base: str, bus: FakeBus) -> None:
        # the caller gives up after 0.1 s (a dropped connection, a proxy timeout): no answer, event produced
        async with AsyncDecisionClient(base, network_margin_ms=-1900, retries=0) as client:
            with pytest.raises(Unavailable):
                await client.decide(event("r1", amount=50_000), timeout_ms=2000)
        async with AsyncDecisionClient(base) as client:
            result = await client.decide(
                event("r1", amount=50_000) | {"ts": bus.produced[0][1]["ts"]}, timeout_ms=1000
            )
        assert result.action == "REJECT" and len(bus.produced) == 1

    bus = FakeBus(delay=0.3)
    with running_api(settings_for_tests(), bus) as (base, _, _):
        asyncio.run(go(base, bus))


def test_gzip_bomb_is_413_without_inflating_it_all() -> None:
    bomb = gzip.compress(b" " * 20_000_000)  # ~20 KB on the wire, 20 MB inflated
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        status, out = call(base, "POST", "/v1/decisions", bomb, headers)
        assert status == 413 and out["error"]["status"] == 413
        assert call(base, "GET", "/healthz")[0] == 200


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", b"this is not gzip"),
        ("deflate", b"\x78\x9c not deflate"),
        ("gzip", zlib.compress(b"x")[:4]),
    ],
)
def test_a_body_that_does_not_inflate_is_400_json_naming_the_content_encoding(
    encoding: str, body: bytes
) -> None:
    """aiohttp's RequestPayloadError escaped the handler: a plain-text 500."""
    bus = FakeBus()
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    with running_api(settings_for_tests(), bus) as (base, _, _):
        status, out = call(base, "POST", "/v1/decisions", body, headers)
        assert status == 400 and out["error"]["status"] == 400, out
        assert out["error"]["field"] == "Content-Encoding" and encoding in out["error"]["reason"]
        assert call(base, "GET", "/healthz")[0] == 200
    assert bus.produced == []


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br", "x-custom"])
def test_a_content_encoding_the_api_does_not_decode_is_415_naming_it(
    encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp decoded bodies itself: br and zstd (their libraries absent) got a plain-text 400 naming the
    package to install, after a traceback in the log per request; other codings passed through undecoded and
    were refused as 'not valid JSON'."""
    bus = FakeBus()
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    with running_api(settings_for_tests(), bus) as (base, _, _):
        status, out = call(base, "POST", "/v1/decisions", b"\x28\xb5\x2f\xfd\x00 compressed", headers)
        assert status == 415 and out["error"]["field"] == "Content-Encoding", out
        assert repr(encoding) in out["error"]["reason"]
    assert bus.produced == []
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("deflate", zlib.compress),
        ("identity", lambda b: b),
    ],
)
def test_a_compressed_body_is_decided_as_the_plain_one(encoding: str, compress: Any) -> None:
    bus = FakeBus()
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    with running_api(settings_for_tests(), bus) as (base, _, _):
        status, out = call(base, "POST", "/v1/decisions", compress(json.dumps(event("z1")).encode()), headers)
        assert status == 200 and out["event_id"] == "z1", out
        # a second gzip member, or anything after the end of the compressed data, is refused
        if encoding != "identity":
            body = compress(json.dumps(event("z2")).encode()) + b"trailing"
            status, out = call(base, "POST", "/v1/decisions", body, headers)
            assert status == 400 and out["error"]["field"] == "Content-Encoding", out


def test_cli_serve_without_a_broker_fails_with_a_message_not_a_traceback() -> None:
    res = cli_serve()
    assert res.returncode == 3 and "no broker answers at 127.0.0.1:9" in res.stderr
    assert "Traceback" not in res.stderr
    # librdkafka's line for each connection attempt (every 50 ms): about 190 of them before the message
    assert res.stderr.count("\n") <= 5, res.stderr[-2000:]


def test_stats_report_the_collector_pauses() -> None:
    import gc

    from riskctl.serve.app import GcPauses

    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(pauses)
    assert pauses.full == 1 and pauses.max_ms > 0
    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        status, stats = call(base, "GET", "/v1/stats")
    assert status == 200 and stats["gc_full_collections"] == 0 and stats["gc_pause_max_ms"] == 0
    assert stats["foreign_decisions"] == 0 and stats["reply_key"] == "fake:0"


def test_the_memory_s_bound_in_bytes_is_the_setting_and_stats_show_what_it_holds() -> None:
    settings = settings_for_tests(idempotency_max_bytes=3 << 20)
    with running_api(settings, FakeBus()) as (base, api, _):
        assert api.service.max_bytes == 3 << 20
        call(base, "POST", "/v1/decisions", json.dumps(event()).encode(), JSON)
        status, stats = call(base, "GET", "/v1/stats")
    assert status == 200 and stats["remembered"] == 1
    assert stats["remembered_bytes"] == api.service.bytes > 0


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["long-header", "many-headers", "long-url"],
)
def test_a_malformed_request_is_400_and_one_log_line_not_a_traceback(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp logged every request it could not parse with a traceback at ERROR: whoever sent them filled
    the logs with tracebacks."""
    import socket
    import urllib.parse

    with running_api(settings_for_tests(), FakeBus()) as (base, _, _):
        url = urllib.parse.urlsplit(base)
        with (
            caplog.at_level(logging.DEBUG),
            socket.create_connection((url.hostname, url.port), timeout=5) as sock,
        ):
            sock.sendall(request_bytes)
            answer = b""
            while chunk := sock.recv(65_536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer[:100]
        assert call(base, "GET", "/healthz")[0] == 200
    refused = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING, caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 200\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n40\r\n"],
    ids=["length", "chunked"],
)
def test_a_client_that_leaves_mid_body_leaves_no_traceback(
    framing: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """The body's read failed with ConnectionResetError, which aiohttp logged at ERROR with a traceback:
    anyone could fill the logs with one per connection."""
    import socket
    import urllib.parse

    with running_api(settings_for_tests(), FakeBus()) as (base, api, _):
        url = urllib.parse.urlsplit(base)
        with caplog.at_level(logging.DEBUG):
            with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
                head = b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                sock.sendall(head + framing + b'{"event_id": "e')
                deadline = time.monotonic() + 3
                while not api.callers.callers["anonymous"].in_flight and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert api.callers.callers["anonymous"].in_flight == 1  # the handler reads the body
            deadline = time.monotonic() + 3
            while api.callers.callers["anonymous"].in_flight and time.monotonic() < deadline:
                time.sleep(0.01)
            assert call(base, "GET", "/healthz")[0] == 200
        assert api.callers.callers["anonymous"].in_flight == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text


def test_a_body_that_trickles_in_gets_408_and_frees_the_connection() -> None:
    """A client that sends the headers and then the body a byte at a time (or never) would hold a handler,
    outside max_in_flight, for as long as it liked."""
    import socket
    import time
    import urllib.parse

    with running_api(settings_for_tests(body_timeout_ms=300), FakeBus()) as (base, _, _):
        url = urllib.parse.urlsplit(base)
        with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 200\r\n\r\n" + b'{"event_id": "e'
            )
            start = time.monotonic()
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65_536)
                if not chunk:
                    break
                answer += chunk
            waited = time.monotonic() - start
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), head
        assert "body_timeout_ms (300 ms)" in json.loads(body)["error"]["reason"]
        assert 0.25 < waited < 3
        status, out = call(base, "POST", "/v1/decisions", json.dumps(event()).encode(), JSON)
        assert status == 200  # the others are served as before


@pytest.mark.parametrize(
    "drip",
    [
        pytest.param(b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nX-Slow: ", id="headers"),
        pytest.param(b"", id="nothing"),
    ],
)
def test_a_connection_without_whole_headers_is_closed_after_the_idle_timeout(drip: bytes) -> None:
    """A client that sends its headers a byte at a time (or connects and sends nothing) held its connection
    for aiohttp's default of an hour: enough of them exhaust the process's file descriptors for everyone."""
    import socket
    import time
    import urllib.parse

    with running_api(settings_for_tests(idle_timeout_ms=500), FakeBus()) as (base, _, _):
        url = urllib.parse.urlsplit(base)
        with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
            sock.sendall(drip)
            start = time.monotonic()
            closed = False
            while time.monotonic() - start < 4 and not closed:
                try:
                    if drip:
                        sock.sendall(b"a")
                    sock.settimeout(0.1)
                    closed = sock.recv(65_536) == b""
                except TimeoutError:
                    continue
                except OSError:  # reset while sending
                    closed = True
            waited = time.monotonic() - start
        assert closed, "the connection is still open after 4 s"
        assert 0.4 < waited < 2, waited
        status, _ = call(base, "POST", "/v1/decisions", json.dumps(event()).encode(), JSON)
        assert status == 200  # the others are served as before


def test_serve_on_a_port_in_use_says_so_and_closes_its_kafka_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import socket

    from riskctl.errors import ConfigError
    from riskctl.serve import app, kafka_bus

    class Bus(FakeBus):
        instances: list[Bus] = []

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__()
            self.started = self.closed = False
            Bus.instances.append(self)

        def start(self, loop: object, on_decision: object) -> None:
            self.started = True

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(kafka_bus, "KafkaBus", Bus)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        s = settings_for_tests(port=taken.getsockname()[1])
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{s.serve.port}"):
            asyncio.run(app.serve(s))
    (bus,) = Bus.instances
    assert bus.started and bus.closed


def test_a_grace_of_0_stops_at_once_with_a_body_still_arriving() -> None:
    """aiohttp reads a shutdown timeout of 0 as none: the instance waited for the trickling body's
    serve.body_timeout_ms (here 5 s; up to 10 minutes) before it stopped."""
    import socket
    import urllib.parse

    results: list[Any] = []
    settings = settings_for_tests(shutdown_timeout_ms=0, body_timeout_ms=5000)
    with running_api(settings, FakeBus(delay=None)) as (base, api, _):
        url = urllib.parse.urlsplit(base)
        waiting = threading.Thread(
            target=lambda: results.append(
                call(base, "POST", "/v1/decisions?timeout_ms=8000", json.dumps(event()).encode(), JSON)
            )
        )
        waiting.start()
        sock = socket.create_connection((url.hostname, url.port), timeout=10)
        sock.sendall(
            b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n" + b'{"event_id": "e'
        )
        deadline = time.monotonic() + 5
        while (api.service.in_flight, api.callers.callers["anonymous"].in_flight) != (1, 2):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        start = time.monotonic()
    stopped = time.monotonic() - start
    waiting.join(10)
    with sock:
        answer = sock.recv(65_536)  # its body never came: 503 (aiohttp reads no more of it)
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    assert stopped < 2, stopped
    assert results and results[0][0] == 200 and results[0][1]["degraded"] == "shutdown"


def test_a_body_still_arriving_when_the_shutdown_begins_gets_503_at_once() -> None:
    """aiohttp reads nothing more from any connection once its shutdown begins: a body still arriving never
    ended, even when the rest of it came a moment later. Its handler waited for serve.body_timeout_ms, and
    the instance's exit with it, then answered 408 that the body did not arrive, blaming a client whose
    body had. Now 503 at once, and the instance stops."""
    import socket
    import urllib.parse

    body = json.dumps(event()).encode()
    bus = FakeBus(delay=None)
    settings = settings_for_tests(shutdown_timeout_ms=10_000, body_timeout_ms=5_000)
    with running_api(settings, bus) as (base, api, _):
        url = urllib.parse.urlsplit(base)
        sock = socket.create_connection((url.hostname, url.port), timeout=10)
        sock.sendall(
            b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:5]
        )
        deadline = time.monotonic() + 5
        while not api.callers.callers["anonymous"].in_flight:  # its handler reads the body
            assert time.monotonic() < deadline
            time.sleep(0.01)
        rest = threading.Timer(0.2, sock.sendall, (body[5:],))  # in time, but after the shutdown began
        rest.start()
        start = time.monotonic()
    stopped = time.monotonic() - start
    rest.join(5)
    with sock:
        answer = b""
        while chunk := sock.recv(65_536):
            answer += chunk
    head, _, out = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer[:300]
    assert json.loads(out)["error"]["reason"] == "shutting down: the rest of the body was not read"
    assert stopped < 2, stopped
    assert bus.produced == []


def test_connections_beyond_max_connections_get_a_503_at_once_and_the_others_are_served() -> None:
    """aiohttp bounds no number of connections: opened faster than serve.idle_timeout_ms closes them (a
    slowloris sending nothing, or headers a byte at a time), they took every file descriptor of the process,
    the Kafka clients' included. Now serve.max_connections at once: one more is answered 503 (JSON, with the
    reason and Retry-After) as it opens and closed; once some close, requests are served again."""
    import socket
    import urllib.parse

    with running_api(settings_for_tests(max_connections=8), FakeBus()) as (base, api, _):
        url = urllib.parse.urlsplit(base)
        held = [socket.create_connection((url.hostname, url.port), timeout=5) for _ in range(8)]
        try:
            for sock in held[:4]:
                sock.sendall(b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\n")  # headers begun, never ended
            deadline = time.monotonic() + 5
            while api.connections.open < 8:  # accepted by the server (the kernel connects before it)
                assert time.monotonic() < deadline, api.connections
                time.sleep(0.01)
            with socket.create_connection((url.hostname, url.port), timeout=5) as extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while chunk := extra.recv(65_536):
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503"), answer[:200]
            assert b"Retry-After: 1" in head
            assert json.loads(body)["error"]["reason"] == "too many connections open: try again"
            assert api.connections.refused == 1
            for sock in held[:2]:
                sock.close()
            deadline = time.monotonic() + 5
            while True:  # the server sees them closed at once, or nearly
                try:
                    status, _ = call(base, "POST", "/v1/decisions", json.dumps(event()).encode(), JSON)
                except OSError:
                    status = 0
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert status == 200
        finally:
            for sock in held:
                sock.close()


def test_refused_connections_waiting_for_their_close_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused connection is held open for a moment after its 503 (for its client to read it), a descriptor
    each, without bound: opened faster than they closed (600 a second with 768 held, ulimit -n 1024), they
    took the whole reserve kept for the Kafka clients and the logs, and the process could open nothing. Now
    at most _MAX_LINGERING wait; one more is reset as it opens."""
    import socket
    import urllib.parse

    from riskctl.serve import app

    monkeypatch.setattr(app, "_MAX_LINGERING", 2, raising=False)
    monkeypatch.setattr(app, "_REFUSED_CLOSE_S", 5.0)  # they all still wait while the test looks
    with running_api(settings_for_tests(max_connections=2), FakeBus()) as (base, api, _):
        url = urllib.parse.urlsplit(base)
        held = [socket.create_connection((url.hostname, url.port), timeout=5) for _ in range(2)]
        extra: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 5
            while api.connections.open < 2:
                assert time.monotonic() < deadline, api.connections
                time.sleep(0.01)
            for _ in range(6):
                extra.append(socket.create_connection((url.hostname, url.port), timeout=5))
                while api.connections.refused < len(extra):  # one at a time, in order
                    assert time.monotonic() < deadline, api.connections
                    time.sleep(0.01)
            assert api.connections.open == 2 + 2, api.connections
            answers = []
            for sock in extra:
                try:
                    answers.append(sock.recv(65_536)[:12])
                except ConnectionResetError:
                    answers.append(b"reset")
            assert answers[:2] == [b"HTTP/1.1 503"] * 2, answers
            assert all(a in (b"", b"reset") for a in answers[2:]), answers
        finally:
            for sock in held + extra:
                sock.close()


def test_max_connections_is_lowered_to_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from riskctl.serve.app import FD_RESERVE, connection_bound

    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 4096))
    assert connection_bound(4096) == 1024 - FD_RESERVE
    assert connection_bound(100) == 100
    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    monkeypatch.setattr(resource, "getrlimit", lambda _which: unlimited)
    assert connection_bound(4096) == 4096
