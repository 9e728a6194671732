"""Training pairs for the cross-encoder: the *train* parts only, plus programmatic near-misses.

Sources (never QQP tune/val, MRPC val, nearmiss_test or cache_sim):
- QQP train part (eval/train_verifier.py's question-disjoint split, 70%),
- MRPC train part (train_verifier.py's 85% of mrpc_train.jsonl; its 15% stays for tuning),
- nearmiss_dev train part (train_verifier.py's 50%; repeated 5 times, as the MLP weights it),
- augmentations built from the paraphrase pairs above: one side edited so the answer changes
  (other number, other capitalised word / content word from the corpus, negation inserted or
  removed, antonym, "X to Y" / "X than Y" / "from X to Y" swapped, an output-format or language
  demand added to one side) -> label 0; identity, light rewrites, the same demand added to both
  sides, "between X and Y" swapped -> label 1.

    .venv/bin/python eval/cross_encoder/make_data.py --out .devcarry/train.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from train_verifier import HERE, SHARED, read, split_pairs, split_qqp

NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.]*\d)")
NUMBER_WORDS = (
    "one two three four five six seven eight nine ten twelve twenty hundred thousand million"
).split()
AUX = re.compile(
    r"\b(is|are|was|were|can|could|should|would|will|does|do|did|has|have|must)\b(?! not\b)",
    re.I,
)
NEGATED = [
    (
        re.compile(
            r"\b(is|are|was|were|does|do|did|has|have|can|could|should|would|must) not\b", re.I
        ),
        r"\1",
    ),
    (
        re.compile(r"\b(is|are|was|were|does|do|did|has|have|could|should|would|must)n't\b", re.I),
        r"\1",
    ),
    (re.compile(r"\bcan't\b|\bcannot\b", re.I), "can"),
    (re.compile(r"\bwon't\b", re.I), "will"),
    (re.compile(r"\bnever\b", re.I), "always"),
]
ANTONYMS = [
    ("enable", "disable"),
    ("increase", "decrease"),
    ("best", "worst"),
    ("before", "after"),
    ("maximum", "minimum"),
    ("happy", "unhappy"),
    ("buy", "sell"),
    ("advantages", "disadvantages"),
    ("pros", "cons"),
    ("start", "stop"),
    ("add", "remove"),
    ("win", "lose"),
    ("hot", "cold"),
    ("cheap", "expensive"),
    ("import", "export"),
    ("upload", "download"),
    ("open", "close"),
    ("good", "bad"),
    ("more", "less"),
    ("easy", "hard"),
    ("fast", "slow"),
    ("large", "small"),
    ("true", "false"),
    ("legal", "illegal"),
    ("healthy", "unhealthy"),
    ("gain", "lose"),
    ("rise", "fall"),
    ("encrypt", "decrypt"),
    ("install", "uninstall"),
    ("love", "hate"),
    ("always", "never"),
    ("first", "last"),
    ("positive", "negative"),
    ("success", "failure"),
    ("long", "short"),
    ("young", "old"),
    ("rich", "poor"),
    ("north", "south"),
    ("east", "west"),
]
SWAPS = [
    re.compile(r"\bfrom (\w[\w.+#-]*) to (\w[\w.+#-]*)", re.I),
    re.compile(r"\b(\w[\w.+#-]*) (to|into|vs\.?|versus) (\w[\w.+#-]*)"),
]
UNITS = set(
    "km miles mile kilometers meters feet inches cm mm kg pounds lbs grams ounces celsius "
    "fahrenheit kelvin liters gallons binary decimal hexadecimal octal hours minutes seconds days "
    "weeks months years dollars euros rupees yen pdf word excel jpg png mp3 mp4 text audio video "
    "python java javascript english french spanish german hindi".split()
)
SYMMETRIC = re.compile(r"\bbetween (\w[\w.+#-]*) and (\w[\w.+#-]*)", re.I)
DEMANDS = [
    "Answer in one sentence.",
    "Explain in detail.",
    "Reply in French.",
    "Answer in Spanish.",
    "Respond in German.",
    "Give the answer as JSON.",
    "Format the answer as a table.",
    "Use bullet points.",
    "Keep it under 50 words.",
    "Write it as a poem.",
    "Answer in Japanese.",
    "Just give me the code.",
    "Answer with yes or no.",
    "Explain it like I'm five.",
    "in one paragraph",
    "in Chinese",
    "step by step",
    "as a numbered list",
]
STOP = set(
    "the a an of to in on for and or is are was were be been what how why who when where which "
    "do does did can could should would will i you my your it its this that with as at by from "
    "about best way get good make have has there their they we our me us if not no any some "
    "most more much many like than then so just also into out up down one all".split()
)


def number_swap(text: str, rng: random.Random) -> str | None:
    found = list(NUMBER.finditer(text))
    if found:
        m = rng.choice(found)
        value = float(m.group(1))
        options = [value * 10, value + 1, value * 2, max(0, value - 1), value + 5, value * 3]
        new = rng.choice([o for o in options if o != value] or [value + 1])
        new_text = (
            str(int(new)) if "." not in m.group(1) else f"{new:.{len(m.group(1).split('.')[1])}f}"
        )
        return text[: m.start(1)] + new_text + text[m.end(1) :]
    words = [w for w in NUMBER_WORDS if re.search(rf"\b{w}\b", text, re.I)]
    if words:
        w = rng.choice(words)
        other = rng.choice([x for x in NUMBER_WORDS if x != w])
        return re.sub(rf"\b{w}\b", other, text, count=1, flags=re.I)
    return None


def entity_swap(text: str, rng: random.Random, capitals: list[str], nouns: list[str]) -> str | None:
    tokens = text.split(" ")
    caps = [
        i
        for i, t in enumerate(tokens)
        if i > 0 and re.fullmatch(r"[A-Z][a-z]{2,}[?.,!]?", t) and t.rstrip("?.,!") != "I"
    ]
    if caps and rng.random() < 0.7:
        i = rng.choice(caps)
        tail = tokens[i][len(tokens[i].rstrip("?.,!")) :]
        word = rng.choice(capitals)
        if word == tokens[i].rstrip("?.,!"):
            return None
        tokens[i] = word + tail
        return " ".join(tokens)
    content = [
        i
        for i, t in enumerate(tokens)
        if re.fullmatch(r"[a-z]{4,}[?.,!]?", t) and t.rstrip("?.,!") not in STOP
    ]
    if not content:
        return None
    i = rng.choice(content)
    tail = tokens[i][len(tokens[i].rstrip("?.,!")) :]
    word = rng.choice(nouns)
    if word == tokens[i].rstrip("?.,!"):
        return None
    tokens[i] = word + tail
    return " ".join(tokens)


def negation(text: str, rng: random.Random) -> str | None:
    for pattern, repl in NEGATED:
        if pattern.search(text):
            return pattern.sub(repl, text, count=1)
    found = list(AUX.finditer(text))
    if found:
        m = rng.choice(found[:2])
        word = m.group(1)
        short = {"can": "can't", "will": "won't"}.get(word.lower(), word + "n't")
        if word[0].isupper():
            short = short[0].upper() + short[1:]
        return text[: m.start()] + short + text[m.end() :]
    return None


def antonym(text: str, rng: random.Random) -> str | None:
    options = []
    for x, y in ANTONYMS:
        for a, b in ((x, y), (y, x)):
            if re.search(rf"\b{a}\b", text, re.I):
                options.append((a, b))
    if not options:
        return None
    a, b = rng.choice(options)
    return re.sub(rf"\b{a}\b", b, text, count=1, flags=re.I)


def direction(text: str, rng: random.Random) -> str | None:
    m = SWAPS[0].search(text)
    if m:
        return text[: m.start()] + f"from {m.group(2)} to {m.group(1)}" + text[m.end() :]
    # Only between names or units ("USD to EUR", "Celsius into Fahrenheit", "km to miles"):
    # reordering arbitrary words makes garbage rather than a near-miss.
    found = [
        m
        for m in SWAPS[1].finditer(text)
        if m.group(2).startswith(("to", "into"))
        and all(g[0].isupper() or g.lower() in UNITS for g in (m.group(1), m.group(3)))
    ]
    if not found:
        return None
    m = rng.choice(found)
    return text[: m.start()] + f"{m.group(3)} {m.group(2)} {m.group(1)}" + text[m.end() :]


def add_demand(text: str, demand: str) -> str:
    if demand[0].islower():
        return text.rstrip("?.! ") + " " + demand + ("?" if text.rstrip().endswith("?") else "")
    return text.rstrip() + " " + demand


def light_rewrite(text: str, rng: random.Random) -> str:
    choice = rng.randrange(7)
    if choice == 0:
        return text
    if choice == 1:
        return text.lower().rstrip("?.!")
    if choice == 2:
        return "Please tell me: " + text[0].lower() + text[1:]
    if choice == 3:
        return (
            text.replace("What's", "What is")
            .replace("what's", "what is")
            .replace("How do I", "How can I")
            .replace("How can I", "How do I")
        )
    if choice == 4:
        return text.rstrip("?.! ") + ("?" if text.rstrip().endswith("?") else "") + " Thanks!"
    if choice == 5:
        return re.sub(r"[?.!,]", "", text)
    return "Quick question - " + text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path(".devcarry/train.jsonl"))
    parser.add_argument("--nearmiss-repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    qqp = split_qqp(read(SHARED / "qqp_dev.jsonl"))["train"]
    mrpc = split_pairs(read(SHARED / "mrpc_train.jsonl"), tune_share=0.15)["train"]
    nearmiss = split_pairs(read(HERE / "data" / "nearmiss_dev.jsonl"), tune_share=0.5)["train"]

    counts_cap: Counter[str] = Counter()
    counts_word: Counter[str] = Counter()
    for row in qqp + mrpc:
        for text in (row["a"], row["b"]):
            tokens = text.split(" ")
            for i, t in enumerate(tokens):
                w = t.rstrip("?.,!")
                if i > 0 and re.fullmatch(r"[A-Z][a-z]{2,}", w):
                    counts_cap[w] += 1
                elif re.fullmatch(r"[a-z]{4,}", w) and w not in STOP:
                    counts_word[w] += 1
    capitals = [w for w, n in counts_cap.items() if n >= 5]
    nouns = [w for w, n in counts_word.items() if n >= 20]

    out: list[dict] = []
    for src, rows, repeat in (
        ("qqp", qqp, 1),
        ("mrpc", mrpc, 1),
        ("nearmiss", nearmiss, args.nearmiss_repeat),
    ):
        for row in rows:
            for _ in range(repeat):
                out.append({"a": row["a"], "b": row["b"], "label": int(row["label"]), "src": src})
    augment = Counter()
    perturb = {
        "number": number_swap,
        "negation": negation,
        "antonym": antonym,
        "direction": direction,
        "entity": lambda t, r: entity_swap(t, r, capitals, nouns),
        "format": lambda t, r: add_demand(t, r.choice(DEMANDS)),
    }
    positives = [r for r in qqp + mrpc + nearmiss if int(r["label"]) == 1]
    for row in positives:
        a, b = (row["a"], row["b"]) if rng.random() < 0.5 else (row["b"], row["a"])
        if rng.random() < 0.7:
            # One edit, drawn uniformly among those that apply (format, which always applies
            # and which a guard already catches, at half weight).
            edits = {k: f(a, rng) for k, f in perturb.items()}
            edits = {k: e for k, e in edits.items() if e and e != a}
            kinds = [k for k in edits if k != "format" or rng.random() < 0.5]
            if kinds:
                kind = rng.choice(kinds)
                edited = edits[kind]
                if True:
                    other = b if rng.random() < 0.7 else a
                    pair = (other, edited) if rng.random() < 0.5 else (edited, other)
                    out.append({"a": pair[0], "b": pair[1], "label": 0, "src": "aug-" + kind})
                    augment["neg-" + kind] += 1
        r = rng.random()
        if r < 0.15:
            out.append({"a": a, "b": light_rewrite(a, rng), "label": 1, "src": "aug-rewrite"})
            augment["pos-rewrite"] += 1
        elif r < 0.22:
            demand = rng.choice(DEMANDS)
            out.append(
                {
                    "a": add_demand(a, demand),
                    "b": add_demand(b, demand),
                    "label": 1,
                    "src": "aug-samedemand",
                }
            )
            augment["pos-samedemand"] += 1
        if (m := SYMMETRIC.search(a)) and rng.random() < 0.5:
            swapped = a[: m.start()] + f"between {m.group(2)} and {m.group(1)}" + a[m.end() :]
            out.append({"a": b, "b": swapped, "label": 1, "src": "aug-symmetric"})
            augment["pos-symmetric"] += 1
    rng.shuffle(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in out))
    print(f"{len(out)} pairs ({sum(r['label'] for r in out)} positive) -> {args.out}")
    print(dict(Counter(r["src"] for r in out)))
    print(dict(augment))


if __name__ == "__main__":
    main()
