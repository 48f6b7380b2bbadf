"""Which HTTP server and which Kafka client for ``riskctl serve``: a small, short comparison.

HTTP: each server runs in a process of its own with the same handler (read a JSON event of ~200 bytes,
parse it with orjson, answer a JSON decision of ~300 bytes); one load process sends requests over
``--connections`` keep-alive connections (aiohttp client) for ``--seconds``; requests/s and latency
percentiles (nearest rank, riskctl.core.stats) per server.

Kafka: the API's path is produce an event, then read a record back from a topic. For each client, one
producer and one consumer (assigned to the partition, from its end) on a fresh topic of one partition:
``--messages`` round trips one after the other (latency p50/p99), then ``--messages`` pipelined (all sent,
then read: round trips per second).

Usage: .venv/bin/python bench/api_choice.py [--seconds 4] [--connections 32] [--messages 500]
       [--out bench/results/api-choice.md]  (needs the local Kafka: riskctl stack up)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import free_port  # noqa: E402

from riskctl.core.stats import percentile  # noqa: E402

EVENT = orjson.dumps(
    {
        "event_id": "e-0000000001",
        "user_id": "user-000123",
        "type": "transfer",
        "ts": 1_800_000_000_000,
        "amount": 1234.5,
        "device_id": "device-abcdef",
        "city": "Paris",
        "ip": "203.0.113.7",
    }
)


def _answer(body: bytes) -> bytes:
    ev = orjson.loads(body)
    return orjson.dumps(
        {
            "kind": "decision",
            "event_id": ev["event_id"],
            "user_id": ev["user_id"],
            "action": "PASS",
            "rules": [],
            "shadow": [{"id": "large_transfer_reject", "version": 1, "action": "REJECT", "evidence": {}}],
            "ruleset_version": "abc123",
            "elapsed_ms": 1.0,
            "degraded": None,
        }
    )


# -- servers ---------------------------------------------------------------------------------------------
def run_aiohttp(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=_answer(await request.read()), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/decisions", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def run_starlette(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def handle(request: Request) -> Response:
        return Response(_answer(await request.body()), media_type="application/json")

    app = Starlette(routes=[Route("/v1/decisions", handle, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, http="httptools")


def run_raw_asgi(port: int) -> None:
    """uvicorn with a bare ASGI callable: the floor of the ASGI path, without a framework."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        out = _answer(body)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(out)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": out})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, http="httptools")


SERVERS = {"aiohttp 3.14": run_aiohttp, "starlette 1.10 + uvicorn 0.55 (httptools)": run_starlette}
SERVERS["uvicorn 0.55 bare ASGI (httptools)"] = run_raw_asgi


async def _load(port: int, seconds: float, connections: int) -> dict[str, float]:
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/decisions"
    lat: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        for _ in range(200):  # wait until it listens
            try:
                async with session.post(url, data=EVENT, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    async with session.post(
                        url, data=EVENT, headers={"Content-Type": "application/json"}
                    ) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    lat.append((time.perf_counter() - t0) * 1000)
                else:
                    errors += 1

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        took = time.perf_counter() - t_start
    lat.sort()
    return {
        "rps": len(lat) / took,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "errors": errors,
    }


def bench_http(seconds: float, connections: int) -> list[tuple[str, dict[str, float]]]:
    out = []
    ctx = mp.get_context("spawn")
    for name, target in SERVERS.items():
        port = free_port()
        proc = ctx.Process(target=target, args=(port,), daemon=True)
        proc.start()
        try:
            out.append((name, asyncio.run(_load(port, seconds, connections))))
        finally:
            proc.terminate()
            proc.join(10)
        print(name, out[-1][1], flush=True)
    return out


# -- Kafka -----------------------------------------------------------------------------------------------
def _topic(bootstrap: str) -> str:
    from riskctl.kafka_admin import ensure_topics

    name = f"bench-api-choice-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [name], partitions=1)
    return name


def kafka_confluent(bootstrap: str, n: int) -> dict[str, float]:
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = _topic(bootstrap)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "acks": "all"})
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    p.list_topics(topic, timeout=10)
    _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.assign([TopicPartition(topic, 0, high)])
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        p.produce(topic, EVENT, key=str(i).encode())
        p.poll(0)
        while True:
            m = c.poll(1.0)
            if m is not None and not m.error():
                break
        lat.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    for i in range(n):
        p.produce(topic, EVENT, key=str(i).encode())
        p.poll(0)
    p.flush()
    got = 0
    while got < n:
        first = c.poll(
            1.0
        )  # consume(500, t) waits all of t unless 500 records came: poll, then take the rest
        batch = [] if first is None else [first, *c.consume(500, 0)]
        got += sum(1 for m in batch if not m.error())
    rate = n / (time.perf_counter() - t0)
    c.close()
    return _summary(lat, rate)


def kafka_python(bootstrap: str, n: int) -> dict[str, float]:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = _topic(bootstrap)
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks="all")
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_end(tp)
    c.position(tp)
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        p.send(topic, EVENT, key=str(i).encode())
        while not c.poll(timeout_ms=1000, max_records=1):
            pass
        lat.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    for i in range(n):
        p.send(topic, EVENT, key=str(i).encode())
    p.flush()
    got = 0
    while got < n:
        got += sum(len(v) for v in c.poll(timeout_ms=1000).values())
    rate = n / (time.perf_counter() - t0)
    p.close()
    c.close()
    return _summary(lat, rate)


def kafka_aiokafka(bootstrap: str, n: int) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = _topic(bootstrap)

    async def go() -> dict[str, float]:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks="all")
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
        await p.start()
        await c.start()
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_end(tp)
        await c.position(tp)
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            await p.send(topic, EVENT, key=str(i).encode())
            await c.getone()
            lat.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        for i in range(n):
            await p.send(topic, EVENT, key=str(i).encode())
        await p.flush()
        got = 0
        while got < n:
            got += sum(len(v) for v in (await c.getmany(timeout_ms=1000)).values())
        rate = n / (time.perf_counter() - t0)
        await p.stop()
        await c.stop()
        return _summary(lat, rate)

    return asyncio.run(go())


def _summary(lat: list[float], rate: float) -> dict[str, float]:
    lat.sort()
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "pipelined_per_s": rate}


KAFKA = {
    "confluent-kafka 2.16.1": kafka_confluent,
    "aiokafka 0.14.0": kafka_aiokafka,
    "kafka-python 2.3.3": kafka_python,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--bootstrap", default="")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "api-choice.md"))
    args = ap.parse_args()
    from riskctl.config import load_settings

    bootstrap = args.bootstrap or load_settings().kafka_bootstrap
    http = bench_http(args.seconds, args.connections)
    kafka = []
    for name, fn in KAFKA.items():
        kafka.append((name, fn(bootstrap, args.messages)))
        print(name, kafka[-1][1], flush=True)
    lines = [
        "# riskctl serve: choice of HTTP server and Kafka client",
        "",
        f"Command: `.venv/bin/python bench/api_choice.py --seconds {args.seconds:g} --connections "
        f"{args.connections} --messages {args.messages}` (2-core machine shared with other work: "
        "compare the rows of one run, not runs of different days).",
        "",
        f"## HTTP: the same JSON handler, {args.connections} keep-alive connections, {args.seconds:g} s each "
        "(load generator: one aiohttp client process)",
        "",
        "| server | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in http:
        lines.append(f"| {name} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']:.0f} |")
    lines += [
        "",
        f"## Kafka: produce one event, read it back (1 partition); {args.messages} one by one, then "
        f"{args.messages} pipelined",
        "",
        "| client | round trip p50 ms | p99 ms | pipelined round trips/s |",
        "|---|---:|---:|---:|",
    ]
    for name, r in kafka:
        lines.append(f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['pipelined_per_s']:,.0f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
