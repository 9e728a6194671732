"""Per-kind table on the hand-written conversation pairs (eval/data/conversations/*.jsonl).

Each pair caches conversation `a` and asks `b`. Two decisions are measured:

- today's server: the system prompt and every earlier turn are part of the exact partition,
  so `b` is served only when its history equals `a`'s and its final prompt is served by the
  single-turn decision;
- the designed conversation match (kallm.match.conversation): the same final-prompt
  decision, and the histories aligned turn by turn (acknowledgements dropped), each turn
  judged by that same decision.

"final prompt alone" (the final prompts' decision, whatever came before) is shown as the
ceiling the other two share: a conversation is never served unless its final prompt is.

The single-turn decision is the server's: canonical text, LocalEmbedder cosine, the pair
model's verifier, the shipped calibrated thresholds. This set is for measuring only: the
design was fixed before it was run and nothing is tuned on it.

    .venv/bin/python eval/conversations_report.py [--json eval/results/conversations.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from kallm.embedders import LocalEmbedder
from kallm.match import decision
from kallm.match.canonical import canonical, exact_form
from kallm.match.conversation import Turn, same_history
from kallm.match.defaults import load_verifier
from kallm.match.verifier import Verifier
from kallm.settings import load_settings

HERE = Path(__file__).parent
SETS = sorted((HERE / "data" / "conversations").glob("*.jsonl"))
TURN_LIMIT = 12


class Judge:
    """The single-turn decision (match.decision.accept) on two texts, embeddings cached."""

    def __init__(self, embedder: LocalEmbedder, verifier: Verifier, t: float, p: float) -> None:
        self._embedder, self._verifier, self._t, self._p = embedder, verifier, t, p
        self._vectors: dict[str, Any] = {}

    async def _vector(self, text: str) -> Any:
        if text not in self._vectors:
            self._vectors[text] = await self._embedder.embed(text)
        return self._vectors[text]

    async def __call__(self, cached: str, asked: str) -> bool:
        a, b = canonical(cached), canonical(asked)
        if exact_form(a) == exact_form(b):
            return True
        va, vb = await self._vector(a), await self._vector(b)
        if va is None or vb is None:
            return False
        similarity = float(np.dot(va, vb))
        if not decision.accept(similarity, None, self._t, self._p):  # the gate, before the model
            return False
        probability = await self._verifier.probability(a, b)
        return decision.accept(similarity, probability, self._t, self._p)


def turns(messages: list[dict[str, Any]]) -> list[Turn]:
    return [
        Turn(m["role"], m["content"] if isinstance(m["content"], str) else None, json.dumps(m))
        for m in messages
        if m["role"] != "system"
    ]


def system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["role"] == "system"]


async def run() -> dict[str, Any]:
    rows = [json.loads(line) for path in SETS for line in path.read_text().splitlines() if line]
    settings = load_settings()
    embedder = await asyncio.to_thread(LocalEmbedder)
    verifier = load_verifier(settings, embedder.name)
    assert verifier is not None
    calibrated = verifier.calibration
    decide = Judge(embedder, verifier, calibrated.similarity_threshold, calibrated.min_probability)
    names = ("final prompt alone", "today", "designed")
    served: dict[str, list[tuple[dict[str, Any], bool]]] = {name: [] for name in names}
    for row in rows:
        a, b = row["a"], row["b"]
        final = system(a) == system(b) and await decide(a[-1]["content"], b[-1]["content"])
        history_a, history_b = turns(a[:-1]), turns(b[:-1])
        exact = [t.exact for t in history_a] == [t.exact for t in history_b]
        served["final prompt alone"].append((row, final))
        served["today"].append((row, final and exact))
        same = final and await same_history(history_a, history_b, decide, TURN_LIMIT)
        served["designed"].append((row, same))
    await embedder.close()
    verifier.close()
    return {name: table(results) for name, results in served.items()}


def table(results: list[tuple[dict[str, Any], bool]]) -> dict[str, list[int]]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for row, hit in results:
        label = "should hit" if row["label"] == 1 else "trap"
        groups[f"{label} (all)"].append(hit)
        groups[f"{label}/{row['kind']}"].append(hit)
    return {name: [sum(hits), len(hits)] for name, hits in sorted(groups.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=HERE / "results" / "conversations.json")
    args = parser.parse_args()
    report = asyncio.run(run())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    names = list(report)
    print(f"| kind | pairs | {' | '.join(names)} |")
    print("|---|---|" + "---|" * len(names))
    for group, (_, total) in report[names[0]].items():
        cells = [f"{report[n][group][0]} ({report[n][group][0] / total:.0%})" for n in names]
        print(f"| {group} | {total} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
