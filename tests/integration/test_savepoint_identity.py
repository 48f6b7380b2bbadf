"""A savepoint Flink takes when a job stops is checked against the identity riskctl recorded for the job.

A job on the MiniCluster (a datagen table into a blackhole, not the risk job: only Flink's handling of the
folders matters here) records its identity with riskctl.flink.main.record_identity and the JobClient, as the
risk job does, checkpoints, and stops with a savepoint (JobClient.stop_with_savepoint, what 'flink stop
--savepointPath' asks the cluster). Flink names the savepoint's folder after the job and keeps the job's
folder with the identity in it; a restore of the savepoint is accepted under the job's settings and refused
under another decisions topic unless --restore-foreign. No Kafka, no MariaDB, about 10 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from riskctl.config import PROJECT_ROOT, load_settings
from riskctl.errors import ConfigError
from riskctl.flink.checkpoints import IDENTITY_FILE, check_start, job_identity

pytestmark = pytest.mark.integration

SCRIPT = r"""
import json, sys, time
from pathlib import Path
from pyflink.common import Configuration
from pyflink.table import EnvironmentSettings, TableEnvironment
from riskctl.config import load_settings
from riskctl.flink.main import record_identity

settings = load_settings()
root = Path(sys.argv[1])
conf = Configuration()
conf.set_string("state.checkpoints.dir", settings.checkpoint_dir)
conf.set_string("execution.checkpointing.interval", "500ms")
conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
conf.set_string("rest.bind-port", "0")
conf.set_string("parallelism.default", "1")
t_env = TableEnvironment.create(
    EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
)
t_env.execute_sql("CREATE TABLE numbers (n BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '10')")
t_env.execute_sql("CREATE TABLE sink (n BIGINT) WITH ('connector' = 'blackhole')")
client = t_env.execute_sql("INSERT INTO sink SELECT n FROM numbers").get_job_client()
record_identity(settings, client)
job = str(client.get_job_id())
for _ in range(120):
    if list((root / "chk" / job).glob("chk-*/_metadata")):
        break
    time.sleep(0.5)
savepoint = client.stop_with_savepoint(False, (root / "savepoints").as_uri()).result()
print(json.dumps({"job": job, "savepoint": savepoint}))
"""


def test_a_savepoint_of_a_stopped_job_is_checked_against_its_jobs_identity(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RISKCTL_JOB_CHECKPOINT_DIR": (tmp_path / "chk").as_uri(),
        "RISKCTL_JOB_CHECKPOINT_INTERVAL_MS": "500",
    }
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    done = json.loads(res.stdout.strip().splitlines()[-1])
    savepoint = Path(done["savepoint"].removeprefix("file:"))
    assert savepoint.name.startswith(f"savepoint-{done['job'][:6]}-"), savepoint
    assert (savepoint / "_metadata").is_file() and not (savepoint / IDENTITY_FILE).exists()
    assert (tmp_path / "chk" / done["job"] / IDENTITY_FILE).is_file()  # kept when the job stopped

    settings = load_settings(env=env)
    identity = job_identity(settings)
    chk_dir = settings.checkpoint_dir
    # the events topic check looks for a Kafka split's topic (a writeUTF string) in the _metadata; this job
    # has no Kafka source: a string every savepoint's _metadata holds so (its type's class) stands in for it
    restore, topic = savepoint.as_uri(), "org.apache.flink.runtime.checkpoint.SavepointType"
    assert check_start(chk_dir, topic, restore, from_empty=True, identity=identity) is None  # no note
    other = {**identity, "decisions_topic": "another.decisions"}
    with pytest.raises(ConfigError, match="this job: 'another.decisions'"):
        check_start(chk_dir, topic, restore, from_empty=True, identity=other)
    told = check_start(chk_dir, topic, restore, from_empty=True, identity=other, restore_foreign=True)
    assert told is None
