"""Every example in docs/ and README.md is run here.

Conventions in the Markdown (see docs/rules.md):

* a fenced block ```` ```yaml rule ```` holds one or more rules; it starts an example;
* the next ```` ```jsonl events ```` block (optionally ``lateness=5s``) holds the events, one JSON per line,
  fed in that order to :class:`riskctl.testing.RuleRunner` (every remaining timer fires at the end);
* the next ```` ```text expect ```` block lists *every* record the run must produce, in any order:
  ``<event_id> <ACTION> [rule,rule...] [shadow=rule,...]`` for a decision (the rules that fired, by priority)
  and ``alert <rule_id> <reason> <event_id>`` for an alert.

Every ```` ```yaml rule ```` block must also pass ``riskctl rules validate``; every ``riskctl ...`` command
line in a ```` ```bash ```` or ```` ```console ```` block must parse (known command, known options);
the settings table of docs/config.md must list every setting of riskctl.config with its env
variable and default. In every page (docs/design/ too): each relative link reaches its file and heading, each
path of the repository named exists, each inline `` `riskctl ...` `` names a command and its options, and each
``RISKCTL_*`` variable is a setting's or one the code reads.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from riskctl.config import PROJECT_ROOT, Settings
from riskctl.core.rules import load_rules_text
from riskctl.testing import RuleRunner
from tests.helpers import resolve_command, run_riskctl

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(p for p in (ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


@dataclass
class Example:
    where: str
    rules: str
    events: str = ""
    expect: str | None = None
    lateness: str = "0"
    extra: list[str] = field(default_factory=list)


def blocks(path: Path) -> list[tuple[int, str, str]]:
    """(line, info string, body) of every fenced block."""
    text = path.read_text()
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)
    ]


def examples(path: Path) -> list[Example]:
    out: list[Example] = []
    for line, info, body in blocks(path):
        words = info.split()
        tag = words[1] if len(words) > 1 else ""
        if words[:1] == ["yaml"] and tag == "rule":
            out.append(Example(f"{path.name}:{line}", body))
        elif tag == "events":
            assert out and not out[-1].events, f"{path.name}:{line}: events without a rule block before them"
            out[-1].events = body
            for w in words[2:]:
                key, _, value = w.partition("=")
                assert key == "lateness", f"{path.name}:{line}: unknown option {w!r}"
                out[-1].lateness = value
        elif tag == "expect":
            assert out and out[-1].events, f"{path.name}:{line}: expect without events before it"
            out[-1].expect = body
    return out


ALL_EXAMPLES = [ex for p in DOCS for ex in examples(p)]
RUNNABLE = [ex for ex in ALL_EXAMPLES if ex.expect is not None]


def records(rules: str, events: str, lateness: str) -> set[str]:
    runner = RuleRunner(rules, lateness=int(lateness) if lateness.isdigit() else lateness)
    evs = [json.loads(line) for line in events.splitlines() if line.strip()]
    from riskctl.core.events import normalize_event

    result = runner.run([normalize_event(e) for e in evs])
    out = set()
    for d in result.decisions.values():
        parts = [d.event_id, d.action]
        if d.rules:
            parts.append(",".join(r.id for r in d.rules))
        if d.shadow:
            parts.append("shadow=" + ",".join(r.id for r in d.shadow))
        out.add(" ".join(parts))
    for a in result.alerts:
        out.add(f"alert {a.rule.id} {a.reason} {a.event_id}")
    return out


def expected(text: str) -> set[str]:
    return {" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.startswith("#")}


def test_the_docs_have_examples() -> None:
    assert len(RUNNABLE) >= 15, "docs/rules.md should have a runnable example for every construct"


@pytest.mark.parametrize("ex", RUNNABLE, ids=lambda e: e.where)
def test_example_gives_the_documented_records(ex: Example) -> None:
    assert ex.expect is not None
    assert records(ex.rules, ex.events, ex.lateness) == expected(ex.expect)


@pytest.mark.parametrize("ex", ALL_EXAMPLES, ids=lambda e: e.where)
def test_every_rule_shown_is_valid(ex: Example) -> None:
    assert load_rules_text(ex.rules, source=ex.where)


def test_rules_validate_passes_on_every_rule_shown(tmp_path: Path) -> None:
    for i, ex in enumerate(ALL_EXAMPLES):
        (tmp_path / f"ex{i:03d}.yaml").write_text(ex.rules)
    res = run_riskctl("rules", "validate", str(tmp_path), timeout=60)
    # two examples may show the same rule id: validate then fails on duplicates, so compare by error kind
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert all("duplicate rule id" in e for e in errors), "\n".join(errors)


def test_a_wrong_expectation_fails() -> None:
    ex = RUNNABLE[0]
    assert ex.expect is not None
    wrong = expected(ex.expect)
    wrong.add("nope PASS")
    assert records(ex.rules, ex.events, ex.lateness) != wrong


# ------------------------------------------------------------------------------------- command lines


def command_lines() -> list[tuple[str, list[str]]]:
    out = []
    for path in DOCS:
        for line, info, body in blocks(path):
            if info.split()[:1] not in (["bash"], ["console"], ["sh"], ["shell"]):
                continue
            for i, raw in enumerate(body.splitlines()):
                text = raw.split(" #", 1)[0].strip()
                text = text.removeprefix("$ ")
                m = re.match(r"^(?:\.venv/bin/)?riskctl\s+(.*)$", text)
                if m and not text.endswith("\\"):
                    args = shlex.split(m.group(1).split("|")[0].split(">")[0])
                    out.append((f"{path.name}:{line + 1 + i}", args))
    return out


COMMANDS = command_lines()


def parse_command(args: list[str]) -> None:
    """Resolve the subcommand path and parse the options (raises click.UsageError on a bad line)."""
    cmd, ctx, rest = resolve_command(args)
    # a group runs with options only when it is also a command of its own (invoke_without_command)
    group_as_command = isinstance(cmd, click.Group) and cmd.invoke_without_command
    help_only = not rest or rest[0] in ("-h", "--help", "--version")
    assert not isinstance(cmd, click.Group) or group_as_command or help_only, args
    parser = cmd.make_parser(ctx)
    parser.parse_args(rest)


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_command_line_parses(where: str, args: list[str]) -> None:
    parse_command(args)


def test_a_bad_command_line_fails() -> None:
    with pytest.raises(click.UsageError):
        parse_command(["rules", "apply", "rules/", "--dryrun"])
    with pytest.raises(click.UsageError):
        parse_command(["rulez", "list"])


def _all_commands() -> list[tuple[str, click.Command, click.Context]]:
    """(path, command, its context) of every riskctl command and group, the root excepted."""
    from riskctl.cli.main import cli

    out = []

    def walk(group: click.Group, path: str, ctx: click.Context) -> None:
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            assert sub is not None
            sub_ctx = click.Context(sub, info_name=name, parent=ctx, **sub.context_settings)
            out.append((f"{path} {name}".strip(), sub, sub_ctx))
            if isinstance(sub, click.Group):
                walk(sub, f"{path} {name}", sub_ctx)

    walk(cli, "", click.Context(cli, info_name="riskctl", **cli.context_settings))
    return out


#: options that ``--help`` shows without a word (a gap of riskctl/cli, reported; remove once fixed)
OPTIONS_WITHOUT_HELP: set[tuple[str, str]] = set()


def help_gaps(commands: list[tuple[str, click.Command, click.Context]]) -> list[str]:
    """Commands whose line in their group's ``--help`` is empty, options whose ``--help`` says nothing."""
    gaps = []
    for path, cmd, ctx in commands:
        if not cmd.get_short_help_str(200).strip():
            gaps.append(f"riskctl {path}: no short help")
        for param in cmd.get_params(ctx):
            if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip():
                if (path, param.opts[0]) not in OPTIONS_WITHOUT_HELP:
                    gaps.append(f"riskctl {path} {param.opts[0]}: no help")
    return gaps


def test_every_command_and_option_has_help() -> None:
    commands = _all_commands()
    assert len(commands) >= 30
    assert help_gaps(commands) == []


def test_the_help_check_catches_a_gap() -> None:
    bare = click.Command("bare", params=[click.Option(["--quiet"])])
    ctx = click.Context(bare, info_name="bare")
    assert help_gaps([("bare", bare, ctx)]) == [
        "riskctl bare: no short help",
        "riskctl bare --quiet: no help",
    ]


# ------------------------------------------------------------------------------------------- config


def _default_text(value: object) -> str:
    text = str(value)
    root = str(PROJECT_ROOT)
    if text.startswith(root):
        text = "<project>" + text[len(root) :]
    return f"`{text}`" if text != "" else '`""`'


def config_rows() -> list[tuple[str, str, str, str]]:
    """(section, key, env variable, default) of every setting, in riskctl.config's order."""
    rows = []
    settings = Settings()
    for section in dataclasses.fields(settings):
        obj = getattr(settings, section.name)
        for f in dataclasses.fields(obj):
            env = f"RISKCTL_{section.name}_{f.name}".upper()
            rows.append((section.name, f.name, env, _default_text(getattr(obj, f.name))))
    return rows


def documented_rows(text: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].startswith("`") and cells[2].startswith("`RISKCTL_"):
            rows.append((cells[0].strip("`"), cells[1].strip("`"), cells[2].strip("`"), cells[3]))
    return rows


def test_config_reference_lists_every_setting() -> None:
    doc = documented_rows((ROOT / "docs" / "config.md").read_text())
    want = config_rows()
    missing = sorted(set(want) - set(doc))
    extra = sorted(set(doc) - set(want))
    assert not missing and not extra, f"docs/config.md is out of date: missing {missing}, stale {extra}"


def test_config_md_names_the_variables_that_look_like_settings_and_are_none() -> None:
    """The unknown-name check of docs/config.md says a RISKCTL_<SECTION>_* variable of a known section is an
    error: the ones it leaves alone (riskctl.config.loading.NOT_SETTINGS) are named there too."""
    from riskctl.config.loading import NOT_SETTINGS

    text = (ROOT / "docs" / "config.md").read_text()
    unknown_names = text[text.index("- **unknown names**") :].split("\n- ", 1)[0]
    missing = sorted(name for name in NOT_SETTINGS if f"`{name}`" not in unknown_names)
    assert not missing, f"docs/config.md's unknown names do not say {missing} are not settings"


def test_config_check_catches_a_missing_row() -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    dropped = "\n".join(line for line in text.splitlines() if "RISKCTL_JOB_LATENESS_MS" not in line)
    assert set(config_rows()) - set(documented_rows(dropped))


# ------------------------------------------------------------------- links, paths, inline commands, variables

#: every Markdown page: the docs (docs/design/ too) and the README
ALL_PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
#: a path of the repository named in the text: ``riskctl/cli/common.py``, ``bench/results/``, ``rules/``
REPO_PATH = re.compile(
    r"(?<![\w./<-])((?:riskctl|docs|bench|scripts|tests|jobs|rules|deps|docker)/[\w./*-]*[\w/*])"
)
#: a command line in inline code: `riskctl rules enable ID`, `.venv/bin/riskctl stack up [--flink]`
INLINE_COMMAND = re.compile(r"`(?:\.venv/bin/)?riskctl ([^`]+)`")
#: inline code that starts like a command and is not one
NOT_COMMANDS = {"job stopped (Ctrl-C)"}  # the line riskctl run prints when stopped
ENV_NAME = re.compile(r"\bRISKCTL_[A-Z0-9_]*[A-Z0-9]\b(?!_[*<])")
#: variables the docs name on purpose although nothing reads them
NOT_VARIABLES = {"RISKCTL_JOB_PARALELISM"}  # config.md's example of a misspelt variable


def prose(text: str) -> str:
    """``text`` without its fenced blocks (their ``#`` lines are comments, not headings)."""
    return FENCE.sub("", text)


def anchors(path: Path) -> set[str]:
    """The ids GitHub gives the headings of ``path``: lower case, punctuation other than ``-`` and ``_``
    dropped, blanks as ``-``; a repeated heading gets ``-1``, ``-2``, ..."""
    out: set[str] = set()
    seen: dict[str, int] = {}
    for m in HEADING.finditer(prose(path.read_text())):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path: Path, text: str) -> list[str]:
    """Relative links of ``text`` (a page at ``path``) to a file that does not exist or a heading it lacks."""
    bad = []
    for m in LINK.finditer(prose(text)):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        name, _, anchor = target.partition("#")
        dest = (path.parent / name).resolve() if name else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no such heading in {dest.name}")
    return bad


def missing_paths(text: str) -> list[str]:
    """Paths of the repository ``text`` names that do not exist (one with ``*`` must match a file)."""
    return sorted(
        {
            p
            for p in REPO_PATH.findall(text)
            if not ((ROOT / p).exists() if "*" not in p else any(ROOT.glob(p)))
        }
    )


def check_inline_command(text: str) -> None:
    """The command path of an inline ``riskctl ...`` exists and every option it shows is one of that command
    (placeholders such as ``ID``, ``[--json]`` and ``...`` allowed); raises click.UsageError otherwise."""
    words = [w.strip("[]") for w in text.split()]
    words = [w for w in words if w and w != "..."]
    try:
        cmd, ctx, words = resolve_command(words)
    except click.UsageError as exc:
        msg = f"{exc.message} in {text!r}"
        raise click.UsageError(msg) from None
    known = {o for p in cmd.get_params(ctx) for o in (*p.opts, *p.secondary_opts)}
    for w in words:
        option = w.split("=", 1)[0]
        if option.startswith("-") and option not in known:
            msg = f"no option {option!r} of 'riskctl {cmd.name}' in {text!r}"
            raise click.UsageError(msg)


def known_variables() -> set[str]:
    """Every settings variable, and every RISKCTL_* name that the code, scripts, compose files and integration
    tests use (not the unit tests: they hold misspelt names on purpose, this file among them)."""
    names = {env for _, _, env, _ in config_rows()}
    files = [
        *(ROOT / "riskctl").rglob("*.py"),
        *(ROOT / "tests" / "integration").rglob("*.py"),
        *(ROOT / "bench").rglob("*.py"),
        *(ROOT / "scripts").iterdir(),
        *(ROOT / "docker").rglob("*"),
        ROOT / "docker-compose.yml",
        ROOT / "alerts.example.yaml",
    ]
    for f in files:
        if f.is_file():
            names |= set(ENV_NAME.findall(f.read_text(errors="replace")))
    return names


INLINE_COMMANDS = sorted(
    {(p.name, m) for p in ALL_PAGES for m in INLINE_COMMAND.findall(p.read_text()) if m not in NOT_COMMANDS}
)


@pytest.mark.parametrize("path", ALL_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(path: Path) -> None:
    assert broken_links(path, path.read_text()) == []


@pytest.mark.parametrize("path", ALL_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_named_exists(path: Path) -> None:
    assert missing_paths(path.read_text()) == []


@pytest.mark.parametrize(("page", "text"), INLINE_COMMANDS, ids=[f"{p}:{t}" for p, t in INLINE_COMMANDS])
def test_inline_command_exists(page: str, text: str) -> None:
    check_inline_command(text)


def test_every_variable_named_exists() -> None:
    known = known_variables() | NOT_VARIABLES
    named = {(p.name, v) for p in ALL_PAGES for v in ENV_NAME.findall(p.read_text())}
    assert sorted((p, v) for p, v in named if v not in known) == []


def settings_named(text: str) -> set[str]:
    """The ``section.key`` names of ``text`` that look like settings (``job.lateness_ms``), file names
    (``alerts.yaml``) and prefixes (``job.restart_*``) left out."""
    sections = "|".join(f.name for f in dataclasses.fields(Settings()))
    name = re.compile(rf"(?<![\w./-])(?:{sections})\.[a-z][a-z0-9_]*(?![\w*-]|\.\w)")
    return {m for m in name.findall(text) if not m.endswith((".yaml", ".md", ".py", ".toml", ".json"))}


def test_every_setting_named_exists() -> None:
    known = {f"{section}.{key}" for section, key, _, _ in config_rows()}
    named = {(p.name, n) for p in ALL_PAGES for n in settings_named(p.read_text())}
    assert len(named) > 100
    assert sorted((p, n) for p, n in named if n not in known) == []
    assert settings_named("`job.latenes_ms`, alerts.yaml, job.restart_*, riskctl.flink.watch") == {
        "job.latenes_ms"
    }


def test_the_drift_checks_catch_planted_errors() -> None:
    page = ROOT / "docs" / "config.md"
    assert anchors(page) and broken_links(page, "[x](operations.md#no-such-heading) [y](nowhere.md)") == [
        "operations.md#no-such-heading: no such heading in operations.md",
        "nowhere.md: no such file",
    ]
    assert broken_links(page, "[x](operations.md#losing-a-taskmanager) [y](https://example.com/x)") == []
    assert missing_paths("see riskctl/cli/commons.py and riskctl/cli/common.py") == ["riskctl/cli/commons.py"]
    assert missing_paths("bench/results/chaos-*.md bench/results/nothing-*.md") == [
        "bench/results/nothing-*.md"
    ]
    for line in ("stack up --flinky", "rulez list", "rules enable ID --wait 3 --expect 2"):
        with pytest.raises(click.UsageError):
            check_inline_command(line)
    check_inline_command("stack up [--flink] [--json]")
    check_inline_command("console user add NAME --role viewer|analyst|approver")
    assert "RISKCTL_JOB_PARALLELISM" in known_variables()
    assert "RISKCTL_JOB_PARALLELISMS" not in known_variables()
    assert ENV_NAME.findall("`RISKCTL_ALERTS_*` RISKCTL_<SECTION>_<KEY> RISKCTL_MYSQL_HOST") == [
        "RISKCTL_MYSQL_HOST"
    ]


# ------------------------------------------------------------------------------------ records shown

JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
KEY_VALUE = re.compile(r"\s*:\s*(" + JSON_STRING.pattern + ")?")


def object_keys(text: str) -> list[dict[str, object]]:
    """``{"kind": ..., "keys": [...]}`` of each top-level object of ``text`` (the keys at its first level, in
    order); the objects may hold placeholders (``[...]``, ``{...}``, ``"…"``) and need not be whole JSON."""
    out: list[dict[str, object]] = []
    depth, i = 0, 0
    while i < len(text):
        m = JSON_STRING.match(text, i)
        if m:
            i = m.end()
            value = KEY_VALUE.match(text, i)
            if depth == 1 and value:
                key = json.loads(m.group())
                out[-1]["keys"].append(key)  # type: ignore[attr-defined]
                if key == "kind" and value.group(1):
                    out[-1]["kind"] = json.loads(value.group(1))
            continue
        if text[i] in "{[":
            if depth == 0 and text[i] == "{":
                out.append({"kind": None, "keys": []})
            depth += 1
        elif text[i] in "}]":
            depth -= 1
        i += 1
    return out


def record_keys() -> dict[str, set[str]]:
    """The fields of each record the engine writes, as ``to_dict`` makes them."""
    from riskctl.core.decisions import Alert, Decision, FiredRule

    rule = FiredRule("r", 1, "PASS", {})
    return {
        "decision": set(Decision("e", "u", "t", 0, "PASS", [], [], "v").to_dict()),
        "alert": set(Alert("a", "u", rule, "timer", 0, "v").to_dict()),
    }


#: what riskctl serve adds to the job's decision record (docs/api.md)
API_FIELDS = {"elapsed_ms", "degraded", "replay", "source"}


def test_the_records_shown_in_engine_md_have_every_field_and_no_other() -> None:
    shown = [
        obj
        for _, info, body in blocks(ROOT / "docs" / "engine.md")
        if info == "json"
        for obj in object_keys(body)
    ]
    kinds = record_keys()
    assert {str(o["kind"]) for o in shown} == set(kinds)
    for obj in shown:
        assert set(obj["keys"]) == kinds[str(obj["kind"])], obj["kind"]  # type: ignore[arg-type]


def test_the_answer_shown_in_api_md_is_what_the_rules_give() -> None:
    """The example of 'Calling it': every field of the answer, and the rules and shadow hits that rules/ (the
    job's default rules folder) give for the event it posts, evidence included."""
    from riskctl.core.events import normalize_event

    body = next(
        b for _, info, b in blocks(ROOT / "docs" / "api.md") if info == "console" and '"kind":"decision"' in b
    )
    event = json.loads(re.search(r"-d '([^']*)'", body).group(1))  # type: ignore[union-attr]
    answer = json.loads(body[body.index('{"kind"') :].replace('"…"', '"?"'))
    assert set(answer) == record_keys()["decision"] | API_FIELDS
    decision = (
        RuleRunner(ROOT / "rules", lateness="5s").run([normalize_event(event)]).decisions[event["event_id"]]
    )
    got = decision.to_dict()
    for key in (
        "event_id",
        "user_id",
        "type",
        "ts",
        "action",
        "rules",
        "shadow",
        "late",
        "too_late",
        "duplicate",
    ):
        assert answer[key] == got[key], key


def test_the_rule_status_record_in_operations_md_has_every_field() -> None:
    from riskctl.flink.risk_function import status_record

    text = " ".join((ROOT / "docs" / "operations.md").read_text().split())
    shown = re.search(r'\{"rule_id".*?"seen_at_ms"\}', text)
    assert shown, "docs/operations.md: the rule-status record is not described"
    row = status_record("r", 1, "refused", "a reason", "when")
    assert row[1] == "r:1"
    assert re.findall(r'"(\w+)"', shown.group()) == list(json.loads(row[2]))


def exit_codes_named(text: str) -> set[int]:
    """The exit codes of README's paragraph on them: each `N`, and every code of a range `N` to `M`."""
    para = " ".join(text.split("exit code says what went", 1)[1].split("\n\n", 1)[0].split())
    named = {int(n) for n in re.findall(r"`(\d+)`", para)}
    for low, high in re.findall(r"`(\d+)` to `(\d+)`", para):
        named |= set(range(int(low), int(high) + 1))
    return named


def test_the_readme_names_every_exit_code() -> None:
    from riskctl.cli.common import ExitCode

    want = {int(c) for c in ExitCode if c != ExitCode.OK}
    assert exit_codes_named((ROOT / "README.md").read_text()) == want
    assert exit_codes_named("the exit code says what went wrong: `1` x, `4` to `6` y\n\n`9`") == {1, 4, 5, 6}


def test_the_counters_table_of_operations_md_lists_every_counter_of_the_decide_operator() -> None:
    from riskctl.flink.risk_function import METRICS, PATH_METRIC

    rows = re.findall(r"^\| `riskctl\.(\w+)` \|", (ROOT / "docs" / "operations.md").read_text(), re.MULTILINE)
    assert sorted(rows) == sorted((*METRICS, PATH_METRIC))


def test_the_keys_table_of_alerts_md_lists_every_key_of_the_file_with_its_default() -> None:
    from riskctl.alerts.settings import _TOP_KEYS, parse_config

    text = (ROOT / "docs" / "alerts.md").read_text()
    table = text.split("## The file", 1)[1].split("###", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| *([^|]*?) *\|", table, re.MULTILINE))
    assert sorted(rows) == sorted(_TOP_KEYS)
    config = parse_config(
        {"channels": {"h": {"type": "webhook", "url": "http://x/y"}}, "default_channels": ["h"]}, {}
    )
    for key, default in rows.items():
        number = re.match(r"`(\d+)`", default)
        if number:
            assert getattr(config, key) == int(number.group(1)), key
    delivery = re.search(r"^\| `delivery` \|.*$", table, re.MULTILINE)
    assert delivery
    for key, value in re.findall(r"`(\w+)` \((\d+)", delivery.group()):
        assert getattr(config.delivery, key) == int(value), key


def test_the_limits_at_the_door_in_engine_md_are_the_settings_defaults() -> None:
    text = (ROOT / "docs" / "engine.md").read_text()
    table = text.split("## Limits at the door", 1)[1].split("\n\n", 3)[2]
    rows = re.findall(r"^\| [^|]+ \| `(\w+)` \| (\d+)", table, re.MULTILINE)
    job = Settings().job
    assert len(rows) == 5
    assert all(getattr(job, key) == int(value) for key, value in rows), rows


def test_the_record_check_catches_a_missing_field() -> None:
    shown = object_keys(
        '{"kind": "decision", "a": {"b": [1, {"c": 2}]}, "d": [...]}\n{"kind": "alert", "x": {...}}'
    )
    assert shown == [
        {"kind": "decision", "keys": ["kind", "a", "d"]},
        {"kind": "alert", "keys": ["kind", "x"]},
    ]


if __name__ == "__main__":  # print the config table's first four columns, to start a new row
    for section, key, env, default in config_rows():
        print(f"| `{section}` | `{key}` | `{env}` | {default} | |")
