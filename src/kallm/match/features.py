"""Guards for the verifier: what cosine similarity misses, as yes/no verdicts.

Sentence embeddings put "5 km" next to "50 km" and "USD to EUR" next to "EUR to USD". These
checks look at the words: numbers, negation, antonyms, direction, output format, language.
All are generic (no list is drawn from an evaluation set), cheap (tens of microseconds) and
pure; calibration keeps those that add precision on held-out pairs (match/verifier.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

_TOKEN = re.compile(r"\d+(?:[.,:/]\d+)*|[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
# "A5-0323 / 2000" is "A5-0323/2000": spacing around a separator between digits.
_SPACED_SEPARATOR = re.compile(r"(?<=\d) *([.,:/]) *(?=\d)")

STOPWORDS = frozenset(
    """a an the of to in on at for from by with about as into onto over under between through
    during before after above below up down out off again further then once here there when
    where why how what which who whom whose this that these those i me my mine myself we us our
    ours you your yours he him his she her hers it its they them their theirs am is are was were
    be been being have has had having do does did doing would should could can will shall may
    might must and but or nor so yet if because while until than too very just also only own
    same such both each few more most other some any all there's it's what's how's let's please
    tell explain give show know want need like get make anyone someone something anything one
    way ways best good really much many thing things kind sort use used using s t""".split()
)

# Negations, and verbs and prepositions that turn a request around ("exercises to avoid").
NEGATIONS = frozenset(
    "not no never without none nobody nothing neither nor cannot cant can't don't doesn't "
    "didn't isn't aren't wasn't weren't won't wouldn't shouldn't couldn't hasn't haven't "
    "hadn't mustn't unable avoid against stop prevent except excluding instead lack".split()
)

# Common opposites in prompts; each pair is symmetric.
_ANTONYMS = [
    ("enable", "disable"),
    ("increase", "decrease"),
    ("add", "remove"),
    ("start", "stop"),
    ("open", "close"),
    ("buy", "sell"),
    ("import", "export"),
    ("upload", "download"),
    ("encrypt", "decrypt"),
    ("encode", "decode"),
    ("install", "uninstall"),
    ("lock", "unlock"),
    ("gain", "lose"),
    ("win", "lose"),
    ("before", "after"),
    ("above", "below"),
    ("min", "max"),
    ("minimum", "maximum"),
    ("first", "last"),
    ("best", "worst"),
    ("more", "less"),
    ("most", "least"),
    ("high", "low"),
    ("higher", "lower"),
    ("highest", "lowest"),
    ("big", "small"),
    ("bigger", "smaller"),
    ("biggest", "smallest"),
    ("large", "small"),
    ("larger", "smaller"),
    ("largest", "smallest"),
    ("long", "short"),
    ("longer", "shorter"),
    ("fast", "slow"),
    ("faster", "slower"),
    ("hot", "cold"),
    ("warm", "cool"),
    ("heavy", "light"),
    ("cheap", "expensive"),
    ("safe", "dangerous"),
    ("legal", "illegal"),
    ("allowed", "forbidden"),
    ("allow", "deny"),
    ("accept", "reject"),
    ("true", "false"),
    ("positive", "negative"),
    ("good", "bad"),
    ("right", "wrong"),
    ("left", "right"),
    ("north", "south"),
    ("east", "west"),
    ("up", "down"),
    ("in", "out"),
    ("inside", "outside"),
    ("input", "output"),
    ("push", "pull"),
    ("send", "receive"),
    ("early", "late"),
    ("earlier", "later"),
    ("young", "old"),
    ("new", "old"),
    ("male", "female"),
    ("men", "women"),
    ("man", "woman"),
    ("boy", "girl"),
    ("summer", "winter"),
    ("spring", "autumn"),
    ("day", "night"),
    ("morning", "evening"),
    ("rich", "poor"),
    ("strong", "weak"),
    ("easy", "hard"),
    ("easy", "difficult"),
    ("success", "failure"),
    ("pros", "cons"),
    ("advantages", "disadvantages"),
    ("benefits", "risks"),
    ("agree", "disagree"),
    ("like", "dislike"),
    ("love", "hate"),
    ("include", "exclude"),
    ("always", "never"),
    ("everything", "nothing"),
    ("public", "private"),
    ("internal", "external"),
    ("client", "server"),
    ("sync", "async"),
    ("synchronous", "asynchronous"),
    ("ascending", "descending"),
    ("uppercase", "lowercase"),
    ("horizontal", "vertical"),
    ("row", "column"),
    ("rows", "columns"),
    ("light", "dark"),
    ("wet", "dry"),
    ("full", "empty"),
    ("raise", "lower"),
    ("expand", "collapse"),
    ("compress", "decompress"),
    ("merge", "split"),
    ("join", "leave"),
    ("connect", "disconnect"),
    ("on", "off"),
]
ANTONYMS = frozenset(_ANTONYMS) | frozenset((b, a) for a, b in _ANTONYMS)
_ARTICLES = frozenset({"a", "an", "the"})
_NEGATING_PREFIXES = ("un", "dis", "non", "in", "im", "il", "ir", "anti", "de")

# Words that ask for a shape or length of answer rather than a topic.
FORMAT_WORDS = frozenset(
    """sentence sentences paragraph paragraphs words detail detailed brief briefly concise
    concisely tldr bullet bullets bulleted numbered table tables json yaml xml csv markdown
    html essay poem haiku limerick tweet eli5 outline""".split()
)

LANGUAGE_NAMES = frozenset(
    """english french spanish german italian portuguese dutch russian chinese mandarin
    cantonese japanese korean arabic hindi bengali urdu turkish polish swedish norwegian danish
    finnish greek hebrew vietnamese thai indonesian malay ukrainian czech romanian hungarian
    persian farsi swahili latin""".split()
)

# Function words that identify a language; a sentence's language is the one it uses most.
_LANGUAGE_WORDS = {
    "en": "the is are what how why which who of and to in for with you your does do can".split(),
    "fr": "le la les est sont quel quelle quels comment pourquoi qui de des et pour avec vous "
    "une un du au est-ce".split(),
    "es": "el la los las es son qué cuál cómo por qué quién de y para con usted una un del "
    "cuáles".split(),
    "de": "der die das ist sind was wie warum welche wer und für mit sie ein eine nicht "
    "ich".split(),
    "it": "il lo la gli le è sono che come perché quale chi di e per con una un del".split(),
    "pt": "o a os as é são que como por quem de e para com uma um do da qual".split(),
    "nl": "de het een is zijn wat hoe waarom welke wie van en voor met je niet".split(),
}
# A word that is also English ("a", "die", "do") says nothing about the language.
_LANGUAGE_INDEX: dict[str, list[str]] = {}
for _language, _words in _LANGUAGE_WORDS.items():
    for _word in _words:
        if _language == "en" or (_word not in STOPWORDS and _word not in _LANGUAGE_WORDS["en"]):
            _LANGUAGE_INDEX.setdefault(_word, []).append(_language)

_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
    "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000",
    "million": "1000000", "billion": "1000000000", "dozen": "12", "half": "0.5",
    "first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5", "once": "1",
    "twice": "2", "single": "1", "double": "2", "triple": "3",
}  # fmt: skip


@dataclass(frozen=True)
class Text:
    """A prompt broken into what the guards compare."""

    tokens: tuple[str, ...]
    numbers: frozenset[str]
    negations: int
    formats: frozenset[str]
    languages: frozenset[str]  # language names mentioned ("in Spanish")
    language: str  # the language it is written in, or "" when unclear
    script: str  # the dominant non-Latin script, or "latin"


def _stem(word: str) -> str:
    """Strips one common English suffix; enough to match plurals and verb forms."""
    for suffix in ("ies", "es", "s", "ing", "ed", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _script(text: str) -> str:
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            name = unicodedata.name(char, "")
            script = name.split(" ")[0] if name else "?"
            counts[script] = counts.get(script, 0) + 1
    if not counts:
        return "latin"
    top = max(counts, key=lambda s: counts[s])
    return "latin" if top == "LATIN" else top.lower()


@lru_cache(maxsize=4096)
def analyse(text: str) -> Text:
    raw = _TOKEN.findall(_SPACED_SEPARATOR.sub(r"\1", text))
    tokens = tuple(t.lower() for t in raw)
    numbers = {t.replace(",", "") for t in tokens if t[0].isdigit()}
    numbers |= {_NUMBER_WORDS[t] for t in tokens if t in _NUMBER_WORDS}
    votes: dict[str, int] = {}
    for token in tokens:
        for language in _LANGUAGE_INDEX.get(token, ()):
            votes[language] = votes.get(language, 0) + 1
    language = ""
    if votes:
        ranked = sorted(votes.values(), reverse=True)
        if len(ranked) == 1 or ranked[0] > ranked[1]:
            language = max(votes, key=lambda name: votes[name])
    return Text(
        tokens=tokens,
        numbers=frozenset(numbers),
        negations=sum(t in NEGATIONS or t.endswith("n't") for t in tokens),
        formats=frozenset(t for t in tokens if t in FORMAT_WORDS),
        languages=frozenset(t for t in tokens if t in LANGUAGE_NAMES),
        language=language,
        script=_script(text),
    )


def _root(word: str) -> str:
    """A crude common form: "increasing", "increases" and "increase" all give "increas"."""
    return _stem(word).removesuffix("e")


def _antonyms(a: Text, b: Text) -> bool:
    only_a = {_root(t) for t in a.tokens} - {_root(t) for t in b.tokens}
    only_b = {_root(t) for t in b.tokens} - {_root(t) for t in a.tokens}
    if any((x, y) in _ANTONYM_ROOTS for x in only_a for y in only_b):
        return True
    # "able"/"unable", "connect"/"disconnect": one word is the other negated by a prefix.
    return any(
        len(shorter) >= 3 and longer == prefix + shorter
        for x in only_a
        for y in only_b
        for shorter, longer in ((x, y), (y, x))
        for prefix in _NEGATING_PREFIXES
    )


# Between two exchanged spans, these leave the meaning unchanged: "X and Y", "X vs Y".
_SYMMETRIC = frozenset({"and", "or", "vs", "versus", "&", "with"})
# "Who was Aristotle's teacher" / "Aristotle's teacher was who": a question word moved to the
# end asks the same question; it trades no roles.
_QUESTION_WORDS = frozenset({"who", "what", "which", "where", "when", "why", "how", "whom"})


def _exchanged(a: Text, b: Text) -> bool:
    """Whether `b` is `a` with two spans traded: "from London to Paris" / "from Paris to
    London", "how many miles in a kilometer" / "how many kilometers in a mile"."""
    # Articles may change with the nouns ("a kilometer" / "an integer"), but "A to Z" counts.
    return _exchanged_in(
        [_root(t) for t in a.tokens], [_root(t) for t in b.tokens]
    ) or _exchanged_in(
        [_root(t) for t in a.tokens if t not in _ARTICLES],
        [_root(t) for t in b.tokens if t not in _ARTICLES],
    )


def _exchanged_in(x: list[str], y: list[str]) -> bool:
    if x == y or sorted(x) != sorted(y):
        return False
    first = next(i for i in range(len(x)) if x[i] != y[i])
    last = len(x) - next(i for i in range(len(x)) if x[-1 - i] != y[-1 - i])
    # The traded spans may begin before the first difference or end after the last one
    # ("non-www to www" / "www to non-www" share their last word).
    for start in range(max(0, first - 3), first + 1):
        for end in range(last, min(len(x), last + 3) + 1):
            if _is_exchange(x[start:end], y[start:end]):
                return True
    return False


def _is_exchange(x: list[str], y: list[str]) -> bool:
    for head in range(1, len(x)):
        for tail in range(1, len(x) - head + 1):
            middle = x[head : len(x) - tail]
            spans = (x[:head], x[len(x) - tail :])
            if any(len(span) == 1 and span[0] in _QUESTION_WORDS for span in spans):
                continue
            if y == x[len(x) - tail :] + middle + x[:head] and not set(middle) <= _SYMMETRIC:
                return True
    return False


def _written_language_differs(a: Text, b: Text) -> bool:
    return (a.script != b.script) or (
        bool(a.language) and bool(b.language) and a.language != b.language
    )


# Yes/no verdicts that can veto a pair outright ("guards"), each a feature of its own.
_GUARD_CHECKS: dict[str, Callable[[Text, Text], bool]] = {
    "numbers_differ": lambda a, b: bool(a.numbers) and bool(b.numbers) and a.numbers != b.numbers,
    "numbers_one_side": lambda a, b: bool(a.numbers) != bool(b.numbers),
    "negation_differs": lambda a, b: a.negations % 2 != b.negations % 2,
    "antonyms": lambda a, b: _antonyms(a, b),
    "exchanged": lambda a, b: _exchanged(a, b),
    "formats_differ": lambda a, b: a.formats != b.formats,
    "languages_differ": lambda a, b: a.languages != b.languages,
    "written_language_differs": _written_language_differs,
}
GUARDS = tuple(_GUARD_CHECKS)


def guards(a_text: str, b_text: str, names: Iterable[str] = GUARDS) -> frozenset[str]:
    """Which of the guards `names` fire on a pair: only those are computed, and none of the
    other features (the verifier asks for the few that calibration kept)."""
    a, b = analyse(a_text), analyse(b_text)
    return frozenset(name for name in names if _GUARD_CHECKS[name](a, b))


_ANTONYM_ROOTS = frozenset((_root(x), _root(y)) for x, y in ANTONYMS)
