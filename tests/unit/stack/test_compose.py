"""docker-compose.yml and docker/ stay consistent with the project (no Docker engine runs here).

Nothing in these tests starts a container: they parse the compose file, the Dockerfile, the MySQL init SQL and
the submitter script, and check them against riskctl.config, pyproject.toml, deps/*.pom and the riskctl CLI.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from riskctl.config import PROJECT_ROOT, JobSettings, ServeSettings, Settings, StackSettings
from riskctl.config.settings import NETWORK_SEGMENT_SIZE
from tests.helpers import resolve_command, run_riskctl

ROOT = PROJECT_ROOT
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SUBMIT = ROOT / "docker" / "submit.sh"
INIT_DIR = ROOT / "docker" / "mysql" / "init"
FLINK_SERVICES = ("jobmanager", "taskmanager", "submitter")
# what Flink CDC's binlog reader needs from the server (docs: "Setup MySQL server")
BINLOG_FLAGS = {"--binlog-format": "ROW", "--binlog-row-image": "FULL"}
CDC_GRANTS = {"SELECT", "RELOAD", "SHOW DATABASES", "REPLICATION SLAVE", "REPLICATION CLIENT"}


def _load(path: Path = COMPOSE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load()


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _default(value: str) -> str:
    """The value compose uses when the variable is not set: ``${X:-d}`` -> ``d``."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)


def _setting_names() -> set[str]:
    names = set()
    for section in dataclasses.fields(Settings):
        cls = section.default_factory  # type: ignore[misc]
        for f in dataclasses.fields(cls):
            names.add(f"RISKCTL_{section.name}_{f.name}".upper())
    return names


def _riskctl_vars(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    out = {}
    for name, svc in compose["services"].items():
        found = {k: v for k, v in _env(svc).items() if k.startswith("RISKCTL_")}
        if found:
            out[name] = found
    return out


def _host_port(service: dict[str, Any], container_port: int) -> int:
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        if int(parts[-1]) == container_port:
            return int(parts[-2])
    msg = f"no published port for {container_port}"
    raise AssertionError(msg)


# ------------------------------------------------------------------------------------------- env and config


def test_every_riskctl_variable_names_a_real_setting(compose: dict[str, Any]) -> None:
    known = _setting_names()
    used = _riskctl_vars(compose)
    assert used, "the compose file configures riskctl through no RISKCTL_* variable"
    text = COMPOSE.read_text() + SUBMIT.read_text() + DOCKERFILE.read_text()
    mentioned = set(re.findall(r"RISKCTL_[A-Z0-9_]+", text))
    # RISKCTL_CONFIG is the config file's path, the one variable that is not a setting
    unknown = sorted(mentioned - known - {"RISKCTL_CONFIG"})
    assert not unknown, f"not settings of riskctl.config: {unknown}"


def test_the_settings_load_from_the_submitters_environment(compose: dict[str, Any]) -> None:
    from riskctl.config import load_settings

    env = {k: _default(v) for k, v in _env(compose["services"]["submitter"]).items()}
    settings = load_settings(env=env)  # raises on a non-integer port, parallelism, ...
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.mysql_host == "mysql"
    assert settings.mysql_password, "the submitter needs a MySQL password"


def test_topics_and_rules_table_are_the_job_defaults(compose: dict[str, Any]) -> None:
    env = _env(compose["services"]["submitter"])
    defaults = JobSettings()
    for key in ("events_topic", "decisions_topic", "alerts_topic", "dead_letter_topic", "rule_status_topic"):
        var = f"RISKCTL_JOB_{key.upper()}"
        assert env.get(var) == getattr(defaults, key), f"{var} differs from JobSettings.{key}"
    assert env["RISKCTL_JOB_RULES_TABLE"] == defaults.rules_table
    assert env["RISKCTL_JOB_RULES_SOURCE"] == "cdc"


def test_passwords_come_from_the_environment_never_the_image(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for key, value in _env(svc).items():
            if "PASSWORD" in key:
                assert value.startswith("${") and "dev-only" in value, (
                    f"{name}.{key} must be ${{VAR:-...-dev-only}}, got {value!r}"
                )
    code = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in code if "PASSWORD" in ln.upper()], "a password in the image"


# ----------------------------------------------------------------------------------------------- MySQL


def _mariadb_env(compose: dict[str, Any]) -> dict[str, str]:
    """The database container's user settings, by their MYSQL_* names (the image reads MARIADB_* first)."""
    env = _env(compose["services"]["mysql"])
    return {k.replace("MARIADB_", "MYSQL_", 1): v for k, v in env.items()}


def test_the_rules_store_is_the_local_stacks_mariadb(compose: dict[str, Any]) -> None:
    # flink-sql-connector-mysql-cdc 3.5.0 reads the binlog position with SHOW MASTER STATUS only, which MySQL
    # 8.4 removed (SHOW BINARY LOG STATUS): on mysql:8.4 the job could not read its rules. MariaDB is what the
    # local stack runs and the integration tests read rules from.
    image = compose["services"]["mysql"]["image"]
    assert re.fullmatch(r"mariadb:10\.11(\.\d+)?", image), f"{image}: the local stack runs MariaDB 10.11"
    from unittest import mock

    from riskctl.stack.services import MariaDB

    # the local stack's command line, whether or not mariadbd is installed here
    with mock.patch.object(MariaDB, "binary", staticmethod(lambda name: name)):
        local = {str(a).split("=", 1)[0] for a in MariaDB(Settings())._server_cmd()[1:]}
    flags = [str(a).split("=", 1)[0] for a in compose["services"]["mysql"]["command"]]
    # mariadbd stops at an option it does not know (MySQL's --mysql-native-password, --authentication-policy)
    assert not set(flags) - local, f"not options of the local stack's mariadbd: {sorted(set(flags) - local)}"


def test_mysql_has_the_binlog_cdc_needs(compose: dict[str, Any]) -> None:
    mysql = compose["services"]["mysql"]
    flags = dict(str(a).split("=", 1) if "=" in str(a) else (str(a), "") for a in mysql["command"])
    assert "--log-bin" in flags
    for flag, value in BINLOG_FLAGS.items():
        assert flags.get(flag) == value, f"mysql needs {flag}={value}"
    assert int(flags["--server-id"]) >= 1
    # the job's CDC source takes server ids from job.cdc_server_id: they must not collide with the server's
    lo, _, hi = JobSettings().cdc_server_id.partition("-")
    assert not int(lo) <= int(flags["--server-id"]) <= int(hi or lo)


def test_mysql_user_and_cdc_grants_match_the_settings(compose: dict[str, Any]) -> None:
    mysql = _mariadb_env(compose)
    riskctl = _env(compose["services"]["submitter"])
    assert mysql["MYSQL_USER"] == riskctl["RISKCTL_MYSQL_USER"]
    assert mysql["MYSQL_DATABASE"] == riskctl["RISKCTL_MYSQL_DATABASE"]
    assert mysql["MYSQL_PASSWORD"] == riskctl["RISKCTL_MYSQL_PASSWORD"]
    mounts = [str(v) for v in compose["services"]["mysql"]["volumes"]]
    assert any(m.startswith("./docker/mysql/init:/docker-entrypoint-initdb.d") for m in mounts)
    sql = " ".join(p.read_text() for p in sorted(INIT_DIR.glob("*.sql")))
    m = re.search(r"GRANT\s+(.+?)\s+ON\s+\*\.\*\s+TO\s+'([^']+)'", sql, re.IGNORECASE | re.DOTALL)
    assert m, "the init SQL grants nothing on *.*"
    grants = {g.strip().upper() for g in m.group(1).split(",")}
    assert CDC_GRANTS <= grants, f"missing CDC grants: {CDC_GRANTS - grants}"
    assert m.group(2) == mysql["MYSQL_USER"]


def test_the_mysql_healthcheck_logs_in_as_riskctl_over_tcp(compose: dict[str, Any]) -> None:
    # over TCP: while the image initialises the volume its temporary server listens on no port, so the
    # service is healthy only once the real server (with the init SQL's grants) runs
    check = " ".join(compose["services"]["mysql"]["healthcheck"]["test"])
    assert "mariadb-admin ping -h 127.0.0.1" in check
    user = _mariadb_env(compose)["MYSQL_USER"]
    assert f"-u{user} " in check and "$$MARIADB_PASSWORD" in check


# ----------------------------------------------------------------------------------------------- ports


def test_host_ports_are_the_local_stacks(compose: dict[str, Any]) -> None:
    stack = StackSettings()
    services = compose["services"]
    assert _host_port(services["kafka"], 19092) == stack.kafka_port
    assert _host_port(services["mysql"], 3306) == stack.mysql_port
    assert _host_port(services["jobmanager"], 8081) == stack.flink_rest_port


def test_container_addresses_match_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = _env(services["submitter"])
    kafka = _env(services["kafka"])
    host, port = env["RISKCTL_KAFKA_BOOTSTRAP"].split(":")
    assert host in services
    assert f"INTERNAL://{host}:{port}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert f"://:{port}" in kafka["KAFKA_LISTENERS"]
    assert f"EXTERNAL://127.0.0.1:{StackSettings().kafka_port}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert env["RISKCTL_MYSQL_HOST"] in services and env["RISKCTL_MYSQL_PORT"] == "3306"
    props = dict(
        line.split(":", 1) for line in _env(services["submitter"])["FLINK_PROPERTIES"].splitlines() if line
    )
    props = {k.strip(): v.strip() for k, v in props.items()}
    assert props["rest.address"] == "jobmanager" and props["jobmanager.rpc.address"] == "jobmanager"
    assert env["RISKCTL_FLINK_REST_URL"] == f"http://{props['rest.address']}:{props['rest.port']}"
    assert int(props["taskmanager.numberOfTaskSlots"]) >= int(_default(env["RISKCTL_JOB_PARALLELISM"]))


def test_kafka_is_kraft_on_the_pinned_broker_version(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    pom = ET.parse(ROOT / "deps" / "kafka-broker" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = next(
        d.findtext("m:version", namespaces=ns)
        for d in pom.iterfind(".//m:dependency", ns)
        if d.findtext("m:artifactId", namespaces=ns) == "kafka_2.13"
    )
    assert kafka["image"] == f"apache/kafka:{version}"
    assert "controller" in _env(kafka)["KAFKA_PROCESS_ROLES"]


# ------------------------------------------------------------------------------------------ Flink image


def _pinned(package: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name, _, version = dep.partition("==")
        if name.strip() == package:
            return version.strip()
    msg = f"{package} is not pinned in pyproject.toml"
    raise AssertionError(msg)


def test_flink_version_equals_the_pyflink_pin(compose: dict[str, Any]) -> None:
    pyflink = _pinned("apache-flink")
    text = DOCKERFILE.read_text()
    arg = re.search(r"^ARG FLINK_VERSION=(\S+)", text, re.MULTILINE)
    assert arg and arg.group(1) == pyflink
    assert re.search(r"^FROM flink:\$\{FLINK_VERSION\}-scala_2\.12-java17$", text, re.MULTILINE)
    for name in FLINK_SERVICES:
        svc = compose["services"][name]
        assert svc["build"]["dockerfile"] == "docker/Dockerfile"
        assert str(svc["build"]["args"]["FLINK_VERSION"]) == pyflink
        assert svc["image"].endswith(f":{pyflink}")


def test_image_runs_thread_mode_with_flink_python_in_lib() -> None:
    text = DOCKERFILE.read_text()
    assert "-Dpython.execution-mode=thread" in text
    assert re.search(r"cp .*opt/flink-python-\*\.jar .*lib/", text)
    assert "python3.11" in text
    assert "-c /opt/riskctl/constraints.txt" in text
    assert "RISKCTL_FLINK_JARS_DIR=/opt/riskctl/jars" in text


def test_jars_are_resolved_from_the_pom_like_scripts_setup() -> None:
    text = DOCKERFILE.read_text()
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "COPY deps/flink-jars/pom.xml" in text
    for flag in ("-C", "dependency:copy-dependencies", "-DincludeScope=runtime"):
        assert flag in text and flag in setup
    # a jar named with a version in the Dockerfile must be the pom's version
    pom = ET.parse(ROOT / "deps" / "flink-jars" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    versions = {
        d.findtext("m:artifactId", namespaces=ns): d.findtext("m:version", namespaces=ns)
        for d in pom.iterfind(".//m:dependency", ns)
    }
    for artifact, version in re.findall(r"([a-z][a-z0-9-]+?)-(\d[\w.-]*?)\.jar", text):
        if artifact in versions:
            want = versions[artifact]
            assert version == want, f"{artifact}: Dockerfile {version}, pom {want}"


def test_checkpoints_are_shared_by_jobmanager_and_taskmanager(compose: dict[str, Any]) -> None:
    env = _env(compose["services"]["submitter"])
    path = env["RISKCTL_JOB_CHECKPOINT_DIR"].removeprefix("file://")
    for name in ("jobmanager", "taskmanager"):
        mounts = [str(v).split(":") for v in compose["services"][name]["volumes"]]
        assert any(m[1] == path for m in mounts), f"{name} does not mount {path}"


# ------------------------------------------------------------------------------------------- submitter


def _submit_commands() -> list[list[str]]:
    cmds = []
    for line in SUBMIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("exec "):
            line = line[5:]
        if line.startswith("riskctl "):
            cmds.append(shlex.split(line)[1:])
    return cmds


def test_submitter_runs_the_script_the_image_ships(compose: dict[str, Any]) -> None:
    command = compose["services"]["submitter"]["command"]
    assert command[-1] == "/opt/riskctl/docker/submit.sh"
    assert "COPY docker/submit.sh /opt/riskctl/docker/submit.sh" in DOCKERFILE.read_text()
    subcommands = [c[:2] if c[0] == "rules" else c[:1] for c in _submit_commands()]
    assert subcommands == [["rules", "apply"], ["submit"]]


@pytest.mark.parametrize("args", _submit_commands(), ids=lambda a: " ".join(a[:2]))
def test_submitter_commands_are_real_riskctl_commands(args: list[str]) -> None:
    # the image has rules/ at /opt/riskctl/rules; here it is the repository's
    args = [str(ROOT / "rules") if a == "/opt/riskctl/rules" else a for a in args]
    res = run_riskctl(*args, "--help", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Usage:" in res.stdout
    # and the options it passes are options of that command
    for opt in (a for a in args if a.startswith("-")):
        assert opt.split("=")[0] in res.stdout, f"riskctl {' '.join(args[:2])} has no option {opt}"


def test_the_rules_the_submitter_applies_are_valid() -> None:
    res = run_riskctl("rules", "validate", str(ROOT / "rules"), timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


# ------------------------------------------------------------------------------ the checks can fail


def test_the_checks_catch_a_broken_compose_file(tmp_path: Path) -> None:
    broken = COMPOSE.read_text().replace("--binlog-format=ROW", "--binlog-format=MIXED")
    broken = broken.replace("RISKCTL_JOB_EVENTS_TOPIC: riskctl.events", "RISKCTL_JOB_EVENT_TOPIC: x")
    (tmp_path / "docker-compose.yml").write_text(broken)
    bad = _load(tmp_path / "docker-compose.yml")
    with pytest.raises(AssertionError):
        test_mysql_has_the_binlog_cdc_needs(bad)
    with pytest.raises(AssertionError):
        test_topics_and_rules_table_are_the_job_defaults(bad)
    assert "RISKCTL_JOB_EVENT_TOPIC" not in _setting_names()


def test_the_api_service_serves_what_the_job_replies_to(compose: dict[str, Any]) -> None:
    serve = compose["services"]["serve"]
    env = _env(serve)
    assert serve["command"][:2] == ["riskctl", "serve"]
    assert run_riskctl("serve", "--help", timeout=60).returncode == 0
    # the job (the submitter's environment) writes replies to the topic the API reads
    job_env = _env(compose["services"]["submitter"])
    assert env["RISKCTL_SERVE_REPLIES_TOPIC"] == job_env["RISKCTL_SERVE_REPLIES_TOPIC"]
    assert env["RISKCTL_SERVE_HOST"] == "0.0.0.0"  # noqa: S104 - reachable through the published port
    assert serve["ports"][0].rsplit(":", 1)[1] == str(ServeSettings().port)
    assert serve["depends_on"]["submitter"]["condition"] == "service_completed_successfully"


def test_the_flink_containers_recover_like_the_local_stack(compose: dict[str, Any]) -> None:
    lines = _env(compose["services"]["jobmanager"])["FLINK_PROPERTIES"].splitlines()
    props = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    stack = StackSettings()
    assert props["taskmanager.memory.segment-size"] == NETWORK_SEGMENT_SIZE
    assert int(props["heartbeat.interval"]) == stack.flink_heartbeat_interval_ms
    assert int(props["heartbeat.timeout"]) == stack.flink_heartbeat_timeout_ms
    assert int(props["heartbeat.rpc-failure-threshold"]) == stack.flink_heartbeat_rpc_failure_threshold


# ------------------------------------------------------------------ every service, as riskctl would start it


def _example_env() -> dict[str, str]:
    """The values docker/compose.env.example suggests, its commented-out lines too: a word after two blanks
    is an explanation, and a ``<placeholder>`` stands for what the user writes there (each its own random
    characters: serve.api_keys refuses a key given twice, or too short to be a secret, when it loads)."""
    out = {}
    filled = iter(f"placeholder-{n:020d}" for n in range(1000))
    for line in (ROOT / "docker" / "compose.env.example").read_text().splitlines():
        m = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            value = m.group(2).split("  ", 1)[0]
            out[m.group(1)] = re.sub(r"<[^>]*>", lambda _m: next(filled), value)
    return out


def _interpolated(value: str, env: dict[str, str]) -> str:
    """``value`` as compose reads it, ``env`` being the .env file: ``${X:-d}`` is X when set and not empty."""
    return re.sub(
        r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}",
        lambda m: env.get(m.group(1)) or (m.group(2) or ""),
        value,
    )


def _settings_of(service: dict[str, Any], dotenv: dict[str, str]) -> Settings:
    from riskctl.config import load_settings

    env = {k: _interpolated(v, dotenv) for k, v in _env(service).items() if k.startswith("RISKCTL_")}
    # a RISKCTL_<SECTION>_<KEY> that is no setting, or a value out of its choices or range: exit 2 at start
    return load_settings(path="/dev/null", env=env)


@pytest.mark.parametrize("dotenv", [{}, _example_env()], ids=["defaults", "compose.env.example"])
def test_every_services_settings_load(compose: dict[str, Any], dotenv: dict[str, str]) -> None:
    services = _riskctl_vars(compose)
    assert {"submitter", "serve"} <= set(services)
    for name in services:
        _settings_of(compose["services"][name], dotenv)


def test_serve_starts_on_its_published_address(compose: dict[str, Any]) -> None:
    """``riskctl serve`` on a non-loopback host without API keys is refused at start unless serve.anonymous;
    keys given in .env reach the container and are name:key pairs."""
    from riskctl.serve.callers import Callers, is_loopback

    serve = compose["services"]["serve"]
    for dotenv in ({}, {"RISKCTL_SERVE_API_KEYS": "checkout:" + "k" * 32 + ",login:" + "l" * 32}):
        s = _settings_of(serve, dotenv).serve
        callers = Callers(s.api_keys, max_in_flight=s.max_in_flight)
        assert callers.required or s.anonymous or is_loopback(s.host), "serve would refuse to start"
        assert callers.required == bool(dotenv), "RISKCTL_SERVE_API_KEYS in .env does not reach serve"
    # without keys it is served anonymously: then only on the host's loopback
    assert all(str(p).startswith("127.0.0.1:") for p in serve["ports"])


def test_secrets_come_from_the_environment(compose: dict[str, Any]) -> None:
    from riskctl.config.loading import all_specs

    secret = {spec.env for spec in all_specs().values() if spec.allowed.secret}
    assert {"RISKCTL_MYSQL_PASSWORD", "RISKCTL_SERVE_API_KEYS"} <= secret
    for name, svc in compose["services"].items():
        for key, value in _env(svc).items():
            if key in secret:
                assert re.fullmatch(r"\$\{[A-Z_]+:-[^}]*\}", value), f"{name}.{key}: a literal secret"


def _riskctl_commands(compose: dict[str, Any]) -> dict[str, list[str]]:
    out = {}
    for name, svc in compose["services"].items():
        cmd = svc.get("command")
        cmd = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd or []]
        if cmd[:1] == ["riskctl"]:
            out[name] = cmd[1:]
    return out


def _parse(args: list[str]) -> None:
    """Parse ``riskctl *args`` with riskctl's click commands (a click.UsageError on a bad command line)."""
    import click

    cmd, ctx, rest = resolve_command(args)
    if isinstance(cmd, click.Group) and not cmd.invoke_without_command:
        msg = f"{' '.join(args)!r} names a group of commands, not a command"
        raise click.UsageError(msg)
    cmd.make_parser(ctx).parse_args(rest)


def test_every_riskctl_command_of_a_service_parses(compose: dict[str, Any]) -> None:
    commands = _riskctl_commands(compose)
    assert "serve" in commands
    for args in commands.values():
        _parse(args)


def test_the_submitter_sees_the_clusters_checkpoints(compose: dict[str, Any]) -> None:
    """``riskctl submit`` refuses to start from empty state when job.checkpoint_dir holds a newer checkpoint
    of the job: in the submitter that folder must be the volume the JobManager and TaskManager write."""
    path = _env(compose["services"]["submitter"])["RISKCTL_JOB_CHECKPOINT_DIR"].removeprefix("file://")

    def volume(name: str) -> str | None:
        for spec in compose["services"][name].get("volumes", []):
            parts = str(spec).split(":")
            if len(parts) >= 2 and parts[1] == path:
                return parts[0]
        return None

    assert volume("submitter") is not None, f"the submitter does not mount {path}"
    assert volume("submitter") == volume("jobmanager") == volume("taskmanager")
    assert volume("submitter") in compose["volumes"]


def test_dependencies_and_healthchecks_agree(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep, how in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            assert dep in services, f"{name} depends on no service {dep}"
            condition = (how or {}).get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep} healthy, it has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} restarts: it never completes"
    # the API's healthcheck asks riskctl serve's own liveness route on its port
    check = " ".join(services["serve"]["healthcheck"]["test"])
    assert f"http://localhost:{ServeSettings().port}/healthz" in check
    assert 'add_get("/healthz"' in (ROOT / "riskctl" / "serve" / "app.py").read_text()


def test_the_new_checks_catch_a_broken_compose_file(tmp_path: Path) -> None:
    import click

    from riskctl.errors import ConfigError

    text = COMPOSE.read_text()

    def broken(old: str, new: str) -> dict[str, Any]:
        assert old in text, old
        path = tmp_path / "docker-compose.yml"
        path.write_text(text.replace(old, new, 1))
        return _load(path)

    bad = broken("image: mariadb:10.11", "image: mysql:8.4")
    with pytest.raises(AssertionError):
        test_the_rules_store_is_the_local_stacks_mariadb(bad)
    bad = broken("- --expire-logs-days=2", "- --mysql-native-password=ON")
    with pytest.raises(AssertionError):
        test_the_rules_store_is_the_local_stacks_mariadb(bad)
    for old, new in [
        ("RISKCTL_SERVE_INSTANCE: serve-1", "RISKCTL_SERVE_INSTANCES: serve-1"),  # no such setting
        ("${RISKCTL_JOB_DELIVERY:-at-least-once}", "${RISKCTL_JOB_DELIVERY:-exactly_once}"),  # no such choice
        ("${RISKCTL_JOB_PARALLELISM:-1}", "${RISKCTL_JOB_PARALLELISM:-0}"),  # out of range
    ]:
        with pytest.raises(ConfigError):
            test_every_services_settings_load(broken(old, new), {})
    with pytest.raises(AssertionError):
        test_serve_starts_on_its_published_address(broken('RISKCTL_SERVE_ANONYMOUS: "true"', ""))
    with pytest.raises(AssertionError):
        test_serve_starts_on_its_published_address(broken("RISKCTL_SERVE_API_KEYS: ${", "X_API_KEYS: ${"))
    with pytest.raises(AssertionError):
        test_secrets_come_from_the_environment(
            broken("RISKCTL_SERVE_API_KEYS: ${RISKCTL_SERVE_API_KEYS:-}", "RISKCTL_SERVE_API_KEYS: a:k")
        )
    with pytest.raises(click.UsageError):
        test_every_riskctl_command_of_a_service_parses(
            broken('["riskctl", "serve"]', '["riskctl", "serve", "-x"]')
        )
    with pytest.raises(click.UsageError):
        test_every_riskctl_command_of_a_service_parses(
            broken('["riskctl", "serve"]', '["riskctl", "server"]')
        )
    with pytest.raises(AssertionError):
        test_the_submitter_sees_the_clusters_checkpoints(
            broken(
                "- flink-checkpoints:/opt/flink/checkpoints:ro", "- flink-savepoints:/opt/flink/savepoints:ro"
            )
        )
    with pytest.raises(AssertionError):  # a dependency on no service
        test_dependencies_and_healthchecks_agree(broken("      taskmanager:\n", "      taskmanagr:\n"))
    with pytest.raises(AssertionError):  # waits for a healthy service that has no healthcheck
        test_dependencies_and_healthchecks_agree(
            broken("condition: service_started", "condition: service_healthy")
        )
    with pytest.raises(AssertionError):  # the API's healthcheck on another port
        test_dependencies_and_healthchecks_agree(broken("localhost:8088/healthz", "localhost:8080/healthz"))


def _readme_services(readme: str) -> dict[str, str]:
    """The README's table of compose services: each service named in a row's first cell -> the row's text."""
    section = readme.split("## With Docker: docker-compose.yml", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = line.strip().strip("|").split("|")
        if line.startswith("| `") and len(cells) >= 3:
            for name in re.findall(r"`([^`]+)`", cells[0]):
                out[name] = cells[1]
    return out


def _readme_drift(compose: dict[str, Any], readme: str) -> list[str]:
    rows = _readme_services(readme)
    out = [
        f"{n}: in the README's table, not in docker-compose.yml"
        for n in sorted(set(rows) - set(compose["services"]))
    ]
    for name, svc in compose["services"].items():
        if name not in rows:
            out.append(f"{name}: not in the README's table")
        elif (
            "build" not in svc and f"`{svc['image']}`" not in rows[name]
        ):  # a pulled image: the README names it
            out.append(f"{name}: the README does not show its image {svc['image']}")
    return out


def test_the_readme_lists_the_services_and_their_images(compose: dict[str, Any]) -> None:
    assert _readme_drift(compose, (ROOT / "README.md").read_text()) == []


def test_the_readme_check_catches_a_drift(compose: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text()
    for old, new in [
        ("| `mysql` | `mariadb:10.11`", "| `mysql` | `mysql:8.4`"),
        ("| `serve` |", "| serve |"),
    ]:
        assert old in readme
        assert _readme_drift(compose, readme.replace(old, new)), new
