"""Settings are validated when loaded, from every source: the file, the environment and ``--set``.

Every refusal is a ConfigError that names the key, the value, where it came from and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from riskctl.config import Settings, apply_overrides, load_settings, resolve
from riskctl.config.loading import all_specs
from riskctl.errors import ConfigError

TOPIC = "a Kafka topic name (1-249 letters, digits, '.', '_', '-')"
TABLE = "a table name (1-64 letters, digits or '_', not starting with a digit)"
PARALLELISM = "an integer from 1 to 32768"
MULTIPLIER = "a number from 1 to 1000000"
SERVER_IDS = "a MySQL server id (1 to 2^31-1) or a rising range such as 5401-5404"
CHECKPOINT_DIR = "empty or a folder's URL with its scheme, such as file:///var/riskctl/checkpoints or s3://bucket/checkpoints"
# (key, value as TOML, the same value as text for the environment and --set, what the message says is allowed)
HOSTILE = [
    pytest.param("job.parallelism", '"four"', "four", PARALLELISM, id="wrong type"),
    pytest.param("job.parallelism", "0", "0", PARALLELISM, id="below range"),
    pytest.param("stack.kafka_port", "70000", "70000", "an integer from 1 to 65535", id="above range"),
    pytest.param("job.parallelism", "1" + "0" * 30, "1" + "0" * 30, PARALLELISM, id="huge"),
    pytest.param("job.lateness_ms", "-5", "-5", "an integer from 0 to 2^63-1", id="negative duration"),
    pytest.param("job.delivery", '"exactly_once"', "exactly_once", "one of at-least-once, exactly-once"),
    pytest.param("job.rules_source", '"CDC"', "CDC", "one of cdc, poll, file", id="enum is case-sensitive"),
    pytest.param("job.events_topic", '""', "", TOPIC, id="empty topic"),
    pytest.param("mysql.user", '"  "', "  ", "a non-empty string", id="blank where required"),
    pytest.param("job.restart_jitter_factor", "1.5", "1.5", "a number from 0 to 1", id="float above range"),
    pytest.param("job.restart_backoff_multiplier", "inf", "inf", MULTIPLIER, id="infinite"),
    pytest.param("job.restart_backoff_multiplier", "nan", "nan", MULTIPLIER, id="nan"),
    pytest.param("job.rules_table", '"rules; DROP TABLE x"', "rules; DROP TABLE x", TABLE, id="sql"),
    pytest.param("stack.kafka_heap", '"lots"', "lots", "a JVM heap size, e.g. 512m or 2g", id="heap"),
    pytest.param("flink.options", '"rest.port"', "rest.port", "key=value pairs separated by ';'"),
    pytest.param("flink.rest_url", '"jm:8081"', "jm:8081", "empty or an http:// or https:// URL", id="url"),
    pytest.param("kafka.bootstrap", '"kafka"', "kafka", "empty or host:port[,host:port...]", id="no port"),
    pytest.param("job.cdc_server_id", '"54x"', "54x", SERVER_IDS),
    # Flink CDC reads server ids as Java ints and gives subtask i the id first + i: 3000000000 ended 'riskctl
    # run' in a Java traceback, a falling range failed every attempt of the job inside Flink
    pytest.param("job.cdc_server_id", '"3000000000"', "3000000000", SERVER_IDS, id="server id beyond int"),
    pytest.param("job.cdc_server_id", '"5404-5401"', "5404-5401", SERVER_IDS, id="falling server ids"),
    pytest.param("job.cdc_server_id", '"0"', "0", SERVER_IDS, id="server id 0"),
    pytest.param("job.dead_letter_max_bytes", "2000000", "2000000", "an integer from 4096 to 1000000"),
    # Flink's checkpoint storage takes a URL with a scheme and a folder: a plain path ended 'riskctl run' in
    # an 80-line Java traceback ("The scheme (hdfs://, file://, etc) is null"), the root in another
    pytest.param(
        "job.checkpoint_dir", '"/var/chk"', "/var/chk", CHECKPOINT_DIR, id="checkpoint dir no scheme"
    ),
    pytest.param("job.checkpoint_dir", '"chk"', "chk", CHECKPOINT_DIR, id="checkpoint dir relative"),
    pytest.param("job.checkpoint_dir", '"file:///"', "file:///", CHECKPOINT_DIR, id="checkpoint dir root"),
    pytest.param("job.checkpoint_dir", '"s3://bucket"', "s3://bucket", CHECKPOINT_DIR, id="bucket root"),
]


def _toml(key: str, value: str) -> str:
    section, _, name = key.partition(".")
    return f"[{section}]\n{name} = {value}\n"


def _env_name(key: str) -> str:
    return "RISKCTL_" + key.replace(".", "_").upper()


@pytest.mark.parametrize(("key", "toml", "text", "allowed"), HOSTILE)
def test_a_bad_value_in_the_file_names_key_value_file_and_what_is_allowed(
    tmp_path: Path, key: str, toml: str, text: str, allowed: str
) -> None:
    cfg = tmp_path / "riskctl.toml"
    cfg.write_text(_toml(key, toml))
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    section, _, name = key.partition(".")
    value = tomllib.loads(_toml(key, toml))[section][name]
    assert f"{key} in {cfg} must be {allowed}, got {value!r}" in str(err.value)


@pytest.mark.parametrize(("key", "toml", "text", "allowed"), HOSTILE)
def test_a_bad_environment_variable_names_variable_key_value_and_what_is_allowed(
    key: str, toml: str, text: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={_env_name(key): text})
    message = str(err.value)
    assert f"{_env_name(key)} must be {allowed}, got {text!r}" in message
    assert f"(the environment variable of {key})" in message


@pytest.mark.parametrize(("key", "toml", "text", "allowed"), HOSTILE)
def test_a_bad_set_override_names_key_value_and_what_is_allowed(
    key: str, toml: str, text: str, allowed: str
) -> None:
    with pytest.raises(ConfigError, match=f"--set {key} must be {_re(allowed)}, got {_re(repr(text))}"):
        load_settings(env={}, overrides=[f"{key}={text}"])
    with pytest.raises(ConfigError, match=f"--set {key} must be {_re(allowed)}"):
        apply_overrides(load_settings(env={}), [f"{key}={text}"])


def _re(text: str) -> str:
    return re.escape(text)


@pytest.mark.parametrize(
    ("toml", "wanted"),
    [
        (
            "[job]\nparallelism = true\n",
            "job.parallelism in {cfg} must be an integer from 1 to 32768, got True",
        ),
        (
            "[job]\nparallelism = 2.5\n",
            "job.parallelism in {cfg} must be an integer from 1 to 32768, got 2.5",
        ),
        ("[job]\nevents_topic = 7\n", "job.events_topic in {cfg} must be a Kafka topic name"),
        ('[stack]\nkafka_port = "19092"\n', "stack.kafka_port in {cfg} must be an integer from 1 to 65535"),
    ],
    ids=["bool for an integer", "float for an integer", "integer for a string", "quoted number"],
)
def test_the_file_is_typed_and_a_value_of_another_type_is_refused(
    tmp_path: Path, toml: str, wanted: str
) -> None:
    cfg = tmp_path / "riskctl.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    assert wanted.format(cfg=cfg) in str(err.value)


def test_unknown_keys_sections_and_variables_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "riskctl.toml"
    cfg.write_text("[job]\nparalelism = 2\n[jobs]\nparallelism = 2\n")
    with pytest.raises(ConfigError) as err:
        load_settings(
            cfg, env={"RISKCTL_JOB_DELIVERY_MODE": "x", "RISKCTL_AUTHOR": "me", "RISKCTL_PYTHON": "py"}
        )
    message = str(err.value)
    assert f"unknown key(s) in [job] of {cfg}: paralelism (did you mean parallelism?)" in message
    assert f"unknown section [jobs] in {cfg} (did you mean job?)" in message
    assert (
        "unknown environment variable RISKCTL_JOB_DELIVERY_MODE (did you mean RISKCTL_JOB_DELIVERY?)"
        in message
    )
    # variables outside the settings' sections belong to others (rules --author, scripts/setup)
    assert "RISKCTL_AUTHOR" not in message and "RISKCTL_PYTHON" not in message
    with pytest.raises(
        ConfigError,
        match=r"--set takes section\.key=value .*'job\.paralelism' and 2 more character\(s\), not shown "
        r"\(did you mean ",
    ):
        load_settings(env={}, overrides=["job.paralelism=2"])
    with pytest.raises(
        ConfigError, match="--set takes section.key=value with a known setting, got 'parallelism'"
    ):
        load_settings(env={}, overrides=["parallelism"])


def test_a_section_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "riskctl.toml"
    cfg.write_text("job = 3\n")
    with pytest.raises(ConfigError, match=f"\\[job\\] in {_re(str(cfg))} must be a table of settings, got 3"):
        load_settings(cfg, env={})


def test_a_file_that_is_not_toml_names_the_file_and_the_place(tmp_path: Path) -> None:
    cfg = tmp_path / "riskctl.toml"
    cfg.write_text("[job]\nparallelism = = 2\n")
    with pytest.raises(ConfigError, match=f"config file {_re(str(cfg))} is not valid TOML: .*line 2"):
        load_settings(cfg, env={})
    cfg.write_bytes(b"\xff\xfe[job]\n")
    with pytest.raises(ConfigError, match=f"config file {_re(str(cfg))} "):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match=f"config file {_re(str(tmp_path))} cannot be read"):
        load_settings(env={"RISKCTL_CONFIG": str(tmp_path)})  # a folder


def test_every_problem_of_one_load_is_reported_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "riskctl.toml"
    cfg.write_text('[job]\nparallelism = "four"\ndelivery = "exactly_once"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={"RISKCTL_STACK_KAFKA_PORT": "lots"}, overrides=["job.lateness_ms=soon"])
    lines = str(err.value).splitlines()
    assert lines[0] == "4 invalid settings:"
    assert [line.split(" must be ")[0] for line in lines[1:]] == [
        f"- job.parallelism in {cfg}",
        f"- job.delivery in {cfg}",
        "- RISKCTL_STACK_KAFKA_PORT",
        "- --set job.lateness_ms",
    ]


def test_a_wait_below_the_one_it_must_exceed_names_both_and_their_sources(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={"RISKCTL_JOB_RESTART_MAX_BACKOFF_MS": "10"})
    assert str(err.value) == (
        "RISKCTL_JOB_RESTART_MAX_BACKOFF_MS must be >= job.restart_initial_backoff_ms (1000, from default), "
        "got 10 (the environment variable of job.restart_max_backoff_ms)"
    )
    with pytest.raises(ConfigError, match=r"--set stack\.flink_heartbeat_timeout_ms must be >= "):
        load_settings(env={}, overrides=["stack.flink_heartbeat_timeout_ms=400"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "serve.timeout_ms=2",
            "--set serve.timeout_ms must be >= serve.min_timeout_ms (5, from default), got 2",
        ),
        (
            "serve.max_timeout_ms=100",
            "--set serve.max_timeout_ms must be >= serve.timeout_ms (150, from default), got 100",
        ),
        (
            "serve.idempotency_max_entries=10",
            "--set serve.idempotency_max_entries must be >= serve.max_in_flight (20000, from default), "
            "got 10",
        ),
    ],
)
def test_serve_bounds_out_of_order_are_refused_when_the_settings_load(override: str, message: str) -> None:
    """They were refused only when riskctl serve started (exit 3), after every other command took them."""
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, overrides=[override])
    assert str(err.value).startswith(message), str(err.value)


def test_a_huge_hostile_value_is_cut_short_in_the_message() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={"RISKCTL_JOB_DELIVERY": "x" * 1_000_000})
    assert len(str(err.value)) < 300
    assert "(1000002 characters)" in str(err.value)


def test_every_default_passes_its_own_check() -> None:
    """A field of a type the loader cannot read, or a default outside its range, fails here, not in a job."""
    defaults = Settings()
    for spec in all_specs().values():
        assert spec.kind in {int, float, str, bool}, spec.dotted
        assert spec.accept(spec.get(defaults), from_text=False) == spec.get(defaults), spec.dotted
        assert spec.accept(str(spec.get(defaults)), from_text=True) == spec.get(defaults), spec.dotted


def test_the_defaults_are_valid_and_load_unchanged() -> None:
    resolved = resolve(env={})
    assert resolved.settings == Settings()
    assert set(resolved.sources.values()) == {"default"}
    assert resolved.file is None


def test_valid_values_from_every_source_load_as_given(tmp_path: Path) -> None:
    cfg = tmp_path / "riskctl.toml"
    cfg.write_text(
        '[kafka]\nbootstrap = "kafka-1:9092, [::1]:9092,PLAINTEXT://kafka-3:9092"\n'
        '[job]\nparallelism = 4\ndelivery = "exactly-once"\nrestart_backoff_multiplier = 3\n'
        '[flink]\noptions = "rest.port=8082; python.fn-execution.bundle.size=1000;"\n'
    )
    env = {
        "RISKCTL_CONFIG": str(cfg),
        "RISKCTL_JOB_PARALLELISM": " 8 ",
        "RISKCTL_STACK_FLINK_HEARTBEAT_RPC_FAILURE_THRESHOLD": "-1",
        "RISKCTL_JOB_BUFFER_TIMEOUT_MS": "-1",
        "RISKCTL_MYSQL_PORT": "0",
    }
    resolved = resolve(env=env, overrides=["job.rules_source=file", "job.restore_from="])
    s = resolved.settings
    assert s.kafka.bootstrap == "kafka-1:9092, [::1]:9092,PLAINTEXT://kafka-3:9092"
    assert (s.job.parallelism, s.job.delivery, s.job.rules_source) == (8, "exactly-once", "file")
    assert s.job.restart_backoff_multiplier == 3.0 and isinstance(s.job.restart_backoff_multiplier, float)
    assert s.stack.flink_heartbeat_rpc_failure_threshold == -1 and s.job.buffer_timeout_ms == -1
    assert s.flink.options == "rest.port=8082; python.fn-execution.bundle.size=1000;"
    assert resolved.file == cfg
    assert resolved.sources["kafka.bootstrap"] == str(cfg)
    assert resolved.sources["job.parallelism"] == "RISKCTL_JOB_PARALLELISM"
    assert resolved.sources["job.rules_source"] == "--set"
    assert resolved.sources["job.lateness_ms"] == "default"
    # everything else as the defaults
    untouched = dataclasses.replace(
        s.job,
        parallelism=1,
        delivery="at-least-once",
        rules_source="cdc",
        restart_backoff_multiplier=2.0,
        buffer_timeout_ms=5,
    )
    assert untouched == Settings().job


@pytest.mark.parametrize(
    "url", ["file:///var/riskctl/checkpoints", "file:/var/chk", "s3://bucket/chk", "hdfs:///flink/chk", ""]
)
def test_a_checkpoint_dir_with_its_scheme_is_accepted(url: str) -> None:
    assert load_settings(env={"RISKCTL_JOB_CHECKPOINT_DIR": url}).job.checkpoint_dir == url


def test_fewer_cdc_server_ids_than_the_parallelism_are_refused() -> None:
    """The CDC source runs at job.parallelism, one server id per subtask: with --set job.parallelism=8 and the
    default 5401-5404, every attempt of the job failed inside Flink ('Subtask ID 4 is out of server id range
    5401-5404') and restarted for ever."""
    with pytest.raises(ConfigError) as err:
        load_settings(env={"RISKCTL_JOB_CDC_SERVER_ID": "5401-5404"}, overrides=["job.parallelism=8"])
    message = str(err.value)
    assert message.startswith("RISKCTL_JOB_CDC_SERVER_ID must hold at least job.parallelism (8, from --set)")
    assert "give a range such as 5401-5408" in message
    assert load_settings(env={}, overrides=["job.parallelism=4"]).job.cdc_server_id == "5401-5404"
    wide = load_settings(env={}, overrides=["job.parallelism=8", "job.cdc_server_id=100-107"])
    assert wide.job.parallelism == 8
    # rules from elsewhere read no binlog
    assert (
        load_settings(env={}, overrides=["job.parallelism=8", "job.rules_source=file"]).job.parallelism == 8
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("garbage", "entry 1: 'garbage' is not an IP address or network"),
        ("10.0.0.5, 10.0.0.300", "entry 2: '10.0.0.300' is not an IP address or network"),
        (
            "10.0.0.1/8",
            "entry 1: '10.0.0.1/8' is not an IP address or network such as 10.0.0.5, 10.0.0.0/8 "
            "or fd00::/8 (10.0.0.1/8 has host bits set)",
        ),
        ("*", "entry 1: '*' is not accepted: it would trust every peer"),
        ("127.0.0.1, *", "entry 2: '*' is not accepted"),
        ("0.0.0.0/0", "entry 1: 0.0.0.0/0 is not accepted: it holds every address, so it would trust"),
        ("10.0.0.5, ::/0", "entry 2: ::/0 is not accepted: it holds every address"),
        ("0.0.0.0/0.0.0.0", "entry 1: 0.0.0.0/0 is not accepted"),
        ("1" * 1_000_000, "entry 1: '1111"),
        (", ".join(["10.0.0.5"] * 65), "65 entries, more than 64"),
        ("10.0.0.5\nerror: forged", "entry 1: '10.0.0.5\\nerror: forged' is not an IP address"),
    ],
    ids=[
        "garbage",
        "bad-second",
        "host-bits",
        "star",
        "star-second",
        "all-v4",
        "all-v6",
        "all-v4-netmask",
        "very-long",
        "too-many",
        "line-break",
    ],
)
@pytest.mark.parametrize("source", ["file", "env", "set"])
def test_console_trusted_proxies_refuses_a_bad_entry_on_one_line_naming_it(
    clean: Path, value: str, reason: str, source: str
) -> None:
    """console.trusted_proxies: uvicorn took an entry it could not read as an address for a literal, which
    silently trusted nobody (or, with host bits, not the network meant), and '*' trusts every peer and then
    believes the left-most X-Forwarded-For address, the one the client writes. Refused when the settings
    load, on one line that names the entry (a long one cut short)."""
    env: dict[str, str] = {}
    overrides: list[str] = []
    cfg = clean / "riskctl.toml"  # the working directory's, read when present
    if source == "file":
        cfg.write_text(f"[console]\ntrusted_proxies = {json_string(value)}\n")
        where = "console.trusted_proxies in riskctl.toml, "
    elif source == "env":
        env["RISKCTL_CONSOLE_TRUSTED_PROXIES"] = value
        where = "RISKCTL_CONSOLE_TRUSTED_PROXIES (the environment variable of console.trusted_proxies), "
    else:
        overrides.append(f"console.trusted_proxies={value}")
        where = "--set console.trusted_proxies, "
    with pytest.raises(ConfigError) as err:
        load_settings(env=env, overrides=overrides)
    message = str(err.value)
    assert message.startswith(where + reason), message
    assert "\n" not in message and len(message) < 400, message


def json_string(value: str) -> str:
    """``value`` as a TOML basic string (JSON's escapes are TOML's for these)."""
    import json

    return json.dumps(value)


def test_console_trusted_proxies_loads_addresses_and_networks_and_the_console_password_is_no_setting() -> (
    None
):
    """The addresses and networks load as written; RISKCTL_CONSOLE_PASSWORD ('riskctl console user add')
    begins like a console setting and is not one: it is not refused as an unknown variable."""
    value = "10.0.0.5, 10.1.0.0/16, fd00::/8, ::1"
    env = {"RISKCTL_CONSOLE_TRUSTED_PROXIES": value, "RISKCTL_CONSOLE_PASSWORD": "a long password"}
    settings = load_settings(env=env)
    assert settings.console.trusted_proxies == value
    from riskctl.config.settings import parse_trusted_proxies

    assert parse_trusted_proxies(value) == ["10.0.0.5", "10.1.0.0/16", "fd00::/8", "::1"]
    assert parse_trusted_proxies("") == [] == parse_trusted_proxies(Settings().console.trusted_proxies)
    with pytest.raises(ConfigError, match="unknown environment variable RISKCTL_CONSOLE_TRUSTED_PROXY"):
        load_settings(env={"RISKCTL_CONSOLE_TRUSTED_PROXY": "10.0.0.5"})
