"""Which labelled pairs train, tune and report: the same split on every machine.

QQP is split question-disjointly (connected components of the pair graph) into train 70% /
tune 10% / validation 20%, so no validation question was ever seen in training; MRPC's train
file and eval/data/nearmiss_dev.jsonl are split into train and tune parts by a hash of the
pair. MRPC validation, eval/data/nearmiss_test.jsonl, eval/data/cache_sim.jsonl and
eval/data/apps/ are report sets only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def read(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def bucket(text: str) -> float:
    """A stable number in [0, 1) for a text."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8


def split_qqp(rows: list[Row]) -> dict[str, list[Row]]:
    """All pairs of a connected component go to one side."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for row in rows:
        parent[find(row["a"])] = find(row["b"])
    parts: dict[str, list[Row]] = {"train": [], "tune": [], "val": []}
    for row in rows:
        u = bucket(find(row["a"]))
        parts["train" if u < 0.7 else "tune" if u < 0.8 else "val"].append(row)
    return parts


def split_pairs(rows: list[Row], tune_share: float) -> dict[str, list[Row]]:
    parts: dict[str, list[Row]] = {"train": [], "tune": []}
    for row in rows:
        parts["tune" if bucket(row["a"] + row["b"]) < tune_share else "train"].append(row)
    return parts
