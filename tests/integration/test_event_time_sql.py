"""The job's event time and replay's agree on every record, however its ``ts`` is written.

The job's source reads a record's event time in Java (``riskctl.flink.job.event_time_sql``: ``JSON_VALUE``
and ``TRY_CAST``), before and whatever Python decides, so a record Python dead-letters still moves the
watermark. Replay moves its watermark for such a line with ``riskctl.core.door.watermark_ts``. Where the two
read a ``ts`` differently, a replay fires absence deadlines and judges lateness at other times than the job
did. This test evaluates the job's own SQL in Flink over records an attacker could write and holds each
result to ``watermark_ts``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from riskctl.config import PROJECT_ROOT
from riskctl.core.door import DEFAULT_LIMITS, watermark_ts

pytestmark = pytest.mark.integration

SCRIPT = r"""
import json, sys
from pyflink.table import EnvironmentSettings, TableEnvironment
from riskctl.flink.job import event_time_sql

records = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]
t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
t_env.get_config().set("parallelism.default", "1")
rows = ", ".join(f"({i}, CAST(X'{r.hex()}' AS BYTES))" for i, r in enumerate(records))
ms = event_time_sql("CAST(`raw` AS STRING)", int(sys.argv[1]))
query = f"SELECT i, {ms} FROM (VALUES {rows}) AS t(i, `raw`)"
with t_env.execute_sql(query).collect() as results:
    print(json.dumps({str(row[0]): row[1] for row in results}))
"""

SKEW_MS = DEFAULT_LIMITS.max_clock_skew_ms


def _records(now: int) -> list[bytes]:
    """Records whose ``ts`` is written every way JSON and its readers allow, and some they should not."""
    t = now - 3_600_000  # an hour ago: far from the skew's bound, whenever Flink evaluates its clock
    ahead = now + 10 * SKEW_MS
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in str(t))
    arabic = "".join(chr(0x0660 + int(d)) for d in str(t))
    escaped = "".join(f"\\u00{ord(d):02x}" for d in str(t))
    texts = [
        f'{{"ts": {t}}}',
        f'{{"ts": "{t}"}}',
        f'{{"ts": " {t} "}}',
        f'{{"ts": "\\t{t}\\n"}}',
        f'{{"ts": "+{t}"}}',
        f'{{"ts": "{t:_}"}}',
        f'{{"ts": "{fullwidth}"}}',
        f'{{"ts": "{arabic}"}}',
        f'{{"ts": "{escaped}"}}',
        f'{{"ts": {t}.0}}',
        f'{{"ts": {t}.7}}',
        f'{{"ts": "{t}.7"}}',
        f'{{"ts": {t / 1000}e3}}',
        f'{{"ts": {t}e0}}',
        f'{{"ts": "{t}e0"}}',
        f'{{"ts": {t}E-0}}',
        f'{{"ts": 0{t}}}',
        f'{{"ts": "0{t}"}}',
        f'{{"ts": "0x{t:x}"}}',
        f'{{"ts": {ahead}}}',
        f'{{"ts": "{ahead}"}}',
        '{"ts": -5}',
        '{"ts": "-5"}',
        '{"ts": -0}',
        '{"ts": 0}',
        '{"ts": 99999999999999999999}',
        '{"ts": "99999999999999999999"}',
        '{"ts": ' + "9" * 400 + "}",
        '{"ts": 1e300}',
        '{"ts": NaN}',
        '{"ts": Infinity}',
        '{"ts": true}',
        '{"ts": null}',
        '{"ts": ""}',
        f'{{"ts": [{t}]}}',
        f'{{"ts": {{"ts": {t}}}}}',
        f'{{"a": {{"ts": {t}}}}}',
        f'[{{"ts": {t}}}]',
        f'{{"ts": {t}, "ts": {t + 1}}}',
        f'{{"ts": {t} }} trailing',
        f'{{"ts": {t}}}{{"ts": 1}}',
        f'{{"ts": {t}}} ',
        f'{{"\\u0074s": {t}}}',
        f'{{"TS": {t}}}',
        f"{{'ts': {t}}}",
        f"{{ts: {t}}}",
        f'{{"ts": {t} /* c */}}',
        f'{{"ts": {t},}}',
        f'{{"ts": {t}',
        f'\ufeff{{"ts": {t}}}',
        f'{{"ts": {t}, "x": NaN}}',
        f'{{"ts": {t}, "x": -Infinity}}',
        f'{{"ts": {t}, "x": 1e400}}',
        f'{{"ts": {t}, "x": {"7" * 999}}}',
        f'{{"ts": {t}, "x": {"7" * 1001}}}',
        f'{{"ts": {t}, "x": 0.{"7" * 1001}}}',
        *(
            f'{{"ts": {t}, "x": {"[" * depth}{"]" * depth}}}'
            for depth in (900, 999, 1000, 1001, 30_000, 100_000)
        ),
        f'{{"ts": {t}, "x": {"[" * 5_000}}}',
        f'{{"ts": {t}, "x": {"7" * 5_000}}}',
        f'{{"ts": {t}, "x": tru}}',
        f'{{"ts": {t}, "x": [1,]}}',
        f'{{"ts": {t}, "x": "\\q"}}',
        f'{{"ts": {t}, "x": "\x01"}}',
        f'{{"ts": {t}, "x": 01}}',
        f'{{"ts": {t}, "x": -}}',
        f'{{"ts": {t}, "x": 1.}}',
        f'{{"ts": {t}, "ts": {{"a": 1}}}}',
        f'{{"ts": {t}, "x": {{"ts": 1}}}}',
        f'{{"x": [{{"ts": 1}}], "ts": {t}}}',
        '{"ts": 5000000.5}',
        '{"ts": 9999999.9}',
        '{"ts": 10000000.0}',
        '{"ts": 0.0}',
        '{"ts": -0.0}',
        '{"ts": 0.001}',
        *(
            f'{{"ts": "{text}"}}'
            for text in (".", "+.", "-.5", f"{t}.", f"+{t}.00", "1.2.3", f"{t}a", " ", "+", "-")
        ),
        *(
            f'{{"ts": "{text}"}}'
            for text in (f"{t}.5e3", f"{t},5", f"  {t}", f"{t}\u00a0", f"-{t}", f"{t} 1")
        ),
        "null",
        str(t),
        f'"{t}"',
        "",
    ]
    records = [text.encode() for text in texts]
    records += [
        f'{{"ts": {t}, "x": "'.encode() + b"\xff\xfe" + b'"}',  # invalid UTF-8 elsewhere: Java replaces it
        f'{{"ts": "{t}'.encode() + b"\xff" + b'"}',  # ... inside the ts string itself
        f'{{"ts": {t}, "x": "\\ud800"}}'.encode(),  # a lone surrogate escaped
        f'{{"ts": {t}, "x": "'.encode() + "\ud800".encode("utf-8", "surrogatepass") + b'"}',
    ]
    return records


def test_replay_reads_every_ts_as_the_jobs_source_does() -> None:
    now = int(time.time() * 1000)
    records = _records(now)
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(SKEW_MS)],
        input=json.dumps([r.hex() for r in records]),
        env=dict(os.environ),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    java = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(java) == len(records)
    replay = [watermark_ts(r, DEFAULT_LIMITS, now) for r in records]
    differ = {
        f"{r[:60].decode('utf-8', 'backslashreplace')}... ({len(r)} bytes)": (java[str(i)], replay[i])
        for i, r in enumerate(records)
        if java[str(i)] != replay[i]
    }
    assert not differ, f"record: (the job's event time, replay's): {differ}"
    moved = sum(1 for v in java.values() if v)
    assert moved >= 3, java  # the test reads real times, not only zeros
