"""The in-memory vector index: nearest rows by cosine, exact through growth and removals."""

from __future__ import annotations

import asyncio

import numpy as np

from kallm.storage.base import Entry
from kallm.storage.vectors import FIRST_BLOCK, VectorIndex

KEY = ("ns", "p", "m")


def entry(i: int, vector: np.ndarray) -> Entry:
    return Entry(str(i), "ns", "p", f"x{i}", "t", vector, "m", "m", {}, 0.0, 1.0)


def test_search_is_exact_across_blocks_and_removals():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((FIRST_BLOCK * 20 + 3, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex()
    entries = [entry(i, v) for i, v in enumerate(vectors)]
    for e in entries:
        index.add(e.id, KEY, e.vector)
    for e in entries[::3]:  # removals move rows between blocks
        index.remove(e.id, KEY)
    live = [e for i, e in enumerate(entries) if i % 3]
    for probe in rng.standard_normal((5, 16)).astype(np.float32):
        probe /= np.linalg.norm(probe)
        found = asyncio.run(index.nearest(KEY, probe, 3))
        expected = sorted(live, key=lambda e: -float(e.vector @ probe))[:3]
        assert [i for i, _ in found] == [e.id for e in expected]
        assert np.allclose([s for _, s in found], [float(e.vector @ probe) for e in expected])


def test_an_emptied_partition_finds_nothing():
    index = VectorIndex()
    only = entry(0, np.ones(4, dtype=np.float32) / 2)
    index.add(only.id, KEY, only.vector)
    index.remove(only.id, KEY)
    assert asyncio.run(index.nearest(KEY, only.vector, 1)) == []
