"""The rule editor's form: one input per top-level field of a rule document, validated by the same validator
as ``riskctl rules validate`` (:func:`riskctl.core.rules.parse_rule`), its errors put back at their field.

Plain text fields (``id``, ``description``, ``status``, ``action``) are taken as typed; the others are YAML
(``priority: 10``, ``when: event.amount > 100``, ``features:`` as a mapping, ``sequence:``, ``applies_to:``,
``tags:``, ``alert:``), each read by the rules' own hardened YAML loader (depth, size and alias limits of
:mod:`riskctl.core.rules`). An empty field is left out of the document (its default applies).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from riskctl.core.errors import RuleSetError
from riskctl.core.rules import Rule, _load_yaml, parse_rule  # the validator's own YAML loader

TEXT_FIELDS = ("id", "description", "status", "action")
YAML_FIELDS = ("priority", "applies_to", "alert", "when", "features", "sequence", "tags")
FIELDS = TEXT_FIELDS + YAML_FIELDS
#: characters of one form field (a rule text is bounded by the core too; this bounds the form first)
MAX_FIELD_CHARS = 65_536
_HEAD_RE = re.compile(r"[A-Za-z_]+")
#: where an error with no field (or an unknown one) is shown
GENERAL = "_general"


@dataclass
class Draft:
    """A rule as typed in the form: the fields' texts, the document built from them, the errors by field."""

    fields: dict[str, str]
    document: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    rule: Rule | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and self.rule is not None

    def add(self, where: str, message: str) -> None:
        self.errors.setdefault(where, []).append(message)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors}


def _field_of(path: str | None) -> str:
    """The form field of an error's field path: ``features.fails.window`` -> ``features``."""
    if not path:
        return GENERAL
    head = _HEAD_RE.match(path)
    name = head.group(0) if head else ""
    return name if name in FIELDS else GENERAL


def fields_from_document(document: Mapping[str, Any]) -> dict[str, str]:
    """The form's texts for a stored rule document (YAML fields dumped as YAML)."""
    out: dict[str, str] = {}
    for name in TEXT_FIELDS:
        value = document.get(name)
        out[name] = "" if value is None else str(value)
    for name in YAML_FIELDS:
        if name not in document:
            out[name] = ""
            continue
        value = document[name]
        if name == "when" and isinstance(value, str):
            out[name] = value
        else:
            text = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)
            out[name] = text[: -len("\n...\n")] if text.endswith("\n...\n") else text.rstrip("\n")
    return out


def validate_form(form: Mapping[str, Any], *, rule_id: str | None = None) -> Draft:
    """Build and validate the rule document of a submitted form; ``rule_id`` fixes the id (editing)."""
    texts: dict[str, str] = {}
    for name in FIELDS:
        value = form.get(name, "")
        texts[name] = value if isinstance(value, str) else ""
    if rule_id is not None:
        texts["id"] = rule_id
    draft = Draft(texts)
    for name, text in texts.items():
        if len(text) > MAX_FIELD_CHARS:
            draft.add(name, f"too long: {len(text)} characters, at most {MAX_FIELD_CHARS}")
    if draft.errors:
        return draft
    document: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        if texts[name].strip():
            document[name] = texts[name].strip()
    for name in YAML_FIELDS:
        text = texts[name]
        if not text.strip():
            continue
        if name == "when":
            document[name] = text.strip()  # an expression, not YAML (a ':' in it is no mapping)
            continue
        try:
            docs = _load_yaml(text, f"form field {name}")
        except RuleSetError as exc:
            for err in exc.errors:
                draft.add(name, err.reason)
            continue
        if len(docs) != 1:
            draft.add(name, f"one YAML value expected, got {len(docs)} documents")
            continue
        document[name] = docs[0]
    draft.document = document
    if draft.errors:
        return draft
    try:
        draft.rule = parse_rule(document, source="console")
    except RuleSetError as exc:
        for err in exc.errors:
            message = err.reason + (f" (did you mean {err.suggestion!r}?)" if err.suggestion else "")
            if err.field and _field_of(err.field) != err.field:
                message = f"{err.field}: {message}"
            draft.add(_field_of(err.field), message)
    return draft
