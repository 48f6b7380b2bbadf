"""Settings files that are hostile or mistaken, beyond their size (test_config_file_size.py): each is refused
with a message naming the file, never a traceback (found in review)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from riskctl.config import load_settings
from riskctl.config.checks import is_refused
from riskctl.config.loading import ConfigWarning, EmptyVariableWarning, SecretFileWarning
from riskctl.errors import ConfigError
from tests.helpers import run_riskctl


@pytest.mark.parametrize(
    "value",
    ["[" * 50_000 + "]" * 50_000, "{a = " * 5_000 + "1" + "}" * 5_000, "[{a=" * 3_000 + "1" + "}]" * 3_000],
)
def test_a_file_nesting_too_deeply_is_refused_naming_it(tmp_path: Path, value: str) -> None:
    """tomllib recurses once per level: 'x = [[[[...' within the 1 MiB limit raised RecursionError out of
    every command that loads the settings."""
    cfg = tmp_path / "riskctl.toml"
    cfg.write_text(f"[job]\nx = {value}\n")
    with pytest.raises(
        ConfigError, match=f"config file {cfg} nests arrays or inline tables too deeply"
    ) as err:
        load_settings(cfg, env={})
    assert is_refused(err.value)
    # nesting a settings file may hold is read as before (and its key refused as unknown)
    cfg.write_text("[job]\nx = [[[[1]]]]\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(cfg, env={})


def test_a_settings_file_linked_to_nothing_is_refused_not_skipped(clean: Path) -> None:
    """A riskctl.toml that is a symbolic link to a file that is gone (a deployment's settings, unmounted):
    exists() said False, so the defaults (the local stack's Kafka and MySQL) were used without a word."""
    (clean / "riskctl.toml").symlink_to(clean / "gone" / "prod.toml")
    with pytest.raises(ConfigError, match="config file riskctl.toml cannot be read") as err:
        load_settings(env={})
    assert is_refused(err.value)
    with pytest.raises(ConfigError, match=f"config file {clean}/link.toml cannot be read"):
        (clean / "link.toml").symlink_to(clean / "gone.toml")
        load_settings(clean / "link.toml", env={})


def test_a_settings_file_in_a_folder_that_may_not_be_searched_is_refused(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exists() raises PermissionError when a folder on the way may not be searched (as any user but root
    finds with a folder of mode 000): it escaped as a traceback. Simulated, as the tests may run as root."""

    def denied(self: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "exists", denied)
    with pytest.raises(ConfigError, match="config file riskctl.toml cannot be read") as err:
        load_settings(env={})
    assert is_refused(err.value)


PATHS = ["stack.dir", "flink.jars_dir", "job.rules_dir", "job.restore_from", "alerts.config"]


@pytest.mark.parametrize("key", PATHS)
def test_a_path_beginning_with_a_tilde_is_the_users_home(clean: Path, key: str) -> None:
    """Written in riskctl.toml or an environment file no shell reads, dir = "~/riskctl" was a folder named
    '~' in the working directory (config show: checkpoint_dir file://<cwd>/~/riskctl/checkpoints)."""
    section, name = key.split(".")
    home = str(Path.home())
    (clean / "riskctl.toml").write_text(f'[{section}]\n{name} = "~/riskctl/x"\n')
    assert getattr(getattr(load_settings(env={}), section), name) == f"{home}/riskctl/x"
    env = {f"RISKCTL_{section}_{name}".upper(): "~"}
    assert getattr(getattr(load_settings(env=env), section), name) == home
    settings = load_settings(env={}, overrides=[f"{key}=~/y"])
    assert getattr(getattr(settings, section), name) == f"{home}/y"
    # a tilde inside a path is a character like another
    assert getattr(getattr(load_settings(env={}, overrides=[f"{key}=/a/~b"]), section), name) == "/a/~b"


@pytest.mark.parametrize("value", ["$HOME/riskctl", "${HOME}/riskctl", "/srv/$USER"])
def test_a_path_holding_an_environment_variable_is_refused_naming_the_key(clean: Path, value: str) -> None:
    """A folder literally named '$HOME' in the working directory was used (and created) instead."""
    (clean / "riskctl.toml").write_text(f'[stack]\ndir = "{value}"\n')
    with pytest.raises(
        ConfigError, match=r"stack.dir in riskctl.toml must be a non-empty path \(~ is expanded"
    ):
        load_settings(env={})


def test_the_settings_file_named_with_a_tilde_is_read_from_home(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(clean))
    (clean / "mine.toml").write_text("[job]\nparallelism = 3\n")
    assert load_settings(env={"RISKCTL_CONFIG": "~/mine.toml"}).job.parallelism == 3
    assert load_settings("~/mine.toml", env={}).job.parallelism == 3


SECRETS = [
    ("mysql", "password", "hunter2-hunter2"),
    ("serve", "api_keys", "svc:abcdefghijklmnopqrstuvwxyz"),
    ("flink", "options", "s3.secret-key=abcdefghijkl;rest.port=8082"),
]


@pytest.mark.parametrize(("section", "key", "value"), SECRETS)
def test_a_secret_in_a_file_others_may_read_is_warned_about(
    clean: Path, section: str, key: str, value: str
) -> None:
    """A riskctl.toml written with the usual umask (0644) held the MySQL password, the API keys or an S3
    secret for every account of the machine to read, without a word."""
    cfg = clean / "riskctl.toml"
    cfg.write_text(f'[{section}]\n{key} = "{value}"\n')
    cfg.chmod(0o644)
    with pytest.warns(SecretFileWarning) as caught:
        load_settings(env={})
    message = str(caught[0].message)
    assert f"holds secrets ({section}.{key}) and is readable by other users (mode 0644): chmod 600" in message
    assert value.split(";")[0].split("=")[-1].split(":")[-1] not in message  # named, never shown
    cfg.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_settings(env={})  # only the owner reads it: no warning


def test_a_file_without_secrets_or_with_an_empty_one_is_not_warned_about(clean: Path) -> None:
    cfg = clean / "riskctl.toml"
    cfg.write_text('[mysql]\npassword = ""\n[flink]\noptions = "rest.port=8082"\n[job]\nparallelism = 2\n')
    cfg.chmod(0o644)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_settings(env={}).job.parallelism == 2


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("kafka", "bootstrap", "kafka-1:9092"), ("serve", "api_keys", "svc:abcdefghijklmnopqrstuvwxyz")],
)
def test_an_empty_variable_replacing_the_files_value_is_warned_about(
    clean: Path, section: str, key: str, value: str
) -> None:
    """RISKCTL_KAFKA_BOOTSTRAP= (a template's unset placeholder) replaced the file's brokers with the local
    stack's, and an empty RISKCTL_SERVE_API_KEYS the file's keys, without a word."""
    cfg = clean / "riskctl.toml"
    cfg.write_text(f'[{section}]\n{key} = "{value}"\n')
    cfg.chmod(0o600)
    variable = f"RISKCTL_{section}_{key}".upper()
    with pytest.warns(EmptyVariableWarning) as caught:
        settings = load_settings(env={variable: ""})
    assert getattr(getattr(settings, section), key) == ""  # the documented order holds: the variable wins
    message = str(caught[0].message)
    assert message.startswith(f"{variable} is set but empty: it replaces {section}.{key} from riskctl.toml")
    assert value not in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_settings(env={variable: "other:1"} if key == "bootstrap" else {})  # a value, or none: no word
        cfg.write_text("")
        load_settings(env={variable: ""})  # nothing in the file to replace


def test_config_warnings_are_one_line_each_naming_the_file_the_settings_and_the_reason(clean: Path) -> None:
    """The commands printed a config warning in Python's format: first the line of riskctl's own code that
    loaded the settings ('.../riskctl/cli/common.py:157: SecretFileWarning: ...'), then that line's source
    ('  return func(*args, **kwargs)') as a line of its own; a settings file named with a line break added
    one more. Now 'warning: <message>', one line each, as an error is 'error: <message>'."""
    cfg = clean / "site\n\x1b[31m.toml"
    cfg.write_text('[mysql]\npassword = "hunter2-hunter2"\n[kafka]\nbootstrap = "kafka-1:9092"\n')
    cfg.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKCTL_")}
    res = run_riskctl(
        "config", "show", env={**env, "RISKCTL_CONFIG": str(cfg), "RISKCTL_KAFKA_BOOTSTRAP": ""}
    )
    assert res.returncode == 0, res.stderr
    shown = str(cfg).replace("\n", "\\n").replace("\x1b", "\\x1b")
    assert res.stderr.splitlines() == [
        f"warning: config file {shown} holds secrets (mysql.password) and is readable by other users (mode "
        "0644): chmod 600 it, or set them in the environment (RISKCTL_<SECTION>_<KEY>)",
        f"warning: RISKCTL_KAFKA_BOOTSTRAP is set but empty: it replaces kafka.bootstrap from {shown}; unset "
        "the variable to keep the file's value",
    ]
    # a program that loads the settings gets the file and the settings of each warning
    with pytest.warns(ConfigWarning) as caught:
        load_settings(cfg, env={"RISKCTL_KAFKA_BOOTSTRAP": ""})
    found = {(type(w.message), w.message.file, w.message.fields) for w in caught}  # type: ignore[union-attr]
    assert found == {
        (SecretFileWarning, str(cfg), ("mysql.password",)),
        (EmptyVariableWarning, str(cfg), ("kafka.bootstrap",)),
    }


FORGED = (
    "x\nerror: all is well\x1b[2K\u202e.toml"  # a line of its own, an erase-line, a right-to-left override
)
FORGED_SHOWN = "x\\nerror: all is well\\x1b[2K\\u202e.toml"


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        (None, ["error: config file {cfg} does not exist"]),
        (
            "[job\n",
            ["error: config file {cfg} is not valid TOML: Expected ']' at the end of a table declaration"],
        ),
        (
            '["s\\nerror: no"]\nk = 1\n[job]\n"k\\ny" = 1\nparallelism = "four"\n',
            [
                "error: 3 invalid settings:",
                "- unknown section [s\\nerror: no] in {cfg}: sections are [alerts], [console], [flink], "
                "[job], [kafka], [mysql], [serve], [stack]",
                "- job.parallelism in {cfg} must be an integer from 1 to 32768, got 'four'",
                "- unknown key(s) in [job] of {cfg}: k\\ny",
            ],
        ),
    ],
    ids=["missing", "not-toml", "bad-settings"],
)
def test_a_config_error_is_its_own_lines_whatever_the_file_is_named(
    clean: Path, text: str | None, lines: list[str]
) -> None:
    """A config error quoted the settings file's path (and a section's or key's name) as given, and the
    command printed the message's lines as they came: a file named with a line break split the error, and
    could add a line of its own ('error: all is well'). Now each is escaped, as in the warnings."""
    cfg = clean / FORGED
    if text is not None:
        cfg.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKCTL_")}
    res = run_riskctl("config", "show", env={**env, "RISKCTL_CONFIG": str(cfg)})
    assert res.returncode == 2, res.stderr
    shown = str(clean / FORGED_SHOWN)
    got = res.stderr.splitlines()
    assert [line.split(" (at line")[0] for line in got] == [line.format(cfg=shown) for line in lines]
