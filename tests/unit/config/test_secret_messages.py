"""A secret never appears in a configuration error (found in review).

The message of a bad value repeated the value, and that of a bad ``--set`` pair the whole pair: a password
written as a TOML number or list, a misspelt ``--set mysql.pasword=...`` or ``--set 'mysql.password x'``
(a space instead of '=') printed the password on stderr, or in ``--json``'s error document.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from riskctl.cli.main import cli
from riskctl.config import load_settings
from riskctl.errors import ConfigError

SECRET = "hunter2-31415926535"


@pytest.mark.parametrize("toml_value", ["31415926535", f'["{SECRET}"]', f'{{ value = "{SECRET}" }}'])
def test_a_mistyped_password_in_the_file_is_not_repeated(clean: Path, toml_value: str) -> None:
    cfg = clean / "riskctl.toml"
    cfg.write_text(f"[mysql]\npassword = {toml_value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    message = str(info.value)
    assert "mysql.password" in message and "not shown: a secret" in message
    assert "31415926535" not in message and SECRET not in message


@pytest.mark.parametrize(
    "pair", [f"mysql.pasword={SECRET}", f"mysql.password {SECRET}", f"mysql.password:{SECRET}"]
)
@pytest.mark.parametrize("as_json", [False, True])
def test_a_bad_set_pair_is_not_repeated_whole(clean: Path, pair: str, as_json: bool) -> None:
    args = ["config", "show", "--set", pair] + (["--json"] if as_json else [])
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    assert SECRET not in res.output
    assert "did you mean mysql.password?" in res.output
    assert "not shown" in res.output


def test_a_bad_set_key_without_a_value_is_still_named(clean: Path) -> None:
    with pytest.raises(ConfigError, match=r"got 'job\.paralelism' \(did you mean job\.parallelism\?\)"):
        load_settings(env={}, overrides=["job.paralelism"])
    with pytest.raises(ConfigError, match=r"got 'job\.paralelism' and 2 more character\(s\), not shown"):
        load_settings(env={}, overrides=["job.paralelism=4"])


def test_secret_flink_options_are_masked_in_config_show_and_in_errors(clean: Path) -> None:
    """flink.options and stack.flink_config may carry Flink secrets (an S3 secret key, a keystore password):
    'config show' printed them whole, and a malformed pair was repeated in the error."""
    import json

    good = f"rest.port=8082;s3.secret-key={SECRET};security.ssl.keystore-password={SECRET};s3.access-key=AK"
    res = CliRunner().invoke(cli, ["config", "show", "--json"], env={"RISKCTL_FLINK_OPTIONS": good})
    assert res.exit_code == 0, res.output
    assert SECRET not in res.output
    shown = json.loads(res.output)
    options = shown["settings"]["flink"]["options"] if "settings" in shown else shown["flink"]["options"]
    assert options == "rest.port=8082;s3.secret-key=***;security.ssl.keystore-password=***;s3.access-key=***"
    bad = f"rest.port=8082;s3.secret-key {SECRET}"  # a blank instead of '='
    res = CliRunner().invoke(cli, ["config", "show"], env={"RISKCTL_STACK_FLINK_CONFIG": bad})
    assert res.exit_code != 0 and SECRET not in res.output and "stack.flink_config" in res.output, res.output
    with pytest.raises(ConfigError) as err:
        load_settings(env={"RISKCTL_FLINK_OPTIONS": bad})
    assert SECRET not in str(err.value) and "s3.secret-key" in str(err.value)


@pytest.mark.parametrize(
    "key",
    [
        "properties.sasl.jaas.config",  # the Kafka client's JAAS line, with its password
        "fs.azure.account.key.acct.blob.core.windows.net",  # an Azure storage account's key
        "fs.azure.sas.cont.acct.blob.core.windows.net",  # an Azure SAS token
        "metrics.reporter.dd.apikey",
    ],
)
def test_a_flink_option_secret_anywhere_in_its_key_is_masked(clean: Path, key: str) -> None:
    """Only the key's last part was read: 'config show' printed a JAAS config's password ('config' is its
    last part) and an Azure account key (whose key ends with the account's host name) in full."""
    import json

    options = f"rest.port=8082;{key}={SECRET}"
    res = CliRunner().invoke(cli, ["config", "show", "--json"], env={"RISKCTL_FLINK_OPTIONS": options})
    assert res.exit_code == 0, res.output
    assert SECRET not in res.output
    assert json.loads(res.output)["settings"]["flink"]["options"] == f"rest.port=8082;{key}=***"


@pytest.mark.parametrize("section", ["mysql", "serve"])
def test_a_section_holding_a_secret_written_as_a_value_is_not_repeated(clean: Path, section: str) -> None:
    """'mysql = "<password>"' (the password one level too high) was repeated: 'got 'hunter2-...''."""
    cfg = clean / "riskctl.toml"
    cfg.write_text(f'{section} = "{SECRET}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    message = str(info.value)
    assert f"[{section}] in {cfg} must be a table of settings" in message and "not shown: a secret" in message
    assert SECRET not in message


KEY = "k" * 24  # keys of the right shape
SECRET_KEY = f"{SECRET}-and-more"


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        (
            f"checkout:{SECRET_KEY}, login:{SECRET}",
            "pair 2: the key of 'login' must be 20-256 characters",
        ),
        (f"checkout:{KEY}, checkout:{SECRET_KEY}", "pair 2: the caller 'checkout' is named twice"),
        (f"checkout:{SECRET_KEY}, login:{SECRET_KEY}", "pair 2: the key of 'login' is another caller's too"),
        (f"{SECRET_KEY}", "pair 1: expected name:key"),
    ],
)
@pytest.mark.parametrize("source", ["file", "env", "set"])
def test_bad_api_keys_are_refused_when_the_settings_load_naming_the_pair(
    clean: Path, keys: str, reason: str, source: str
) -> None:
    """serve.api_keys was checked only when 'riskctl serve' started (exit 3): 'riskctl config show' printed
    it as fine (exit 0). Now it is refused with every other setting when the settings load (exit 2), naming
    the setting and the pair, never a key."""
    env: dict[str, str] = {}
    args = ["config", "show"]
    if source == "file":
        (clean / "riskctl.toml").write_text(f'[serve]\napi_keys = "{keys}"\n')
        (clean / "riskctl.toml").chmod(0o600)
        where = "serve.api_keys in riskctl.toml, "
    elif source == "env":
        env["RISKCTL_SERVE_API_KEYS"] = keys
        where = "RISKCTL_SERVE_API_KEYS (the environment variable of serve.api_keys), "
    else:
        args += ["--set", f"serve.api_keys={keys}"]
        where = "--set serve.api_keys, "
    res = CliRunner().invoke(cli, args, env=env)
    assert res.exit_code == 2, res.output
    assert f"error: {where}{reason}" in res.output, res.output
    assert SECRET not in res.output
    assert len(res.output.splitlines()) == 1
    with pytest.raises(ConfigError, match=re.escape(reason)):
        load_settings(env=env, overrides=args[3:])


def test_good_api_keys_load_and_are_masked(clean: Path) -> None:
    settings = load_settings(env={"RISKCTL_SERVE_API_KEYS": f"checkout:{KEY}, login:{SECRET_KEY}"})
    assert settings.serve.api_keys == f"checkout:{KEY}, login:{SECRET_KEY}"
    res = CliRunner().invoke(cli, ["config", "show"], env={"RISKCTL_SERVE_API_KEYS": f"checkout:{KEY}"})
    assert res.exit_code == 0 and KEY not in res.output
