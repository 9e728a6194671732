"""Embed every text of the shared data sets once, for training and evaluation scripts.

Writes DIR/texts.json (the texts, in order) and DIR/vectors.npy (one row per text).
Usage: .venv/bin/python eval/embed_cache.py [--data ../shared/data] [--out /tmp/kallm-emb]
(about 12 minutes for the 118,000 texts of the shared sets and eval/data/).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from kallm.embedders.local import LocalEmbedder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("/tmp/kallm-emb"))
    args = parser.parse_args()
    texts: dict[str, None] = {}
    own = sorted((Path(__file__).parent / "data").glob("*.jsonl"))
    for path in [*sorted(args.data.glob("*.jsonl")), *own]:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            for value in row.values():
                for text in value if isinstance(value, list) else [value]:
                    if isinstance(text, str):
                        texts.setdefault(text)
    ordered = sorted(texts, key=len)  # similar lengths batch with little padding
    embedder = LocalEmbedder()
    started = time.time()
    rows = [embedder.embed_batch(ordered[i : i + 64]) for i in range(0, len(ordered), 64)]
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "vectors.npy", np.concatenate(rows))
    (args.out / "texts.json").write_text(json.dumps(ordered))
    print(f"{len(ordered)} texts in {time.time() - started:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
