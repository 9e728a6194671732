"""Step 1 of the evaluation: run kallm's own scoring path (kallm.evaluate.plan + score: the
LocalEmbedder, MemoryStore, Matcher with the current MLP verifier, exact lookup) over the tune
and held-out sets once, and keep each asked prompt's candidates with their texts, so the
cross-encoder variants can then be decided by kallm.evaluate.sweep exactly as `kallm eval` does.

Tune sets (never trained on by the cross-encoder or the MLP): QQP tune part, MRPC train's 15%
tune part, nearmiss_dev's 50% tune part (train_verifier.py's splits).
Held-out sets (reported): QQP validation, MRPC validation, nearmiss_test, cache_sim.

    .venv/bin/python eval/cross_encoder/score_sets.py     # ~10 minutes -> out/scored.pkl
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from train_verifier import HERE, SHARED, read, split_pairs, split_qqp

from kallm.evaluate import _need_verifier, detect_kind, plan, score

OUT = Path(__file__).parent / "out"


def sets() -> dict[str, list[dict]]:
    qqp = split_qqp(read(SHARED / "qqp_dev.jsonl"))
    return {
        "qqp_tune": qqp["tune"],
        "mrpc_tune": split_pairs(read(SHARED / "mrpc_train.jsonl"), tune_share=0.15)["tune"],
        "nearmiss_tune": split_pairs(read(HERE / "data" / "nearmiss_dev.jsonl"), tune_share=0.5)[
            "tune"
        ],
        "qqp_val": qqp["val"],
        "mrpc_val": read(SHARED / "mrpc_val.jsonl"),
        "nearmiss_test": read(HERE / "data" / "nearmiss_test.jsonl"),
        "cache_sim": read(HERE / "data" / "cache_sim.jsonl"),
    }


def main() -> None:
    verifier, decision = _need_verifier()
    print("current defaults:", decision.threshold, decision.min_probability, flush=True)
    scored = {}
    for name, rows in sets().items():
        job = plan(rows, detect_kind(rows[0]))
        results, too_long = asyncio.run(score(job, verifier))
        texts = {entry_id: text for _, entry_id, text in job.cached}
        asked = [a.text for a in job.asks]
        scored[name] = {
            "kind": job.kind,
            "results": results,
            "texts": texts,
            "asked": asked,
            "too_long": too_long,
        }
        print(name, job.kind, len(results), "asked,", too_long, "too long", flush=True)
    OUT.mkdir(exist_ok=True)
    with open(OUT / "scored.pkl", "wb") as f:
        pickle.dump({"defaults": (decision.threshold, decision.min_probability), "sets": scored}, f)


if __name__ == "__main__":
    main()
