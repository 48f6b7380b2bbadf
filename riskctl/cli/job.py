"""``riskctl run`` (the job on the embedded MiniCluster) and ``riskctl submit`` (to a Flink cluster)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click

from riskctl.cli.common import (
    CONTEXT_SETTINGS,
    ExitCode,
    emit_json,
    fail,
    fail_on,
    handles_errors,
    json_option,
    set_option,
)
from riskctl.config import PROJECT_ROOT, Settings, load_settings

#: the largest parallelism Flink accepts (its largest max-parallelism), as job.parallelism's bound
MAX_PARALLELISM = 32768

name_option = click.option("--name", default="riskctl", help="Flink job name.")
from_empty_option = click.option(
    "--from-empty",
    is_flag=True,
    help="Start even though the checkpoint folder holds a completed checkpoint of this job newer than what "
    "it starts from (empty state, or job.restore_from): without this flag the command refuses and names it.",
)
restore_foreign_option = click.option(
    "--restore-foreign",
    is_flag=True,
    help="Restore job.restore_from although the identity recorded with it differs from this job's (its "
    "topics, rules source or state layout): without this flag the command refuses and names the differences.",
)


def _check_checkpoints(
    overrides: tuple[str, ...], from_empty: bool, restore_foreign: bool = False
) -> Settings:
    """Refuse to skip a newer completed checkpoint of this job (riskctl.flink.checkpoints); returns the
    settings with the ``--set`` overrides applied."""
    from riskctl.errors import NewerCheckpointError, RiskctlError
    from riskctl.flink.checkpoints import check_start, job_identity
    from riskctl.flink.main import apply_overrides

    try:
        settings = apply_overrides(load_settings(), list(overrides))
        note = check_start(
            settings.checkpoint_dir,
            settings.job.events_topic,
            settings.job.restore_from,
            from_empty=from_empty,
            identity=job_identity(settings),
            restore_foreign=restore_foreign,
        )
    except NewerCheckpointError as exc:
        fail_on(exc)
    except RiskctlError as exc:
        # the settings and --set are this command's input: a wrong one is bad usage, as a wrong option is
        fail(ExitCode.USAGE, str(exc))
    if note:
        click.echo(note, err=True)
    return settings


def _check_python(settings: Settings) -> None:
    """A Python named in flink.options (python.executable, python.client.executable) must run the job here:
    refused now, in one line and exit 2 (riskctl.flink.env.check_python_options), not at every attempt of the
    job inside Flink. Only for Pythons of this machine: the MiniCluster's, the local stack's TaskManagers'."""
    from riskctl.config.settings import parse_options
    from riskctl.errors import RiskctlError
    from riskctl.flink.env import check_python_options

    try:
        check_python_options(parse_options(settings.flink.options))
    except RiskctlError as exc:
        fail_on(exc)


@click.command(context_settings=CONTEXT_SETTINGS, short_help="Run the risk job on an embedded MiniCluster.")
@set_option
@name_option
@from_empty_option
@restore_foreign_option
def run(overrides: tuple[str, ...], name: str, from_empty: bool, restore_foreign: bool) -> None:
    """Run the risk job on Flink's embedded MiniCluster until Ctrl-C (needs Kafka and, for rules from
    MySQL, MariaDB: 'riskctl stack up'). Each failure that restarts the job is a line on stderr with its
    cause (at most one every 10 s); a job that fails for good ends the command with one 'error:' line and
    exit 1."""
    from riskctl.flink.main import main as job_main

    _check_python(_check_checkpoints(overrides, from_empty, restore_foreign))

    args = [a for o in overrides for a in ("--set", o)] + ["--name", name]
    sys.exit(job_main(args))


def _flink_binary(settings: Settings) -> str:
    local = Path(settings.stack.dir) / "flink" / "home" / "bin" / "flink"
    if local.exists():
        return str(local)
    home = os.environ.get("FLINK_HOME")
    if home and (Path(home) / "bin" / "flink").exists():
        return str(Path(home) / "bin" / "flink")
    found = shutil.which("flink")
    if found:
        return found
    fail(
        ExitCode.ERROR,
        "no Flink client found: start the local cluster ('riskctl stack up --flink') or set FLINK_HOME",
    )


def _client_env(flink: str, settings: Settings) -> dict[str, str]:
    """The environment of ``flink run``: the local cluster's configuration when it is the local client."""
    env = dict(os.environ)
    if flink.startswith(str(Path(settings.stack.dir))):
        env["FLINK_CONF_DIR"] = str(Path(settings.stack.dir) / "flink" / "home" / "conf")
    return env


def _check_local_cluster(rest_url: str) -> None:
    """The local stack's cluster must answer before its client submits: with it stopped, 'flink run' built
    the job, retried for over a minute, and ended with a Java trace of 100 lines and status 31."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{rest_url}/overview", timeout=5) as resp:  # noqa: S310 (an http(s) setting)
            json.loads(resp.read())
    except (OSError, ValueError) as exc:
        fail(
            ExitCode.UNAVAILABLE,
            f"the local Flink cluster does not answer at {rest_url} ({exc}): start it with "
            "'riskctl stack up --flink'",
        )


@click.command(context_settings=CONTEXT_SETTINGS, short_help="Submit the risk job to a Flink cluster.")
@set_option
@click.option(
    "--parallelism",
    "-p",
    type=click.IntRange(1, MAX_PARALLELISM),
    default=None,
    help="Job parallelism (default: job.parallelism, --set included).",
)
@name_option
@from_empty_option
@restore_foreign_option
def submit(
    overrides: tuple[str, ...], parallelism: int | None, name: str, from_empty: bool, restore_foreign: bool
) -> None:
    """Submit the risk job to a Flink cluster with 'flink run -d -py' (the local one from
    'riskctl stack up --flink', or $FLINK_HOME). The jars are shipped with the job."""
    # the settings the job will run with: job.parallelism from --set is the default of --parallelism
    settings = _check_checkpoints(overrides, from_empty, restore_foreign)
    p = settings.job.parallelism if parallelism is None else parallelism
    flink = _flink_binary(settings)
    env = _client_env(flink, settings)
    if flink.startswith(str(Path(settings.stack.dir))):  # the local stack's client: its cluster's address
        _check_local_cluster(settings.flink_rest_url)
        _check_python(settings)  # its TaskManagers run here; another cluster's Pythons are on its machines
    args = [a for o in overrides for a in ("--set", o)] + ["--set", f"job.parallelism={p}", "--name", name]
    cmd = [flink, "run", "-d", "-p", str(p), "-py", str(PROJECT_ROOT / "jobs" / "risk_job.py"), *args]
    res = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, check=False)
    sys.exit(res.returncode)


@click.command(context_settings=CONTEXT_SETTINGS, short_help="Start the job's Python in idle TaskManagers.")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Wait up to this many seconds for an idle TaskManager to register (one just started).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=90.0,
    help="Give up after this many seconds; a warm-up job still running then is cancelled.",
)
@json_option("Print the idle TaskManagers, those warmed, the warm-up job and its state as JSON.")
@handles_errors
def warm(wait_s: float, timeout_s: float, as_json: bool) -> None:
    """Start the risk job's Python in every idle TaskManager (all slots free) of the cluster at
    flink.rest_url, with a short job (riskctl-warm-up), so that a restart onto it does not wait for
    Python's first imports (seconds). Run it when a TaskManager joins, e.g. a replacement.
    Exit 0 when warmed or nothing was idle, 1 when the warm-up job did not finish."""
    from riskctl.flink.warm import warm as warm_taskmanagers

    res = warm_taskmanagers(load_settings().flink_rest_url, wait_s=wait_s, timeout_s=timeout_s)
    if as_json:
        emit_json(res.as_dict())
    elif not res.idle:
        click.echo(f"no idle TaskManager (looked for {wait_s:.0f} s)")
    else:
        click.echo(
            f"warm-up job {res.job_id} {res.state} in {res.seconds} s: ran on "
            f"{', '.join(res.warmed) or 'no TaskManager'} (idle: {', '.join(res.idle)})"
        )
    sys.exit(ExitCode.OK if res.state in {"FINISHED", "NOTHING_TO_WARM"} else ExitCode.ERROR)
