"""What limits near-miss recall: the best any (t, p) of the grid could do on nearmiss_test with
at most 3 false hits (2% of 179), chosen ON THE TEST SET - an upper bound, not a result.

    .venv/bin/python eval/cross_encoder/oracle.py
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from analyse import OUT, vetoes, with_probability

from kallm.evaluate import GRID, sweep


def main() -> None:
    blob = pickle.loads((OUT / "scored.pkl").read_bytes())
    d = blob["sets"]["nearmiss_test"]
    veto = vetoes({"nearmiss_test": d})["nearmiss_test"]
    variants = {
        "cosine only": [r.without_verifier() for r in d["results"]],
        "guards+MLP (kallm)": d["results"],
    }
    variants["guards only"] = with_probability(
        d["results"], lambda i, j, c: 0.0 if veto[(i, j)] else 1.0
    )
    for m in ("ce6.int8", "ce4.int8", "ce6s1.int8", "ce4s1.int8"):
        pr = pickle.loads((OUT / f"probs_{m}.pkl").read_bytes())["nearmiss_test"]
        variants[f"guards+{m}"] = with_probability(
            d["results"], lambda i, j, c, pr=pr: 0.0 if veto[(i, j)] else pr[(i, j)]
        )
        variants[f"guards+mean({m},MLP)"] = with_probability(
            d["results"],
            lambda i, j, c, pr=pr: 0.0 if veto[(i, j)] else (pr[(i, j)] + (c.probability or 0)) / 2,
        )
    print(
        "| variant | best recall with <= 3 false hits (t / p) | best recall with <= 6 |\n"
        "|---|---|---|"
    )
    for name, results in variants.items():
        grid = GRID if name != "cosine only" else [(round(t / 100, 2), 0.0) for t in range(70, 101)]
        pts = sweep(results, grid)
        row = []
        for cap in (3, 6):
            ok = [pt for pt in pts if pt.false_hits <= cap]
            if not ok:
                row.append("none")
                continue
            b = max(ok, key=lambda pt: (pt.recall, pt.threshold))
            row.append(
                f"{b.recall:.3f} ({b.threshold:.2f} / {b.min_probability:.2f}, "
                f"{b.false_hits} false)"
            )
        print(f"| {name} | {row[0]} | {row[1]} |")


if __name__ == "__main__":
    main()
