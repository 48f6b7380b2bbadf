"""Entry point of the risk job, for the embedded MiniCluster (``riskctl run``) and ``flink run``.

Settings come from riskctl.toml / RISKCTL_* variables (see :mod:`riskctl.config`); ``--set section.key=value``
overrides one of them on the command line, e.g. ``--set job.parallelism=2 --set job.rules_source=file``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from riskctl.config import Settings, apply_overrides, load_settings
from riskctl.errors import RiskctlError

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment

    from riskctl.flink.env import RestartOptions

log = logging.getLogger("riskctl.job")


def prepare(settings: Settings) -> None:
    """What must exist before the job starts: its topics and, for MySQL rule sources, the rule tables."""
    from riskctl.flink.job import topics
    from riskctl.kafka_admin import ensure_topics

    ensure_topics(settings.kafka_bootstrap, topics(settings), partitions=max(2, settings.job.parallelism))
    if settings.serve.replies_topic:  # riskctl serve's replies: one partition per API instance
        replies = [settings.serve.replies_topic]
        ensure_topics(settings.kafka_bootstrap, replies, partitions=settings.serve.replies_partitions)
    if settings.job.rules_source in {"cdc", "poll"}:
        from riskctl.store.connection import connect
        from riskctl.store.migrations import migrate

        conn = connect(settings)
        try:
            migrate(conn, rules_table=settings.job.rules_table)
        finally:
            conn.close()


def restart_options(settings: Settings) -> RestartOptions:
    """The job's restart strategy from ``job.restart_*`` (a ConfigError names the bad setting)."""
    from riskctl.flink.env import RestartOptions

    job = settings.job
    return RestartOptions(
        initial_backoff_ms=job.restart_initial_backoff_ms,
        max_backoff_ms=job.restart_max_backoff_ms,
        backoff_multiplier=job.restart_backoff_multiplier,
        reset_backoff_threshold_ms=job.restart_reset_backoff_threshold_ms,
        jitter_factor=job.restart_jitter_factor,
        max_attempts=job.restart_max_attempts,
    )


def build(settings: Settings) -> object:
    """Create the execution environment and add the pipeline; returns the environment."""
    from riskctl.flink.job import build_pipeline

    env = environment(settings)
    build_pipeline(env, settings)
    return env


def environment(settings: Settings) -> StreamExecutionEnvironment:
    """The job's execution environment from ``settings`` (checkpoints, state backend, restarts, Flink
    options), no pipeline yet: also what bench/contenders/pyflink_floor.py runs its floor job in."""
    from riskctl.config.settings import parse_options
    from riskctl.flink.checkpoints import check_checkpoint_dir_writable, check_restore_exists
    from riskctl.flink.env import EnvOptions, create_env, prepare_minicluster, starts_a_jvm

    job = settings.job
    if starts_a_jvm(os.environ):  # the MiniCluster: job.restore_from and checkpoint_dir are this machine's
        check_restore_exists(job.restore_from)
        if job.checkpoint_interval_ms > 0:
            check_checkpoint_dir_writable(settings.checkpoint_dir)
    working_dir = prepare_minicluster(Path(settings.stack.dir), os.environ)
    return create_env(
        EnvOptions(
            jars_dir=settings.flink.jars_dir,
            parallelism=job.parallelism,
            checkpoint_interval_ms=job.checkpoint_interval_ms,
            checkpoint_dir=settings.checkpoint_dir,
            buffer_timeout_ms=job.buffer_timeout_ms,
            restore_from=job.restore_from or None,
            restart=restart_options(settings),
            options=parse_options(settings.flink.options),
            working_dir=working_dir,
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Load the settings (with ``--set`` overrides), build the job and run it; an error before it starts is
    one line and the exit code of its class, as every riskctl command gives it (2 for a refused setting, 3 for
    a service that does not answer: riskctl.cli.common.EXIT_CODES).

    On the embedded MiniCluster (``riskctl run``) each failure that restarts the job is a line on stderr, and
    a job that ends FAILED (or cannot heal in this process) is one ``error: ...`` line and exit 1
    (:mod:`riskctl.flink.watch`); Ctrl-C is one line and exit 130."""
    # apache-beam (a PyFlink dependency) imports pkg_resources, which warns on every start
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from riskctl.cli.common import show_config_warnings

    show_config_warnings()  # the settings' warnings as the commands print them: warning: <message>
    p = argparse.ArgumentParser(prog="riskctl-job", description="The riskctl risk job.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--name", default="riskctl")
    args = p.parse_args(argv)
    from riskctl.core import native

    # before the JVM starts: thread mode's interpreter runs inside it and reads the variable at import
    default = native.default_for_jobs()
    if default is not None:
        os.environ[native.ENV] = default
    try:
        settings = apply_overrides(load_settings(), args.overrides)
        prepare(settings)
        env = build(settings)
    except RiskctlError as exc:
        from riskctl.cli.common import echo_error, error_exit

        echo_error(str(exc))
        return int(error_exit(exc).code)
    except Exception as exc:
        if getattr(exc, "java_exception", None) is None:
            raise
        # Flink refused the configuration the job was built with, most often a flink.options value it cannot
        # parse (execution.checkpointing.interval=abc): py4j's traceback of 60 lines ended 'riskctl run'
        from riskctl.cli.common import echo_error

        java = str(exc.java_exception).strip().splitlines()[0][:MAX_JAVA_MESSAGE]  # type: ignore[attr-defined]
        echo_error(f"Flink refused the job's configuration (flink.options included): {java}")
        return REFUSED
    from riskctl.flink.env import starts_a_jvm  # imported by build() already

    log.warning(
        "riskctl job starting: events from %s, rules from %s, engine core %s%s",
        settings.job.events_topic,
        settings.job.rules_source,
        native.describe(),
        f"; Flink's log in {os.environ.get('FLINK_LOG_DIR')}" if starts_a_jvm(os.environ) else "",
    )
    # Ctrl-C is how 'riskctl run' stops: it interrupted py4j's wait for the JVM, which logged a traceback
    # ("KeyboardInterrupt while sending command."), and click then said "Aborted!" with exit 1
    previous = signal.signal(signal.SIGINT, _interrupted)
    try:
        if not starts_a_jvm(os.environ):  # flink run: the CLI's client reports (and -d returns at once)
            result = env.execute(args.name)  # type: ignore[attr-defined]
            record_identity(settings, result)
            return 0
        # the MiniCluster: say on stderr when the job fails and restarts, and why, and end when it fails;
        # env.execute() said nothing until the restart strategy gave up (with no cap: never)
        from riskctl.flink.watch import run

        def submit() -> object:
            try:
                client = env.execute_async(args.name)  # type: ignore[attr-defined]
            except Exception as exc:
                if getattr(exc, "java_exception", None) is None:
                    raise
                raise _NotStarted(exc) from None
            record_identity(settings, client)
            return client

        return run(submit, sys.stderr, log_dir=os.environ.get("FLINK_LOG_DIR"))
    except _NotStarted as exc:
        # the MiniCluster refused the job (its JobMaster did not start: a checkpoint it cannot restore, an
        # option it refuses): py4j's Java trace of 80-120 lines ended 'riskctl run'. One line, as a job that
        # fails once started (riskctl.flink.watch), with where to read the rest
        where = os.environ.get("FLINK_LOG_DIR")
        restoring = (
            f" (restoring job.restore_from {settings.job.restore_from!r})"
            if settings.job.restore_from
            else ""
        )
        from riskctl.cli.common import printable

        line = f"error: the job could not start{restoring}: {exc.cause}" + (
            f" (Flink's log: {where})" if where else ""
        )
        print(printable(line), file=sys.stderr, flush=True)
        return NOT_STARTED
    except _Interrupted:
        print("riskctl job stopped (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)


def record_identity(settings: Settings, submitted: object) -> None:
    """Record the job's identity in its checkpoint folder (riskctl.flink.checkpoints.record_identity), so
    that a restore of its checkpoints can tell them from another job's; ``submitted``: the JobClient or the
    JobExecutionResult Flink answered the submission with. Never fails the job: a warning when it cannot."""
    if settings.job.checkpoint_interval_ms <= 0:
        return
    from riskctl.flink.checkpoints import job_identity
    from riskctl.flink.checkpoints import record_identity as record

    try:
        job_id = submitted.get_job_id()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a runtime without job ids: nothing to record
        return
    if job_id is None:
        return
    warning = record(settings.checkpoint_dir, str(job_id), job_identity(settings))
    if warning:
        log.warning("%s", warning)


#: the exit status of a job stopped by Ctrl-C, as a shell reports SIGINT (riskctl.cli.common.ExitCode)
INTERRUPTED = 130


#: the exit status of a configuration Flink refused while the job was built: a refused setting
#: (riskctl.cli.common.ExitCode.USAGE), and the most of its message a line shows
REFUSED = 2
MAX_JAVA_MESSAGE = 300

#: the exit status of a job the MiniCluster refused to start, as of one that failed (riskctl.flink.watch)
NOT_STARTED = 1


class _NotStarted(Exception):  # noqa: N818 - carries the Java refusal out of watch.run
    """``execute_async`` answered with a Java exception: the job was not started. Keeps ``java_exception``,
    so that :func:`riskctl.flink.watch.call_jvm` takes it as the answer of a JVM that runs."""

    def __init__(self, error: Exception) -> None:
        from riskctl.flink.watch import root_cause

        self.java_exception = getattr(error, "java_exception", None)
        self.cause = root_cause(str(error))
        super().__init__(self.cause)


class _Interrupted(BaseException):  # noqa: N818 - a signal, not an error
    """Ctrl-C while the job runs: not a KeyboardInterrupt, which py4j catches and logs with a traceback, nor
    an Exception, which it wraps in a Py4JNetworkError and logs as well."""


def _interrupted(signum: int, frame: object) -> None:
    raise _Interrupted


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
