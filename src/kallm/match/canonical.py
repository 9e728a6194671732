"""Canonical prompt text: one form for what people type many ways.

Phones type curly apostrophes and quotes, word processors en dashes and minus signs, people
add or drop a final question mark and spaces. None of that changes an answer, but each one
changed the exact digest, moved the embedding (a dropped "?" alone: cosine 0.905) and hid
words from the guards ("aren\u2019t" was no negation). kallm digests, embeds and compares this
form, so such variants are exact HITs and never reach the model.

Everything here is a pure function of the text, linear in its length.
"""

from __future__ import annotations

import re
import unicodedata

# Typography with a plain ASCII equivalent that means the same in a prompt.
_PLAIN: dict[str, str] = {
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u02bc\uff07", "'"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb\uff02", '"'),
    # Hyphens, dashes and the minus sign (U+2212): "3x \u2212 7" is "3x - 7".
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d", "-"),
    "\u2026": "...",
    # Spaces of every width become a space; zero-width ones and the BOM disappear.
    **dict.fromkeys("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006", " "),
    **dict.fromkeys("\u2007\u2008\u2009\u200a\u202f\u205f\u3000", " "),
    **dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff\u00ad", ""),
    # Full-width ASCII, as East Asian input methods type it.
    **{chr(code): chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)},
}
_TYPOGRAPHY = str.maketrans(_PLAIN)

# Text where letter case can carry meaning: code, identifiers, markup, formulas.
_CASE_MATTERS = re.compile(r"[`{}\[\]<>=;_\\$|#@]|\w\(|[a-z][A-Z]")


def canonical(text: str) -> str:
    """The form kallm keys, embeds and compares: composed Unicode, plain quotes, dashes and
    spaces, one space between words, no final sentence punctuation. Case is kept (it can
    change an answer: "US" / "us", `List` / `list`); see `exact_form`."""
    text = unicodedata.normalize("NFC", text).translate(_TYPOGRAPHY)
    text = " ".join(text.split())
    kept = text.rstrip(".?!").rstrip()
    # "What is 5!" asks for a factorial: "!" after a digit is not punctuation. A prompt that
    # is only punctuation stays as it is.
    if not kept or ("!" in text[len(kept) :] and kept[-1].isdigit()):
        return text
    return kept


def exact_form(text: str) -> str:
    """What the exact digest covers, from canonical text: case-folded where case cannot
    matter (prose without code, markup or identifiers), as typed otherwise."""
    return text if _CASE_MATTERS.search(text) else text.casefold()
