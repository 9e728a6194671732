"""CPU cost of one cross-encoder call per semantic candidate (tokenize + run), one thread, as
the issue's budget counts it (+15 ms p50 per semantic HIT). Also times the embedder on the
same texts for scale. Pairs: nearmiss_test and cache_sim questions plus 300 QQP validation
pairs (the typical prompt lengths kallm sees in the evaluation).

    .venv/bin/python eval/cross_encoder/latency.py --models ce6.int8 ce4.int8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from ce_infer import CrossEncoderScorer
from train_verifier import HERE, SHARED, read, split_qqp

OUT = Path(__file__).parent / "out"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["ce6.int8", "ce4.int8"])
    args = parser.parse_args()
    pairs = [(r["a"], r["b"]) for r in read(HERE / "data" / "nearmiss_test.jsonl")]
    pairs += [(r["a"], r["b"]) for r in split_qqp(read(SHARED / "qqp_dev.jsonl"))["val"][:300]]
    pairs += [
        (r["origin"], s) for r in read(HERE / "data" / "cache_sim.jsonl") for s in r["similar"][:1]
    ]
    result = {"pairs": len(pairs)}
    for model in args.models:
        path = OUT / f"{model}.onnx"
        scorer = CrossEncoderScorer(path, threads=1)
        for a, b in pairs[:20]:
            scorer.probability(a, b)
        times = []
        for a, b in pairs:
            start = time.perf_counter()
            scorer.probability(a, b)
            times.append((time.perf_counter() - start) * 1000)
        t = np.asarray(times)
        result[model] = {
            "size_mb": round(path.stat().st_size / 1e6, 1),
            "p50_ms": round(float(np.percentile(t, 50)), 2),
            "p90_ms": round(float(np.percentile(t, 90)), 2),
            "p99_ms": round(float(np.percentile(t, 99)), 2),
        }
        print(model, result[model], flush=True)
    from kallm.embedders.local import LocalEmbedder

    embedder = LocalEmbedder()
    texts = [b for _, b in pairs]
    for text in texts[:20]:
        embedder.embed_batch([text])
    times = []
    for text in texts:
        start = time.perf_counter()
        embedder.embed_batch([text])
        times.append((time.perf_counter() - start) * 1000)
    result["embedder_one_text"] = {"p50_ms": round(float(np.median(times)), 2)}
    print("embedder (as configured by kallm)", result["embedder_one_text"])
    (OUT / "latency.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
