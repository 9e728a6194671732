"""Per-category table on the hand-written application prompts (eval/data/apps/*.jsonl).

Each pair is scored through the server's own path (`kallm.cli.evaluate.plan` + `score`: canonical
text, LocalEmbedder, MemoryStore, Matcher with the verifier) and decided by `decide` at each
system's setting: cosine 0.95 alone, and kallm's verifier at its shipped defaults (or at
--threshold / --min-probability). A paraphrase served is a right HIT; a near-miss served is a
wrong answer. Categories that training never generates (HELD_OUT) are reported apart.

    .venv/bin/python eval/apps_report.py [--json eval/results/apps.json] [--sweep]

--sweep prints the trade-off curve instead: the share of paraphrases and of near-misses
served at each similarity threshold and pair-model threshold (a report, never a tuning input).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from kallm.cli.evaluate import decide, plan, read_rows, score
from kallm.match.defaults import load_verifier
from kallm.settings import load_settings

HERE = Path(__file__).parent
SETS = sorted((HERE / "data" / "apps").glob("*.jsonl"))
# Near-miss kinds no training generator produces, to show whether the model generalises.
HELD_OUT = frozenset({"clock_time", "time_frame", "tone"})


def table(rows: list[dict[str, Any]], served: list[bool]) -> dict[str, Any]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for row, hit in zip(rows, served, strict=True):
        label = "paraphrase" if row["label"] == 1 else "near-miss"
        groups[f"{label}/{row['category']}"].append(hit)
        groups[f"{label} (all)"].append(hit)
        if row.get("multi"):
            groups[f"{label} (multi-sentence)"].append(hit)
        if row["label"] == 0:
            part = "held-out" if row["category"] in HELD_OUT else "trained"
            groups[f"near-miss ({part} kinds)"].append(hit)
    return {name: [sum(hits), len(hits)] for name, hits in sorted(groups.items())}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [row for path in SETS for row in read_rows(path)]
    settings = load_settings()
    verifier = load_verifier(settings, "all-MiniLM-L6-v2")
    assert verifier is not None
    results, _ = await score(plan(rows, "pairs"), verifier)
    if args.sweep:
        return curve(rows, results)
    calibrated = verifier.calibration
    t = args.threshold or calibrated.similarity_threshold
    p = args.min_probability if args.min_probability is not None else calibrated.min_probability
    systems = {
        "cosine 0.95": [decide(r.without_verifier(), 0.95, 0.0) is not None for r in results],
        f"kallm {t:.2f}/{p:.2f}": [decide(r, t, p) is not None for r in results],
    }
    return {name: table(rows, served) for name, served in systems.items()}


SIMILARITIES = (0.80, 0.85, 0.90, 0.93)
PROBABILITIES = (0.30, 0.50, 0.70, 0.83, 0.90, 0.95, 0.98)


def curve(rows: list[dict[str, Any]], results: list[Any]) -> dict[str, Any]:
    """Paraphrases and near-misses served at each (similarity, probability) setting."""
    points = {}
    for t in SIMILARITIES:
        for p in PROBABILITIES:
            served = [decide(r, t, p) is not None for r in results]
            para = [hit for row, hit in zip(rows, served, strict=True) if row["label"] == 1]
            near = [hit for row, hit in zip(rows, served, strict=True) if row["label"] == 0]
            points[f"{t:.2f}/{p:.2f}"] = [sum(para) / len(para), sum(near) / len(near)]
    return {"curve": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--min-probability", type=float)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "apps.json")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.sweep:
        print("| similarity / pair model | paraphrases served | near-misses served |")
        print("|---|---|---|")
        for setting, (para, near) in report["curve"].items():
            print(f"| {setting} | {para:.0%} | {near:.1%} |")
        return
    names = list(report)
    print(f"| category | {' | '.join(names)} |")
    print("|---|" + "---|" * len(names))
    for group in report[names[0]]:
        cells = [f"{report[n][group][0]}/{report[n][group][1]}" for n in names]
        total = report[names[0]][group][1]
        shares = [
            f"{c} ({report[n][group][0] / total:.0%})" for c, n in zip(cells, names, strict=True)
        ]
        print(f"| {group} | {' | '.join(shares)} |")


if __name__ == "__main__":
    main()
