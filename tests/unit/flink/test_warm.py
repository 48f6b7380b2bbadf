"""riskctl.flink.warm against a stand-in of Flink's REST API: what it submits, when it cancels, what it says.
The real path (a real cluster, a real TaskManager warmed) is tests/integration/test_warm.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from riskctl.errors import ServiceError
from riskctl.flink.warm import WARM_JOB, idle_taskmanagers, warm


class FakeFlink:
    def __init__(self) -> None:
        self.taskmanagers = [
            {"id": "tm-busy", "slotsNumber": 2, "freeSlots": 0},
            {"id": "tm-idle-a", "slotsNumber": 2, "freeSlots": 2},
            {"id": "tm-idle-b", "slotsNumber": 2, "freeSlots": 2},
        ]
        self.job_state = "FINISHED"
        self.requests: list[tuple[str, str, bytes]] = []
        self.run_status = 200
        self.raw_taskmanagers: bytes | None = None  # an answer that is not Flink's (a proxy's page)
        self.listings = 0
        self.later: list[tuple[int, list[dict[str, Any]]]] = []  # (from the n-th listing on, what it lists)


@pytest.fixture
def flink() -> Iterator[tuple[FakeFlink, str]]:
    fake = FakeFlink()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _record(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            fake.requests.append((self.command, self.path, body))
            return body

        def do_GET(self) -> None:
            self._record()
            if self.path == "/taskmanagers" and fake.raw_taskmanagers is not None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(fake.raw_taskmanagers)))
                self.end_headers()
                self.wfile.write(fake.raw_taskmanagers)
            elif self.path == "/taskmanagers":
                fake.listings += 1
                while fake.later and fake.later[0][0] <= fake.listings:
                    fake.taskmanagers = fake.later.pop(0)[1]
                self._send(200, {"taskmanagers": fake.taskmanagers})
            elif self.path == "/jobs/j1":
                self._send(
                    200,
                    {
                        "state": fake.job_state,
                        "vertices": [{"id": "v0", "name": "Source: C"}, {"id": "v1", "name": "Map"}],
                    },
                )
            elif self.path == "/jobs/j1/vertices/v1/taskmanagers":
                self._send(
                    200, {"taskmanagers": [{"taskmanager-id": "tm-idle-a"}, {"taskmanager-id": "tm-idle-b"}]}
                )
            else:
                self._send(404, {"errors": ["not found"]})

        def do_POST(self) -> None:
            self._record()
            if self.path == "/jars/upload":
                self._send(200, {"filename": "/tmp/flink-web/abc_riskctl-warm-up.jar", "status": "success"})
            elif self.path == "/jars/abc_riskctl-warm-up.jar/run":
                if fake.run_status != 200:
                    self._send(fake.run_status, {"errors": ["web submission is disabled"]})
                else:
                    self._send(200, {"jobid": "j1"})
            else:
                self._send(404, {"errors": ["not found"]})

        def do_DELETE(self) -> None:
            self._record()
            self._send(200, {})

        def do_PATCH(self) -> None:
            self._record()
            fake.job_state = "CANCELED"
            self._send(202, {})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_one_python_subtask_per_idle_taskmanager_through_the_rest_api(flink: tuple[FakeFlink, str]) -> None:
    fake, url = flink
    assert idle_taskmanagers(url) == ["tm-idle-a", "tm-idle-b"]
    res = warm(url, timeout_s=10)
    assert res.state == "FINISHED" and res.job_id == "j1"
    assert res.idle == res.warmed == ["tm-idle-a", "tm-idle-b"]
    calls = [(m, p) for m, p, _ in fake.requests]
    assert ("POST", "/jars/upload") in calls
    assert ("DELETE", "/jars/abc_riskctl-warm-up.jar") in calls  # the uploaded jar does not pile up
    upload = next(b for m, p, b in fake.requests if p == "/jars/upload")
    assert b'name="jarfile"' in upload and b"META-INF/MANIFEST.MF" in upload
    run = json.loads(next(b for m, p, b in fake.requests if p.endswith("/run")))
    assert run == {
        "entryClass": "org.apache.flink.client.python.PythonDriver",
        "programArgsList": ["-py", str(WARM_JOB), "--parallelism", "2"],
        "parallelism": 2,
    }
    assert WARM_JOB.is_file()


def test_nothing_idle_submits_nothing(flink: tuple[FakeFlink, str]) -> None:
    fake, url = flink
    for tm in fake.taskmanagers:
        tm["freeSlots"] = 1
    res = warm(url, wait_s=0.6)
    assert res.state == "NOTHING_TO_WARM" and not res.idle and not res.job_id
    assert all(p == "/taskmanagers" for _, p, _ in fake.requests)


def test_a_warm_up_still_running_at_the_timeout_is_cancelled(flink: tuple[FakeFlink, str]) -> None:
    fake, url = flink
    fake.job_state = "RUNNING"
    res = warm(url, timeout_s=1.5)
    assert res.state == "CANCELED"
    assert ("PATCH", "/jobs/j1?mode=cancel") in [(m, p) for m, p, _ in fake.requests]


def test_a_refused_submission_is_a_service_error_with_flinks_words(flink: tuple[FakeFlink, str]) -> None:
    fake, url = flink
    fake.run_status = 400
    with pytest.raises(ServiceError, match="HTTP 400.*web submission is disabled"):
        warm(url, timeout_s=10)
    assert ("DELETE", "/jars/abc_riskctl-warm-up.jar") in [(m, p) for m, p, _ in fake.requests]


def test_an_unreachable_cluster_is_a_service_error() -> None:
    with pytest.raises(ServiceError, match="GET http://127.0.0.1:9/taskmanagers"):
        warm("http://127.0.0.1:9")


def test_a_taskmanager_still_starting_gets_a_subtask_that_waits_for_it(flink: tuple[FakeFlink, str]) -> None:
    fake, url = flink
    res = warm(url, idle=[], expect=1, timeout_s=10)
    run = json.loads(next(b for m, p, b in fake.requests if p.endswith("/run")))
    assert run["parallelism"] == 1 and run["programArgsList"][-1] == "1"
    assert res.state == "FINISHED" and res.idle == []
    assert not [p for _, p, _ in fake.requests if p == "/taskmanagers"]  # the caller's list is used as given


@pytest.mark.parametrize(
    "answer",
    [b"<html>proxy login</html>", b"\xff\xfe", b"[1, 2]", b'"text"', b'{"taskmanagers": "x"}', b"null"],
)
def test_an_answer_that_is_not_flinks_is_a_service_error(flink: tuple[FakeFlink, str], answer: bytes) -> None:
    """flink.rest_url answering something else than Flink's REST API ended 'riskctl warm' with a
    JSONDecodeError or AttributeError traceback; now a ServiceError (exit 3, UNAVAILABLE)."""
    from click.testing import CliRunner

    from riskctl.cli.common import ExitCode
    from riskctl.cli.main import cli

    fake, url = flink
    fake.raw_taskmanagers = answer
    with pytest.raises(ServiceError, match="flink.rest_url Flink's REST API"):
        warm(url, timeout_s=5)
    result = CliRunner().invoke(cli, ["warm", "--timeout", "5"], env={"RISKCTL_FLINK_REST_URL": url})
    assert result.exit_code == ExitCode.UNAVAILABLE, (result.output, result.exception)
    assert "Flink's REST API" in result.stderr and "Traceback" not in result.output


def test_taskmanagers_of_another_shape_are_not_idle(flink: tuple[FakeFlink, str]) -> None:
    fake, url = flink
    fake.taskmanagers = [
        "tm",
        {"slotsNumber": 2, "freeSlots": 2},
        {"id": "tm-ok", "slotsNumber": 1, "freeSlots": 1},
    ]
    assert idle_taskmanagers(url) == ["tm-ok"]


def test_a_new_taskmanager_is_waited_for_until_its_slots_are_listed(
    flink: tuple[FakeFlink, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TaskManager is listed as registered with 0 slots until its slot report arrives. Taken for not idle,
    it got no subtask of its own, and the one subtask of the idle TaskManager went to it (CI at b7653c0:
    idle=[A], warmed=[new]). The warm-up now waits for its slots and asks for a subtask on each."""
    from riskctl.config import load_settings
    from riskctl.stack.services import FlinkCluster

    fake, url = flink
    idle_a = {"id": "tm-idle-a", "slotsNumber": 2, "freeSlots": 2}
    fake.taskmanagers = [{"id": "tm-busy", "slotsNumber": 2, "freeSlots": 1}, idle_a]
    registered = [*fake.taskmanagers, {"id": "tm-new", "slotsNumber": 0, "freeSlots": 0}]
    slotted = [*fake.taskmanagers, {"id": "tm-new", "slotsNumber": 2, "freeSlots": 2}]
    fake.later = [(2, registered), (5, slotted)]  # not listed, then 3 listings without slots, then with
    port = url.rsplit(":", 1)[1]
    settings = load_settings(env={"RISKCTL_STACK_DIR": str(tmp_path), "RISKCTL_STACK_FLINK_REST_PORT": port})
    cluster = FlinkCluster(settings)
    assert cluster.rest_url.endswith(f":{port}")
    pids = {"tm-busy": 4001, "tm-idle-a": 4002, "tm-new": 4003}
    monkeypatch.setattr(cluster, "taskmanager_pid", lambda tm_id: pids.get(tm_id))
    res = cluster.warm(new_pid=4003, timeout=20)
    run = json.loads(next(b for m, p, b in fake.requests if p.endswith("/run")))
    assert res.idle == ["tm-idle-a", "tm-new"]
    assert run["parallelism"] == 2 and run["programArgsList"][-1] == "2"
    assert fake.listings >= 5
