"""The in-memory vector index: nearest rows by cosine through removals and reused rows, exact
below `EXACT_BELOW` rows, through the graph above it, scores close to float32's."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kallm.storage import vectors
from kallm.storage.vectors import VectorIndex

KEY = ("ns", "p", "m")


def units(rng: np.random.Generator, rows: int, dimensions: int) -> np.ndarray:
    found = rng.standard_normal((rows, dimensions)).astype(np.float32)
    return found / np.linalg.norm(found, axis=1, keepdims=True)


def filled(rows: np.ndarray) -> VectorIndex:
    index = VectorIndex()
    for i, vector in enumerate(rows):
        index.add(str(i), KEY, vector)
    return index


def test_search_is_exact_through_removals_and_reused_rows():
    rng = np.random.default_rng(1)
    rows = units(rng, 403, 16)
    index = filled(rows)
    for i in range(0, len(rows), 3):
        index.remove(str(i), KEY)
    live = {str(i): v for i, v in enumerate(rows) if i % 3}
    for i, vector in enumerate(units(rng, 40, 16)):  # new rows take the removed rows' places
        live[f"new{i}"] = vector
        index.add(f"new{i}", KEY, vector)
    assert len(index) == len(live)
    for probe in units(rng, 5, 16):
        found = asyncio.run(index.nearest(KEY, probe, 3))
        expected = sorted(live, key=lambda i: -float(live[i] @ probe))[:3]
        assert [i for i, _ in found] == expected
        # Scores come from float16 copies: within 1e-3 of float32's.
        assert np.allclose([s for _, s in found], [live[i] @ probe for i in expected], atol=1e-3)


def test_a_large_partition_is_searched_through_the_graph(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(vectors, "EXACT_BELOW", 100)
    rng = np.random.default_rng(2)
    # Clustered like text embeddings: points around 200 centres.
    centres = units(rng, 200, 32)
    rows = centres[rng.integers(0, 200, 5000)] + 0.3 * units(rng, 5000, 32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    index = VectorIndex()
    index.add_many(KEY, [str(i) for i in range(len(rows))], rows, threads=0)
    removed = set(range(0, len(rows), 10))
    for i in removed:
        index.remove(str(i), KEY)
    probes = rows[rng.integers(0, len(rows), 200)] + 0.1 * units(rng, 200, 32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    live = np.array([i not in removed for i in range(len(rows))])
    right = 0
    for probe in probes:
        found = asyncio.run(index.nearest(KEY, probe, 2))
        assert not {int(i) for i, _ in found} & removed
        truth = int(np.argmax(np.where(live, rows @ probe, -2)))
        right += int(found[0][0]) == truth
    assert right >= 0.97 * len(probes)


def test_an_emptied_partition_finds_nothing():
    index = VectorIndex()
    only = np.ones(4, dtype=np.float32) / 2
    index.add("0", KEY, only)
    index.remove("0", KEY)
    assert asyncio.run(index.nearest(KEY, only, 1)) == []
    assert len(index) == 0


def test_removed_rows_are_skipped_at_once_and_leave_the_graph_later(monkeypatch):
    rng = np.random.default_rng(3)
    near = units(rng, 1, 16)[0]
    index = VectorIndex()
    index.add("anchor", KEY, -near)  # keeps the partition when the rest is gone
    for i in range(60):  # sixty copies of one vector, then one close to it
        index.add(f"copy{i}", KEY, near)
    index.add("other", KEY, units(rng, 1, 16)[0] * 0.2 + near)
    (partition,) = index._partitions.values()
    with monkeypatch.context() as patched:
        patched.setattr(VectorIndex, "_purge", lambda self: None)  # no janitor: all stay dead
        for i in range(60):
            index.remove(f"copy{i}", KEY)
        index.purged()
        assert len(partition.dead) == 60 and len(partition.graph) == 62
        # The graph's nearest rows are all dead: the search looks further.
        assert [i for i, _ in asyncio.run(index.nearest(KEY, near, 1))] == ["other"]
    index.remove("other", KEY)  # the janitor runs from here
    index.purged()
    assert partition.dead == [] and len(partition.graph) == 1
    index.add("again", KEY, near)  # into a freed row
    assert len(partition.ids) == 62
    assert [i for i, _ in asyncio.run(index.nearest(KEY, near, 1))] == ["again"]
