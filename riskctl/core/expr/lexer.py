"""The tokenizer of the expression language, and the duration syntax it shares with rule documents.

Numbers, durations (``10s`` becomes the int ``10000``: every duration is milliseconds), strings, names and
operators become :class:`Token` objects with their offset, so every later error can point at a column.
Operators from other languages (``&&``, ``||``, ``!``, ``=``) and unknown duration units are refused here with
a suggestion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from riskctl.core.errors import ExpressionError, excerpt, suggest
from riskctl.core.expr.limits import MAX_NUMBER
from riskctl.core.rule_text import mixed_script_word

DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
KEYWORDS = ("and", "or", "not", "in", "true", "false", "null")

# Digits are 0-9 only: '\d' matches other scripts' digits, which int() reads, so 'event.amount > 1\u06605'
# (ARABIC-INDIC DIGIT ZERO, drawn as a dot: it reads as 1.5) compiled as 105.
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<dur>[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w))(?![A-Za-z0-9_])
  | (?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\*\*|==|!=|<=|>=|&&|\|\||[-+*/%<>()\[\],.!=])
    """,
    re.VERBOSE,
)
_UNIT_ALIASES = {
    "min": "m",
    "mins": "m",
    "sec": "s",
    "secs": "s",
    "hr": "h",
    "hour": "h",
    "hours": "h",
    "day": "d",
    "days": "d",
    "week": "w",
    "weeks": "w",
}
_ESCAPE_RE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
_OP_HINTS = {
    "&&": "use 'and'",
    "||": "use 'or'",
    "!": "use 'not' (or '!=' to compare)",
    "=": "use '==' to compare",
}


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its kind, its text, its 0-based offset, and its value (numbers, durations, strings)."""

    kind: str  # num | dur | str | name | op | eof
    text: str
    pos: int  # 0-based offset
    value: Any = None


def expr_error(msg: str, pos: int | None, suggestion: str | None = None) -> ExpressionError:
    """The error for a problem at offset ``pos`` (reported as a 1-based column), with a suggestion."""
    return ExpressionError(msg, column=None if pos is None else pos + 1, suggestion=suggestion)


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, the last one ``eof``; raises :class:`ExpressionError` at the column."""
    tokens: list[Token] = []
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            msg = f"unexpected character {text[pos]!r}"
            if text[pos].isdigit():
                msg += f" (U+{ord(text[pos]):04X}, a digit of another script): write numbers with 0-9"
            raise expr_error(msg, pos)
        kind = m.lastgroup or ""
        tok_text = m.group()
        if kind == "num" and m.end() < n and (text[m.end()].isalpha() or text[m.end()] == "_"):
            tail = re.match(r"[A-Za-z_]\w*", text[m.end() :])
            unit = tail.group() if tail else text[m.end()]
            hint = _UNIT_ALIASES.get(unit.lower()) or suggest(unit, DURATION_UNITS)
            msg = f"unknown duration unit {unit!r} (units: ms, s, m, h, d, w)"
            raise expr_error(msg, m.end(), f"{tok_text}{hint}" if hint else None)
        if kind == "ws":
            pass
        elif kind == "num":
            value: Any = float(tok_text) if any(c in tok_text for c in ".eE") else int(tok_text)
            if len(tok_text) > 32 or not abs(value) <= MAX_NUMBER:
                msg = f"number {tok_text[:40]} is too large (limit {MAX_NUMBER:.0e})"
                raise expr_error(msg, pos)
            tokens.append(Token("num", tok_text, pos, value))
        elif kind == "dur":
            unit_m = re.search(r"(ms|s|m|h|d|w)$", tok_text)
            assert unit_m is not None
            amount = tok_text[: unit_m.start()]
            if len(amount) > 12:
                msg = f"duration {tok_text[:40]} is too large"
                raise expr_error(msg, pos)
            ms = _exact_ms(amount, unit_m.group())
            if ms is None:
                msg = f"duration {tok_text} is not a whole number of milliseconds"
                raise expr_error(msg, pos)
            if ms > MAX_NUMBER:
                msg = f"duration {tok_text} is too large"
                raise expr_error(msg, pos)
            tokens.append(Token("num", tok_text, pos, ms))
        elif kind == "str":
            literal = _unescape(tok_text, pos)
            mixed = mixed_script_word(_ESCAPE_RE.sub(" ", tok_text[1:-1]))  # as written: an escape is visible
            if mixed is not None:
                raise expr_error(mixed, pos)
            tokens.append(Token("str", tok_text, pos, literal))
        elif kind == "name":
            tokens.append(Token("name", tok_text, pos))
        else:
            if tok_text in ("&&", "||") or tok_text == "!" or tok_text == "=":
                msg = f"unknown operator {tok_text!r}: {_OP_HINTS[tok_text]}"
                raise expr_error(msg, pos)
            tokens.append(Token("op", tok_text, pos))
        pos = m.end()
    tokens.append(Token("eof", "", n))
    return tokens


def _exact_ms(amount: str, unit: str) -> int | None:
    """``amount`` (digits, maybe a ``.`` and digits) of ``unit`` in milliseconds, or None when that is not a
    whole number. Exact: in floats, 16.1 * 1000 is 16100.000000000002 and 2.01 * 1000 is 2009.9999999999998,
    so '16.1s' and '2.01s' (4,656 durations of up to 3 decimals of s, m or h) were refused."""
    whole, _, frac = amount.partition(".")
    scaled = int(whole + frac) * DURATION_UNITS[unit]
    den = 10 ** len(frac)
    return scaled // den if scaled % den == 0 else None


def _unescape(quoted: str, pos: int) -> str:
    body = quoted[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt in "uU":
                out.append(_code_point(body, i, pos))
                i += 6 if nxt == "u" else 10
                continue
            if nxt not in _ESCAPES:
                msg = f"unknown escape '\\{nxt}' in string"
                raise expr_error(msg, pos + i + 1)
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _code_point(body: str, i: int, pos: int) -> str:
    """The character of the escape ``\\uXXXX`` or ``\\UXXXXXXXX`` at ``body[i]``: how a condition names a
    character a reviewer could not see (riskctl/core/rule_text.py refuses it written as it is)."""
    width = 4 if body[i + 1] == "u" else 8
    digits = body[i + 2 : i + 2 + width]
    if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
        msg = f"the escape '\\{body[i + 1]}' takes {width} hexadecimal digits"
        raise expr_error(msg, pos + i + 1)
    code = int(digits, 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        msg = f"'\\{body[i + 1]}{digits}' is not a Unicode character"
        raise expr_error(msg, pos + i + 1)
    return chr(code)


# ----------------------------------------------------------------------------------------- syntax tree


def duration_ms(value: Any) -> int:
    """Parse a duration from a rule document: an int (ms) or a text like ``"10s"``, ``"5m"``, ``"24h"``."""
    if isinstance(value, bool):
        msg = f"a duration must be like '10s', '5m', '24h' or an integer of milliseconds, got {value!r}"
        raise ExpressionError(msg)
    if isinstance(value, int):
        if value < 0 or value > MAX_NUMBER:
            msg = f"duration out of range: {value}"
            raise ExpressionError(msg)
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)\s*", value) if len(value) <= 64 else None
        if m and len(m.group(1)) <= 20:  # longer: beyond MAX_NUMBER
            ms = _exact_ms(m.group(1), m.group(2))
            if ms is not None and ms <= MAX_NUMBER:
                return ms
    shown = excerpt(repr(value), 80)
    msg = f"a duration must be like '10s', '5m', '24h' or an integer of milliseconds, got {shown}"
    raise ExpressionError(msg)
