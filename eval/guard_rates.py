"""How often each guard fires on true paraphrases and on non-paraphrases with cosine >= 0.85,
in QQP train, MRPC train and the near-miss dev set: the numbers behind the guard list in
train_verifier.py and the README.

    .venv/bin/python eval/guard_rates.py      # needs eval/embed_cache.py's output
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from train_verifier import GUARDS, HERE, SHARED, Vectors, read, split_qqp

from kallm.match.features import NAMES, features


def main() -> None:
    vectors = Vectors(Path("/tmp/kallm-emb"))
    sets = {
        "qqp_train": split_qqp(read(SHARED / "qqp_dev.jsonl"))["train"],
        "mrpc_train": read(SHARED / "mrpc_train.jsonl"),
        "nearmiss_dev": read(HERE / "data" / "nearmiss_dev.jsonl"),
    }
    for name, rows in sets.items():
        fired: dict[int, Counter[str]] = {0: Counter(), 1: Counter()}
        totals: Counter[int] = Counter()
        for row in rows:
            cosine = float(vectors(row["a"]) @ vectors(row["b"]))
            if cosine < 0.85:
                continue
            values = dict(zip(NAMES, features(row["a"], row["b"], cosine), strict=True))
            totals[row["label"]] += 1
            fired[row["label"]].update(guard for guard in GUARDS if values[guard] > 0)
        print(f"{name}: {totals[1]} paraphrases, {totals[0]} others with cosine >= 0.85")
        for guard in GUARDS:
            rates = [fired[label][guard] / max(totals[label], 1) for label in (1, 0)]
            print(f"  {guard:26} paraphrases {rates[0]:.3f}  others {rates[1]:.3f}")


if __name__ == "__main__":
    main()
