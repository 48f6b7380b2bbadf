"""What a rule's text may hold, so that a reviewer reads what runs (docs/rules.md, "Text a reviewer reads").

A rule is read by people (the console, ``riskctl rules show``, a pull request) and run by the engine; both
must see the same thing. Refused, with the field and the character:

* :func:`hidden_character`, in every text of a rule document (keys and values, descriptions included):
  control characters other than tab, line feed and carriage return; the line and paragraph separators; the
  bidirectional controls (embeddings, overrides, isolates, LRM/RLM/ALM: "Trojan Source", text that displays in
  another order than it runs); and the other invisible characters (Unicode format characters, category Cf, and
  the default-ignorable ones: zero-width space, word joiner, BOM, soft hyphen, variation selectors, tag
  characters, Hangul fillers...), which make ``"CN"`` and ``"CN\\u200b"`` or two field names look alike.
  Prose (a ``description``) may hold the joiners and the emoji variation selectors (U+200C, U+200D, U+FE0E,
  U+FE0F), which Persian, Indic scripts and emoji need and which cannot change what a rule does.
* :func:`not_composed`, in every text but a description: text not in Unicode's composed form (NFC). ``é``
  written as ``e`` + U+0301 looks like ``é`` and never equals it.
* :func:`mixed_script_word`, in the names a rule matches (a feature's ``field``, ``applies_to``) and in the
  string literals of its conditions: a word mixing scripts (``"СN"``, a Cyrillic С and a Latin N, looks like
  ``"CN"``). Latin, Han, Hiragana, Katakana, Hangul and Bopomofo may mix (Japanese, Chinese and Korean text).

Nothing is normalised: the text stored is the text submitted, and the events the rule is compared with are
not normalised either, so a silent rewrite would make the rule run something its author did not write. The
same characters are what the alert templates replace (riskctl/alerts/templates.py) and what the CLI escapes.
A condition can still name any of these characters visibly, with the escapes ``\\uXXXX`` and ``\\UXXXXXXXX``
(riskctl/core/expr/lexer.py).
"""

from __future__ import annotations

import re
import unicodedata

#: controls (C0 but tab, LF, CR; DEL; C1), the line/paragraph separators, the bidirectional controls, and the
#: invisible characters: format characters (Cf) and default-ignorable code points (Unicode's
#: DerivedCoreProperties, 14.0), listed so that the check is one regular-expression search
_HIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
#: allowed in prose (a description): zero-width non-joiner and joiner, the text and emoji variation selectors
PROSE_OK = frozenset("\u200c\u200d\ufe0e\ufe0f")
#: scripts that mix in ordinary text: Latin with the CJK ones (UTS #39's "highly restrictive" sets)
_MIXABLE = frozenset(
    {"LATIN", "CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HALFWIDTH", "HANGUL", "BOPOMOFO"}
)
_ASCII_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def visible(text: str) -> str:
    """``text`` with each hidden character written as its escape (``\\u200b``): for a field path that quotes a
    key, so that the error shows where the character is."""
    return _HIDDEN.sub(lambda m: ascii(m.group())[1:-1], text)


def _kind(ch: str) -> str:
    code = ord(ch)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return "a control character"
    if ch in "\u2028\u2029":
        return "a line separator"
    if ch in "\u061c\u200e\u200f" or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        return "a bidirectional control (text that displays in another order than it runs)"
    return "an invisible character"


def hidden_character(text: str, *, prose: bool = False) -> str | None:
    """Why ``text`` is refused (its first hidden character: code point, name, position), or None.
    ``prose``: a description, which may hold :data:`PROSE_OK`."""
    if text.isascii():
        found = _ASCII_CONTROL.search(text)
    else:
        found = next((m for m in _HIDDEN.finditer(text) if not (prose and m.group() in PROSE_OK)), None)
    if found is None:
        return None
    ch = found.group()
    code = ord(ch)
    name = unicodedata.name(ch, "")
    escape = f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    shown = f"U+{code:04X} {name}" if name else f"U+{code:04X}"
    return (
        f"text holds {_kind(ch)}, {shown}, at character {found.start() + 1}: "
        f"a reader does not see what runs; remove it, or in a condition's string write it as {escape}"
    )


def not_composed(text: str) -> str | None:
    """Why ``text`` is refused when it is not in NFC (it looks like its composed form, never equals it)."""
    if text.isascii() or unicodedata.is_normalized("NFC", text):
        return None
    return (
        "text is not in Unicode's composed form (NFC): it looks like its composed form but never equals it "
        "(e.g. 'e' followed by U+0301 COMBINING ACUTE ACCENT is drawn as 'é'); write it composed"
    )


def _script(ch: str) -> str | None:
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else None


def mixed_script_word(text: str) -> str | None:
    """Why ``text`` is refused when one of its words (a run of letters and marks) mixes scripts, or None."""
    if text.isascii():
        return None
    word: list[str] = []
    scripts: set[str] = set()
    for ch in text + " ":
        cat = unicodedata.category(ch)
        if cat[0] in "LM":
            word.append(ch)
            script = _script(ch)
            if script is not None:
                scripts.add(script)
            continue
        if len(scripts) > 1 and not scripts <= _MIXABLE:
            shown = "".join(word)
            names = ", ".join(sorted(s.title() for s in scripts))
            return (
                f"the word {shown!r} mixes scripts ({names}): it may look like another word (a Cyrillic 'С' "
                "is drawn as a Latin 'C'); write each word in one script"
            )
        word.clear()
        scripts.clear()
    return None
