"""Synthetic training pairs for kallm's learned pair model.

The pair model reads (cached prompt, new prompt) and says whether the cached answer is right
for the new prompt. This module takes seed prompts and applies edits: an answer-changing
edit gives a label 0 pair (original, edited), an answer-preserving edit a label 1 pair.
Each row is {"a", "b", "label", "kind"}; `kind` names the edit. Output is deterministic
for a given seed (no set is ever iterated, and every random choice goes through one rng).

    .venv/bin/python training/pairgen.py --data ../shared/data --out /tmp/pairs.jsonl --seed 0
    .venv/bin/python training/pairgen.py --data ../shared/data --check   # samples + self-checks

Seeds: both sides of ../shared/data/qqp_dev.jsonl and mrpc_train.jsonl (deduplicated) and
lexicon.APP_PROMPTS. Clock times, time frames and tone are held out: no edit here touches
them (see training/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

if __package__:
    from . import lexicon as lx
else:  # run as a script: training/ is on sys.path
    import lexicon as lx

Span = tuple[int, int, str]  # (start, end, replacement) in the text being edited
Edit = Callable[[str, random.Random], str | None]

CURLY_APOSTROPHE = "\u2019"
CURLY_OPEN_SINGLE = "\u2018"
CURLY_OPEN_DOUBLE = "\u201c"
CURLY_CLOSE_DOUBLE = "\u201d"
EN_DASH = "\u2013"
EM_DASH = "\u2014"
ELLIPSIS = "\u2026"


# ======================================================================================
# Small text helpers
# ======================================================================================
def alternation(words: Iterable[str]) -> str:
    """A regex alternation, longest first, so "New York City" wins over "New York"."""
    unique = list(dict.fromkeys(words))
    unique.sort(key=lambda w: (-len(w), w))
    return "|".join(re.escape(w) for w in unique)


def bounded(alt: str) -> str:
    """Whole-word match for entries that may contain symbols ("C++", "Node.js")."""
    return rf"(?<![\w@/.-])(?:{alt})(?![\w-]|[./]\w)"


def match_case(source: str, replacement: str, key: str) -> str:
    """Carry the user's capitalisation over to the replacement.

    `key` is the lexicon's own spelling: an entry written in capitals ("TV") is not a
    user's shouting, so only a lower-case key copies ALL CAPS.
    """
    if len(source) > 1 and source.isupper() and not key.isupper():
        return replacement.upper()
    if source[:1].isupper() and key[:1].islower():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def at_sentence_start(text: str, pos: int) -> bool:
    before = text[:pos]
    return before.strip(" \"'(" + CURLY_OPEN_DOUBLE + CURLY_OPEN_SINGLE) == "" or bool(
        re.search(r"[.!?:]\s+$", before)
    )


def prev_word(text: str, pos: int) -> str:
    m = re.search(r"([\w'\u2019-]+)\W*$", text[:pos])
    return m.group(1).lower() if m else ""


def next_word(text: str, pos: int) -> str:
    m = re.match(r"\W*?([\w'\u2019-]+)", text[pos:])
    return m.group(1).lower() if m else ""


def protected_spans(text: str) -> list[tuple[int, int]]:
    """Quoted and backticked stretches: text the user wants translated or run verbatim.

    Preserving edits stay out of them, since a synonym inside "Translate 'X'" changes X.
    """
    spans = []
    patterns = (
        r"`[^`]+`",
        r'"[^"]+"',
        r"(?<![\w])'[^']+'(?![\w])",
        CURLY_OPEN_DOUBLE + "[^" + CURLY_CLOSE_DOUBLE + "]+" + CURLY_CLOSE_DOUBLE,
        CURLY_OPEN_SINGLE + "[^" + CURLY_APOSTROPHE + "]+" + CURLY_APOSTROPHE + r"(?![\w])",
    )
    for pattern in patterns:
        spans.extend(m.span() for m in re.finditer(pattern, text))
    return spans


def inside(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s <= start < e or s < end <= e for s, e in spans)


def fix_article(text: str, pos: int) -> str:
    """Make an "a"/"an" just before `pos` agree with the word now starting at `pos`."""
    m = re.search(r"(?<![\w])(a|an|A|An)(\s+)$", text[:pos])
    if not m:
        return text
    word = next_word(text, pos)
    if not word:
        return text
    wants_an = word[0] in "aeiou" and not word.startswith(("one", "uni", "use", "eu", "usu"))
    wants_an = wants_an or word.startswith(("hour", "honest", "honor", "honour", "heir"))
    if word[0].isdigit():
        wants_an = word.startswith(("8", "11", "18")) and not word.startswith("80")
    article = m.group(1)
    new = ("an" if wants_an else "a") if article.islower() else ("An" if wants_an else "A")
    if new == article:
        return text
    return text[: m.start(1)] + new + text[m.end(1) :]


def apply_span(text: str, span: Span) -> str:
    start, end, replacement = span
    out = text[:start] + replacement + text[end:]
    out = fix_article(out, start)
    return re.sub(r" {2,}", " ", out).strip()


def pick(text: str, spans: Sequence[Span], rng: random.Random) -> str | None:
    """Apply one of the candidate spans, chosen at random; None when there are none."""
    real = [s for s in spans if text[s[0] : s[1]] != s[2]]
    if not real:
        return None
    return apply_span(text, real[rng.randrange(len(real))])


def lower_first(text: str) -> str:
    """Lower-case the first letter unless the first word is "I", an acronym or a name."""
    first = text.split(" ", 1)[0]
    if (
        not first
        or first in ("I", "I'm", "I've", "I'd", "I'll")
        or first.startswith("I" + "\u2019")
    ):
        return text
    if len(first) > 1 and first[1].isupper():
        return text
    if ENTITY_RE.match(text) or LANGUAGE_START_RE.match(text):
        return text
    return text[:1].lower() + text[1:]


def upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def ends_question(text: str) -> bool:
    return text.rstrip().endswith("?")


def split_final_punct(text: str) -> tuple[str, str]:
    m = re.search(r"[\s.?!]*$", text)
    assert m is not None
    return text[: m.start()], text[m.start() :].strip()


def curly(text: str) -> str:
    return text.replace("'", CURLY_APOSTROPHE)


def apostrophe_style(text: str, rng: random.Random) -> str:
    """About a third of contractions get the typographic apostrophe, as phones type them."""
    return curly(text) if rng.random() < 1 / 3 else text


QUESTION_START_RE = re.compile(
    r"^(what|what's|who|whom|whose|which|where|when|why|how|is|are|was|were|do|does|did|"
    r"can|could|should|would|will|has|have|am|may|shall)\b",
    re.IGNORECASE,
)
WH_START_RE = re.compile(r"^(what|who|which|where|when|why|how)\b", re.IGNORECASE)
IMPERATIVE_RE = re.compile(r"^(?:please )?(" + "|".join(lx.IMPERATIVE_VERBS) + r")\b", re.I)


# ======================================================================================
# Entities and the label-1 signature
# ======================================================================================
def _entity_table() -> tuple[dict[str, str], re.Pattern[str]]:
    """name -> type; lower-case names also match capitalised at a sentence start."""
    table: dict[str, str] = {}
    for kind, names in lx.ENTITIES.items():
        for name in names:
            table.setdefault(name, kind)
    variants = list(table)
    variants += [n[0].upper() + n[1:] for n in table if n[0].islower()]
    pattern = re.compile(rf"(?<![\w+#.-])(?:{alternation(variants)})(?![\w+#]|\.\w)")
    return table, pattern


ENTITY_TYPE, ENTITY_RE = _entity_table()
LANGUAGE_START_RE = re.compile(rf"^(?:{alternation(lx.LANGUAGES)})\b")

UNIT_SURFACES: list[str] = []
for _group in lx.UNIT_GROUPS.values():
    for _sing, _plural, _abbr in _group:
        UNIT_SURFACES += [_sing, _plural] + ([_abbr] if _abbr else [])
UNIT_SURFACES += list(lx.UNIT_ALIASES)

FORMAT_WORDS = [
    "json",
    "yaml",
    "xml",
    "csv",
    "toml",
    "html",
    "markdown",
    "table",
    "tables",
    "bullet",
    "bullets",
    "bulleted",
    "numbered",
    "list",
    "lists",
    "haiku",
    "poem",
    "poems",
    "limerick",
    "sonnet",
    "essay",
    "paragraph",
    "paragraphs",
    "sentence",
    "sentences",
    "words",
    "brief",
    "briefly",
    "detail",
    "detailed",
    "concise",
    "short",
    "long",
    "lengthy",
    "outline",
    "tweet",
    "latex",
    "mermaid",
]
OPERATOR_WORDS_SIG = ["plus", "minus", "times", "divided", "multiplied", "greater", "less"]
NEGATION_WORDS = ["not", "no", "never", "without", "none", "nobody", "nothing", "nor", "neither"]
NUMBER_WORDS_SIG = [*lx.NUMBER_WORDS, "one", "zero", "dozen", "half", "twice", "once", "thrice"]


def _signature_pattern() -> re.Pattern[str]:
    """Every term a label-1 edit must leave alone, matched case-insensitively."""
    terms: list[str] = []
    for name in ENTITY_TYPE:
        terms.append(re.sub(r"^the ", "", name.lower()))
    terms += [w.lower() for w in lx.LANGUAGES]
    terms += [m.lower() for m in lx.MONTHS if m not in ("May", "March")]
    terms += [d.lower() for d in lx.WEEKDAYS]
    terms += [h.lower() for h in lx.HOLIDAYS] + lx.SEASONS
    terms += [c.lower() for c in lx.CURRENCY_CODES]
    terms += [s for pair in lx.CURRENCY_NAMES for s in pair]
    terms += [u.lower() for u in UNIT_SURFACES] + [t.lower() for t in lx.TEMPERATURE_SCALES]
    terms += [p for pair in lx.DURATION_UNITS for p in pair]
    terms += [*lx.FREQUENCY_ADVERBS, "annual"]
    terms += FORMAT_WORDS + OPERATOR_WORDS_SIG + NEGATION_WORDS + NUMBER_WORDS_SIG
    terms += lx.ORDINALS
    return re.compile(bounded(alternation(terms)), re.IGNORECASE)


SIGNATURE_RE = _signature_pattern()
NEGATIVE_CONTRACTION_RE = re.compile(
    r"\b(ca|wo|sha|do|does|did|is|are|was|were|has|have|had|should|would|could|must|need)"
    r"(?:n't|nt)\b"
)


def normalise(text: str) -> str:
    """Case, quotes, dashes, spacing and contractions folded, for comparing meaning."""
    t = text.replace(CURLY_APOSTROPHE, "'").replace(CURLY_OPEN_SINGLE, "'")
    t = t.replace(CURLY_OPEN_DOUBLE, '"').replace(CURLY_CLOSE_DOUBLE, '"')
    t = t.replace(EN_DASH, "-").replace(EM_DASH, "-").replace(ELLIPSIS, "...")
    t = t.lower()
    t = re.sub(r"\bcannot\b", "can not", t)
    t = NEGATIVE_CONTRACTION_RE.sub(
        lambda m: {"ca": "can", "wo": "will", "sha": "shall"}.get(m.group(1), m.group(1)) + " not",
        t,
    )
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)
    return re.sub(r"\s+", " ", t).strip()


def signature(text: str) -> Counter[str]:
    """What a label-1 edit must not change: numbers, names, negation, format, language,
    units, dates, currency and operator symbols."""
    t = normalise(text)
    sig: Counter[str] = Counter()
    sig.update("#" + n for n in re.findall(r"\d+(?:\.\d+)?", t))
    sig.update(m.group(0) for m in SIGNATURE_RE.finditer(t))
    sig.update(c for c in t if c in "<>=+*/^%&|$\u20ac\u00a3\u00a5\u20b9\u00b0")
    sig.update("!=" for _ in re.finditer(r"!=", t))
    sig.update("-" for _ in re.finditer(r"(?<=\s)-(?=\s)|(?<=\d)-(?=\d)|(?<=[\s(=])-(?=\d)", t))
    return sig


def loose(text: str) -> str:
    """Normalised text without punctuation: two prompts equal here differ only in noise."""
    # Operator and currency symbols carry meaning ("17 * 23" vs "17 / 23"), so they stay.
    return re.sub(r"[^\w\s<>=+*/%^&|$\u20ac\u00a3\u00a5\u20b9\u00b0-]", "", normalise(text)).strip()


# ======================================================================================
# Word-list swaps (antonym, synonym, comparative)
# ======================================================================================
class Swapper:
    """Swap whole words or phrases using a table of alternatives.

    Matching ignores case; a match capitalised in the middle of a sentence is skipped when
    the entry is lower-case, since it is then most likely part of a name ("Bay Area").
    BLOCK_NEXT / BLOCK_PREV skip the senses in which a swap would be nonsense.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]], *, both_ways: bool = True) -> None:
        self.table: dict[str, list[str]] = {}
        self.spelling: dict[str, str] = {}
        for left, right in pairs:
            directions = [(left, right), (right, left)] if both_ways else [(left, right)]
            for src, dst in directions:
                targets = self.table.setdefault(src.lower(), [])
                if dst not in targets:
                    targets.append(dst)
                self.spelling.setdefault(src.lower(), src)
        self.regex = re.compile(bounded(alternation(self.spelling.values())), re.IGNORECASE)

    def extend(self, other: Swapper) -> None:
        for key, targets in other.table.items():
            mine = self.table.setdefault(key, [])
            mine.extend(t for t in targets if t not in mine)
            self.spelling.setdefault(key, other.spelling[key])
        self.regex = re.compile(bounded(alternation(self.spelling.values())), re.IGNORECASE)

    def spans(self, text: str, rng: random.Random, *, protect: bool) -> list[Span]:
        guarded = protected_spans(text) if protect else []
        out: list[Span] = []
        for m in self.regex.finditer(text):
            src = m.group(0)
            key = src.lower()
            if key not in self.spelling:
                continue  # case folding outside ASCII ("\u0130".lower() is two characters)
            spelling = self.spelling[key]
            if (
                src[0].isupper()
                and spelling[0].islower()
                and not at_sentence_start(text, m.start())
            ):
                continue
            if next_word(text, m.end()) in lx.BLOCK_NEXT.get(key, ()):
                continue
            if prev_word(text, m.start()) in lx.BLOCK_PREV.get(key, ()):
                continue
            if guarded and inside(guarded, m.start(), m.end()):
                continue
            if ENTITY_RE.fullmatch(src):
                continue
            target = rng.choice(self.table[key])
            out.append((m.start(), m.end(), match_case(src, target, spelling)))
        return out


ANTONYM_SWAP = Swapper(lx.ANTONYMS)
COMPARATIVE_SWAP = Swapper(lx.COMPARATIVE_PAIRS)
SYNONYM_SWAP = Swapper(lx.SYNONYMS)
SYNONYM_SWAP.extend(Swapper(lx.SYNONYMS_ONE_WAY, both_ways=False))


# ======================================================================================
# Answer-changing edits (label 0)
# ======================================================================================
NUM_RE = re.compile(r"(?<![\w.,:/#^-])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w(]|[.,:/-]\d)")
NUMWORD_RE = re.compile(bounded(alternation(lx.NUMBER_WORDS)), re.IGNORECASE)
CLOCK_AFTER_RE = re.compile(r"^\s?(?:[ap]\.?m\b|[ap]\.m\.|o['\u2019]clock)", re.IGNORECASE)
SMALL_NUMBER_WORDS = lx.NUMBER_WORDS[:16]
MAGNITUDE_WORDS = lx.NUMBER_WORDS[16:]


def _new_integer(digits: str, rng: random.Random) -> str | None:
    has_comma = "," in digits
    n = int(digits.replace(",", ""))
    if len(digits) == 4 and 1800 <= n <= 2099:  # a year: a nearby year
        m = n + rng.choice([-10, -5, -3, -2, -1, 1, 2, 3, 5])
        return str(min(m, 2035)) if min(m, 2035) != n else None
    if n in (0, 1):  # "1 cup" -> "4 cup" would need the noun pluralised
        return None
    if n <= 12:
        m = rng.choice([k for k in range(2, 13) if k != n] + [15, 20])
    else:
        step = 100 if n % 100 == 0 else 10 if n % 10 == 0 else 5 if n % 5 == 0 else 1
        m = round(n * rng.choice([0.25, 0.5, 0.75, 1.5, 2, 3]) / step) * step
        m = max(m, step, 2)
        if m == n:
            m = n + step
    if digits.startswith("0") and len(digits) > 1:
        return str(m).zfill(len(digits))
    return f"{m:,}" if has_comma else str(m)


def _new_decimal(digits: str, frac: str, rng: random.Random) -> str | None:
    places = len(frac) - 1
    value = float(digits.replace(",", "") + frac)
    options = [value * 0.5, value * 1.5, value * 2, value + 1, value - 1]
    options = [round(v, places) for v in options if v > 0 and round(v, places) != value]
    if not options:
        return None
    return f"{rng.choice(options):.{places}f}"


def edit_number(text: str, rng: random.Random) -> str | None:
    """Change one number (digits or words), keeping its format; never a clock time or a
    number inside a time frame ("last 3 days"), which are held out."""
    spans: list[Span] = []
    for m in NUM_RE.finditer(text):
        start, end = m.span()
        if CLOCK_AFTER_RE.match(text[end:]):
            continue
        if prev_word(text, start) in lx.NUMBER_BLOCK_PREV and not text[end:].startswith("%"):
            continue
        new = _new_decimal(m.group(1), m.group(2), rng) if m.group(2) else None
        if not m.group(2):
            new = _new_integer(m.group(1), rng)
        if new:
            spans.append((start, end, new))
    for m in NUMWORD_RE.finditer(text):
        word = m.group(0)
        if prev_word(text, m.start()) in lx.NUMBER_BLOCK_PREV or CLOCK_AFTER_RE.match(
            text[m.end() :]
        ):
            continue
        pool = MAGNITUDE_WORDS if word.lower() in MAGNITUDE_WORDS else SMALL_NUMBER_WORDS
        new = rng.choice([w for w in pool if w != word.lower()])
        spans.append((m.start(), m.end(), match_case(word, new, word.lower())))
    return pick(text, spans, rng)


def _unit_table() -> dict[str, tuple[str, int, str]]:
    """surface (lower-case) -> (group, index, form) with form in sing/plural/abbr."""
    table: dict[str, tuple[str, int, str]] = {}
    for group, units in lx.UNIT_GROUPS.items():
        for i, (sing, plural, abbr) in enumerate(units):
            table.setdefault(plural.lower(), (group, i, "plural"))
            table.setdefault(sing.lower(), (group, i, "sing"))
            if abbr:
                table.setdefault(abbr.lower(), (group, i, "abbr"))
    for alias, canonical in lx.UNIT_ALIASES.items():
        table.setdefault(alias.lower(), table[canonical.lower()])
    return table


UNIT_TABLE = _unit_table()
UNIT_ABBREVIATIONS = {s for s, (_, _, form) in UNIT_TABLE.items() if form == "abbr"}
_UNIT_ALT = alternation(sorted(UNIT_TABLE, key=len, reverse=True))
_NUMBER_ALT = r"\d+(?:[.,]\d+)*|" + alternation(NUMBER_WORDS_SIG)
UNIT_AFTER_NUMBER_RE = re.compile(
    rf"(?<![\w.])({_NUMBER_ALT})(\s?|-)({_UNIT_ALT})(?![\w/])", re.IGNORECASE
)
UNIT_NAMED_RE = re.compile(
    rf"\b(how many|in|into|to|per|of)\s({_UNIT_ALT})(?![\w/])", re.IGNORECASE
)
TEMPERATURE_RE = re.compile(
    rf"\b(to|in|into|from|degrees)\s({alternation(lx.TEMPERATURE_SCALES)})\b"
)
MONEY_CUES_RE = re.compile(
    r"salary|\bpay\b|cost|price|\btax|earn|rent\b|spend|budget|income|\u00a3|\bUK\b|money",
    re.IGNORECASE,
)


def _neighbour_unit(group: str, index: int, rng: random.Random, text: str) -> int | None:
    """A unit one step away (85%) or two steps away in the group's size order, and not one
    the text already names ("convert miles to km" must not become "miles to miles")."""
    units = lx.UNIT_GROUPS[group]
    low = text.lower()

    def free(i: int) -> bool:
        if not 0 <= i < len(units):
            return False
        names = [n.lower() for n in units[i] if n]
        return not any(re.search(rf"(?<![a-z]){re.escape(n)}(?![a-z])", low) for n in names)

    near = [i for i in (index - 1, index + 1) if free(i)]
    far = [i for i in (index - 2, index + 2) if free(i)]
    if not near and not far:
        return None
    return rng.choice(near if near and (not far or rng.random() < 0.85) else far)


def _unit_surface(group: str, index: int, form: str, count_is_one: bool) -> str:
    sing, plural, abbr = lx.UNIT_GROUPS[group][index]
    if form == "abbr" and abbr:
        return abbr
    if form == "sing" or (form == "abbr" and count_is_one):
        return sing
    return plural


def _is_weight_pound(text: str, surface: str) -> bool:
    """A bare "pound(s)" counts as weight only with a weight cue and no money cue."""
    if surface.lower() not in ("pound", "pounds"):
        return True
    low = text.lower()
    return any(re.search(rf"\b{c}", low) for c in lx.WEIGHT_CUES) and not MONEY_CUES_RE.search(text)


def edit_unit(text: str, rng: random.Random) -> str | None:
    """Swap a unit for another of the same dimension: 5 km -> 5 miles, 39 C -> 39 F."""
    spans: list[Span] = []
    for m in UNIT_AFTER_NUMBER_RE.finditer(text):
        surface = m.group(3)
        if not _is_weight_pound(text, surface):
            continue
        if surface.lower() not in UNIT_TABLE:
            continue  # non-ASCII case folding, see Swapper.spans
        group, index, form = UNIT_TABLE[surface.lower()]
        target_index = _neighbour_unit(group, index, rng, text)
        if target_index is None:
            continue
        one = m.group(1).lower() in ("1", "one", "a", "an")
        if m.group(2) == "-":  # adjectival "2-liter bottle": singular or abbreviation
            form = "abbr" if form == "abbr" else "sing"
        new = _unit_surface(group, target_index, form, one)
        sep = m.group(2)
        if sep == "" and new.lower() not in UNIT_ABBREVIATIONS:
            sep = " "  # "5kg" -> "5 pounds", but "5kg" -> "5lbs"
        spans.append((m.start(2), m.end(3), sep + new))
    for m in UNIT_NAMED_RE.finditer(text):
        surface = m.group(2)
        if not _is_weight_pound(text, surface) or (surface.isupper() and len(surface) < 3):
            continue
        if surface.lower() not in UNIT_TABLE:
            continue
        group, index, form = UNIT_TABLE[surface.lower()]
        if form == "abbr" or group == "temperature":
            continue
        if (form == "sing") != (m.group(1).lower() == "per"):
            continue  # "to second place" is an ordinal; units here are "per hour", "in hours"
        target_index = _neighbour_unit(group, index, rng, text)
        if target_index is None:
            continue
        spans.append((m.start(2), m.end(2), _unit_surface(group, target_index, form, False)))
    for m in TEMPERATURE_RE.finditer(text):
        other = rng.choice([s for s in lx.TEMPERATURE_SCALES if s != m.group(2)])
        spans.append((m.start(2), m.end(2), other))
    return pick(text, spans, rng)


CURRENCY_SYMBOL_RE = re.compile(rf"(?<![A-Za-z])({alternation(lx.CURRENCY_SYMBOLS)})(?=\s?\d)")
CURRENCY_CODE_RE = re.compile(bounded(alternation(lx.CURRENCY_CODES)))
CURRENCY_PHRASE_RE = re.compile(bounded(alternation(lx.CURRENCY_PHRASES)))
_CURRENCY_WORDS = {
    s: (i, k) for i, pair in enumerate(lx.CURRENCY_NAMES) for k, s in enumerate(pair)
}
CURRENCY_NAME_RE = re.compile(rf"\b({alternation(_CURRENCY_WORDS)})\b")
# A currency word counts only after a number or one of these ("the dollar", "in euros").
CURRENCY_PREV = {"a", "the", "in", "into", "to", "per", "of", "one", "many", "much", "us"}
CURRENCY_PREV |= {"million", "billion", "thousand", "hundred", "k"}
MONEY_POUNDS_RE = re.compile(r"(?<=\d )pounds\b")


def edit_currency(text: str, rng: random.Random) -> str | None:
    """Another currency: $ -> euro sign, USD -> EUR, dollars -> rupees, "Japanese yen"."""
    spans: list[Span] = []
    for m in CURRENCY_SYMBOL_RE.finditer(text):
        other = rng.choice([s for s in lx.CURRENCY_SYMBOLS if s != m.group(1)])
        spans.append((m.start(1), m.end(1), other))
    for m in CURRENCY_CODE_RE.finditer(text):
        other = rng.choice([c for c in lx.CURRENCY_CODES if c != m.group(0)])
        spans.append((m.start(), m.end(), other))
    taken: list[tuple[int, int]] = []
    for m in CURRENCY_PHRASE_RE.finditer(text):
        other = rng.choice([p for p in lx.CURRENCY_PHRASES if p not in text])
        spans.append((m.start(), m.end(), other))
        taken.append(m.span())
    for m in CURRENCY_NAME_RE.finditer(text):
        if inside(taken, m.start(1), m.end(1)):
            continue
        before = text[: m.start(1)].rstrip()
        if not (before[-1:].isdigit() or prev_word(text, m.start(1)) in CURRENCY_PREV):
            continue
        index, plural = _CURRENCY_WORDS[m.group(1)]
        other = rng.choice(
            [i for i, pair in enumerate(lx.CURRENCY_NAMES) if i != index and pair[0] not in text]
        )
        spans.append((m.start(1), m.end(1), lx.CURRENCY_NAMES[other][plural]))
    if MONEY_CUES_RE.search(text) and not _is_weight_pound(text, "pounds"):
        for m in MONEY_POUNDS_RE.finditer(text):
            spans.append((m.start(), m.end(), rng.choice(lx.CURRENCY_NAMES[:5])[1]))
    return pick(text, spans, rng)


MONTH_RE = re.compile(bounded(alternation(lx.MONTHS)))
MONTH_ABBR = ["Jan", "Feb", "Aug", "Sept", "Oct", "Nov", "Dec"]
MONTH_ABBR_RE = re.compile(rf"\b({alternation(MONTH_ABBR)})\.?(?= \d)")
WEEKDAY_RE = re.compile(rf"\b({alternation(lx.WEEKDAYS)})(s?)\b")
HOLIDAY_RE = re.compile(bounded(alternation(lx.HOLIDAYS)))
SEASON_RE = re.compile(rf"\b({alternation(lx.SEASONS)})\b", re.IGNORECASE)
YEAR_RE = re.compile(r"(?<![\w.,$#/-])(1[89]\d\d|20\d\d)(?![\w.,/-]\d|[\w])")
DECADE_RE = re.compile(r"\b(1[89]\d0|20[0-2]0)s\b|(?<![\w'])'?([2-9]0)s\b")
DAY_OF_MONTH_RE = re.compile(
    rf"\b({alternation(lx.MONTHS)}) (\d{{1,2}})(st|nd|rd|th)?\b"
    rf"|\b(\d{{1,2}})(st|nd|rd|th)? (of )?({alternation(lx.MONTHS)})\b"
)
MAY_CONTEXT = ("in", "of", "on", "early", "late", "mid", "since", "until", "by", "from", "through")
YEAR_CONTEXT = (
    "in",
    "since",
    "from",
    "of",
    "by",
    "until",
    "before",
    "after",
    "during",
    "to",
    "year",
    "around",
    "circa",
    "between",
    "and",
    "for",
    "till",
)


def ordinal_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def edit_date(text: str, rng: random.Random) -> str | None:
    """Another day, month, year, weekday, holiday or season; never a time frame
    ("next Monday" is left alone: last/this/next are held out)."""
    spans: list[Span] = []

    def frame(pos: int) -> bool:
        return prev_word(text, pos) in lx.DATE_BLOCK_PREV

    for m in MONTH_RE.finditer(text):
        if frame(m.start()):
            continue
        if m.group(0) in ("May", "March") and not (
            prev_word(text, m.start()) in MAY_CONTEXT or re.match(r" \d", text[m.end() :])
        ):
            continue
        other = rng.choice([x for x in lx.MONTHS if x != m.group(0)])
        spans.append((m.start(), m.end(), other))
    for m in MONTH_ABBR_RE.finditer(text):
        spans.append((m.start(1), m.end(1), rng.choice([x for x in MONTH_ABBR if x != m.group(1)])))
    for m in WEEKDAY_RE.finditer(text):
        if frame(m.start()):
            continue
        other = rng.choice([x for x in lx.WEEKDAYS if x != m.group(1)])
        spans.append((m.start(1), m.end(1), other))
    for m in HOLIDAY_RE.finditer(text):
        if frame(m.start()):
            continue
        spans.append((m.start(), m.end(), rng.choice([h for h in lx.HOLIDAYS if h != m.group(0)])))
    for m in SEASON_RE.finditer(text):
        word = m.group(1)
        if frame(m.start()) or (word[0].isupper() and not at_sentence_start(text, m.start())):
            continue
        if next_word(text, m.end()) in ("boot", "framework", "roll", "rolls", "water"):
            continue
        other = rng.choice([s for s in lx.SEASONS if s != word.lower()])
        spans.append((m.start(), m.end(), match_case(word, other, word.lower())))
    for m in YEAR_RE.finditer(text):
        before = prev_word(text, m.start())
        after = text[m.end() :]
        if frame(m.start()):
            continue
        if (
            before in YEAR_CONTEXT
            or re.match(r"\s*[?)]|\s*$|,", after)
            or text[: m.start()].endswith("(")
        ):
            new = _new_integer(m.group(1), rng)
            if new:
                spans.append((m.start(), m.end(), new))
    for m in DECADE_RE.finditer(text):
        if m.group(1):
            year = int(m.group(1))
            spans.append((m.start(1), m.end(1), str(year + rng.choice([-20, -10, 10]))[:4]))
        else:
            decade = int(m.group(2))
            other = rng.choice([d for d in (50, 60, 70, 80, 90) if d != decade])
            spans.append((m.start(2), m.end(2), str(other)))
    for m in DAY_OF_MONTH_RE.finditer(text):
        day_group = 2 if m.group(2) else 4
        suffix_group = 3 if m.group(2) else 5
        day = int(m.group(day_group))
        if not 1 <= day <= 31:
            continue
        new_day = rng.choice([d for d in range(1, 29) if d != day])
        new = str(new_day) + (ordinal_suffix(new_day) if m.group(suffix_group) else "")
        end = m.end(suffix_group) if m.group(suffix_group) else m.end(day_group)
        spans.append((m.start(day_group), end, new))
    for m in re.finditer(r"\b(\d{1,2})/(\d{1,2})/(\d{2,4})\b", text):
        day = int(m.group(1))
        new_day = rng.choice([d for d in range(1, 29) if d != day])
        spans.append((m.start(1), m.end(1), str(new_day).zfill(len(m.group(1)))))
    return pick(text, spans, rng)


_PERIODS = "|".join(lx.FREQUENCY_PERIODS)
FREQ_ADVERB_RE = re.compile(bounded(alternation([*lx.FREQUENCY_ADVERBS, "annual"])), re.I)
FREQ_COUNT_RE = re.compile(
    rf"\b(once|twice|thrice|three times|four times|five times|several times|a few times|\d+ times)"
    rf" (a|per|every|each) ({_PERIODS}|night)\b",
    re.IGNORECASE,
)
FREQ_EVERY_RE = re.compile(rf"\bevery (other )?({_PERIODS}|weekend)\b", re.IGNORECASE)
FREQ_PER_RE = re.compile(rf"\b(per) ({_PERIODS}|annum|night)\b", re.IGNORECASE)
FREQ_A_RE = re.compile(rf"(?<=\d)(?:[^.?!]{{0,40}}?) (a) ({_PERIODS}|night)\b", re.IGNORECASE)
ADVERB_FORMS = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly"}
ADVERB_FORMS.update({"quarter": "quarterly", "year": "yearly", "fortnight": "fortnightly"})


def edit_frequency(text: str, rng: random.Random) -> str | None:
    """How often: daily -> weekly, twice a day -> twice a week, per month -> per year."""
    spans: list[Span] = []
    for m in FREQ_ADVERB_RE.finditer(text):
        word = m.group(0)
        if word[0].isupper() and not at_sentence_start(text, m.start()):
            continue  # "Daily Mail"
        period = lx.FREQUENCY_ADVERBS.get(word.lower(), "year")
        choices = [a for p, a in ADVERB_FORMS.items() if p != period and p != "fortnight"]
        spans.append((m.start(), m.end(), match_case(word, rng.choice(choices), word.lower())))
    for m in FREQ_COUNT_RE.finditer(text):
        if rng.random() < 0.5:
            period = m.group(3).lower()
            other = rng.choice([p for p in lx.FREQUENCY_PERIODS if p != period])
            spans.append((m.start(3), m.end(3), other))
        else:
            count = m.group(1).lower()
            other = rng.choice([c for c in lx.FREQUENCY_COUNTS if c != count])
            spans.append((m.start(1), m.end(1), match_case(m.group(1), other, count)))
    for regex in (FREQ_EVERY_RE, FREQ_PER_RE, FREQ_A_RE):
        for m in regex.finditer(text):
            period = m.group(2).lower()
            other = rng.choice([p for p in lx.FREQUENCY_PERIODS if p != period])
            if regex is FREQ_EVERY_RE and m.group(1) and rng.random() < 0.5:
                spans.append((m.start(1), m.end(2), period))  # every other day -> every day
            else:
                spans.append((m.start(2), m.end(2), other))
    return pick(text, spans, rng)


_DUR_UNITS = "|".join(u for pair in lx.DURATION_UNITS for u in pair)
AGE_RE = re.compile(
    rf"\b(\d+|{alternation(NUMBER_WORDS_SIG)})([- ])(day|week|month|year)(s?)([- ])old\b",
    re.IGNORECASE,
)
DURATION_RE = re.compile(
    rf"\b(\d+(?:\.\d+)?|{alternation(NUMBER_WORDS_SIG)}|a few|several)([ -])({_DUR_UNITS})\b",
    re.IGNORECASE,
)
ARTICLE_DURATION_RE = re.compile(r"\b(an|a) (hour|day|week|month|year)\b", re.IGNORECASE)
DURATION_ARTICLE_TARGETS = ["an hour", "a day", "a week", "a month", "a year", "a minute"]
WORD_VALUES = {w: i + 2 for i, w in enumerate(lx.NUMBER_WORDS[:11])} | {"one": 1}


def edit_age_duration(text: str, rng: random.Random) -> str | None:
    """Another age or duration unit: 3-year-old -> 3-month-old, 2 weeks -> 2 days,
    an hour -> a day. Durations inside a time frame ("past 2 weeks", "2 weeks ago") are
    held out and skipped."""
    spans: list[Span] = []
    ages: list[tuple[int, int]] = []
    for m in AGE_RE.finditer(text):
        ages.append(m.span())
        count = m.group(1).lower()
        n = int(count) if count.isdigit() else WORD_VALUES.get(count, 5)
        unit = m.group(3).lower()
        options = [u for u in lx.AGE_MAX if u != unit and n <= lx.AGE_MAX[u]]
        if not options:
            continue
        new = rng.choice(options)
        plural = m.group(4) if (n != 1 or m.group(4)) else ""
        spans.append((m.start(3), m.end(4), new + plural))
    for m in DURATION_RE.finditer(text):
        if inside(ages, m.start(), m.end()):
            continue
        if prev_word(text, m.start()) in [*lx.DURATION_BLOCK_PREV, "every", "per"]:
            continue
        if next_word(text, m.end()) in [*lx.DURATION_BLOCK_NEXT, "old"]:
            continue
        unit = m.group(3).lower()
        plural = unit.endswith("s")
        if m.group(2) == "-":  # "3-day itinerary"
            plural = False
        singulars = [s for s, _ in lx.DURATION_UNITS]
        base = unit[:-1] if unit.endswith("s") else unit
        new = rng.choice([s for s in singulars if s != base])
        new = new + "s" if plural else new
        spans.append((m.start(3), m.end(3), match_case(m.group(3), new, unit)))
    for m in ARTICLE_DURATION_RE.finditer(text):
        before = prev_word(text, m.start())
        if before not in lx.DURATION_CUES or before in ("once", "twice", "times", "per", "every"):
            continue
        if next_word(text, m.end()) in [*lx.DURATION_BLOCK_NEXT, "old"]:
            continue
        current = m.group(0).lower()
        new = rng.choice([t for t in DURATION_ARTICLE_TARGETS if t != current])
        spans.append((m.start(), m.end(), match_case(m.group(0), new, current)))
    return pick(text, spans, rng)


def entity_spans(text: str, rng: random.Random) -> list[Span]:
    spans: list[Span] = []
    for m in ENTITY_RE.finditer(text):
        name = m.group(0)
        key = name if name in ENTITY_TYPE else name[0].lower() + name[1:]
        if key not in ENTITY_TYPE:
            continue
        if key != name and not at_sentence_start(text, m.start()):
            continue  # a capitalised common word inside a name: "Black Friday"
        if next_word(text, m.end()) in lx.BLOCK_NEXT.get(key, ()) or prev_word(
            text, m.start()
        ) in lx.BLOCK_PREV.get(key, ()):
            continue
        if key in ("US", "USA") and re.match(r"\s?\$|\sdollar", text[m.end() :]):
            continue
        pool = [n for n in lx.ENTITIES[ENTITY_TYPE[key]] if n != key and n not in text]
        if not pool:
            continue
        new = rng.choice(pool)
        if key != name:
            new = new[0].upper() + new[1:]
        spans.append((m.start(), m.end(), new))
    return spans


def edit_entity(text: str, rng: random.Random) -> str | None:
    """Swap a named entity for another of the same type (city, person, library, dish...)."""
    return pick(text, entity_spans(text, rng), rng)


def edit_antonym(text: str, rng: random.Random) -> str | None:
    """Opposite action or property: enable/disable, upload/download, buy/sell."""
    return pick(text, ANTONYM_SWAP.spans(text, rng, protect=False), rng)


_AUX = "|".join(lx.NEGATABLE_AUX)
_NOT_NEGATED = r"(?![\w'\u2019])(?! not\b)"  # "can" in "can't" is not a free auxiliary
WHY_AUX_RE = re.compile(rf"\b([Ww]hy) ({_AUX}){_NOT_NEGATED}")
WHAT_AUX_RE = re.compile(
    r"\b([Ww]hat|[Ww]hich \w+) (should|can|do|does|did|could|would) (I|you|we|they|people|he|she)\b"
)
_NEGATION_TOKEN = (
    r"(?:not|no|never|none|nothing|nobody|without|\w+n['\u2019]t|cannot|dont|doesnt|didnt|cant|"
    r"isnt|wont)"
)
NEGATION_AFTER_RE = re.compile(rf"(?:\W*[\w'\u2019-]+){{0,6}}?\W*\b{_NEGATION_TOKEN}\b", re.I)
NEGATION_BEFORE_RE = re.compile(rf"\b{_NEGATION_TOKEN}(?:\W+[\w'\u2019-]+){{0,2}}\W*$", re.I)
_SUBJECT = (
    r"(?:I|you|we|they|he|she|it|this|that|there|[Mm]y \w+|[Tt]he \w+|[Oo]ur \w+|"
    r"(?!(?:What|Who|Which|Where|When|Why|How|Is|Are|Can|Do|Does|Did|Should|Would|Will|If)\b)"
    r"[A-Z][a-z]+)"
)
SUBJECT_AUX_RE = re.compile(
    rf"(?<![\w'])({_SUBJECT}) (is|are|was|were|can|could|should|will|would|must|am)"
    r" (?!not\b|never\b|I\b|you\b|we\b|they\b|he\b|she\b|it\b)([a-z]\w*)"
)
_BASE_VERBS = (
    "have|need|want|like|know|use|get|eat|drink|feel|see|understand|love|hate|take|own|work|"
    "live|believe|think|remember|care|mind|trust|agree|support|recommend|allow|accept"
)
PLAIN_VERB_RE = re.compile(rf"(?<![\w'])(I|you|we|they) ({_BASE_VERBS})\b")
THIRD_VERBS = (
    "has|needs|wants|likes|knows|uses|works|takes|gets|feels|seems|looks|loves|hates|eats|"
    "drinks|owns|lives|helps|makes|runs|drains|charges|connects|starts|turns|opens|loads|"
    "responds|matters|supports|includes|requires|allows|accepts|affects|contains"
)
THIRD_VERB_RE = re.compile(rf"(?<![\w'])(he|she|it|[Mm]y \w+|[Tt]he \w+) ({THIRD_VERBS})\b")
HAVE_BLOCK_NEXT = (
    "been had got gotten seen done tried used heard lost made never always already just read "
    "taken eaten found bought worked lived started finished noticed written"
).split()
WITH_RE = re.compile(r"\b([Ww]ith)\b(?! \w+ing\b)")
WITHOUT_RE = re.compile(r"\b([Ww]ithout)\b")
IMPERATIVE_NEG_RE = re.compile(
    rf"^(Please )?({'|'.join(w.capitalize() for w in lx.NEGATABLE_IMPERATIVES)})\b"
)
ALWAYS_NEVER_RE = re.compile(r"\b([Aa]lways|[Nn]ever)\b")
NT_RE = re.compile(r"\b(\w+?)(n't|n\u2019t)\b")
AUX_NOT_RE = re.compile(rf"\b({_AUX}|am) not\b")
DONT_START_RE = re.compile(r"^(Please )?(Don't|Don\u2019t|Do not) (\w)")
CANNOT_RE = re.compile(r"\b([Cc]annot)\b")
NT_POSITIVE = {v[:-3]: k for k, v in lx.NEGATABLE_AUX.items()}
NT_POSITIVE.update({"ca": "can", "wo": "will", "sha": "shall"})


def _negated(aux: str, rng: random.Random, allow_split: bool = True) -> str:
    """A negative form of `aux`: contracted (straight or curly) or "aux not"."""
    lower = aux.lower()
    if allow_split and rng.random() < 0.3:
        return aux + (" not" if lower != "can" or rng.random() < 0.5 else "not")
    contracted = lx.NEGATABLE_AUX[lower]
    return apostrophe_style(match_case(aux, contracted, lower), rng)


def _third_to_base(verb: str) -> str:
    if verb == "has":
        return "have"
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    if verb.endswith(("ches", "shes", "sses", "xes")):
        return verb[:-2]
    return verb[:-1]


def _base_to_third(verb: str) -> str:
    if verb == "have":
        return "has"
    if verb.endswith(("ch", "sh", "ss", "x", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def edit_negation(text: str, rng: random.Random) -> str | None:
    """Insert or remove a negation: is -> isn't, can -> can't, with -> without, don't X -> X."""
    insertions: list[Span] = []
    for m in WHY_AUX_RE.finditer(text):
        insertions.append((m.start(2), m.end(2), _negated(m.group(2), rng, allow_split=False)))
    for m in WHAT_AUX_RE.finditer(text):
        insertions.append((m.start(2), m.end(2), _negated(m.group(2), rng, allow_split=False)))
    for m in SUBJECT_AUX_RE.finditer(text):
        aux = m.group(2)
        if aux == "am":
            new = rng.choice(["am not", "'m not" if m.group(1) == "I" else "am not"])
            start = m.start(2) - (1 if new.startswith("'") else 0)
            insertions.append((start, m.end(2), apostrophe_style(new, rng)))
        else:
            insertions.append((m.start(2), m.end(2), _negated(aux, rng)))
    for m in PLAIN_VERB_RE.finditer(text):
        if m.group(2) == "have" and next_word(text, m.end()) in HAVE_BLOCK_NEXT:
            continue
        if prev_word(text, m.start()) in ("do", "did", "can", "will", "would", "should", "to"):
            continue
        neg = apostrophe_style(rng.choice(["don't", "do not", "don't"]), rng)
        insertions.append((m.start(2), m.end(2), f"{neg} {m.group(2)}"))
    for m in THIRD_VERB_RE.finditer(text):
        if m.group(2) == "has" and next_word(text, m.end()) in HAVE_BLOCK_NEXT:
            continue
        neg = apostrophe_style(rng.choice(["doesn't", "does not", "doesn't"]), rng)
        insertions.append((m.start(2), m.end(2), f"{neg} {_third_to_base(m.group(2))}"))
    for m in WITH_RE.finditer(text):
        if prev_word(text, m.start()) in lx.WITH_BLOCK_PREV or re.match(
            r" (?:or|and) with", text[m.end() :]
        ):
            continue
        insertions.append((m.start(1), m.end(1), m.group(1) + "out"))
    m = IMPERATIVE_NEG_RE.match(text)
    if m:
        neg = apostrophe_style(rng.choice(["Don't", "Do not"]), rng)
        if m.group(1):
            neg = "please " + neg.lower() if rng.random() < 0.5 else neg.lower()
            insertions.append((0, m.end(2), upper_first(neg) + " " + m.group(2).lower()))
        else:
            insertions.append((0, m.end(2), neg + " " + m.group(2).lower()))
    for m in ALWAYS_NEVER_RE.finditer(text):
        word = m.group(1)
        new = "never" if word.lower() == "always" else "always"
        insertions.append((m.start(), m.end(), match_case(word, new, word.lower())))
    # An insertion next to an existing negation would give a double negative.
    spans = [
        s
        for s in insertions
        if not NEGATION_AFTER_RE.match(text, s[1]) and not NEGATION_BEFORE_RE.search(text[: s[0]])
    ]
    # removals
    for m in NT_RE.finditer(text):
        stem = m.group(1).lower()
        if stem not in NT_POSITIVE:
            continue
        positive = match_case(m.group(1), NT_POSITIVE[stem], stem)
        if stem in ("do", "does") and m.start() == 0:
            continue  # handled by DONT_START_RE
        subject = prev_word(text, m.start())
        verb = next_word(text, m.end())
        if stem == "do" and subject in ("i", "you", "we", "they") and re.fullmatch(r"[a-z]+", verb):
            spans.append((m.start(), m.end() + 1, ""))  # "I don't have" -> "I have"
        elif stem == "does" and verb in _BASE_VERBS.split("|") and subject not in ("why", "how"):
            end = m.end() + 1 + len(verb)
            spans.append((m.start(), end, _base_to_third(verb)))  # "doesn't work" -> "works"
        else:
            spans.append((m.start(), m.end(), positive))
    for m in AUX_NOT_RE.finditer(text):
        spans.append((m.end(1), m.end(), ""))
    m = DONT_START_RE.match(text)
    if m:
        rest = text[m.start(3) :]
        spans.append(
            (0, len(text), (m.group(1) or "") + (upper_first(rest) if not m.group(1) else rest))
        )
    for m in CANNOT_RE.finditer(text):
        spans.append((m.start(), m.end(), match_case(m.group(1), "can", "cannot")))
    for m in WITHOUT_RE.finditer(text):
        if re.search(r"\bwith (?:or|and) $", text[: m.start()], re.IGNORECASE):
            continue  # "with or without" -> "with or with"
        spans.append((m.start(1), m.end(1), m.group(1)[:-3]))
    return pick(text, spans, rng)


_QNOUN_SING = {s: p for s, p in lx.QUANTITY_NOUNS}
_QNOUN_PLURAL = {p: s for s, p in lx.QUANTITY_NOUNS}
_QVERBS = alternation([*lx.QUANTITY_VERBS, "with", "using", "include", "add"])
_ADJ = r"(?:([a-z][a-z-]+) )?"
QUANTITY_ONE_RE = re.compile(
    rf"\b((?i:{_QVERBS})) (a|an|one) {_ADJ}({alternation(_QNOUN_SING)})\b(?! of\b)"
)
_QPLURALS = alternation([q for q in lx.QUANTITY_PLURAL if not q.isdigit()] + ["four", "six"])
QUANTITY_MANY_RE = re.compile(
    rf"\b((?i:{_QVERBS})) ({_QPLURALS}|[2-9]|1\d|20) {_ADJ}({alternation(_QNOUN_PLURAL)})\b"
)
WHAT_IS_A_RE = re.compile(
    rf"\b([Ww]hat) is (a|an) ((?:good|great|nice|fun|catchy|creative|cool|unique|simple) )?"
    rf"({alternation(_QNOUN_SING)})\b"
)
WHAT_ARE_SOME_RE = re.compile(
    rf"\b([Ww]hat) are (some|a few) ((?:good|great|nice|fun|catchy|creative|cool|unique|simple) )?"
    rf"({alternation(_QNOUN_PLURAL)})\b"
)


def edit_quantity(text: str, rng: random.Random) -> str | None:
    """One thing versus several: "a joke" -> "five jokes", "three examples" -> "an example"."""
    spans: list[Span] = []
    for m in QUANTITY_ONE_RE.finditer(text):
        adjective = m.group(3)
        if adjective and (adjective in _QNOUN_SING or adjective in ("lot", "bit", "few", "couple")):
            continue
        quantity = rng.choice(lx.QUANTITY_PLURAL)
        phrase = f"{quantity} {adjective + ' ' if adjective else ''}{_QNOUN_SING[m.group(4)]}"
        spans.append((m.start(2), m.end(4), phrase))
    for m in QUANTITY_MANY_RE.finditer(text):
        adjective = m.group(3)
        if adjective and adjective in _QNOUN_PLURAL:
            continue
        first = (adjective or _QNOUN_PLURAL[m.group(4)])[0]
        article = rng.choice(["an" if first in "aeiou" else "a"] * 2 + ["one"])
        phrase = f"{article} {adjective + ' ' if adjective else ''}{_QNOUN_PLURAL[m.group(4)]}"
        spans.append((m.start(2), m.end(4), phrase))
    for m in WHAT_IS_A_RE.finditer(text):
        phrase = f"{m.group(1)} are {rng.choice(['some', 'a few', 'three', 'five'])} "
        phrase += f"{m.group(3) or ''}{_QNOUN_SING[m.group(4)]}"
        spans.append((m.start(), m.end(), phrase))
    for m in WHAT_ARE_SOME_RE.finditer(text):
        if re.search(r"\b(?:that|which|who) (?:are|have|were)\b", text[m.end() :]):
            continue  # "What are some X that are ..." would need the verb changed too
        noun = f"{m.group(3) or ''}{_QNOUN_PLURAL[m.group(4)]}"
        article = "an" if noun[0] in "aeiou" else "a"
        spans.append((m.start(), m.end(), f"{m.group(1)} is {article} {noun}"))
    return pick(text, spans, rng)


_ORDINALS = alternation(lx.ORDINALS)
ORDINAL_RE = re.compile(rf"\b(the|my|his|her|its|their|our|your) ({_ORDINALS})\b", re.I)
_SUPERLATIVES = alternation(lx.SUPERLATIVES)
SUPERLATIVE_RE = re.compile(rf"\b(the) ({_SUPERLATIVES})\b", re.IGNORECASE)
ORDINAL_SUPERLATIVE_RE = re.compile(
    rf"\b(the) (second|third|fourth|fifth)[- ]({_SUPERLATIVES})\b", re.IGNORECASE
)
SUP_TO_COMP_RE = re.compile(
    rf"\b(the) ({alternation(lx.SUPERLATIVE_TO_COMPARATIVE)}) "
    rf"({alternation(lx.COMPARATIVE_HEAD_NOUNS)})\b",
    re.IGNORECASE,
)
_COMP_TO_SUP = {v: k for k, v in lx.SUPERLATIVE_TO_COMPARATIVE.items()}
COMP_TO_SUP_RE = re.compile(
    rf"\b(an?) ({alternation(_COMP_TO_SUP)}) ({alternation(lx.COMPARATIVE_HEAD_NOUNS)})\b",
    re.IGNORECASE,
)
BOUND_SWAP = Swapper(lx.COMPARATIVE_BOUNDS)
BOUND_RE = re.compile(
    rf"\b({alternation(BOUND_SWAP.spelling.values())}) (?=\$?\d|{alternation(lx.NUMBER_WORDS)}\b)",
    re.IGNORECASE,
)


def edit_comparative(text: str, rng: random.Random) -> str | None:
    """Other comparison: more/less, largest/smallest, second highest/highest, over/under."""
    spans = list(COMPARATIVE_SWAP.spans(text, rng, protect=False))
    taken = [(s, e) for s, e, _ in spans]
    for m in ORDINAL_RE.finditer(text):
        word = m.group(2).lower()
        other = rng.choice([o for o in lx.ORDINALS[:5] if o != word])
        spans.append((m.start(2), m.end(2), match_case(m.group(2), other, word)))
    for m in ORDINAL_SUPERLATIVE_RE.finditer(text):
        spans.append((m.start(2), m.start(3), ""))  # "the second highest" -> "the highest"
    for m in SUPERLATIVE_RE.finditer(text):
        if prev_word(text, m.start()) in (
            "one",
            "of",
            "among",
            "are",
            "were",
        ) or ORDINAL_SUPERLATIVE_RE.match(text, m.start()):
            continue
        ordinal = rng.choice(["second", "second", "third", "second-"])
        sep = "" if ordinal.endswith("-") else " "
        spans.append((m.start(2), m.start(2), ordinal + sep))
    for m in SUP_TO_COMP_RE.finditer(text):
        comp = lx.SUPERLATIVE_TO_COMPARATIVE[m.group(2).lower()]
        article = "an" if comp[0] in "aeiou" else "a"
        spans.append((m.start(1), m.end(2), f"{match_case(m.group(1), article, 'the')} {comp}"))
    for m in COMP_TO_SUP_RE.finditer(text):
        sup = _COMP_TO_SUP[m.group(2).lower()]
        spans.append((m.start(1), m.end(2), f"{match_case(m.group(1), 'the', 'a')} {sup}"))
    for m in BOUND_RE.finditer(text):
        if inside(taken, m.start(1), m.end(1)):
            continue
        key = m.group(1).lower()
        if key not in BOUND_SWAP.table:
            continue
        new = rng.choice(BOUND_SWAP.table[key])
        spans.append((m.start(1), m.end(1), match_case(m.group(1), new, key)))
    return pick(text, spans, rng)


# A proper noun phrase: a capitalised name of up to four words, not a question word.
_PNP = (
    r"(?<![\w'&.-])(?!(?:Who|What|Which|Why|How|When|Where|Is|Are|Was|Did|Does|Do|Can|Should|"
    r"Would|Will|I|The|A|An|If|In|On|And|But|My|Your|Our|This|That)\b)"
    r"[A-Z][\w.'&-]*(?: (?:of )?[A-Z][\w.'&-]*){0,3}(?![\w'&-])"
)
# Also "a kilogram", "the dollar": only where both sides of a comparison are simple nouns.
_NP = rf"(?:(?<![\w'])(?:the|a|an|my|his|her|their) [a-z]\w+(?![\w'-])|{_PNP})"
_BASE = {b: (p, pp) for b, p, pp in lx.DIRECTED_VERBS}
_PAST = {p: b for b, p, _ in lx.DIRECTED_VERBS}
_PARTICIPLE = {pp: (b, p) for b, p, pp in lx.DIRECTED_VERBS}
_THIRD = {_base_to_third(b): b for b in _BASE}
# Only a question's own wh-word: "the one who betrayed X" is a relative clause.
MODAL_BEFORE = {"will", "can", "could", "would", "should", "may", "might", "must", "to", "did"}
MODAL_BEFORE |= {"does", "do", "cannot", "won't", "can't", "didn't", "doesn't", "let", "never"}
WHO_DID_RE = re.compile(
    rf"(?:^|(?<=[.?!] ))(Who|Which \w+|What \w+) did ({_NP}) ({alternation(_BASE)})\b"
)
WHO_PAST_RE = re.compile(
    rf"(?:^|(?<=[.?!] ))(Who|Which \w+|What \w+) ({alternation(_PAST)}) ({_NP})"
    r"(?=\s*(?:[?.,!(]|$| (?:as|in|at|on|for|during|after|before|when|and|to)\b))"
)
_TERM = (
    rf"(?:{alternation([*ENTITY_TYPE, *lx.LANGUAGES, *lx.CURRENCY_PHRASES, *lx.CURRENCY_CODES])}"
    rf"|{alternation(n for pair in lx.CURRENCY_NAMES for n in pair)}"
    rf"|{alternation(u for g in lx.UNIT_GROUPS.values() for u0 in g for u in u0[:2])}"
    rf"|{alternation(lx.TEMPERATURE_SCALES)}|[A-Z][a-z]+(?: [A-Z][a-z]+)?)"
)
_OWNED = (
    r"(?:my|your|our|the) [a-z]+(?: (?:account|card|wallet|phone|laptop|computer|drive|center))?"
)
FROM_TO_RE = re.compile(
    rf"\bfrom ((?:the )?{_TERM}|{_OWNED}) (to|into) ((?:the )?{_TERM}|{_OWNED})(?![\w])"
)
KNOWN_TERM_RE = re.compile(
    rf"(?:{alternation([*ENTITY_TYPE, *lx.LANGUAGES, *lx.CURRENCY_PHRASES, *lx.CURRENCY_CODES])}|"
    rf"{alternation(n for pair in lx.CURRENCY_NAMES for n in pair)}|{_UNIT_ALT}|"
    rf"{alternation(lx.TEMPERATURE_SCALES)}|{_OWNED})",
    re.IGNORECASE,
)
PASSIVE_QUESTION_RE = re.compile(
    rf"\b(?:Was|Were|Is|Are|Has|Had) ({_PNP}) (?:been )?({alternation(_PARTICIPLE)}) by ({_PNP})"
)
X_TO_Y_RE = re.compile(rf"(?<![\w])({_TERM}) (to|into) ({_TERM})(?![\w])")
SVO_RE = re.compile(rf"({_PNP}) ({alternation([*_PAST, *_THIRD, *_BASE])}) ({_PNP})")
PASSIVE_RE = re.compile(
    rf"({_NP}) (was|were|is|are|has been|had been) ({alternation(_PARTICIPLE)}) by ({_NP})"
)
_THAN = alternation(lx.THAN_ADJECTIVES)
THAN_RE = re.compile(rf"({_NP}) ((?:is |are |was |were )?(?:{_THAN})) (?:than )?({_NP})(?![\w])")
RELATION_RE = re.compile(
    rf"({_PNP}) (?:is |are )?({alternation(lx.ASYMMETRIC_RELATIONS)}) ({_PNP})"
)
ARITH_SWAP_RE = re.compile(
    r"\b((?i:subtract|deduct)) (\S+) from (\S+?)(?=[\s.?,]|$)"
    r"|(?<![\w.])(\d+(?:\.\d+)?) (divided by|minus|to the power of|over) (\d+(?:\.\d+)?)(?![\w.]\d)"
)
TEMP_CONVERT_RE = re.compile(
    r"(\d+)\s?\u00b0([CF])\b( to| into| in)( degrees)? (Celsius|Fahrenheit)"
)
SYMMETRIC_DISTANCE_RE = re.compile(r"distance|how far|far is|far from", re.IGNORECASE)


def _swap_two(text: str, a: tuple[int, int], b: tuple[int, int]) -> str | None:
    first, second = text[a[0] : a[1]], text[b[0] : b[1]]
    if first.lower() == second.lower():
        return None
    if (prev_word(text, a[0]) == "the") != (prev_word(text, b[0]) == "the"):
        return None  # "the US defeat Russia" would become "the Russia defeat US"
    return text[: a[0]] + second + text[a[1] : b[0]] + first + text[b[1] :]


def _whole_name(text: str, span: tuple[int, int]) -> bool:
    """The term is not the tail or head of a longer name ("Lenovo K3 Note")."""
    if KNOWN_TERM_RE.fullmatch(text[span[0] : span[1]]):
        return True
    before = text[: span[0]].split(" ")[-2:-1] or [""]
    after = text[span[1] :].split(" ")[1:2] or [""]
    return not re.match(r"[A-Z0-9]", before[0]) and not re.match(r"[A-Z0-9]", after[0])


def edit_role_swap(text: str, rng: random.Random) -> str | None:
    """Swap who does what: from X to Y -> from Y to X, X beat Y -> Y beat X,
    who did X succeed -> who succeeded X, X acquired Y -> X was acquired by Y."""
    options: list[str] = []
    for m in WHO_DID_RE.finditer(text):
        past = _BASE[m.group(3)][0]
        options.append(text[: m.start()] + f"{m.group(1)} {past} {m.group(2)}" + text[m.end() :])
    for m in WHO_PAST_RE.finditer(text):
        base = _PAST[m.group(2)]
        options.append(
            text[: m.start()] + f"{m.group(1)} did {m.group(3)} {base}" + text[m.end() :]
        )
    if not SYMMETRIC_DISTANCE_RE.search(text):
        for m in FROM_TO_RE.finditer(text):
            if not _whole_name(text, m.span(3)):
                continue
            swapped = _swap_two(text, m.span(1), m.span(3))
            if swapped:
                options.append(swapped)
    for m in X_TO_Y_RE.finditer(text):
        head = text[: m.start()].lower().split()[-5:]
        codes = m.group(1) in lx.CURRENCY_CODES and m.group(3) in lx.CURRENCY_CODES
        if codes or any(w.strip(",.") in lx.DIRECTION_VERBS for w in head):
            if "from" in head[-2:] or not (
                _whole_name(text, m.span(1)) and _whole_name(text, m.span(3))
            ):
                continue  # FROM_TO_RE's job, or part of a longer name ("K3 Note to Android")
            swapped = _swap_two(text, m.span(1), m.span(3))
            if swapped:
                options.append(swapped)
    for m in SVO_RE.finditer(text):
        swapped = _swap_two(text, m.span(1), m.span(3))
        if swapped:
            options.append(swapped)
        verb = m.group(2)
        unambiguous_past = verb in _PAST and _PAST[verb] != verb
        if (
            unambiguous_past
            and prev_word(text, m.start()) not in MODAL_BEFORE
            and rng.random() < 0.5
        ):
            participle = _BASE[_PAST[verb]][1]
            options.append(
                text[: m.start(2)] + f"was {participle} by" + text[m.end(2) :]
            )  # "X acquired Y" -> "X was acquired by Y": now Y did it
    for m in PASSIVE_QUESTION_RE.finditer(text):
        swapped = _swap_two(text, m.span(1), m.span(3))  # "Was X acquired by Y?"
        if swapped:
            options.append(swapped)
    for m in PASSIVE_RE.finditer(text):
        base, past = _PARTICIPLE[m.group(3)]
        options.append(text[: m.start(2)] + past + text[m.end(3) + 3 :])  # drop " by"
    for m in THAN_RE.finditer(text):
        if prev_word(text, m.start(1)) == "of" or m.group(3).lower() in ("the other", "the others"):
            continue  # "one side of my head is bigger than the other" has no two sides to swap
        swapped = _swap_two(text, m.span(1), m.span(3))
        if swapped:
            options.append(swapped)
    for m in RELATION_RE.finditer(text):
        swapped = _swap_two(text, m.span(1), m.span(3))
        if swapped:
            options.append(swapped)
    for m in ARITH_SWAP_RE.finditer(text):
        left, right = (2, 3) if m.group(1) else (4, 6)
        swapped = _swap_two(text, m.span(left), m.span(right))
        if swapped:
            options.append(swapped)
    for m in TEMP_CONVERT_RE.finditer(text):
        scale = "F" if m.group(2) == "C" else "C"
        name = "Celsius" if scale == "F" else "Fahrenheit"
        if name == m.group(5):
            continue
        new = f"{m.group(1)}\u00b0{scale}{m.group(3)}{m.group(4) or ''} {name}"
        options.append(text[: m.start()] + new + text[m.end() :])
    options = [re.sub(r" {2,}", " ", o) for o in options if o != text]
    return rng.choice(options) if options else None


FORMAT_TARGET_RE = re.compile(
    rf"\b(as|in|into|with|create|make|write|draw|generate|give me|produce|using|format it as)"
    rf" ({alternation(w for group in lx.FORMAT_GROUPS for w in group)})\b",
    re.IGNORECASE,
)
CODE_FORMAT_RE = re.compile(
    rf"\b({alternation(['JSON', 'YAML', 'XML', 'CSV', 'TOML', 'HTML', 'Markdown', 'markdown'])})\b"
)
CODE_LANGUAGE_RE = re.compile(
    rf"(?<![\w+#.])({alternation(lx.ENTITIES['programming_language'])})(?![\w+#])"
)
CODE_CUE_RE = re.compile(rf"\b({alternation(lx.CODE_CUES)})\b", re.IGNORECASE)
FORMAT_PRESENT_RE = re.compile(
    rf"\b({alternation([*FORMAT_WORDS, 'bullet points', 'format'])})\b", re.IGNORECASE
)


def _format_group(word: str) -> list[str]:
    for group in lx.FORMAT_GROUPS:
        if word in group or word.lower() in [w.lower() for w in group]:
            return group
    return []


def is_prompt(text: str) -> bool:
    """A question or a request; news sentences from MRPC are neither, and a format demand
    tacked onto one would not be a realistic prompt."""
    return ends_question(text) or bool(QUESTION_START_RE.match(text) or IMPERATIVE_RE.match(text))


def _append_sentence(text: str, sentence: str) -> str:
    body = text.rstrip()
    if body and body[-1].isalnum():
        body += "?" if QUESTION_START_RE.match(body) else "."
    return f"{body} {sentence}"


def _insert_before_final(text: str, phrase: str) -> str:
    body, punct = split_final_punct(text)
    return f"{body} {phrase}{punct or '.'}"


def edit_format(text: str, rng: random.Random) -> str | None:
    """Add or change an output format: JSON, YAML, table, bullet list, a haiku, a poem,
    or the code in another programming language."""
    spans: list[Span] = []
    for m in FORMAT_TARGET_RE.finditer(text):
        word = m.group(2)
        group = _format_group(word)
        others = [w for w in group if w.lower() != word.lower()]
        if others:
            spans.append((m.start(2), m.end(2), rng.choice(others)))
    for m in CODE_FORMAT_RE.finditer(text):
        group = lx.FORMAT_GROUPS[0]
        spans.append(
            (m.start(), m.end(), rng.choice([w for w in group if w.lower() != m.group(0).lower()]))
        )
    coding = bool(CODE_CUE_RE.search(text))
    if coding:
        for m in CODE_LANGUAGE_RE.finditer(text):
            others = [c for c in lx.CODE_LANGUAGES if c != m.group(1) and c not in text]
            spans.append((m.start(), m.end(), rng.choice(others)))
    if spans and rng.random() < 0.6:
        return pick(text, spans, rng)
    if FORMAT_PRESENT_RE.search(text) or not is_prompt(text):
        return pick(text, spans, rng)
    if coding and rng.random() < 0.4:
        language = rng.choice([c for c in lx.CODE_LANGUAGES if c not in text])
        return _append_sentence(text, rng.choice(lx.CODE_FRAMES).format(language))
    target = rng.choice(lx.FORMAT_TARGETS)
    if IMPERATIVE_RE.match(text) and rng.random() < 0.4:
        return _insert_before_final(text, f"as {target}")
    return _append_sentence(text, rng.choice(lx.FORMAT_FRAMES).format(target))


LENGTH_RE = re.compile(rf"\b({alternation(lx.LENGTH_PHRASES)})\b", re.IGNORECASE)
SHORT_LONG_RE = re.compile(r"\b(a|an) (short|brief|long|detailed|quick) (?=[a-z])")
LENGTH_PRESENT_RE = re.compile(
    r"\b(words?|sentences?|paragraphs?|brief|briefly|detail|detailed|short|long|concise|"
    r"bullet points|tl;dr)\b",
    re.IGNORECASE,
)
BRIEF_EXPLAIN_RE = re.compile(r"^(Explain|Describe|Summarize|Tell me about)\b")


def edit_length(text: str, rng: random.Random) -> str | None:
    """Ask for another answer length: one sentence, 500 words, 3 bullet points, in detail."""
    spans: list[Span] = []
    for m in LENGTH_RE.finditer(text):
        phrase = m.group(1).lower()
        other = rng.choice([p for p in lx.LENGTH_PHRASES if p != phrase])
        spans.append((m.start(), m.end(), other))
    for m in SHORT_LONG_RE.finditer(text):
        word = m.group(2)
        other = rng.choice(
            ["long", "detailed"] if word in ("short", "brief", "quick") else ["short", "brief"]
        )
        spans.append((m.start(), m.end(2), f"{m.group(1)} {other}"))
    for m in re.finditer(r"\b(\d+)([- ])(word|page|line|sentence|paragraph)s?\b", text):
        n = int(m.group(1))
        new = rng.choice([k for k in (1, 2, 3, 5, 50, 100, 200, 300, 500, 1000, 2000) if k != n])
        if m.group(3) in ("word", "line", "page"):
            spans.append((m.start(1), m.end(1), str(new)))
    if spans:
        return pick(text, spans, rng)
    if LENGTH_PRESENT_RE.search(text) or not is_prompt(text):
        return None
    if BRIEF_EXPLAIN_RE.match(text) and rng.random() < 0.3:
        adverb = rng.choice(["Briefly", "Quickly", "Thoroughly", "In detail,"])
        return f"{adverb} {lower_first(text)}"
    if IMPERATIVE_RE.match(text) and rng.random() < 0.35:  # "Explain X in one sentence."
        return _insert_before_final(text, rng.choice(lx.LENGTH_PHRASES))
    return _append_sentence(text, rng.choice(lx.LENGTH_DEMANDS))


LANGUAGE_CONTEXT_RE = re.compile(
    rf"\b(in|into|to|from) ({alternation(lx.LANGUAGES)})\b(?! (?:food|people|restaurant|cuisine|"
    r"culture|history|government|army|market|economy|girls|men|women|companies|universities))"
)
LANGUAGE_TRANSLATE_RE = re.compile(r"\b(translat\w*|say|said|written|speak|language|word)\b", re.I)


def edit_language(text: str, rng: random.Random) -> str | None:
    """Ask for another answer language: "Answer in Spanish.", or French -> German."""
    spans: list[Span] = []
    if LANGUAGE_TRANSLATE_RE.search(text):
        for m in LANGUAGE_CONTEXT_RE.finditer(text):
            others = [lang for lang in lx.LANGUAGES if lang != m.group(2) and lang not in text]
            spans.append((m.start(2), m.end(2), rng.choice(others)))
    if (spans and rng.random() < 0.75) or not is_prompt(text):
        return pick(text, spans, rng)
    others = [lang for lang in lx.LANGUAGES if lang != "English" and lang not in text]
    language = rng.choice(others)
    if rng.random() < 0.15:
        return rng.choice(lx.LANGUAGE_PREFIXES).format(language) + text
    return _append_sentence(text, rng.choice(lx.LANGUAGE_FRAMES).format(language))


_OP_PAIRS = {a: b for a, b in lx.OPERATOR_SYMBOLS} | {b: a for a, b in lx.OPERATOR_SYMBOLS}
SPACED_OP_RE = re.compile(r"(?<=\S) (>=|<=|==|!=|&&|\|\||\+=|-=|\*=|/=|>|<|\+|-|\*|/) (?=\S)")
# Unspaced operators; && and || only count spaced or in code, since ||x|| is a norm.
TIGHT_OP_RE = re.compile(r"(?<=[\w)])(>=|<=|==|!=|\+|\*|>|<)(?=[\w(])")
SQL_CUE_RE = re.compile(
    r"\b(SELECT|WHERE|FROM|JOIN|SQL|query|queries|HAVING|boolean|Boolean|tautology|logic|"
    r"truth table|expression)\b"
)
WORD_OP_SWAP = Swapper([p for p in lx.OPERATOR_WORDS if not p[0].isupper()])
SQL_OP_RE = re.compile(
    rf"\b({alternation(w for p in lx.OPERATOR_WORDS if p[0].isupper() for w in p)})\b"
)
_SQL_PAIRS = {a: b for a, b in lx.OPERATOR_WORDS if a[0].isupper()}
_SQL_PAIRS |= {b: a for a, b in list(_SQL_PAIRS.items())}
CODE_SPAN_RE = re.compile(r"`[^`]+`")
BASH_TESTS = {"ge": "le", "le": "ge", "gt": "lt", "lt": "gt", "eq": "ne", "ne": "eq"}
MATH_CONTEXT_RE = re.compile(
    r"\d|\b(?:numbers?|digits?|integers?|matrix|matrices|vectors?|polynomial|functions?|series|"
    r"sets?|equation|fractions?|coefficients?|[xyzn]|sqrt|math|maths|mathematics|calculus)\b"
)


def _mathy(token: str) -> bool:
    """A maths operand: something with a digit, or a one-letter variable other than the
    words "a" and "I"."""
    core = token.strip("`'\"()[],.?:;")
    if re.search(r"\d", core):
        return True
    return bool(re.fullmatch(r"[b-zA-HJ-Z](?:\^\d+)?", core))


def edit_operator(text: str, rng: random.Random) -> str | None:
    """Swap an operator in code, SQL, maths or logic: > / <, + / -, == / !=, AND / OR,
    greater than / less than, plus / minus."""
    spans: list[Span] = []
    code = [m.span() for m in CODE_SPAN_RE.finditer(text)]
    for m in SPACED_OP_RE.finditer(text):
        op = m.group(1)
        left = text[: m.start()].split(" ")[-1]
        right = text[m.end() :].split(" ")[0]
        in_code = inside(code, m.start(), m.end())
        operands = re.search(r"[\w)\]`]$", left) and re.match(r"[\w(\[`'\"-]", right)
        if not in_code and not operands:
            continue
        if not in_code and op in "+-*/" and not (_mathy(left) and _mathy(right)):
            continue
        spans.append((m.start(1), m.end(1), _OP_PAIRS[op]))
    for m in TIGHT_OP_RE.finditer(text):
        op = m.group(1)
        left = re.findall(r"[\w)]+$", text[: m.start()])[0]
        right = re.findall(r"^[\w(]+", text[m.end() :])[0]
        if op in "+*" and not (re.search(r"\d", left) and re.search(r"\d", right)):
            continue  # "C++", "Google+", "a*b" in prose
        if op in "<>" and not inside(code, m.start(), m.end()) and not re.search(r"\d", right):
            continue  # "<div>"
        spans.append((m.start(1), m.end(1), _OP_PAIRS[op]))
    for span in code:
        for m in re.finditer(r" (and|or) ", text[span[0] : span[1]]):
            new = "or" if m.group(1) == "and" else "and"
            spans.append((span[0] + m.start(1), span[0] + m.end(1), new))
    for m in SQL_OP_RE.finditer(text):
        if SQL_CUE_RE.search(text) or text[m.end() : m.end() + 1] == "(":
            spans.append((m.start(), m.end(), _SQL_PAIRS[m.group(1)]))
    for m in re.finditer(r"(?<=\s)-(ge|le|gt|lt|eq|ne)\b", text):  # test(1) comparisons
        spans.append((m.start(1), m.end(1), BASH_TESTS[m.group(1)]))
    for m in re.finditer(r"\b(max|min)\(", text):
        spans.append((m.start(1), m.end(1), "min" if m.group(1) == "max" else "max"))
    for s in WORD_OP_SWAP.spans(text, rng, protect=False):
        word = text[s[0] : s[1]].lower()
        left = text[: s[0]].split(" ")[-2:-1] or [""]
        right = text[s[1] :].split(" ")[1:2] or [""]
        arithmetic = ("times", "divided by", "multiplied by", "plus", "minus", "added to")
        if word in (*arithmetic, "subtracted from") and not (_mathy(left[0]) and _mathy(right[0])):
            continue  # "3 times a day" is a frequency, not a product
        structural = ("sum", "product", "union", "intersection", "integral", "derivative")
        if word in (*structural, "ceiling", "floor") and not re.match(
            r" (?:of\b|\()", text[s[1] :]
        ):
            continue  # "the product of" is an operation, "a product description" is not
        if word not in arithmetic and not MATH_CONTEXT_RE.search(text):
            continue
        if word.endswith(" than") and right[0] in ("a", "an", "one", "that", "those", "the"):
            continue  # "less than an hour" is a comparison of amounts, not an operator
        spans.append(s)
    return pick(text, spans, rng)


NEGATIVE_EDITS: dict[str, Edit] = {
    "number": edit_number,
    "unit": edit_unit,
    "currency": edit_currency,
    "date": edit_date,
    "frequency": edit_frequency,
    "age_duration": edit_age_duration,
    "entity": edit_entity,
    "antonym": edit_antonym,
    "negation": edit_negation,
    "quantity": edit_quantity,
    "comparative": edit_comparative,
    "role_swap": edit_role_swap,
    "format": edit_format,
    "length": edit_length,
    "language": edit_language,
    "operator": edit_operator,
}


# ======================================================================================
# Answer-preserving edits (label 1)
# ======================================================================================
def edit_punctuation(text: str, rng: random.Random) -> str | None:
    """Final ?, commas, ellipses, dropped apostrophes: noise that leaves the request alone."""
    options: list[str] = []
    body, punct = split_final_punct(text)
    if punct == "?":
        options += [body, body + "??", body + "...", body + "?..."]
    elif punct == ".":
        options += (
            [body, body + "...", body + "!"]
            if not IMPERATIVE_RE.match(text)
            else [body, body + "..."]
        )
    elif punct == "":
        options.append(body + ("?" if QUESTION_START_RE.match(body) else "."))
    elif punct == "...":
        options.append(body + ".")
    commas = [m for m in re.finditer(r"(?<!\d), (?!\d)", text)]
    guarded = protected_spans(text)
    for m in commas:
        if not inside(guarded, m.start(), m.end()):
            options.append(text[: m.start()] + text[m.start() + 1 :])
    m = re.match(
        r"^(So|Well|Also|Ok|Okay|OK|Hey|Hi|Hello|Actually|Basically|Honestly|Now|Anyway)"
        r"(,?) ",
        text,
    )
    if m:
        options.append(text[: m.end(1)] + ("" if m.group(2) else ",") + text[m.end(2) :])
    m = re.match(rf"^((?:In|On|Using|With) {ENTITY_RE.pattern})(,?) ", text)
    if m:
        options.append(text[: m.end(1)] + ("" if m.group(2) else ",") + text[m.end(2) :])
    dropped = re.sub(
        r"\b(don|doesn|didn|can|isn|aren|wasn|won|wouldn|shouldn|couldn|haven|hasn)['\u2019]t\b",
        r"\1t",
        text,
    )
    dropped = re.sub(r"\b(what|that|it|there|who)['\u2019]s\b", r"\1s", dropped, flags=re.I)
    dropped = re.sub(r"\bI['\u2019]m\b", "Im", dropped)
    if dropped != text:
        options.append(dropped)
    if punct in ("?", ".") and commas:
        options.append(re.sub(r"(?<!\d), (?!\d)", " ", body))  # no punctuation at all
    options = [o for o in options if o and o != text]
    return rng.choice(options) if options else None


SMALL_TITLE_WORDS = {"a", "an", "the", "of", "in", "on", "to", "for", "and", "or", "with", "at"}


def edit_case(text: str, rng: random.Random) -> str | None:
    """Lower-case all, Title Case, an ALL CAPS word or sentence case."""
    if "`" in text:  # code is case-sensitive: only the first letter may change
        return lower_first(text) if text[:1].isupper() else upper_first(text)
    options = [
        text.lower(),
        text.lower(),
        lower_first(text) if text[:1].isupper() else upper_first(text),
    ]
    words = text.split(" ")
    titled = [
        w if (i and w.lower() in SMALL_TITLE_WORDS) else (w[:1].upper() + w[1:])
        for i, w in enumerate(words)
    ]
    options.append(" ".join(titled))
    content = [
        i
        for i, w in enumerate(words)
        if len(w) >= 4 and w.isalpha() and w.islower() and not ENTITY_RE.fullmatch(w)
    ]
    if content:
        i = rng.choice(content)
        options.append(" ".join(w.upper() if j == i else w for j, w in enumerate(words)))
    if len(words) <= 12 and rng.random() < 0.3:
        options.append(text.upper())
    options = [o for o in options if o != text]
    return rng.choice(options) if options else None


def edit_whitespace(text: str, rng: random.Random) -> str | None:
    """Double spaces, leading/trailing blanks, a line break, a space before the "?"."""
    gaps = [m.start() for m in re.finditer(" ", text)]
    options: list[str] = [" " + text, text + " ", text + "\n", "  " + text + "  ", "\n" + text]
    if gaps:
        g = rng.choice(gaps)
        options.append(text[:g] + " " + text[g:])  # one extra space: a double space
        if len(gaps) > 3:
            g2 = rng.choice([x for x in gaps if x != g] or [g])
            first, second = sorted((g, g2))
            options.append(text[:first] + " " + text[first:second] + " " + text[second:])
    if ends_question(text) and not text.endswith(" ?"):
        options.append(text[:-1].rstrip() + " ?")
    sentence_break = [m.end() for m in re.finditer(r"[.?!] (?=[A-Z])", text)]
    if sentence_break:
        b = rng.choice(sentence_break)
        options.append(text[: b - 1] + "\n" + text[b:])
    if ", " in text:
        options.append(text.replace(", ", ",", 1))
    options.append("\t" + text)
    return rng.choice(options)


def edit_typographic(text: str, rng: random.Random) -> str | None:
    """Straight vs curly quotes and apostrophes, hyphen vs en dash in ranges, ... vs the
    ellipsis character."""
    options: list[str] = []
    if "'" in text:
        t = re.sub(r"(?<=\w)'(?=\w)", CURLY_APOSTROPHE, text)
        t = re.sub(
            r"(?<![\w])'(\S(?:[^']*\S)?)'(?![\w])", CURLY_OPEN_SINGLE + r"\1" + CURLY_APOSTROPHE, t
        )
        options.append(t)
    if CURLY_APOSTROPHE in text or CURLY_OPEN_SINGLE in text:
        options.append(text.replace(CURLY_APOSTROPHE, "'").replace(CURLY_OPEN_SINGLE, "'"))
    if '"' in text:
        options.append(re.sub(r'"([^"]+)"', CURLY_OPEN_DOUBLE + r"\1" + CURLY_CLOSE_DOUBLE, text))
    if CURLY_OPEN_DOUBLE in text:
        options.append(text.replace(CURLY_OPEN_DOUBLE, '"').replace(CURLY_CLOSE_DOUBLE, '"'))
    if re.search(r"(?<=\d)-(?=\d)", text) and not re.search(r"\d-\d+-\d", text):
        options.append(re.sub(r"(?<=\d)-(?=\d)", EN_DASH, text))
    if EN_DASH in text:
        options.append(text.replace(EN_DASH, "-"))
    if " - " in text:
        options.append(text.replace(" - ", rng.choice([f" {EN_DASH} ", f" {EM_DASH} ", EM_DASH])))
    if "..." in text:
        options.append(text.replace("...", ELLIPSIS))
    if ELLIPSIS in text:
        options.append(text.replace(ELLIPSIS, "..."))
    options = [o for o in options if o != text]
    return rng.choice(options) if options else None


_CONTRACT = {full.lower(): short for full, short in lx.CONTRACTIONS}
_EXPAND = {short.lower(): full for full, short in lx.CONTRACTIONS}
_EXPAND |= {curly(short).lower(): full for full, short in lx.CONTRACTIONS}
CONTRACT_RE = re.compile(bounded(alternation(_CONTRACT)), re.IGNORECASE)
EXPAND_RE = re.compile(rf"(?<![\w'\u2019])(?:{alternation(_EXPAND)})(?![\w])", re.IGNORECASE)
RARE_CONTRACTIONS = ("what are", "who are", "why is", "when is", "how is")
CLAUSE_FINAL_ONLY = ("what is", "who is", "where is", "how is", "that is", "it is", "there is")
HAS_AFTER = ("been", "got", "gotten", "had", "done", "made", "seen", "happened", "changed")
WOULD_AFTER = ("like", "love", "prefer", "rather", "be", "want", "say", "go", "need", "recommend")


def edit_contraction(text: str, rng: random.Random) -> str | None:
    """what is <-> what's, do not <-> don't, I am <-> I'm (straight or curly apostrophe)."""
    guarded = protected_spans(text)
    spans: list[Span] = []
    for m in CONTRACT_RE.finditer(text):
        if inside(guarded, m.start(), m.end()):
            continue
        src = m.group(0)
        if src.lower() in CLAUSE_FINAL_ONLY and re.match(r"\s*[?.!,]|\s*$", text[m.end() :]):
            continue  # "I know what it is." cannot contract at the end
        if src.lower() in RARE_CONTRACTIONS and rng.random() < 0.8:
            continue  # "what're" exists but is rare; "what are" is everywhere in Quora
        if src.lower() not in _CONTRACT:
            continue
        short = apostrophe_style(_CONTRACT[src.lower()], rng)
        spans.append((m.start(), m.end(), match_case(src, short, src.lower())))
    for m in EXPAND_RE.finditer(text):
        if inside(guarded, m.start(), m.end()):
            continue
        src = m.group(0)
        if src.lower() not in _EXPAND:
            continue
        full = _EXPAND[src.lower()]
        after = next_word(text, m.end())
        if full.endswith(" is") and after in HAS_AFTER:
            full = full[:-3] + " has"
        if full.endswith(" would") and after not in WOULD_AFTER:
            continue
        spans.append(
            (m.start(), m.end(), match_case(src, full, src.lower().replace("\u2019", "'")))
        )
    return pick(text, spans, rng)


POLITE_STRIP_RE = re.compile(
    r"^(?:Please,? |Hi[,!]? |Hello[,!]? |Hey[,!]? |Hey there[,!]? |Quick question: |"
    r"Kindly |Question: )+",
    re.IGNORECASE,
)
THANKS_STRIP_RE = re.compile(
    r"\s*(?:Thanks|Thank you|Thx|Many thanks|Cheers)[^.?!]*[.!]?\s*$|,? please([.?!])\s*$",
    re.IGNORECASE,
)


def edit_politeness(text: str, rng: random.Random) -> str | None:
    """Greetings, please, thanks, "Quick question:", "Can you tell me", "I was wondering"."""
    options: list[str] = []
    stripped = POLITE_STRIP_RE.sub("", text)
    if stripped != text and stripped:
        options.append(upper_first(stripped))
    m = THANKS_STRIP_RE.search(text)
    if m and m.start() > 10:
        options.append(text[: m.start()] + (m.group(1) or ""))
    is_question = ends_question(text) or bool(QUESTION_START_RE.match(text))
    imperative = IMPERATIVE_RE.match(text)
    prefix = rng.choice(lx.POLITE_PREFIXES)
    lowered = prefix.endswith((", ", "so ", "but ", "Um, ", "So, "))
    options.append(prefix + (lower_first(text) if lowered else text))
    if imperative and not text.lower().startswith("please"):
        opener = rng.choice(lx.REQUEST_OPENERS)
        body, punct = split_final_punct(text)
        if opener.strip().endswith("you") or opener.startswith(("Can", "Could", "Would")):
            options.append(opener + lower_first(body) + "?")
        else:
            options.append(opener + lower_first(body) + (punct or "."))
        options.append(body + ", please" + (punct or "."))
    elif is_question and WH_START_RE.match(text):
        options.append(rng.choice(lx.QUESTION_OPENERS) + lower_first(text))
    suffix = rng.choice(lx.POLITE_SUFFIXES)
    options.append(text.rstrip() + suffix)
    if rng.random() < 0.25:
        options.append(prefix + (lower_first(text) if lowered else text) + suffix)
    options = [o for o in options if o != text and len(o.split()) >= 2]
    return rng.choice(options) if options else None


KEYBOARD_NEIGHBOURS = {
    "a": "sqwz",
    "b": "vghn",
    "c": "xdfv",
    "d": "serfcx",
    "e": "wsdr",
    "f": "drtgvc",
    "g": "ftyhbv",
    "h": "gyujnb",
    "i": "ujko",
    "j": "huikmn",
    "k": "jiolm",
    "l": "kop",
    "m": "njk",
    "n": "bhjm",
    "o": "iklp",
    "p": "ol",
    "q": "wa",
    "r": "edft",
    "s": "awedxz",
    "t": "rfgy",
    "u": "yhji",
    "v": "cfgb",
    "w": "qase",
    "x": "zsdc",
    "y": "tghu",
    "z": "asx",
}
PROTECTED_WORDS = {
    w.lower()
    for w in [
        *NUMBER_WORDS_SIG,
        *NEGATION_WORDS,
        *lx.ORDINALS,
        *FORMAT_WORDS,
        *OPERATOR_WORDS_SIG,
        *lx.LANGUAGES,
        *lx.MONTHS,
        *lx.WEEKDAYS,
        *UNIT_SURFACES,
        *lx.FREQUENCY_ADVERBS,
        "with",
        "than",
        "from",
        "into",
    ]
}
for _name in ENTITY_TYPE:
    PROTECTED_WORDS.update(_name.lower().split())


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)  # never the first letter, as people rarely miss it
    kind = rng.choice(["swap", "drop", "double", "neighbour"])
    if kind == "swap" and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[: i + 1] + word[i] + word[i + 1 :]
    near = KEYBOARD_NEIGHBOURS.get(word[i].lower(), "")
    return word[:i] + rng.choice(near) + word[i + 1 :] if near else word[:i] + word[i + 1 :]


class TypoEdit:
    """One or two realistic typos in ordinary words. A typo that spells another known word
    ("form" -> "from") is rejected, and numbers, names and negations are never touched."""

    def __init__(self, vocabulary: set[str]) -> None:
        self.vocabulary = vocabulary

    def __call__(self, text: str, rng: random.Random) -> str | None:
        guarded = protected_spans(text)
        words = [
            m
            for m in re.finditer(r"(?<![\w'\u2019-])[a-z]{4,}(?![\w'\u2019-])", text)
            if m.group(0) not in PROTECTED_WORDS and not inside(guarded, m.start(), m.end())
        ]
        if not words:
            return None
        count = 2 if len(words) > 4 and rng.random() < 0.3 else 1
        chosen = sorted(rng.sample(words, count), key=lambda m: m.start(), reverse=True)
        out = text
        for m in chosen:
            for _ in range(4):
                typo = _typo(m.group(0), rng)
                if typo != m.group(0) and typo not in self.vocabulary:
                    out = out[: m.start()] + typo + out[m.end() :]
                    break
        return out if out != text else None


def edit_synonym(text: str, rng: random.Random) -> str | None:
    """A safe synonym: car/automobile, fix/repair, how do I/how can I, show me/give me."""
    spans = SYNONYM_SWAP.spans(text, rng, protect=True)
    if not spans:
        return None
    out = pick(text, spans, rng)
    if out and len(spans) > 2 and rng.random() < 0.3:
        second = SYNONYM_SWAP.spans(out, rng, protect=True)
        out = pick(out, second, rng) or out
    return out


_STOP = set(lx.STOP_WORDS)
_KEEP = set(lx.KEYWORD_KEEP)
DIRECTION_WORDS = set(lx.DIRECTION_VERBS) | {"from"}


def edit_keyword(text: str, rng: random.Random) -> str | None:
    """Search-style query: "How do I delete a remote branch in git?" ->
    "delete remote branch git". Content words keep their order; words that pick the answer
    (why/when/who, not/without, than, from/to in a conversion) stay."""
    if len(text.split()) > 16 or len(re.findall(r"[.?!](?:\s|$)", text)) > 1:
        return None
    if not is_prompt(text):
        return None  # a news sentence is not something one types into a search box
    if protected_spans(text):
        return None  # a quoted phrase is not a keyword
    tokens = text.split()
    directional = any(t.lower().strip(",.?") in DIRECTION_WORDS for t in tokens)
    kept: list[str] = []
    for token in tokens:
        core = token.strip('?!.,;:()"')
        if token.endswith(".") and re.search(r"\.\w+\.$", token):
            core = token[:-1]  # keep ".md." as ".md"
        low = core.lower()
        if not core:
            continue
        keep = (
            low in _KEEP
            or re.search(r"\d|[<>=+*/%$]", core) is not None
            or (core[:1].isupper() and len(kept) > 0)  # a name, not the question word
            or (low == "to" and directional)  # "convert miles to km" keeps its direction
            or (low not in _STOP and not (low.startswith(("how", "what")) and "'" in low))
        )
        if keep:
            kept.append(core)
    if len(kept) < 2:
        return None
    out = " ".join(kept)
    if rng.random() < 0.6:
        out = out.lower()
    return out if loose(out) != loose(text) else None


# "How do you call X" asks for a name and "How do I know if" for a test, not for steps.
NOT_HOW_TO = {"call", "say", "spell", "pronounce", "feel", "know", "think", "like", "rate"}
NOT_HOW_TO |= {"define", "see", "view", "look", "compare", "describe", "tell"}
HOW_RE = re.compile(r"^(?:So,? )?[Hh]ow (?:do|can|should|would) (?:I|you|we|one) (.+?)\s*\?*$")
HOW_TO_RE = re.compile(r"^[Hh]ow to (.+?)\s*[?.]*$")
TELL_HOW_RE = re.compile(r"^(?:Explain|Tell me|Show me|Walk me through) how to (.+?)\s*[.?]*$")
STEPS_RE = re.compile(r"^(?:What are the )?[Ss]teps to (.+?)\s*\??$")
CAN_YOU_RE = re.compile(
    rf"^(?:Can|Could|Would) you (?:please )?({'|'.join(v.lower() for v in lx.IMPERATIVE_VERBS)})"
    r" (.+?)\s*\?$"
)
IMPERATIVE_FULL_RE = re.compile(rf"^({'|'.join(lx.IMPERATIVE_VERBS)}) (.+?)\s*\.?$")
WHAT_IS_THE_RE = re.compile(r"^What(?: is|'s|\u2019s) (the .+?)\s*\?$")
TELL_ME_THE_RE = re.compile(r"^Tell me (the .+?)\s*\.?$")
WHAT_DOES_MEAN_RE = re.compile(r"^What does (.+?) mean\s*\??$")
MEANING_OF_RE = re.compile(r"^(?:What is the )?[Mm]eaning of (.+?)\s*\??$")


def edit_question_imperative(text: str, rng: random.Random) -> str | None:
    """Same request, other frame: "How do I X?" <-> "Explain how to X." <-> "Steps to X"."""
    options: list[str] = []
    for regex in (HOW_RE, HOW_TO_RE, TELL_HOW_RE, STEPS_RE):
        m = regex.match(text)
        first = m.group(1).split(" ", 1)[0].lower() if m else ""
        if (
            m
            and "?" not in m.group(1)
            and len(m.group(1).split()) <= 20
            and first not in NOT_HOW_TO
        ):
            task = m.group(1)
            frames = lx.HOW_TO_FRAMES
            options += [f.format(task) for f in rng.sample(frames, 3)]
            break
    m = CAN_YOU_RE.match(text)
    if m:
        options.append(f"{m.group(1).capitalize()} {m.group(2)}.")
    m = IMPERATIVE_FULL_RE.match(text)
    if m and "?" not in text and len(text.split()) <= 25:
        frame = rng.choice(lx.IMPERATIVE_TO_QUESTION)
        options.append(frame.format(f"{m.group(1).lower()} {m.group(2)}"))
    m = WHAT_IS_THE_RE.match(text)
    if m and not re.search(r"\b(and why|or)\b", m.group(1)):
        options.append(
            rng.choice(["Tell me {}.", "Tell me {}", "I want to know {}."]).format(m.group(1))
        )
    m = TELL_ME_THE_RE.match(text)
    if m and not m.group(1).split()[-1].endswith("s"):
        options.append(f"What is {m.group(1)}?")
    m = WHAT_DOES_MEAN_RE.match(text)
    if m:
        options.append(
            rng.choice(["What is the meaning of {}?", "Meaning of {}", "Define {}."]).format(
                m.group(1)
            )
        )
    m = MEANING_OF_RE.match(text)
    if m:
        options.append(f"What does {m.group(1)} mean?")
    options = [re.sub(r"\s+", " ", o) for o in options if o != text]
    return rng.choice(options) if options else None


_FRONT_TYPES = (
    "programming_language",
    "library",
    "database",
    "devtool",
    "os",
    "app",
    "product",
    "country",
    "country_short",
    "city",
    "us_state",
    "continent",
)
_FRONT_NAMES = [n for t in _FRONT_TYPES for n in lx.ENTITIES[t]]
_FRONT = rf"(?:{alternation(_FRONT_NAMES)}|(?:1[89]|20)\d\d)"
TRAILING_RE = re.compile(rf"^(.+?) (in|on|using|with) ({_FRONT})\s*([?.!]?)$")
LEADING_RE = re.compile(rf"^(In|On|Using|With) ({_FRONT}),? (.+?)\s*([?.!]?)$")
IF_FIRST_RE = re.compile(r"^If ([^,?]{3,80}), (.+?)\s*([?.])$")
IF_LAST_RE = re.compile(r"^(.{5,80}?) if ([^,?]{3,80})\s*\?$")
FRONTABLE_START_RE = re.compile(
    rf"^(?:How|What|Which|Why|Where|When|Who|Is|Are|Can|Should|Do|Does|"
    rf"{'|'.join(lx.IMPERATIVE_VERBS)})\b"
)
_WITH_TYPES = {"programming_language", "library", "database", "devtool", "app"}
_ON_TYPES = {"os", "product", "app", "devtool"}


def edit_word_order(text: str, rng: random.Random) -> str | None:
    """Move a phrase without changing the request: "How do I X in Python?" <->
    "In Python, how do I X?"; "If A, B?" <-> "B if A?"."""
    options: list[str] = []
    m = TRAILING_RE.match(text)
    if m and FRONTABLE_START_RE.match(text):
        rest, prep, name, punct = m.groups()
        kind = ENTITY_TYPE.get(name, "year")
        allowed = (
            prep == "in"
            or (prep == "on" and kind in _ON_TYPES)
            or (prep in ("with", "using") and kind in _WITH_TYPES)
        )
        last = rest.split()[-1].lower()
        if (
            allowed
            and last not in lx.IN_BOUND_VERBS
            and last not in ("to", "of", "for", "from", "and", "or")
        ):
            options.append(f"{prep.capitalize()} {name}, {lower_first(rest)}{punct}")
    m = LEADING_RE.match(text)
    if m:
        prep, name, rest, punct = m.groups()
        if FRONTABLE_START_RE.match(upper_first(rest)):
            options.append(f"{upper_first(rest)} {prep.lower()} {name}{punct}")
    m = IF_FIRST_RE.match(text)
    if m and QUESTION_START_RE.match(m.group(2)):
        options.append(f"{upper_first(m.group(2))} if {m.group(1)}{m.group(3)}")
    m = IF_LAST_RE.match(text)
    embedded = ("even", "as", "only", "what", "see", "know", "check", "ask", "wonder", "tell")
    if (
        m
        and QUESTION_START_RE.match(m.group(1))
        and " if " not in m.group(1)
        and m.group(1).split()[-1].lower() not in embedded
    ):
        options.append(f"If {m.group(2)}, {lower_first(m.group(1))}?")
    options = [o for o in options if o != text]
    return rng.choice(options) if options else None


def positive_edits(vocabulary: set[str]) -> dict[str, Edit]:
    return {
        "punctuation": edit_punctuation,
        "case": edit_case,
        "whitespace": edit_whitespace,
        "typographic": edit_typographic,
        "contraction": edit_contraction,
        "politeness": edit_politeness,
        "typo": TypoEdit(vocabulary),
        "synonym": edit_synonym,
        "keyword": edit_keyword,
        "question_imperative": edit_question_imperative,
        "word_order": edit_word_order,
    }


# ======================================================================================
# Generation
# ======================================================================================
def clean_seed(text: str) -> str | None:
    """Tidy a seed; None for ones too short, too long or carrying control characters."""
    t = text.replace('""', '"').strip()
    t = re.sub(r"\s+", " ", t)
    if not 3 <= len(t.split()) <= 40 or len(t) > 260:
        return None
    if any(ord(c) < 32 for c in t):
        return None
    return t


def prepare_seeds(seeds: Iterable[str]) -> list[str]:
    cleaned = (clean_seed(s) for s in seeds)
    return list(dict.fromkeys(s for s in cleaned if s))


def build_vocabulary(texts: Iterable[str]) -> set[str]:
    """Known words, so that a typo never lands on a real word ("from" for "form")."""
    vocabulary: set[str] = set()
    for text in texts:
        vocabulary.update(re.findall(r"[a-z]+", text.lower()))
    for name in ENTITY_TYPE:
        vocabulary.update(re.findall(r"[a-z]+", name.lower()))
    return vocabulary


def valid_negative(a: str, b: str) -> bool:
    """A label-0 pair must differ in more than case, spacing and punctuation."""
    return bool(b.strip()) and loose(a) != loose(b) and len(b) < 2 * len(a) + 120


def valid_positive(a: str, b: str) -> bool:
    """A label-1 pair must differ, and keep every number, name, negation, format word and
    language (signature) of the original."""
    return a != b and bool(b.strip()) and signature(a) == signature(b)


class Generator:
    """Draws seeds for each kind and keeps the rows that pass the quality checks."""

    def __init__(
        self, seeds: list[str], apps: list[str], rng: random.Random, app_share: float
    ) -> None:
        self.seeds = seeds
        self.apps = apps
        self.rng = rng
        self.app_share = app_share
        self.vocabulary = build_vocabulary([*seeds, *apps])
        self.positive = positive_edits(self.vocabulary)
        self.seen: set[tuple[str, str]] = set()

    def _seed_stream(self, passes: int) -> Iterable[str]:
        """App prompts at `app_share` of draws, the corpus in a fresh shuffled order."""
        for _ in range(passes):
            order = list(range(len(self.seeds)))
            self.rng.shuffle(order)
            for i in order:
                if self.apps and self.rng.random() < self.app_share:
                    yield self.rng.choice(self.apps)
                yield self.seeds[i]

    def _keep(self, rows: list[dict[str, object]], a: str, b: str, label: int, kind: str) -> bool:
        key = (a, b) if a <= b else (b, a)
        if key in self.seen:
            return False
        self.seen.add(key)
        if self.rng.random() < 0.5:  # either side may be the cached prompt
            a, b = b, a
        rows.append({"a": a, "b": b, "label": label, "kind": kind})
        return True

    def negative(self, kind: str, per_kind: int) -> list[dict[str, object]]:
        edit = NEGATIVE_EDITS[kind]
        rows: list[dict[str, object]] = []
        for seed in self._seed_stream(passes=2):
            if len(rows) >= per_kind:
                break
            edited = edit(seed, self.rng)
            if edited and valid_negative(seed, edited):
                self._keep(rows, seed, edited, 0, kind)
        return rows

    def positive_kind(self, kind: str, per_kind: int) -> list[dict[str, object]]:
        edit = self.positive[kind]
        rows: list[dict[str, object]] = []
        for seed in self._seed_stream(passes=2):
            if len(rows) >= per_kind:
                break
            edited = edit(seed, self.rng)
            if edited and valid_positive(seed, edited):
                self._keep(rows, seed, edited, 1, kind)
        return rows

    def combo(self, per_kind: int) -> list[dict[str, object]]:
        """Two preserving edits on one prompt: noise rarely comes alone."""
        names = [k for k in self.positive if k != "keyword"]
        rows: list[dict[str, object]] = []
        for seed in self._seed_stream(passes=2):
            if len(rows) >= per_kind:
                break
            first, second = self.rng.sample(names, 2)
            once = self.positive[first](seed, self.rng)
            twice = self.positive[second](once, self.rng) if once else None
            if twice and valid_positive(seed, twice):
                self._keep(rows, seed, twice, 1, "preserving_combo")
        return rows

    def negative_with_preserving(self, per_kind: int) -> list[dict[str, object]]:
        """A label-0 edit plus surface noise on the edited side, so neither "any difference
        means 0" nor "noise means 1" is learnable."""
        negatives = list(NEGATIVE_EDITS)
        positives = list(self.positive)
        rows: list[dict[str, object]] = []
        for seed in self._seed_stream(passes=2):
            if len(rows) >= per_kind:
                break
            edited = NEGATIVE_EDITS[self.rng.choice(negatives)](seed, self.rng)
            if not edited or not valid_negative(seed, edited):
                continue
            noisy = self.positive[self.rng.choice(positives)](edited, self.rng)
            if noisy and valid_positive(edited, noisy) and valid_negative(seed, noisy):
                self._keep(rows, seed, noisy, 0, "pair_negative_with_preserving")
        return rows


POSITIVE_KINDS = list(positive_edits(set()))
ALL_KINDS = [
    *NEGATIVE_EDITS,
    *POSITIVE_KINDS,
    "preserving_combo",
    "pair_negative_with_preserving",
]


HAND_WRITTEN_PROMPTS = [*lx.APP_PROMPTS, *lx.CODE_MATH_PROMPTS, *lx.DIRECTION_PROMPTS]


def generate(
    seeds: list[str],
    rng: random.Random,
    per_kind: int,
    *,
    app_prompts: list[str] | None = None,
    app_share: float = 0.2,
    kinds: Sequence[str] | None = None,
) -> list[dict[str, object]]:
    """Rows {"a", "b", "label", "kind"}: up to `per_kind` per kind, shuffled.

    `seeds` are raw texts (QQP questions, MRPC sentences); the hand-written prompts of
    lexicon.py (APP_PROMPTS, CODE_MATH_PROMPTS, DIRECTION_PROMPTS) are mixed in at
    `app_share` of the draws unless `app_prompts` says otherwise. A kind gets fewer rows
    when its edit applies to fewer seeds (two shuffled passes over the seeds at most).
    """
    generator = Generator(
        prepare_seeds(seeds),
        prepare_seeds(HAND_WRITTEN_PROMPTS if app_prompts is None else app_prompts),
        rng,
        app_share,
    )
    rows: list[dict[str, object]] = []
    for kind in kinds or ALL_KINDS:
        if kind in NEGATIVE_EDITS:
            rows += generator.negative(kind, per_kind)
        elif kind == "preserving_combo":
            rows += generator.combo(per_kind)
        elif kind == "pair_negative_with_preserving":
            rows += generator.negative_with_preserving(per_kind)
        else:
            rows += generator.positive_kind(kind, per_kind)
    rng.shuffle(rows)
    return rows


def load_seeds(data: Path) -> list[str]:
    """Both sides of qqp_dev.jsonl and mrpc_train.jsonl (never mrpc_val), deduplicated."""
    texts: list[str] = []
    for name in ("qqp_dev.jsonl", "mrpc_train.jsonl"):
        with open(data / name, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                texts += [row["a"], row["b"]]
    return list(dict.fromkeys(texts))


# ======================================================================================
# Self-checks
# ======================================================================================
def _expect(condition: bool, message: str, failures: list[str]) -> None:
    if not condition:
        failures.append(message)


def self_check(rows: list[dict[str, object]]) -> list[str]:
    """Invariants of the lexicon and of the generated rows; returns the failures."""
    failures: list[str] = []
    _expect(len(lx.ANTONYMS) >= 150, f"only {len(lx.ANTONYMS)} antonym pairs", failures)
    synonyms = len(lx.SYNONYMS) + len(lx.SYNONYMS_ONE_WAY)
    _expect(synonyms >= 300, f"only {synonyms} synonym pairs", failures)
    _expect(len(lx.APP_PROMPTS) >= 140, f"only {len(lx.APP_PROMPTS)} app prompts", failures)
    edit_words = [
        *(w for p in lx.ANTONYMS for w in p),
        *(w for p in lx.SYNONYMS for w in p),
        *(w for p in lx.SYNONYMS_ONE_WAY for w in p),
        *(w for p in lx.COMPARATIVE_PAIRS for w in p),
        *lx.FORMAT_TARGETS,
        *lx.FORMAT_FRAMES,
        *lx.LENGTH_DEMANDS,
        *lx.LENGTH_PHRASES,
        *lx.LANGUAGE_FRAMES,
        *lx.POLITE_PREFIXES,
        *lx.POLITE_SUFFIXES,
        *lx.QUESTION_OPENERS,
        *lx.REQUEST_OPENERS,
        *lx.HOW_TO_FRAMES,
    ]
    for word in lx.HELD_OUT_WORDS:
        hits = [w for w in edit_words if re.search(rf"\b{re.escape(word)}\b", w, re.IGNORECASE)]
        _expect(not hits, f"held-out word {word!r} in edit lists: {hits[:3]}", failures)
    rng = random.Random(1)
    fixed = [
        ("Meet me at 3 pm for coffee.", edit_number, None),
        ("What did you do in the last 3 days?", edit_number, None),
        ("I have 12 apples.", edit_number, "different"),
        ("See you next Monday.", edit_date, None),
        ("How long does it take to walk 5 km?", edit_unit, "different"),
        ("Why is the sky blue?", edit_negation, "different"),
        ("Tell me a joke about cats.", edit_quantity, "different"),
        ("Who did Theodore Roosevelt succeed as president?", edit_role_swap, "different"),
    ]
    for text, edit, want in fixed:
        out = edit(text, rng)
        if want is None:
            _expect(out is None, f"{edit.__name__} changed held-out {text!r} -> {out!r}", failures)
        else:
            _expect(
                out is not None and out != text,
                f"{edit.__name__} did nothing on {text!r}",
                failures,
            )
    for row in rows:
        a, b = str(row["a"]), str(row["b"])
        if row["label"] == 0:
            _expect(
                valid_negative(a, b) or valid_negative(b, a),
                f"label 0 without change: {row}",
                failures,
            )
        else:
            _expect(
                signature(a) == signature(b) and a != b, f"label 1 changed meaning: {row}", failures
            )
    return failures


def print_samples(rows: list[dict[str, object]], per_kind: int, rng: random.Random) -> None:
    by_kind: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_kind.setdefault(str(row["kind"]), []).append(row)
    for kind in ALL_KINDS:
        group = by_kind.get(kind, [])
        print(f"== {kind} ({len(group)})")
        for row in rng.sample(group, min(per_kind, len(group))):
            print(f"   [{row['label']}] {row['a']!r}\n       {row['b']!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, help="JSONL to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-kind", type=int, default=1000)
    parser.add_argument("--check", action="store_true", help="print 3 samples per kind, self-check")
    args = parser.parse_args(argv)
    # This shares a small machine with training jobs; stay in the background.
    if hasattr(os, "nice"):
        os.nice(5)
    started = time.perf_counter()
    seeds = load_seeds(args.data)
    rows = generate(seeds, random.Random(args.seed), args.per_kind)
    elapsed = time.perf_counter() - started
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = Counter(str(r["kind"]) for r in rows)
    labels = Counter(int(str(r["label"])) for r in rows)
    for kind in ALL_KINDS:
        print(f"{kind:32s} {counts.get(kind, 0):6d}")
    print(f"{'total':32s} {len(rows):6d}  (label 0: {labels[0]}, label 1: {labels[1]})")
    hand = len(HAND_WRITTEN_PROMPTS)
    print(f"seeds: {len(seeds)} corpus texts + {hand} hand-written prompts; {elapsed:.1f}s")
    if args.check:
        print_samples(rows, 3, random.Random(args.seed))
        failures = self_check(rows)
        for failure in failures[:50]:
            print("FAIL", failure)
        print(f"self-check: {len(failures)} failures")
        return 1 if failures else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
