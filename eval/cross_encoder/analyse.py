"""Step 2 of the evaluation: cross-encoder probabilities for every candidate pair, then each
decision variant swept over kallm.evaluate's GRID (threshold 0.70..0.99 x probability
0.00..1.00) with kallm.evaluate.sweep (the server's `policy.choose`, exact hits first); the
setting is chosen on the tune sets only and then reported on the held-out sets.

    .venv/bin/python eval/cross_encoder/analyse.py [--models ce6.int8 ce4.int8]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from ce_infer import CrossEncoderScorer
from train_verifier import GUARDS

from kallm.evaluate import GRID, STEPS, Point, Result, Scored, sweep
from kallm.match.features import NAMES, features

OUT = Path(__file__).parent / "out"
TUNE = ("qqp_tune", "mrpc_tune", "nearmiss_tune")
HELD = ("qqp_val", "mrpc_val", "nearmiss_test", "cache_sim")
FLOOR = 0.60  # candidates below every grid threshold are never served: not scored


def candidate_pairs(data: dict) -> list[tuple[int, int, str, str, float]]:
    pairs = []
    for i, (result, asked) in enumerate(zip(data["results"], data["asked"], strict=True)):
        for j, c in enumerate(result.candidates):
            if c.similarity >= FLOOR:
                pairs.append((i, j, data["texts"][c.entry], asked, c.similarity))
    return pairs


def ce_probabilities(scored: dict, model: str) -> dict[str, dict[tuple[int, int], float]]:
    cache = OUT / f"probs_{model}.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    scorer = CrossEncoderScorer(OUT / f"{model}.onnx", threads=2)
    probs = {}
    for name, data in scored.items():
        pairs = candidate_pairs(data)
        p = scorer.probabilities([(a, b) for _, _, a, b, _ in pairs])
        probs[name] = {(i, j): float(v) for (i, j, *_), v in zip(pairs, p, strict=True)}
        print(f"  {model} {name}: {len(pairs)} candidate pairs scored", flush=True)
    cache.write_bytes(pickle.dumps(probs))
    return probs


def vetoes(scored: dict) -> dict[str, dict[tuple[int, int], bool]]:
    index = [NAMES.index(g) for g in GUARDS]
    out = {}
    for name, data in scored.items():
        out[name] = {
            (i, j): any(features(a, b, s)[k] > 0 for k in index)
            for i, j, a, b, s in candidate_pairs(data)
        }
    return out


def with_probability(
    results: list[Result], prob: Callable[[int, int, Scored], float]
) -> list[Result]:
    """Results whose candidates carry prob(i, j, candidate) (0 below FLOOR)."""
    return [
        replace(
            r,
            candidates=tuple(
                replace(c, probability=prob(i, j, c) if c.similarity >= FLOOR else 0.0)
                for j, c in enumerate(r.candidates)
            ),
        )
        for i, r in enumerate(results)
    ]


def fmt(pt: Point) -> str:
    return f"{pt.precision or 0:.3f} / {pt.recall:.3f} / {pt.false_hits}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--models",
        nargs="+",
        default=["ce6.int8", "ce4.int8", "ce6s1.int8", "ce4s1.int8", "ce6.fp32"],
    )
    parser.add_argument("--qqp-precision", type=float, default=0.90)
    parser.add_argument("--label", default="p090", help="writes out/analysis_LABEL.{md,json}")
    args = parser.parse_args()
    blob = pickle.loads((OUT / "scored.pkl").read_bytes())
    scored, (t0, p0) = blob["sets"], blob["defaults"]
    veto = vetoes(scored)
    probs = {m: ce_probabilities(scored, m) for m in args.models}

    variants: dict[str, dict[str, list[Result]]] = {}
    cosine = {n: [r.without_verifier() for r in d["results"]] for n, d in scored.items()}
    variants["kallm (guards+MLP)"] = {n: d["results"] for n, d in scored.items()}
    for m in args.models:
        tag = m.replace(".int8", "")
        if m.endswith("fp32"):  # only to measure what int8 quantization costs
            variants[f"guards+{tag}"] = {
                n: with_probability(
                    d["results"],
                    lambda i, j, c, n=n, m=m: 0.0 if veto[n][(i, j)] else probs[m][n][(i, j)],
                )
                for n, d in scored.items()
            }
            variants[f"guards+mean({tag},MLP)"] = {
                n: with_probability(
                    d["results"],
                    lambda i, j, c, n=n, m=m: (
                        0.0 if veto[n][(i, j)] else (probs[m][n][(i, j)] + (c.probability or 0)) / 2
                    ),
                )
                for n, d in scored.items()
            }
            continue
        variants[f"{tag}"] = {
            n: with_probability(d["results"], lambda i, j, c, n=n, m=m: probs[m][n][(i, j)])
            for n, d in scored.items()
        }
        variants[f"guards+{tag}"] = {
            n: with_probability(
                d["results"],
                lambda i, j, c, n=n, m=m: 0.0 if veto[n][(i, j)] else probs[m][n][(i, j)],
            )
            for n, d in scored.items()
        }
        for q in (0.3, 0.5, p0):
            variants[f"guards+{tag} AND MLP>={q:.2f}"] = {
                n: with_probability(
                    d["results"],
                    lambda i, j, c, n=n, q=q, m=m: (
                        probs[m][n][(i, j)] if (c.probability or 0) >= q else 0.0
                    ),
                )
                for n, d in scored.items()
            }
        variants[f"guards+mean({tag},MLP)"] = {
            n: with_probability(
                d["results"],
                lambda i, j, c, n=n, m=m: (
                    0.0 if veto[n][(i, j)] else (probs[m][n][(i, j)] + (c.probability or 0)) / 2
                ),
            )
            for n, d in scored.items()
        }

    # Baselines on every set (checks this pipeline against eval/report.py's numbers).
    report: dict = {"defaults": [t0, p0], "baseline": {}, "variants": {}}
    lines = [
        "## Baselines (same pipeline)",
        "",
        "| set | cosine 0.95 | kallm 0.94/0.63 |",
        "|---|---|---|",
    ]
    base = {}
    for n in TUNE + HELD:
        c = sweep(cosine[n], [(0.95, 0.0)])[0]
        k = sweep(variants["kallm (guards+MLP)"][n], [(t0, p0)])[0]
        base[n] = c
        report["baseline"][n] = {"cosine": c.as_dict(), "kallm": k.as_dict()}
        lines.append(f"| {n} | {fmt(c)} | {fmt(k)} |")
    print("\n".join(lines), flush=True)

    negatives = sum(r.correct is None for r in scored["nearmiss_tune"]["results"])
    targets = {"qqp_tune": args.qqp_precision, "mrpc_tune": 0.95}
    table = [
        "",
        "## Variants: (t, p) chosen on tune sets, reported on held-out sets",
        "",
        "| variant | t / p | qqp_val | mrpc_val | nearmiss_test | cache_sim |",
        "|---|---|---|---|---|---|",
    ]
    for name, sets in variants.items():
        grids = {n: sweep(sets[n], GRID) for n in TUNE}
        best = None
        for g, setting in enumerate(GRID):
            pts = {n: grids[n][g] for n in TUNE}
            if any((pts[n].precision or 0) < targets[n] for n in targets):
                continue
            if pts["nearmiss_tune"].false_hits > 0.02 * negatives:
                continue
            gain = min(pts[n].recall / max(base[n].recall, 1e-3) for n in TUNE)
            key = (gain, pts["nearmiss_tune"].recall, setting[0], setting[1])
            if best is None or key > best[0]:
                best = (key, setting, pts)
        if best is None:
            table.append(f"| {name} | none reaches the tune targets | | | | |")
            continue
        (gain, *_), (t, p), pts = best
        held = {n: sweep(sets[n], [(t, p)])[0] for n in HELD}
        curve = {n: sweep(sets[n], [(t, q) for q in STEPS]) for n in HELD}
        report["variants"][name] = {
            "threshold": t,
            "min_probability": p,
            "worst_tune_recall_gain": round(gain, 3),
            "tune": {n: v.as_dict() for n, v in pts.items()},
            "held_out": {n: v.as_dict() for n, v in held.items()},
            "recall_at_precision_fixed_t": {
                n: {
                    f"{x:.2f}": max(
                        [
                            pt.recall
                            for pt in curve[n]
                            if pt.precision is not None and pt.precision >= x
                        ],
                        default=None,
                    )
                    for x in (0.95, 0.90)
                }
                for n in HELD
            },
        }
        table.append(
            f"| {name} | {t:.2f} / {p:.2f} | " + " | ".join(fmt(held[n]) for n in HELD) + " |"
        )
        print(table[-1], "   tune:", {n: fmt(v) for n, v in pts.items()}, flush=True)
    (OUT / f"analysis_{args.label}.json").write_text(json.dumps(report, indent=1))
    (OUT / f"analysis_{args.label}.md").write_text("\n".join(lines + table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
