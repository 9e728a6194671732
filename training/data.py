"""The pair model's training rows: real labelled pairs (train parts only) and generated edits.

Sources, never a tune or validation part, nor anything under eval/data/apps/:
- QQP: the question-disjoint train part (70%, splits.py), down-sampled so that Quora's
  strict labels (many plain rewordings marked "different") do not dominate;
- MRPC: the 85% train part of mrpc_train.jsonl;
- eval/data/nearmiss_dev.jsonl: its 50% train part, repeated;
- pairgen.py: answer-changing and answer-preserving edits of seed prompts, `per_kind` of
  each kind.

Every text goes in canonical form, as the server compares it (kallm.match.canonical).

    .venv/bin/python training/data.py --out training/out/train.jsonl [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(Path(__file__).parent)]
import pairgen  # noqa: E402
from splits import read, split_pairs, split_qqp  # noqa: E402

from kallm.match.canonical import canonical  # noqa: E402

QQP_ROWS = 30_000
NEARMISS_REPEAT = 3


def build(shared: Path, per_kind: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    qqp = split_qqp(read(shared / "qqp_dev.jsonl"))["train"]
    rng.shuffle(qqp)
    mrpc = split_pairs(read(shared / "mrpc_train.jsonl"), tune_share=0.15)["train"]
    nearmiss = split_pairs(read(ROOT / "eval" / "data" / "nearmiss_dev.jsonl"), 0.5)["train"]
    rows = [{**r, "kind": "qqp"} for r in qqp[:QQP_ROWS]]
    rows += [{**r, "kind": "mrpc"} for r in mrpc]
    rows += [{**r, "kind": "nearmiss_dev"} for r in nearmiss * NEARMISS_REPEAT]
    seeds = sorted({text for r in qqp + mrpc for text in (r["a"], r["b"])})
    rows += pairgen.generate(seeds, rng, per_kind)
    rng.shuffle(rows)
    return [
        {
            "a": canonical(r["a"]),
            "b": canonical(r["b"]),
            "label": int(r["label"]),
            "kind": r["kind"],
        }
        for r in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "train.jsonl")
    parser.add_argument("--per-kind", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = build(args.shared, args.per_kind, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    counts = Counter((r["kind"], r["label"]) for r in rows)
    for (kind, label), n in sorted(counts.items()):
        print(f"{kind:32} {label} {n:6}")
    print(f"{len(rows)} rows, {sum(r['label'] for r in rows)} positive -> {args.out}")


if __name__ == "__main__":
    main()
