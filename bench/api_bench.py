"""The decision API under load: ``riskctl serve`` in front of the real job, at fixed request rates.

One run: fresh topics, the job on the embedded MiniCluster (rules from rules/, file source), one
``riskctl serve``, then for each ``--rates`` value an open-loop load of
``--seconds``: request i is sent at t0 + i/rate whatever the answers, each with the API's default timeout
(``serve.timeout_ms``), over up to ``--connections`` keep-alive connections, after ``--warmup-seconds`` of
load that is not recorded. The load generator (``--generator``) is ``lean`` (bench/harness/loadgen.py, the
cheapest here in CPU per request, which matters on shared cores), ``vegeta`` (Go, built from the Go module
proxy into bench/.work/bin on first use; aiohttp when there is no ``go``) or ``aiohttp`` (one Python
session). Per rate:

* client latency p50/p99/p99.9 (send to answer, nearest rank), the API's own ``elapsed_ms`` p50/p99, the
  timeout rate (answers with ``degraded``), errors, and the rate actually achieved by the load generator;
* the CPU spent per request by the API, the job, the Kafka broker and the load generator (``/proc``), and
  the cores that makes;
* in the same seconds, the job's own produce->decision latency: ``--direct-rate`` events/s produced straight
  to the events topic (confluent-kafka) by another user population, their decisions read from the decisions
  topic. ``api_adds_ms`` = API client p50 - direct p50: what the HTTP hop, the API and the replies topic add.

Everything (Kafka, the job, the API, this load generator) shares the machine's cores: at the high rates the
load generator itself is part of what saturates; the achieved rate says so.

    .venv/bin/python bench/api_bench.py --rates 200,1000,5000 --seconds 10

Writes bench/results/api.json (``{"api": {...}}``, earlier runs kept) and bench/results/api.md, and puts the
run in bench/results/bench.json as its ``api`` section (with section (g) of bench.md and the API's targets).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from harness import free_port, process_env  # noqa: E402
from harness.report import api_table, markdown, targets  # noqa: E402
from harness.sampling import proc_stat, session_pids  # noqa: E402

from riskctl.config import load_settings  # noqa: E402
from riskctl.core.stats import percentile  # noqa: E402
from riskctl.kafka_admin import ensure_topics  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / ".work"
VEGETA = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION = "v12.13.0"
TYPES = ("login", "order", "transfer", "2fa", "password_change")


def _pcts(values: list[float]) -> dict[str, float | None]:
    v = sorted(values)
    return {f"p{q:g}": (round(x, 2) if (x := percentile(v, q)) is not None else None) for q in (50, 99, 99.9)}


def event(user: str, n: int, rng: random.Random) -> dict[str, Any]:
    etype = rng.choice(TYPES)
    ev: dict[str, Any] = {"event_id": f"{user}-{n}-{uuid.uuid4().hex[:6]}", "user_id": user, "type": etype}
    ev["ts"] = int(time.time() * 1000)
    if etype == "login":
        ev.update(
            success=rng.random() > 0.2, device_id=f"d{rng.randrange(3)}", city=rng.choice(["Paris", "Lyon"])
        )
    elif etype in {"transfer", "order"}:
        ev["amount"] = rng.choice([50, 300, 2_000, 12_000, 25_000])
    return ev


class InstantBus:
    """``--in-memory``: the API without Kafka or job: each event is "decided" (PASS) on the next loop turn.
    What is left is the API's own cost: HTTP, validation, idempotency memory, futures, JSON."""

    reply_key = "bench:0"
    kafka_ok = True
    kafka_error = ""
    partition = 0

    def __init__(self) -> None:
        self.on_decision: Any = None

    def produce(self, key: bytes, value: bytes, on_failure: Any) -> None:
        ev = json.loads(value)
        doc = {"kind": "decision", "event_id": ev["event_id"], "user_id": ev["user_id"], "type": ev["type"]}
        doc.update(
            ts=ev["ts"], action="PASS", rules=[], shadow=[], ruleset_version="x", late=False, too_late=False
        )
        asyncio.get_running_loop().call_soon(self.on_decision, doc)


def serve_in_memory(port: int, event_loop: str) -> None:
    from aiohttp import web

    from riskctl.serve.app import Api

    settings = load_settings()
    bus = InstantBus()
    api = Api(settings, bus, instance="bench")  # type: ignore[arg-type]
    bus.on_decision = api.service.on_decision
    if event_loop == "uvloop":  # a contender only: riskctl serve runs on asyncio's loop (no gain measured)
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    web.run_app(api.app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


class Processes:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=process_env(env),
            cwd=ROOT,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(proc.pid, signal.SIGKILL)


class DirectPath(threading.Thread):
    """Events straight to Kafka at a low rate; their decisions read back: the job's own latency."""

    def __init__(self, bootstrap: str, events: str, decisions: str, rate: float) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer, Producer, TopicPartition

        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "api-bench",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        meta = self.consumer.list_topics(decisions, timeout=10)
        tps = []
        for p in meta.topics[decisions].partitions:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(decisions, p), timeout=10)
            tps.append(TopicPartition(decisions, p, high))
        self.consumer.assign(tps)
        self.events, self.rate = events, rate
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.window: tuple[float, float] = (0.0, 0.0)
        self.stop_flag = threading.Event()
        self.rng = random.Random(7)

    def run(self) -> None:
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        n = 0
        t0 = time.perf_counter()
        while not self.stop_flag.is_set():
            ev = event(f"direct-{self.rng.randrange(500)}", n, self.rng)
            self.sent[ev["event_id"]] = time.perf_counter()
            self.producer.produce(self.events, json.dumps(ev).encode(), key=ev["user_id"].encode())
            self.producer.poll(0)
            n += 1
            time.sleep(max(0.0, t0 + n / self.rate - time.perf_counter()))
        reader.join(5)

    def _read(self) -> None:
        while not self.stop_flag.is_set():
            first = self.consumer.poll(0.05)  # consume(500, t) waits all of t unless 500 records came
            for m in [] if first is None else [first, *self.consumer.consume(500, 0)]:
                if m.error() is not None or m.key() is None:
                    continue
                sent = self.sent.get(m.key().decode())
                now = time.perf_counter()
                if sent is not None and self.window[0] <= sent <= self.window[1]:
                    self.latencies.append((now - sent) * 1000)
        self.consumer.close()


async def load(url: str, rate: int, seconds: float, connections: int, seed: int) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(seed)
    users = [f"api-{seed}-{i}" for i in range(max(100, rate * 2))]
    lat: list[float] = []
    server: list[float] = []
    degraded = errors = 0
    lag_max = 0.0
    conn = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def one(body: bytes) -> None:
            nonlocal degraded, errors
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    data = await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            if status != 200:
                errors += 1
                return
            lat.append((time.perf_counter() - t0) * 1000)
            doc = json.loads(data)
            server.append(doc["elapsed_ms"])
            if doc.get("degraded"):
                degraded += 1

        tasks = []
        total = int(rate * seconds)
        start = time.perf_counter()
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag_max = max(lag_max, -delay)
            body = json.dumps(event(rng.choice(users), i, rng)).encode()
            tasks.append(asyncio.create_task(one(body)))
        sent_in = time.perf_counter() - start
        await asyncio.gather(*tasks)
        total_s = time.perf_counter() - start
    return {
        "target_rate": rate,
        "achieved_send_rate": round(total / sent_in, 1),
        "requests": total,
        "answered": len(lat),
        "answered_per_s": round(len(lat) / total_s, 1),
        "client_ms": _pcts(lat),
        "api_elapsed_ms": _pcts(server),
        "timeout_rate": round(degraded / max(1, len(lat)), 5),
        "timeouts": degraded,
        "errors": errors,
        "generator_lag_max_ms": round(lag_max * 1000, 1),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }


def planned_events(rate: int, seconds: float, seed: int) -> list[dict[str, Any]]:
    """The events of one load, built before it starts (as :func:`load` builds its own as it goes), each
    stamped with about when it will be sent."""
    rng = random.Random(seed)
    users = [f"api-{seed}-{i}" for i in range(max(100, rate * 2))]
    t0_ms = int(time.time() * 1000)
    events = []
    for i in range(int(rate * seconds)):
        ev = event(rng.choice(users), i, rng)
        ev["ts"] = t0_ms + int(i * 1000 / rate)
        events.append(ev)
    return events


def vegeta_binary() -> str | None:
    """vegeta on the PATH, or built once into bench/.work/bin from the Go module proxy; None without go."""
    found = shutil.which("vegeta")
    local = WORK / "bin" / "vegeta"
    if found or local.exists():
        return found or str(local)
    go = shutil.which("go")
    if go is None:
        return None
    print(f"building vegeta {VEGETA_VERSION} into {local.parent} (once)", file=sys.stderr, flush=True)
    local.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [go, "install", f"{VEGETA}@{VEGETA_VERSION}"],
        env={**os.environ, "GOBIN": str(local.parent)},
        check=True,
    )
    return str(local)


def load_vegeta(
    vegeta: str, url: str, rate: int, seconds: float, connections: int, seed: int
) -> dict[str, Any]:
    """The same open-loop load as :func:`load`, sent by vegeta: one target per request (its own event),
    the results read back afterwards (each answer's body: ``elapsed_ms`` and ``degraded``)."""
    import base64

    events = planned_events(rate, seconds, seed)
    total = len(events)
    folder = Path(tempfile.mkdtemp(prefix="api-bench-vegeta-"))
    try:
        targets_file, out = folder / "targets.jsonl", folder / "results.bin"
        header = {"Content-Type": ["application/json"]}
        with targets_file.open("w") as f:
            for ev in events:
                body = base64.b64encode(json.dumps(ev).encode()).decode()
                f.write(json.dumps({"method": "POST", "url": url, "body": body, "header": header}) + "\n")
        attack = [
            vegeta, "attack", "-format=json", f"-targets={targets_file}", f"-rate={rate}/1s",
            f"-duration={int(total * 1000 / rate)}ms", "-timeout=5s", f"-connections={connections}",
            f"-max-connections={connections}", f"-output={out}",
        ]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(attack, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        generator_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        summary = json.loads(
            subprocess.run([vegeta, "report", "-type=json", str(out)], check=True, capture_output=True).stdout
        )
        encode = [vegeta, "encode", "--to", "json", str(out)]
        encoded = subprocess.run(encode, check=True, capture_output=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lat: list[float] = []
    server: list[float] = []
    degraded = errors = 0
    for line in encoded.stdout.splitlines():
        r = json.loads(line)
        if r.get("code") != 200 or r.get("error"):
            errors += 1
            continue
        lat.append(r["latency"] / 1e6)
        doc = json.loads(base64.b64decode(r["body"]))
        server.append(doc["elapsed_ms"])
        if doc.get("degraded"):
            degraded += 1
    span = summary.get("duration", 0) / 1e9 + summary.get("wait", 0) / 1e9
    return {
        "generator": "vegeta",
        "target_rate": rate,
        "achieved_send_rate": round(summary.get("rate", 0.0), 1),
        "requests": total,
        "answered": len(lat),
        "answered_per_s": round(len(lat) / span, 1) if span else None,
        "client_ms": _pcts(lat),
        "api_elapsed_ms": _pcts(server),
        "timeout_rate": round(degraded / max(1, len(lat)), 5),
        "timeouts": degraded,
        "errors": errors,
        "generator_cpu_us_per_request": round(generator_cpu * 1e6 / max(1, total), 1),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }


def load_lean(url: str, rate: int, seconds: float, connections: int, seed: int) -> dict[str, Any]:
    """The same open-loop load from :mod:`harness.loadgen` (pre-built requests, an asyncio protocol)."""
    from urllib.parse import urlsplit

    from harness import loadgen

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    events = planned_events(rate, seconds, seed)
    total = len(events)
    bodies = [loadgen.post(host, port, parts.path, json.dumps(ev).encode()) for ev in events]
    cpu0 = time.thread_time()  # this thread only: the direct path's Kafka threads are not the generator
    gc.collect()
    gc.disable()  # no collection pauses in the generator (its objects hold no cycles): they would be latency
    try:
        res = asyncio.run(loadgen.run(host, port, bodies, total, rate, connections=connections, timeout=5.0))
    finally:
        gc.enable()
    cpu = time.thread_time() - cpu0
    degraded = sum(1 for b in res.bodies if b.get("degraded"))
    return {
        "generator": "lean",
        "target_rate": rate,
        "achieved_send_rate": round(total / res.send_seconds, 1) if res.send_seconds else None,
        "requests": total,
        "answered": len(res.latencies_ms),
        "answered_per_s": round(len(res.latencies_ms) / res.total_seconds, 1),
        "client_ms": _pcts(res.latencies_ms),
        "api_elapsed_ms": _pcts([b["elapsed_ms"] for b in res.bodies]),
        "timeout_rate": round(degraded / max(1, len(res.latencies_ms)), 5),
        "timeouts": degraded,
        "errors": res.errors,
        "generator_cpu_us_per_request": round(cpu * 1e6 / max(1, total), 1),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }


def run_load(args: argparse.Namespace, url: str, rate: int, seconds: float, seed: int) -> dict[str, Any]:
    """One load with the generator of ``--generator``."""
    if args.generator == "lean":
        return load_lean(url, rate, seconds, args.connections, seed)
    if args.vegeta:
        return load_vegeta(args.vegeta, url, rate, seconds, args.connections, seed)
    run = asyncio.run(load(url, rate, seconds, args.connections, seed))
    run["generator"] = "aiohttp"
    return run


def kafka_pids(settings: Any) -> list[int]:
    """The local stack's broker (its CPU is part of what a request costs on this machine)."""
    from riskctl.stack.services import services

    found = [service for service in services(settings, flink=False) if service.name == "kafka"]
    return [pid for service in found for pid in service.pids()]


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds so far of these processes (those still running)."""
    return sum(st[2] for pid in pids if (st := proc_stat(pid)) is not None)


def in_memory(args: argparse.Namespace) -> None:
    """The API's own cost: the same load against an instance whose bus decides at once; one instance per
    event loop of ``--event-loops``, one after the other at each rate (contenders in one run)."""
    tmp = Path(tempfile.mkdtemp(prefix="api-bench-mem-"))
    runs = []
    loops = args.event_loops.split(",")
    for i, rate in enumerate(int(r) for r in args.rates.split(",")):
        for event_loop in loops:
            procs = Processes(tmp)
            port = free_port()
            try:
                argv = [sys.executable, str(Path(__file__).resolve()), "--serve-in-memory", str(port)]
                procs.start(f"serve-{event_loop}", [*argv, "--event-loops", event_loop], {})
                base = f"http://127.0.0.1:{port}"
                for _ in range(100):
                    try:
                        urllib.request.urlopen(base + "/healthz", timeout=2).close()  # noqa: S310
                        break
                    except OSError:
                        time.sleep(0.1)
                run_load(args, base + "/v1/decisions", 100, 2, seed=0)  # warm-up, not recorded
                cpu0 = cpu_seconds([procs.procs[-1].pid])
                run = run_load(args, base + "/v1/decisions", rate, args.seconds, seed=i + 1)
                run["api_cpu_us_per_request"] = round(
                    (cpu_seconds([procs.procs[-1].pid]) - cpu0) * 1e6 / max(1, run["requests"]), 1
                )
                run["event_loop"] = event_loop
                runs.append(run)
                print(json.dumps(run), flush=True)
            finally:
                procs.stop()
    out = Path(args.out or RESULTS / "api-in-memory.json")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    this = {"command": "bench/api_bench.py " + " ".join(sys.argv[1:]), "started": started, "runs": runs}
    doc: dict[str, Any] = {"api_in_memory": this}
    if out.exists():  # earlier runs are kept, newest first
        old = json.loads(out.read_text())
        earlier = [old.get("api_in_memory"), *old.get("api_in_memory_earlier", [])]
        doc["api_in_memory_earlier"] = [r for r in earlier if r][:9]
    out.write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# riskctl serve alone (in-memory bus: no Kafka, no job)",
        "",
        f"{os.cpu_count()} cores shared by the API and the load generator (and whatever else runs there).",
    ]
    for run in [doc["api_in_memory"], *doc.get("api_in_memory_earlier", [])]:
        lines += [
            "",
            f"## {run.get('started', '?')}: `.venv/bin/python {run['command']}`",
            "",
            "| event loop | generator | target req/s | sent/s | answered/s | client p50 | p99 | p99.9 ms "
            "| API elapsed p50 / p99 ms | errors | CPU µs/request: API / generator | load avg |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in run["runs"]:
            c, a = r["client_ms"], r["api_elapsed_ms"]
            lines.append(
                f"| {r.get('event_loop', 'asyncio')} | {r.get('generator', 'aiohttp')} | "
                f"{r['target_rate']} | {r['achieved_send_rate']} | {r.get('answered_per_s', '?')} | "
                f"{c['p50']} | {c['p99']} | {c['p99.9']} | {a['p50']} / {a['p99']} | {r['errors']} | "
                f"{r.get('api_cpu_us_per_request', '?')} / {r.get('generator_cpu_us_per_request', '?')} | "
                f"{_loads(r)} |"
            )
        if run.get("note"):
            lines += ["", run["note"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def _loads(run: dict[str, Any]) -> str:
    return str(run.get("load_average_1m_after", "?"))


def report(api_runs: list[dict[str, Any]]) -> str:
    """bench/results/api.md: one table per run, newest first."""
    lines = [
        "# riskctl serve under load",
        "",
        "Everything on one machine: Kafka, the job (MiniCluster, parallelism 1), one `riskctl serve`, the",
        "load generator, and whatever else runs there (the load average after each rate: how busy it was).",
        "'API adds' = client p50 minus the job's own produce->decision p50 measured in the same seconds.",
    ]
    for run in api_runs:
        lines += [
            "",
            f"## {run['started']}: `.venv/bin/python {run['command']}` "
            f"(default timeout {run['timeout_ms']} ms; load generator: {run.get('generator', 'aiohttp')})",
            "",
            *api_table(run["runs"]),
        ]
        if run.get("note"):
            lines += ["", run["note"]]
    return "\n".join(lines) + "\n"


def into_bench_json(api: dict[str, Any], folder: Path) -> None:
    """The run becomes the ``api`` section of ``bench.json`` (and section (g) of ``bench.md``) in ``folder``,
    beside the figures of the last ``bench/bench.py`` run, whose targets are recomputed with it."""
    path = folder / "bench.json"
    if not path.exists():
        return
    doc = json.loads(path.read_text())
    doc["api"] = api
    doc["targets"] = targets(doc)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (folder / "bench.md").write_text(markdown(doc))
    print(f"wrote the api section of {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="200,1000,5000")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=256)
    ap.add_argument("--direct-rate", type=float, default=50)
    ap.add_argument("--warmup-seconds", type=float, default=60, help="load before the measured rates")
    ap.add_argument("--warmup-rate", type=int, default=500)
    ap.add_argument(
        "--generator",
        choices=("lean", "vegeta", "aiohttp"),
        default="lean",
        help="the load generator: lean (bench/harness/loadgen.py), vegeta (built with go on first use; "
        "aiohttp when there is no go), or aiohttp",
    )
    ap.add_argument("--in-memory", action="store_true", help="the API alone: no Kafka, no job (its own cost)")
    ap.add_argument(
        "--event-loops",
        default="asyncio,uvloop",
        help="--in-memory: the API's event loops to compare, one instance each, in one run",
    )
    ap.add_argument("--serve-in-memory", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--bench-json",
        action="store_true",
        help="also write the run into the bench.json beside --out (always done for bench/results/)",
    )
    args = ap.parse_args()
    args.vegeta = None
    if args.generator == "vegeta" and not args.serve_in_memory:
        args.vegeta = vegeta_binary()
        if args.vegeta is None:
            print("no go to build vegeta: the load generator is aiohttp", file=sys.stderr)
            args.generator = "aiohttp"
    if args.serve_in_memory:
        serve_in_memory(args.serve_in_memory, args.event_loops)
        return
    if args.in_memory:
        in_memory(args)
        return
    args.out = args.out or str(RESULTS / "api.json")
    settings = load_settings()
    bootstrap = settings.kafka_bootstrap
    suffix = uuid.uuid4().hex[:8]
    topics = {k: f"bench-api-{k}-{suffix}" for k in ("events", "decisions", "alerts", "dead", "status")}
    replies = f"bench-api-replies-{suffix}"
    ensure_topics(bootstrap, topics.values(), partitions=2)
    ensure_topics(bootstrap, [replies], partitions=2)
    env = {
        "RISKCTL_JOB_EVENTS_TOPIC": topics["events"],
        "RISKCTL_JOB_DECISIONS_TOPIC": topics["decisions"],
        "RISKCTL_JOB_ALERTS_TOPIC": topics["alerts"],
        "RISKCTL_JOB_DEAD_LETTER_TOPIC": topics["dead"],
        "RISKCTL_JOB_RULE_STATUS_TOPIC": topics["status"],
        "RISKCTL_JOB_GROUP_ID": f"bench-api-{suffix}",
        "RISKCTL_JOB_RULES_SOURCE": "file",
        "RISKCTL_JOB_PARALLELISM": "1",
        "RISKCTL_SERVE_REPLIES_TOPIC": replies,
    }
    tmp = Path(tempfile.mkdtemp(prefix="api-bench-"))
    env["RISKCTL_JOB_CHECKPOINT_DIR"] = (tmp / "chk").as_uri()
    procs = Processes(tmp)
    port = free_port()
    runs = []
    try:
        procs.start("job", [sys.executable, str(ROOT / "jobs" / "risk_job.py")], env)
        serve_env = {
            **env,
            "RISKCTL_SERVE_PORT": str(port),
            "RISKCTL_SERVE_INSTANCE": "bench",
            "RISKCTL_SERVE_REPLY_PARTITION": "0",
        }
        api = procs.start("serve", [sys.executable, "-m", "riskctl.cli.main", "serve"], serve_env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            if api.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve not ready: see {tmp}/serve.log and {tmp}/job.log")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=5) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(1)
        print(f"ready; logs in {tmp}", flush=True)
        # warm-up, not recorded: the job's JVM compiles its hot paths in its first minute or so, at the cost
        # of a core (bench/flink_profile/README.md); a service takes traffic once warm
        run_load(args, base + "/v1/decisions", args.warmup_rate, args.warmup_seconds, seed=0)
        groups = {
            "api": session_pids(api.pid),  # each started with start_new_session: the session is its pid
            "job": session_pids(procs.procs[0].pid),  # the job's Python and its MiniCluster JVM
            "kafka": kafka_pids(settings),
        }
        for i, rate in enumerate(int(r) for r in args.rates.split(",")):
            direct = DirectPath(bootstrap, topics["events"], topics["decisions"], args.direct_rate)
            direct.window = (time.perf_counter(), time.perf_counter() + args.seconds)
            direct.start()
            cpu0 = {name: cpu_seconds(pids) for name, pids in groups.items()}
            run = run_load(args, base + "/v1/decisions", rate, args.seconds, seed=i + 1)
            # CPU per request of each part, over the load (the last answers included), and the cores in all
            per_request = {
                name: round((cpu_seconds(pids) - cpu0[name]) * 1e6 / max(1, run["requests"]), 1)
                for name, pids in groups.items()
            }
            per_request["generator"] = run.get("generator_cpu_us_per_request")
            run["api_cpu_us_per_request"] = per_request["api"]
            run["cpu_us_per_request"] = per_request
            run["cores_busy"] = round(sum(v or 0 for v in per_request.values()) * rate / 1e6, 2)
            time.sleep(1)
            direct.stop_flag.set()
            direct.join(10)
            run["kafka_produce_to_decision_ms"] = _pcts(direct.latencies)
            run["kafka_direct_events"] = len(direct.latencies)
            p50 = run["client_ms"]["p50"]
            dp50 = run["kafka_produce_to_decision_ms"]["p50"]
            run["api_adds_ms_p50"] = round(p50 - dp50, 2) if p50 is not None and dp50 is not None else None
            runs.append(run)
            print(json.dumps(run), flush=True)
            time.sleep(3)
    finally:
        procs.stop()
    doc = {
        "api": {
            "command": "bench/api_bench.py " + " ".join(sys.argv[1:]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "timeout_ms": settings.serve.timeout_ms,
            "generator": args.generator,
            "cores": os.cpu_count(),
            "runs": runs,
        }
    }
    out = Path(args.out)
    if out.exists():  # earlier runs are kept, newest first: on a shared machine one run is one sample
        old = json.loads(out.read_text())
        doc["api_earlier"] = [r for r in [old.get("api"), *old.get("api_earlier", [])] if r][:9]
    out.write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(report([doc["api"], *doc.get("api_earlier", [])]))
    print(f"wrote {args.out}")
    if out.parent == RESULTS or args.bench_json:
        into_bench_json(doc["api"], out.parent)


if __name__ == "__main__":
    main()
