"""Choose the pair model's guards and default thresholds on tune data, and write them into
its spec (OUT/pair_model.json) beside OUT/pair_model.onnx.

Tune sets, none of them trained on and none a report set: QQP's question-disjoint tune part
(10%), MRPC's 15% tune part, eval/data/nearmiss_dev.jsonl's 50% tune part, and pairgen edits
of the QQP tune questions (seeds training never saw). Every pair goes through the server's
path (`kallm.cli.evaluate.plan` + `score`: canonical text, embedder, store, matcher, verifier).

A setting (guards, similarity threshold t, model threshold p) qualifies when it keeps
precision at least 0.91 on QQP tune and 0.96 on MRPC tune and serves at most 1.5% of the
near-misses of each near-miss set; among those, the one with the highest mean recall wins.
Guards are added one at a time while one raises that mean: a guard stays only where it
measurably adds. Run with kallm's .venv:

    .venv/bin/python training/calibrate.py --model training/out [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).parent)]
import pairgen  # noqa: E402
from splits import read, split_pairs, split_qqp  # noqa: E402

from kallm.cli.evaluate import Result, plan, score  # noqa: E402
from kallm.embedders.local import NAME as EMBEDDING_MODEL  # noqa: E402
from kallm.match.canonical import canonical  # noqa: E402
from kallm.match.features import GUARDS, guards  # noqa: E402
from kallm.match.pair_model import PairModel  # noqa: E402
from kallm.match.pair_text import WINDOW  # noqa: E402
from kallm.match.verifier import Verifier  # noqa: E402

THRESHOLDS = [round(0.50 + i / 100, 2) for i in range(50)]  # 0.50 .. 0.99
PROBABILITIES = [round(i / 100, 2) for i in range(101)]
PRECISION = {"qqp_tune": 0.91, "mrpc_tune": 0.96}
NEAR_MISS_SHARE = 0.015
TUNE_EDITS_PER_KIND = 40


def tune_sets(shared: Path) -> dict[str, list[dict[str, Any]]]:
    qqp = split_qqp(read(shared / "qqp_dev.jsonl"))["tune"]
    seeds = sorted({text for row in qqp for text in (row["a"], row["b"])})
    return {
        "qqp_tune": qqp,
        "mrpc_tune": split_pairs(read(shared / "mrpc_train.jsonl"), 0.15)["tune"],
        "nearmiss_tune": split_pairs(read(ROOT / "eval" / "data" / "nearmiss_dev.jsonl"), 0.5)[
            "tune"
        ],
        "edits_tune": pairgen.generate(seeds, random.Random(1), TUNE_EDITS_PER_KIND),
    }


def guard_flags(rows: list[dict[str, Any]]) -> list[frozenset[str]]:
    """Which guards (features.GUARDS) fire on each pair, on the canonical texts the server
    compares; calibration keeps those that help."""
    return [guards(canonical(row["a"]), canonical(row["b"])) for row in rows]


@dataclass(frozen=True)
class Scores:
    """One tune set in the pairs protocol (each asked prompt has one candidate: its pair's
    cached prompt), as arrays: served at (t, p) = exact or (similarity >= t and p_model >= p)."""

    positive: np.ndarray
    exact: np.ndarray
    similarity: np.ndarray
    probability: np.ndarray
    flags: list[frozenset[str]]

    @classmethod
    def of(cls, results: list[Result], flags: list[frozenset[str]]) -> Scores:
        first = [r.candidates[0] if r.candidates else None for r in results]
        return cls(
            positive=np.array([r.correct is not None for r in results]),
            exact=np.array([r.exact is not None for r in results]),
            similarity=np.array([c.similarity if c else -1.0 for c in first]),
            probability=np.array([(c.probability or 0.0) if c else 0.0 for c in first]),
            flags=flags,
        )

    def counts(self, guards: set[str]) -> tuple[np.ndarray, np.ndarray]:
        """Hits and correct hits for every (t, p) of the grid, as [t, p] arrays."""
        vetoed = np.array([bool(f & guards) for f in self.flags])
        probability = np.where(vetoed, 0.0, self.probability)
        t = np.asarray(THRESHOLDS)[:, None, None]
        p = np.asarray(PROBABILITIES)[None, :, None]
        served = self.exact | ((self.similarity >= t) & (probability >= p))
        return served.sum(axis=2), (served & self.positive).sum(axis=2)


def best_setting(scored: dict[str, Scores], guards: set[str]) -> dict[str, Any] | None:
    ok = np.ones((len(THRESHOLDS), len(PROBABILITIES)), dtype=bool)
    recalls = []
    stats = {}
    for name, scores in scored.items():
        hits, correct = scores.counts(guards)
        positives, negatives = int(scores.positive.sum()), int((~scores.positive).sum())
        precision = np.where(hits > 0, correct / np.maximum(hits, 1), 0.0)
        if name in PRECISION:
            ok &= precision >= PRECISION[name]
        else:
            ok &= hits - correct <= NEAR_MISS_SHARE * negatives
        recalls.append(correct / max(1, positives))
        stats[name] = (hits, correct, positives)
    mean = np.where(ok, np.mean(recalls, axis=0), -1.0)
    i, j = np.unravel_index(int(np.argmax(mean)), mean.shape)
    if mean[i, j] < 0:
        return None
    tune = {
        name: {
            "precision": round(float(c[i, j] / max(1, h[i, j])), 4),
            "recall": round(float(c[i, j] / max(1, n)), 4),
            "false_hits": int(h[i, j] - c[i, j]),
        }
        for name, (h, c, n) in stats.items()
    }
    return {
        "similarity_threshold": THRESHOLDS[i],
        "min_probability": PROBABILITIES[j],
        "mean_recall": float(mean[i, j]),
        "tune": tune,
    }


async def run(folder: Path, shared: Path) -> dict[str, Any]:
    spec = json.loads((folder / "pair_model.json").read_text())
    bare = {**spec, "guards": []}
    verifier = Verifier(PairModel((folder / "pair_model.onnx").read_bytes(), bare))
    scored: dict[str, Scores] = {}
    for name, rows in tune_sets(shared).items():
        results, _ = await score(plan(rows, "pairs"), verifier)
        scored[name] = Scores.of(results, guard_flags(rows))
        print(f"scored {name}: {len(rows)} pairs", file=sys.stderr, flush=True)
    kept: set[str] = set()
    current = best_setting(scored, kept)
    while True:
        trials = {g: best_setting(scored, kept | {g}) for g in GUARDS if g not in kept}
        better = {
            g: s
            for g, s in trials.items()
            if s is not None
            and (current is None or s["mean_recall"] > current["mean_recall"] + 0.002)
        }
        if not better:
            break
        guard = max(better, key=lambda g: better[g]["mean_recall"])
        kept.add(guard)
        current = better[guard]
        print(f"guard {guard}: mean recall {current['mean_recall']:.3f}", file=sys.stderr)
    if current is None:
        raise SystemExit("no setting reaches the tune targets")
    return {
        **spec,
        "guards": sorted(kept),
        "defaults": {
            "similarity_threshold": current["similarity_threshold"],
            "min_probability": current["min_probability"],
        },
        "calibration": {"mean_recall": round(current["mean_recall"], 4), "tune": current["tune"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    path = args.model / "pair_model.json"
    if not path.exists():
        path.write_text(json.dumps(draft_spec()) + "\n")
    spec = asyncio.run(run(args.model, args.shared))
    path.write_text(json.dumps(spec, indent=1) + "\n")
    print(json.dumps({k: spec[k] for k in ("guards", "defaults", "calibration")}, indent=1))


def draft_spec() -> dict[str, Any]:
    """The spec before calibration: what the model reads, no guards, neutral defaults."""
    return {
        "embedding_model": EMBEDDING_MODEL,
        "window": WINDOW,
        "guards": [],
        "defaults": {"similarity_threshold": 0.8, "min_probability": 0.5},
    }


if __name__ == "__main__":
    main()
