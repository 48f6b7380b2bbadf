"""bench/floor.py: PyFlink's floor on this box, per record, and how the bench reports it beside the job."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from tests.unit.bench import bench_module


@pytest.fixture(scope="module")
def floor() -> ModuleType:
    return bench_module("floor")


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return bench_module("harness.report")


def test_a_record_costs_the_difference_of_two_runs_over_their_records(floor: ModuleType) -> None:
    # start-up cancels out: 4.2 s for 20,000 records, 13.0 s for 220,000 -> 44 us a record
    assert floor.per_record_us((20_000, 4.2), (220_000, 13.0)) == pytest.approx(44.0)
    # a box that stalled the small run gives no figure rather than a negative one
    assert floor.per_record_us((20_000, 9.0), (220_000, 8.0)) is None
    assert floor.per_record_us((20_000, 4.0), (20_000, 5.0)) is None


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--levels", "0,7"], "no level 7"),
        (["--levels", "zero"], "not a list of integers"),
        (["--small", "5000", "--big", "5000"], "--small must be positive and less than --big"),
        (["--small", "0"], "--small must be positive"),
    ],
)
def test_bad_arguments_are_refused_before_any_job_starts(
    floor: ModuleType, argv: list[str], says: str, capsys: Any
) -> None:
    with pytest.raises(SystemExit) as exc:
        floor.main(argv)
    assert exc.value.code == 2
    assert says in capsys.readouterr().err


def _doc(
    start: dict[str, Any], end: dict[str, Any] | None = None, cpu: float | None = 63.4
) -> dict[str, Any]:
    return {
        "runs": [
            {
                "contender": "riskctl-thread",
                "parallelism": 1,
                "throughput": {"decide_thread_cpu_us_per_event": cpu},
            }
        ],
        "floor": start,
        **({"floor_end": end} if end is not None else {}),
    }


def _floor(level0: float | None, level3: float | None) -> dict[str, Any]:
    return {
        "small": 20_000,
        "big": 220_000,
        "levels": {
            "0": {"us_per_record": level0, "reference_us_per_record": 13.5},
            "3": {"us_per_record": level3, "reference_us_per_record": 34.0},
        },
    }


def test_the_report_sets_the_decide_thread_against_the_floor_just_before_it(report: ModuleType) -> None:
    text = "\n".join(report._floor(_doc(_floor(13.9, 43.2), _floor(11.1, 30.2))))  # noqa: SLF001
    assert "## (c3) PyFlink's floor on this box" in text
    assert "20,000 and 220,000 records" in text
    assert "| us/record at the start (this box / then) | us/record at the end (this box / then) |" in text
    assert "| 0 | nothing (called, yields nothing) | 13.9 (1.03) | 11.1 (0.82) | 13.5 |" in text
    assert "| 3 | + orjson loads and dumps | 43.2 (1.27) | 30.2 (0.89) | 34.0 |" in text
    # against the start's level 3, measured just before riskctl-thread p=1: 63.4 - 43.2 = 20.2
    assert "took 63.4 us per event, 20.2 above level 3's 43.2 just before it" in text
    assert "issue 14's 50 us was 16 above level 3's 34.0 of 2026-12-02" in text


def test_the_report_says_when_the_floor_was_not_measured(report: ModuleType) -> None:
    assert report._floor({"runs": []}) == []  # noqa: SLF001 - an older run's JSON
    failed = {"error": "floor level 3 (20000 records) exited 1: boom"}
    text = "\n".join(report._floor(_doc(failed, failed)))  # noqa: SLF001
    assert "Not measured at the start: floor level 3 (20000 records) exited 1: boom" in text
    assert "Not measured at the end: floor level 3" in text and "| level |" not in text
    # the end failed, the start did not: one column; a level without a figure (a stalled small run) says so,
    # and nothing is set against the job
    text = "\n".join(report._floor(_doc(_floor(13.0, None), failed)))  # noqa: SLF001
    assert "Not measured at the end" in text
    assert "| 3 | + orjson loads and dumps | None | 34.0 |" in text
    assert "above level" not in text


def test_the_report_sets_the_job_against_the_floor_with_kafka_of_the_same_run(report: ModuleType) -> None:
    doc = _doc(_floor(13.9, 43.2), cpu=67.1)
    doc["runs"][0]["throughput"]["events_per_s"] = 12048.6
    assert "Kafka in and out" not in "\n".join(report._floor(doc))  # noqa: SLF001 - no pyflink-floor run
    doc["runs"].append(
        {
            "contender": "pyflink-floor",
            "parallelism": 1,
            "throughput": {"events_per_s": 16994.6, "decide_thread_cpu_us_per_event": 46.7},
        }
    )
    text = "\n".join(report._floor(doc))  # noqa: SLF001
    assert "**16,994.6 events/s** sustained at p=1, its `decide` thread 46.7 us per event" in text
    # 12,048.6 / 16,994.6 = 0.709; 67.1 - 46.7 = 20.4
    assert "riskctl-thread p=1: 12,048.6 events/s, 0.71 of it; its decide thread 67.1 us, 20.4 above" in text
    (line,) = [v for v in report.cost_targets(doc) if v.startswith("sustained p=1 >= 20,000")]
    assert line == (
        "sustained p=1 >= 20,000 events/s: 12048.6 (PyFlink's floor with Kafka in and out, this run: "
        "16994.6) -> MISSED"
    )


def test_the_floor_with_kafka_is_reported_when_bench_floor_py_gave_no_figure(report: ModuleType) -> None:
    failed = {"error": "floor level 3 (20000 records) exited 1: boom"}
    floor_run = {
        "contender": "pyflink-floor",
        "parallelism": 1,
        "throughput": {"events_per_s": 18197.8, "decide_thread_cpu_us_per_event": 40.1},
    }
    for start in (None, failed):  # not run (an older run's JSON), or failed at both ends
        doc = _doc(start or {}, failed if start else None, cpu=56.4)
        doc["runs"][0]["throughput"]["events_per_s"] = 14252.9
        doc["runs"].append(floor_run)
        text = "\n".join(report._floor(doc))  # noqa: SLF001
        assert text.count("## (c3) PyFlink's floor on this box") == 1
        assert "**18,197.8 events/s** sustained at p=1" in text
        assert (
            "riskctl-thread p=1: 14,252.9 events/s, 0.78 of it; its decide thread 56.4 us, 16.3 above" in text
        )
