"""Rule texts and files: read them safely and load them into :class:`Rule` objects and a :class:`RuleSet`.

A rule file holds one or more rules (several YAML documents, a list, or ``rules: [...]``); ``.json`` files and
the MySQL ``document`` column hold one JSON document. Hostile texts are refused here, before a rule is
validated (:mod:`riskctl.core.rule_document`): YAML anchors, aliases, merges, non-text or duplicate keys,
deep nesting, too many values, too large a text, bytes that are not UTF-8. Loading a folder collects the
errors of every rule of every file into one :class:`~riskctl.core.errors.RuleSetError`.

The public names of the rule modules are importable from here: :class:`Rule`, :class:`RuleSet` and
:data:`ACTION_RANK` (:mod:`riskctl.core.ruleset`), :func:`parse_rule` and the document limits
(:mod:`riskctl.core.rule_document`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from riskctl.core.errors import RuleError, RuleSetError
from riskctl.core.jsondoc import load_json_document
from riskctl.core.rule_document import (
    FEATURE_KEYS,
    MAX_FEATURES_PER_RULE,
    MAX_SEQUENCE_COST,
    MAX_VERSION,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    RULE_KEYS,
    SEQUENCE_KEYS,
    STEP_KEYS,
    is_rule_id,
    parse_feature,
    parse_rule,
)
from riskctl.core.ruleset import ACTION_RANK, ACTIONS, STATUSES, Rule, RuleSet, document_digest

__all__ = [
    "ACTIONS",
    "ACTION_RANK",
    "FEATURE_KEYS",
    "MAX_FEATURES_PER_RULE",
    "MAX_RULE_TEXT",
    "MAX_SEQUENCE_COST",
    "MAX_VERSION",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "RULE_KEYS",
    "SEQUENCE_KEYS",
    "STATUSES",
    "STEP_KEYS",
    "Rule",
    "RuleSet",
    "document_digest",
    "is_rule_id",
    "load_rules",
    "load_rules_text",
    "parse_feature",
    "parse_rule",
    "read_rule_file",
    "rule_files",
    "rule_from_json",
]


def _rule_from_document(document: dict[str, Any], source: str | None) -> Rule:
    """Rebuild a pickled :class:`Rule` from its document (see ``Rule.__reduce__``)."""
    return parse_rule(document, source=source)


#: characters of one rule file or text (YAML or JSON); rule files are about a kilobyte
MAX_RULE_TEXT = 1_048_576
_YAML_STR = "tag:yaml.org,2002:str"


def _yaml_refusal(reason: str, source: str, field: str | None, mark: Any) -> RuleSetError:
    if field and len(field) > 80:
        field = field[:40] + "..." + field[-37:]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return RuleSetError([RuleError(f"{reason}{where}", field=field or None, source=source)])


class _YamlFrame:
    __slots__ = ("is_map", "path", "keys", "key", "index")

    def __init__(self, is_map: bool, path: str) -> None:
        self.is_map = is_map
        self.path = path
        self.keys: dict[str, int] = {}  # key -> line (1-based) where it was first given
        self.key: str | None = None  # mapping: the key whose value comes next (None: a key comes next)
        self.index = 0  # list: the index of the next item


def _check_yaml_events(text: str, source: str, loader: Any) -> None:
    """Refuse what rule files never need and a hostile file uses, from the parser's events, before any node
    is built: anchors and aliases (billion laughs, circular structures), nesting deeper than
    :data:`MAX_YAML_DEPTH`, more than :data:`MAX_YAML_NODES` nodes, keys that are not text (``1:``, ``on:``,
    ``<<:`` merges, lists as keys) and duplicate keys. Iterative (no recursion) and linear in the text.
    """
    import yaml

    resolver = yaml.resolver.Resolver()
    stack: list[_YamlFrame] = []
    nodes = 0
    for ev in yaml.parse(text, Loader=loader):
        mark = ev.start_mark
        if isinstance(ev, yaml.AliasEvent):
            msg = (
                f"aliases (*{ev.anchor}) are not allowed in rule files: write the value out "
                "(aliases can expand a small file into gigabytes, or make a structure contain itself)"
            )
            raise _yaml_refusal(msg, source, stack[-1].path if stack else None, mark)
        if isinstance(ev, yaml.CollectionEndEvent):
            stack.pop()
            continue
        if not isinstance(ev, yaml.ScalarEvent | yaml.CollectionStartEvent):
            continue
        nodes += 1
        if nodes > MAX_YAML_NODES:
            msg = f"the rule text has too many values (more than {MAX_YAML_NODES})"
            raise _yaml_refusal(msg, source, None, mark)
        top = stack[-1] if stack else None
        if top is not None and top.is_map and top.key is None:  # this node is a key
            tag = ev.tag if isinstance(ev, yaml.ScalarEvent) else None
            if isinstance(ev, yaml.ScalarEvent) and (tag is None or tag == "!"):
                tag = resolver.resolve(yaml.ScalarNode, ev.value, ev.implicit)
            if tag != _YAML_STR:
                shown = repr(ev.value) if isinstance(ev, yaml.ScalarEvent) else "a list or mapping"
                msg = f"keys must be text, got {shown}"
                if isinstance(ev, yaml.ScalarEvent) and ev.value == "<<":
                    msg = "merge keys ('<<') are not allowed in rule files: write the fields out"
                elif isinstance(ev, yaml.ScalarEvent):
                    msg += f" (quote it: '{ev.value}')"
                raise _yaml_refusal(msg, source, top.path, mark)
            assert isinstance(ev, yaml.ScalarEvent)
            key = ev.value
            path = f"{top.path}.{key}" if top.path else key
            if key in top.keys:
                msg = f"duplicate key {key!r} (first given on line {top.keys[key]}): give each key once"
                raise _yaml_refusal(msg, source, path, mark)
            if ev.anchor is not None:
                msg = f"anchors (&{ev.anchor}) are not allowed in rule files"
                raise _yaml_refusal(msg, source, path, mark)
            top.keys[key] = mark.line + 1 if mark is not None else 0
            top.key = key
            continue
        if top is None:
            path = ""
        elif top.is_map:
            path = f"{top.path}.{top.key}" if top.path else str(top.key)
            top.key = None
        else:
            path = f"{top.path}[{top.index}]"
            top.index += 1
        if ev.anchor is not None:
            msg = (
                f"anchors (&{ev.anchor}) are not allowed in rule files: write the value out where it is used"
            )
            raise _yaml_refusal(msg, source, path, mark)
        if isinstance(ev, yaml.CollectionStartEvent):
            if len(stack) >= MAX_YAML_DEPTH:
                msg = f"the rule text is nested deeper than {MAX_YAML_DEPTH} levels"
                raise _yaml_refusal(msg, source, path, mark)
            stack.append(_YamlFrame(isinstance(ev, yaml.MappingStartEvent), path))


def _load_yaml(text: str, source: str) -> list[Any]:
    import yaml  # with orjson (door, jsoncodec), the core's only non-stdlib import, and only here

    # libyaml when present: the events pass and the load are C-speed (the pure-Python parser is much slower
    # on a large file). Both loaders are the safe ones: no Python objects from tags.
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        _check_yaml_events(text, source, loader)
        return list(yaml.load_all(text, Loader=loader))
    except RuleSetError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RuleSetError([RuleError(f"not valid YAML{where}: {problem}", source=source)]) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. a timestamp 2024-13-45
        msg = f"not valid YAML: {type(exc).__name__}: {str(exc)[:200]}"
        raise _yaml_refusal(msg, source, None, None) from None


def _documents(text: str, source: str) -> Iterator[tuple[str, Any]]:
    """The rule documents of a YAML text, or of a JSON text when ``source`` ends in ``.json``.

    Hostile texts are refused with the source, the field and the reason (:func:`_check_yaml_events`,
    :func:`riskctl.core.jsondoc.load_json_document`); over :data:`MAX_RULE_TEXT` characters, unread.
    """
    if not isinstance(text, str):
        msg = f"a rule text must be text, got {type(text).__name__}"
        raise RuleSetError([RuleError(msg, source=source)])
    if len(text) > MAX_RULE_TEXT:
        msg = f"the rule text is too large ({len(text)} characters, limit {MAX_RULE_TEXT})"
        raise RuleSetError([RuleError(msg, source=source)])
    if source.endswith(".json"):
        docs = [load_json_document(text, source=source, max_chars=MAX_RULE_TEXT)]
    else:
        docs = _load_yaml(text, source)
    index = 0
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, Mapping) and set(doc) == {"rules"}:
            doc = doc["rules"]
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            index += 1
            yield f"{source}#{index}", item


def load_rules_text(text: str, *, source: str = "<text>") -> list[Rule]:
    """Parse every rule of a YAML (or JSON) text; raises :class:`RuleSetError` with all errors."""
    rules: list[Rule] = []
    errors: list[RuleError] = []
    for where, doc in _documents(text, source):
        try:
            rules.append(parse_rule(doc, source=where))
        except RuleSetError as exc:
            errors.extend(exc.errors)
    if errors:
        raise RuleSetError(errors)
    return rules


def rule_from_json(text: str | bytes, *, source: str = "<json>") -> Rule:
    """Parse one rule stored as a JSON document (the MySQL form), within the limits of
    :func:`~riskctl.core.jsondoc.load_json_document`.
    """
    return parse_rule(load_json_document(text, source=source), source=source)


def read_rule_file(file: Path, *, source: str | None = None) -> str:
    """The text of a rule file, refused unread when it is larger than :data:`MAX_RULE_TEXT` allows
    (4 bytes a character at most) or not UTF-8; raises :class:`RuleSetError`, or ``OSError``.
    """
    name = source or file.name
    # O_NONBLOCK: a FIFO (or a link to one) must not block the reader; fstat checks what was opened
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            msg = "not a regular file (a FIFO, device or socket): refused unread"
            raise RuleSetError([RuleError(msg, source=name)])
        # read at most one byte over the limit: a file growing while it is read stays bounded
        data = b"" if st.st_size > 4 * MAX_RULE_TEXT else fh.read(4 * MAX_RULE_TEXT + 1)
    size = max(st.st_size, len(data))
    if size > 4 * MAX_RULE_TEXT:
        msg = f"the rule file is too large ({size} bytes, limit {MAX_RULE_TEXT} characters)"
        raise RuleSetError([RuleError(msg, source=name)])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"the rule file is not valid UTF-8 (byte {exc.start})"
        raise RuleSetError([RuleError(msg, source=name)]) from None


def rule_files(path: str | Path) -> list[Path]:
    """The rule files of a folder (``*.yaml``, ``*.yml``, ``*.json``, recursively, sorted), or the
    file itself.
    """
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        msg = f"no such rules folder or file: {root}"
        raise RuleSetError([RuleError(msg, source=str(root))])
    # every entry with a rule file's name but a folder: a FIFO, a device or a broken link is a file that
    # cannot be read (refused by read_rule_file), not one to skip: 'apply --prune' deleted its rules
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and not p.is_dir())


def load_rules(path: str | Path) -> RuleSet:
    """Load a folder (or one file) of rules into a :class:`RuleSet`; every error of every file is
    collected.
    """
    rules: list[Rule] = []
    errors: list[RuleError] = []
    root = Path(path)
    for file in rule_files(root):
        name = str(file.relative_to(root)) if root.is_dir() else file.name
        try:
            rules.extend(load_rules_text(read_rule_file(file, source=name), source=name))
        except RuleSetError as exc:
            errors.extend(exc.errors)
        except OSError as exc:
            errors.append(RuleError(f"cannot read the file: {exc}", source=name))
    seen: dict[str, Rule] = {}
    for rule in rules:
        if rule.id in seen:
            msg = f"duplicate rule id (also defined in {seen[rule.id].source})"
            errors.append(RuleError(msg, rule_id=rule.id, field="id", source=rule.source))
        seen[rule.id] = rule
    if errors:
        raise RuleSetError(errors)
    return RuleSet(rules)
