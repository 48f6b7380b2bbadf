"""The decision service with an in-memory bus: idempotency, timeouts and fallback, bounded memory."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from riskctl.core.door import Limits
from riskctl.serve.kafka_bus import _deliver_all
from riskctl.serve.request import ApiError, DecisionRequest, parse_event_request
from riskctl.serve.service import DecisionService, entry_bytes
from tests.unit.serve.fakes import FakeBus, reject_big

NOW = 1_800_000_000_000


def req(eid: str = "e1", timeout_ms: int = 200, **fields: Any) -> DecisionRequest:
    doc = {"event_id": eid, "user_id": "u1", "type": "transfer", "ts": NOW, **fields}
    return parse_event_request(json.dumps(doc).encode(), Limits(), NOW, timeout_ms)


def service(bus: FakeBus, **kw: Any) -> DecisionService:
    svc = DecisionService(bus, Limits(), **kw)
    bus.on_decision = svc.on_decision
    return svc


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_decision_comes_back_with_rules_version_and_elapsed_time() -> None:
    async def go() -> dict[str, Any]:
        bus = FakeBus(delay=0.01)
        out = await service(bus).decide(req(amount=12_000))
        assert bus.produced[0][0] == b"u1" and bus.produced[0][1]["reply_to"] == "fake:0"
        return out

    out = run(go())
    assert out["action"] == "REJECT" and out["rules"][0]["id"] == "big" and out["rules"][0]["version"] == 3
    assert out["ruleset_version"] == "v-test" and out["degraded"] is None and out["source"] == "job"
    assert 5 <= out["elapsed_ms"] < 1000


@pytest.mark.parametrize(("policy", "action"), [("open", "PASS"), ("review", "REVIEW"), ("reject", "REJECT")])
def test_timeout_answers_the_fallback_marked_degraded(policy: str, action: str) -> None:
    async def go() -> tuple[dict[str, Any], float]:
        svc = service(FakeBus(delay=None), fallback=policy)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        out = await svc.decide(req(amount=12_000, timeout_ms=50))
        return out, loop.time() - t0

    out, took = run(go())
    assert out["action"] == action and out["degraded"] == "timeout" and out["source"] == "fallback"
    assert out["rules"] == [] and out["ruleset_version"] is None
    assert 0.045 <= took < 0.5


def test_the_fallback_answer_has_every_field_of_a_decision_record() -> None:
    """docs/api.md: the answer is the job's decision record plus elapsed_ms, degraded, replay, source; the
    fallback had no type, ts, late, too_late nor duplicate (a caller reading answer["duplicate"] failed)."""
    from riskctl.core.decisions import Decision

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        decided = await service(FakeBus(delay=0.01)).decide(req("e1", amount=12_000))
        fallback = await service(FakeBus(delay=None)).decide(req("e2", amount=12_000, timeout_ms=20))
        return decided, fallback

    decided, fallback = run(go())
    record = set(Decision("e", "u", "t", 0, "PASS", [], [], "v").to_dict())
    extra = {"elapsed_ms", "degraded", "replay", "source"}
    assert set(decided) == set(fallback) == record | extra
    assert fallback["source"] == "fallback" and fallback["type"] == "transfer" and fallback["ts"] == NOW
    assert fallback["late"] is fallback["too_late"] is fallback["duplicate"] is False
    assert fallback["ahead_ms"] == 0


def test_unknown_fallback_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="serve.fallback"):
        DecisionService(FakeBus(), Limits(), fallback="maybe")


def test_retry_does_not_produce_twice_and_gets_the_same_decision() -> None:
    async def go() -> None:
        bus = FakeBus(delay=0.02)
        svc = service(bus)
        first, second = await asyncio.gather(svc.decide(req(amount=12_000)), svc.decide(req(amount=12_000)))
        third = await svc.decide(req(amount=12_000))
        assert len(bus.produced) == 1
        for out in (first, second, third):
            assert out["action"] == "REJECT" and out["event_id"] == "e1"
        assert [first["replay"], second["replay"], third["replay"]] == [False, True, True]
        assert svc.stats.replays == 2

    run(go())


def test_retry_after_a_timeout_gets_the_late_decision_of_the_job() -> None:
    async def go() -> None:
        bus = FakeBus(delay=0.15)
        svc = service(bus, fallback="open")
        first = await svc.decide(req(amount=12_000, timeout_ms=20))
        assert first["degraded"] == "timeout" and first["action"] == "PASS"
        await asyncio.sleep(0.2)  # the job decides later, as usual
        retry = await svc.decide(req(amount=12_000, timeout_ms=20))
        assert retry["action"] == "REJECT" and retry["degraded"] is None and retry["replay"] is True
        assert len(bus.produced) == 1 and svc.stats.late_decisions == 1

    run(go())


def test_same_event_id_with_other_content_is_409() -> None:
    async def go() -> None:
        svc = service(FakeBus())
        await svc.decide(req(amount=1))
        with pytest.raises(ApiError) as info:
            await svc.decide(req(amount=2))
        assert info.value.status == 409 and info.value.field == "event_id"

    run(go())


def test_memory_is_bounded_by_entries_and_by_time() -> None:
    async def go() -> None:
        now = [0.0]
        bus = FakeBus(delay=0.0)
        svc = service(bus, max_entries=3, ttl_ms=1000, clock=lambda: now[0])
        for i in range(5):
            await svc.decide(req(f"e{i}"))
        assert list(svc.entries) == ["e2", "e3", "e4"]
        await svc.decide(req("e4"))  # remembered: no new produce
        assert len(bus.produced) == 5
        now[0] = 5.0  # beyond the TTL: forgotten, a new request produces again
        await svc.decide(req("e4"))
        assert len(bus.produced) == 6 and list(svc.entries) == ["e4"]

    run(go())


def test_an_event_still_waited_for_is_never_forgotten_by_the_bounds_of_the_memory() -> None:
    """max_entries=1 with two events waiting: the LRU evicted the first one's entry, its decision then found
    nothing and woke nobody (fallback, and a retry produced the event again). Same for a TTL shorter than
    the wait."""

    async def go() -> None:
        bus = FakeBus(delay=0.05)
        svc = service(bus, max_entries=1)
        a, b = await asyncio.gather(
            svc.decide(req("e1", timeout_ms=1000)), svc.decide(req("e2", timeout_ms=1000))
        )
        assert (a["source"], a["degraded"], b["source"]) == ("job", None, "job")
        assert svc.stats.timeouts == 0 and len(bus.produced) == 2
        await svc.decide(req("e3"))  # nobody waits any more: back within the bound
        assert list(svc.entries) == ["e3"]

        svc = service(FakeBus(delay=0.05), ttl_ms=10)
        first = asyncio.create_task(svc.decide(req("e1", timeout_ms=1000)))
        await asyncio.sleep(0.03)  # e1's entry is past its TTL while its request waits
        second = await svc.decide(req("e2", timeout_ms=1000))
        assert (await first)["source"] == "job" and second["source"] == "job"

    run(go())


def test_lost_event_fails_the_request_to_fallback_and_is_forgotten_so_a_retry_produces_again() -> None:
    async def go() -> None:
        bus = FakeBus(delay=0.0)
        bus.fail_with = "Local: Message timed out"
        svc = service(bus, fallback="review")
        out = await svc.decide(req(timeout_ms=1000))
        assert out["action"] == "REVIEW" and out["degraded"].startswith("produce_failed")
        assert "e1" not in svc.entries
        bus.fail_with = None
        again = await svc.decide(req())
        assert again["source"] == "job" and len(bus.produced) == 2

    run(go())


class FailsAtOnceBus(FakeBus):
    """KafkaBus.produce calls on_failure inside produce() on BufferError (queue full) or KafkaException."""

    def produce(self, key: bytes, value: bytes, on_failure: Callable[[str], None]) -> None:
        self.produced.append((key, json.loads(value)))
        on_failure("the producer's queue is full")


def test_a_produce_that_fails_at_once_answers_produce_failed_at_once_not_at_the_timeout() -> None:
    async def go() -> tuple[dict[str, Any], float, DecisionService]:
        svc = service(FailsAtOnceBus(), fallback="review")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        out = await svc.decide(req(timeout_ms=2000))
        return out, loop.time() - t0, svc

    out, took, svc = run(go())
    assert out["degraded"] == "produce_failed: the producer's queue is full" and out["action"] == "REVIEW"
    assert took < 0.5 and svc.stats.produce_failures == 1
    assert "e1" not in svc.entries and not svc.waiters and svc.in_flight == 0


def test_too_many_in_flight_is_503() -> None:
    async def go() -> None:
        svc = service(FakeBus(delay=None), max_in_flight=2)
        waiting = [asyncio.create_task(svc.decide(req(f"w{i}", timeout_ms=300))) for i in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(ApiError) as info:
            await svc.decide(req("w3"))
        assert info.value.status == 503
        await asyncio.gather(*waiting)

    run(go())


def test_retries_of_an_undecided_event_count_against_max_in_flight_and_are_refused_beyond_it() -> None:
    """50 concurrent retries of one event with max_in_flight=3 all waited (in_flight 50): one retrying client
    could keep every new event out with 503."""

    async def go() -> None:
        bus = FakeBus(delay=None)
        svc = service(bus, max_in_flight=3)
        tasks = [asyncio.create_task(svc.decide(req("e1", timeout_ms=2000))) for _ in range(50)]
        await asyncio.sleep(0.01)
        assert svc.in_flight == 3 and len(svc.waiters["e1"]) == 3
        refused = [t for t in tasks if t.done()]
        assert len(refused) == 47
        assert all(isinstance(t.exception(), ApiError) and t.exception().status == 503 for t in refused)
        svc.on_decision(reject_big(bus.produced[0][1]))
        answered = await asyncio.gather(*(t for t in tasks if t not in refused))
        assert [out["source"] for out in answered] == ["job"] * 3 and len(bus.produced) == 1
        assert svc.in_flight == 0 and not svc.waiters
        others = [asyncio.create_task(svc.decide(req(f"w{i}", timeout_ms=50))) for i in range(3)]
        await asyncio.sleep(0.01)
        assert svc.in_flight == 3
        decided = await svc.decide(req("e1"))  # decided: a retry waits for nothing, so it is not refused
        assert decided["replay"] and decided["source"] == "job"
        await asyncio.gather(*others)

    run(go())


def test_decisions_of_other_instances_or_garbage_are_ignored() -> None:
    svc = DecisionService(FakeBus(), Limits())
    assert svc.on_decision({"event_id": "not-ours", "action": "PASS"}) is False
    assert svc.on_decision({"event_id": 5}) is False
    assert svc.stats.last_roundtrip == 0.0


def test_a_reply_with_our_event_id_but_another_user_or_ts_is_not_taken_as_the_decision() -> None:
    """Whoever writes the events topic can send an event with a pending event_id and this instance's
    reply_to: its decision (user mallory, PASS) answered the victim's request, remembered for retries."""

    async def go() -> None:
        bus = FakeBus(delay=None)
        svc = service(bus)
        task = asyncio.create_task(svc.decide(req("e1", timeout_ms=1000, amount=50_000)))
        await asyncio.sleep(0.01)
        real = reject_big(bus.produced[0][1])
        for spoofed in (
            {**real, "user_id": "mallory", "action": "PASS"},
            {**real, "ts": 1, "action": "PASS"},
        ):
            assert svc.on_decision(spoofed) is False
        assert not task.done() and svc.stats.foreign_decisions == 2 and svc.stats.last_roundtrip == 0.0
        assert svc.on_decision(real) is True
        out = await task
        assert (out["user_id"], out["action"], out["source"]) == ("u1", "REJECT", "job")
        retry = await svc.decide(req("e1", amount=50_000))
        assert retry["action"] == "REJECT" and retry["replay"]

    run(go())


def test_a_reply_too_deep_to_answer_is_ignored_and_the_replies_after_it_are_delivered() -> None:
    """A reply nested beyond the 255 levels orjson writes (it reads 1,024) made on_decision raise: the
    replies after it in the consumer's batch were dropped, their requests got the fallback."""

    async def go() -> None:
        bus = FakeBus(delay=None)
        svc = service(bus)
        first = asyncio.create_task(svc.decide(req("e1", timeout_ms=2000)))
        second = asyncio.create_task(svc.decide(req("e2", timeout_ms=2000)))
        await asyncio.sleep(0.01)
        real1, real2 = (reject_big(event) for _, event in bus.produced)
        deep = {**real1, "rules": orjson.loads(b"[" * 300 + b"]" * 300)}
        _deliver_all(svc.on_decision, [deep, real2])
        out2 = await asyncio.wait_for(second, 1)
        assert out2["source"] == "job" and out2["event_id"] == "e2"
        assert not first.done() and svc.stats.foreign_decisions == 1
        _deliver_all(svc.on_decision, [real1])
        out1 = await asyncio.wait_for(first, 1)
        assert out1["source"] == "job" and out1["rules"] == []

    run(go())


def test_a_reply_that_fails_its_handler_does_not_drop_the_replies_after_it() -> None:
    seen: list[Any] = []

    def handle(doc: dict[str, Any]) -> None:
        if doc["n"] == 1:
            raise ValueError("hostile")
        seen.append(doc["n"])

    _deliver_all(handle, [{"n": 1}, {"n": 2}, {"n": 3}])
    assert seen == [2, 3]


def test_the_memory_of_decided_events_is_out_of_the_cyclic_collectors_way() -> None:
    """100,000 remembered decisions as dicts made every full collection walk millions of objects (85-227 ms
    pauses that stalled every request of the instance); as tuples of text, numbers and bytes, CPython stops
    tracking them, and a retry still gets the same decision."""
    import gc

    async def go() -> tuple[DecisionService, dict[str, Any], dict[str, Any]]:
        bus = FakeBus(delay=0.001)
        svc = service(bus)
        first = await svc.decide(req("e1", amount=12_000))
        for i in range(200):
            await svc.decide(req(f"n{i}", amount=5))
        again = await svc.decide(req("e1", amount=12_000))
        return svc, first, again

    svc, first, again = run(go())
    gc.collect()
    assert len(svc.entries) == 201 and not svc.waiters
    assert not any(gc.is_tracked(entry) for entry in svc.entries.values())
    assert again["replay"] is True and first["replay"] is False
    for key in ("elapsed_ms", "replay"):
        del first[key], again[key]
    assert again == first


def test_a_waiter_that_times_out_or_is_cancelled_leaves_nothing_behind() -> None:
    async def go() -> DecisionService:
        bus = FakeBus(delay=0.2)
        svc = service(bus)
        out = await svc.decide(req("slow", timeout_ms=20))
        assert out["degraded"] == "timeout"
        task = asyncio.create_task(svc.decide(req("gone", timeout_ms=5_000)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not svc.waiters and svc.in_flight == 0
        await asyncio.sleep(0.3)  # both decisions come late: remembered, nobody to wake
        return svc

    svc = run(go())
    decision, fell_back = svc.entries["slow"][2:4]
    assert fell_back and decision is not None
    assert svc.stats.late_decisions == 1 and not svc.waiters


def test_a_late_failure_report_of_an_earlier_production_leaves_the_retry_alone() -> None:
    """librdkafka reports a lost message up to serve.produce_timeout_ms late: by then the first production's
    entry can be forgotten (its TTL) and a retry have produced the event again; that retry still waits."""

    class Bus(FakeBus):
        def __init__(self) -> None:
            super().__init__(delay=None)
            self.failures: list[Callable[[str], None]] = []

        def produce(self, key: bytes, value: bytes, on_failure: Callable[[str], None]) -> None:
            super().produce(key, value, on_failure)
            self.failures.append(on_failure)

    async def go() -> tuple[dict[str, Any], DecisionService]:
        bus = Bus()
        svc = service(bus)
        first = await svc.decide(req(timeout_ms=20))
        assert first["degraded"] == "timeout"
        svc.entries.clear()  # forgotten (its TTL passed)
        retry = asyncio.create_task(svc.decide(req(timeout_ms=500)))
        await asyncio.sleep(0.02)
        assert len(bus.produced) == 2
        bus.failures[0]("Local: Message timed out")  # the first production's report, late
        await asyncio.sleep(0.02)
        svc.on_decision(reject_big(bus.produced[1][1]))
        return await retry, svc

    out, svc = run(go())
    assert out["source"] == "job" and out["degraded"] is None
    assert "e1" in svc.entries and svc.stats.produce_failures == 1


def test_a_remembered_decision_costs_its_size_not_the_encoders_buffer() -> None:
    """orjson's bytes keep the buffer they were written into: each decision of ~250 bytes held 4 KB in the
    memory (400 MB for the default 100,000 entries where docs/api.md says about 1.5 KB each)."""
    import tracemalloc

    async def go() -> int:
        svc = service(FakeBus(delay=0))
        await svc.decide(req("warm-up"))
        tracemalloc.start()
        try:
            for i in range(500):
                await svc.decide(req(f"m{i:04d}"))
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(svc.entries) == 501
        decision = svc.entries["m0000"][2]
        assert decision is not None and len(decision) < 400
        return held

    assert run(go()) / 500 < 1_500


def test_entries_waited_for_past_their_ttl_are_not_walked_by_every_request() -> None:
    """With a TTL shorter than the wait, each lookup moved every waited entry past its TTL to the end: with
    10,000 requests waiting, 2,000 more took 2.8 s instead of 0.09 s."""

    class Counted(OrderedDict[str, Any]):
        moves = 0

        def move_to_end(self, key: str, last: bool = True) -> None:
            Counted.moves += 1
            super().move_to_end(key, last)

    async def go() -> None:
        now = [0.0]
        svc = service(FakeBus(delay=None), ttl_ms=10, clock=lambda: now[0])
        svc.entries = Counted()
        waiting = [asyncio.create_task(svc.decide(req(f"w{i}", timeout_ms=5000))) for i in range(200)]
        await asyncio.sleep(0)
        for i in range(100):
            now[0] += 1.0  # every entry before is past its TTL; the first 200 are waited for
            await svc.decide(req(f"late-{i}", timeout_ms=5))
        assert Counted.moves < 1_000, Counted.moves  # 100 lookups: 20,000 moves before
        assert "w0" in svc.entries  # still waited for: kept
        svc.give_up("test")
        assert {out["degraded"] for out in await asyncio.gather(*waiting)} == {"test"}
        now[0] += 1.0
        await svc.decide(req("after", timeout_ms=5))
        assert list(svc.entries) == ["after"]  # nobody waits any more: all expired

    run(go())


def with_evidence(event: dict[str, Any]) -> dict[str, Any]:
    """The job's decision when three rules read the event's list ``tags``: each one's evidence holds it."""
    fired = [
        {"id": f"r{i}", "version": 1, "action": "REVIEW", "evidence": {"fields": {"tags": event["tags"]}}}
        for i in range(3)
    ]
    return {**reject_big(event), "action": "REVIEW", "rules": fired}


def test_the_memory_is_bounded_in_bytes_whatever_the_decisions_carry() -> None:
    """A decision carries the event fields its rules read, so a caller chooses its size: 60 KB events whose
    list three rules read made decisions of 180 KB, and the memory, bounded by number alone, held 18 GB at
    its default of 100,000 entries. Now serve.idempotency_max_bytes bounds it too, the least recently used
    forgotten first; the latest are remembered whole, and a retry gets its decision."""
    tags = ["x" * 100] * 500  # 51 KB of JSON

    async def go() -> DecisionService:
        bus = FakeBus(delay=0, decide=with_evidence)
        svc = service(bus, max_bytes=2_000_000)
        for i in range(40):
            out = await svc.decide(req(f"big-{i}", tags=tags))
            assert out["source"] == "job" and len(out["rules"]) == 3
            assert svc.bytes <= 2_000_000, (i, svc.bytes)
        again = await svc.decide(req("big-39", tags=tags))
        assert again["replay"] is True and again["rules"][2]["evidence"]["fields"]["tags"] == tags
        return svc

    svc = run(go())
    assert 5 <= len(svc.entries) <= 13  # 150 KB of JSON each
    assert "big-0" not in svc.entries and "big-39" in svc.entries
    assert svc.bytes == sum(entry_bytes(k, e) for k, e in svc.entries.items())


def test_the_bound_in_bytes_never_forgets_an_event_still_waited_for() -> None:
    tags = ["x" * 100] * 500

    async def go() -> None:
        slow = FakeBus(delay=None, decide=with_evidence)
        svc = service(slow, max_bytes=500_000)
        waiting = asyncio.create_task(svc.decide(req("waited", timeout_ms=5_000)))
        await asyncio.sleep(0)
        slow.delay = 0
        for i in range(10):
            await svc.decide(req(f"big-{i}", tags=tags))
        assert "waited" in svc.entries
        _, event = slow.produced[0]
        svc.on_decision(with_evidence({**event, "tags": []}))
        out = await waiting
        assert out["source"] == "job" and out["event_id"] == "waited"
        assert svc.bytes <= 500_000 + max(entry_bytes(k, e) for k, e in svc.entries.items())

    run(go())


def test_the_bytes_of_the_memory_are_forgotten_with_its_entries() -> None:
    """Expired, lost or pushed out, an entry gives its bytes back: the count is what the entries hold."""

    async def go() -> None:
        now = [0.0]
        bus = FakeBus(delay=0)
        svc = service(bus, ttl_ms=1_000, max_entries=3, clock=lambda: now[0])
        for i in range(5):
            await svc.decide(req(f"e{i}"))
        assert len(svc.entries) == 3
        assert svc.bytes == sum(entry_bytes(k, e) for k, e in svc.entries.items())
        bus.fail_with = "broker down"
        out = await svc.decide(req("lost"))
        assert out["degraded"].startswith("produce_failed") and "lost" not in svc.entries
        assert svc.bytes == sum(entry_bytes(k, e) for k, e in svc.entries.items())
        now[0] += 5.0
        bus.fail_with = None
        await svc.decide(req("late"))
        assert list(svc.entries) == ["late"]
        assert svc.bytes == entry_bytes("late", svc.entries["late"])

    run(go())
