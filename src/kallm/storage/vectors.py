"""Vectors kept in memory, one index per namespace, partition and embedding model.

Each partition is a usearch HNSW graph over int8 copies of its vectors, beside float16
copies. The graph finds candidates: a small partition is searched exhaustively, so its
nearest vector is always among them; a large one is walked through the graph, which stays
under a millisecond at a million rows where a matrix product takes 60 ms. int8 is what makes
the graph quick to search and to build (27,000 rows a second against 10,000 for float16,
bench/scale.py), but its scores are off by up to 0.06: the candidates are re-scored from the
float16 copies, within 1e-4 of the float32 vectors' (5e-4 at worst).
Stores that read candidates back with their float32 vectors (SQLite, Redis) score those.

Stores that persist entries elsewhere still search here: a scan of rows on disk or over the
network would be far slower.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from usearch.index import Index

from kallm.storage.base import Entry, Hit, Search, Vector

Key = tuple[str, str, str]  # namespace, partition, embedding model
# Below this many rows an exhaustive search costs no more than a millisecond, and it
# cannot miss.
EXACT_BELOW = 20_000
CONNECTIVITY = 16  # graph edges per node: recall against memory
EXPANSION_ADD = 64  # candidates weighed when a node is linked in
EXPANSION_SEARCH = 256  # candidates a search keeps: recall@1 against latency
EXTRA = 16  # candidates beyond those asked for, re-scored, so int8 noise cannot drop the best
FIRST_BLOCK = 1024  # rows of a partition's first block of float16 copies
PURGE_BATCH = 4  # dead rows taken out of a graph under one hold of the lock


def hits(found: list[tuple[str, float]], entries: Mapping[str, Entry], query: Search) -> list[Hit]:
    """The live entries among those `found`, best first, scored from the float32 vectors they
    were read back with (the index scores its float16 copies)."""
    scored = [
        Hit(entry, score if entry.vector is None else min(float(entry.vector @ query.vector), 1.0))
        for entry_id, score in found
        if (entry := entries.get(entry_id)) is not None and entry.expires > query.now
    ]
    return sorted(scored, key=lambda hit: -hit.similarity)


def index_key(entry: Entry) -> Key:
    """Where an entry's vector is searched: its namespace, partition and embedding model."""
    return (entry.namespace, entry.partition, entry.embedding_model)


class _Copies:
    """The float16 copies, by row, in blocks: capacity doubles by adding a block as large
    as all the others, never by copying them (a copy of a 100,000-row matrix stalled the
    event loop for 150 ms)."""

    def __init__(self, first: npt.NDArray[np.float16]) -> None:
        self.blocks = [first]
        self.starts = [0]  # the first row of each block
        self.capacity = len(first)

    def _at(self, row: int) -> tuple[npt.NDArray[np.float16], int]:
        block = bisect.bisect_right(self.starts, row) - 1
        return self.blocks[block], row - self.starts[block]

    def put(self, row: int, vector: Vector) -> None:
        while row >= self.capacity:
            self.blocks.append(np.empty((self.capacity, self.blocks[0].shape[1]), np.float16))
            self.starts.append(self.capacity)
            self.capacity *= 2
        block, offset = self._at(row)
        block[offset] = vector

    def get(self, rows: Sequence[int]) -> Vector:
        found = np.empty((len(rows), self.blocks[0].shape[1]), dtype=np.float32)
        for i, row in enumerate(rows):
            block, offset = self._at(row)
            found[i] = block[offset]
        return found

    def first(self, count: int) -> npt.NDArray[np.float16]:
        """Rows 0 to `count` as one array."""
        return np.concatenate(self.blocks)[:count]


class _PartitionIndex:
    """The vectors of one partition. The graph knows rows by number: `ids` maps a row back to
    its entry id. A removed entry's row is dead at once (searches skip it) and leaves the
    graph later (`purge`: a removal from the graph costs 1.6 ms at 300,000 rows, too long for
    the event loop); its number then goes to the next vector added, so the list and the
    copies stay as long as the partition's peak, however many entries come and go."""

    def __init__(self, dimensions: int) -> None:
        self.graph = Index(
            ndim=dimensions,
            metric="ip",  # the embedders' vectors have unit length: inner product is cosine
            dtype="i8",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        self.copies = _Copies(np.empty((FIRST_BLOCK, dimensions), dtype=np.float16))
        self.ids: list[str | None] = []
        self.rows: dict[str, int] = {}
        self.dead: list[int] = []  # rows of removed entries, still in the graph
        self._free: list[int] = []  # rows out of the graph, for the next vectors

    def save(self, folder: Path, name: str) -> None:
        self.purge(len(self.dead), threads=0)  # then every row without an id is free
        self.graph.save(str(folder / f"{name}.usearch"))
        np.save(folder / f"{name}.npy", self.copies.first(len(self.ids)))
        (folder / f"{name}.json").write_text(json.dumps(self.ids))

    @classmethod
    def load(cls, folder: Path, name: str) -> _PartitionIndex:
        copies = np.load(folder / f"{name}.npy")
        index = cls(copies.shape[1])
        index.graph.load(str(folder / f"{name}.usearch"))
        index.copies = _Copies(copies)
        index.ids = json.loads((folder / f"{name}.json").read_text())
        index.rows = {entry_id: row for row, entry_id in enumerate(index.ids) if entry_id}
        index._free = [row for row, entry_id in enumerate(index.ids) if entry_id is None]
        return index

    def add(self, entry_ids: Sequence[str], vectors: Vector, threads: int = 1) -> None:
        new = [i for i, entry_id in enumerate(entry_ids) if entry_id not in self.rows]
        if len(new) < len(entry_ids):  # a store loading its vectors may see a row twice
            entry_ids, vectors = [entry_ids[i] for i in new], vectors[new]
        rows = []
        for entry_id, vector in zip(entry_ids, vectors, strict=True):
            if self._free:
                row = self._free.pop()
                self.ids[row] = entry_id
            else:
                row = len(self.ids)
                self.ids.append(entry_id)
            self.rows[entry_id] = row
            self.copies.put(row, vector)
            rows.append(row)
        if rows:
            self.graph.add(np.array(rows, dtype=np.uint64), vectors, threads=threads)

    def remove(self, entry_id: str) -> None:
        row = self.rows.pop(entry_id)
        self.ids[row] = None
        self.dead.append(row)

    def purge(self, most: int, threads: int = 1) -> None:
        """Take up to `most` dead rows out of the graph."""
        rows, self.dead = self.dead[:most], self.dead[most:]
        if rows:
            self.graph.remove(np.array(rows, dtype=np.uint64), threads=threads)
            self._free.extend(rows)

    def nearest(self, vector: Vector, limit: int) -> list[tuple[str, float]]:
        if not self.rows:  # emptied by a removal since the search found this partition
            return []
        size, wanted = len(self.graph), limit + EXTRA  # the graph holds dead rows too
        while True:
            found = self.graph.search(
                vector, min(size, wanted), exact=size < EXACT_BELOW, threads=1
            )
            live = [(int(row), entry_id) for row in found.keys if (entry_id := self.ids[row])]
            if len(live) >= min(limit, len(self.rows)) or wanted >= size:
                break
            wanted *= 4  # dead rows took the places: look further
        # Rounding to float16 moves a score by up to 5e-4, so two unit vectors alike may
        # score just over 1: a similarity is never more.
        scores = self.copies.get([row for row, _ in live]) @ vector.astype(np.float32)
        scores = np.minimum(scores, 1.0)
        best = np.argsort(-scores, kind="stable")[:limit]
        return [(live[i][1], float(scores[i])) for i in best]

    def vector(self, entry_id: str) -> Vector | None:
        row = self.rows.get(entry_id)
        return None if row is None else self.copies.get([row])[0]


class VectorIndex:
    def __init__(self) -> None:
        self._partitions: dict[Key, _PartitionIndex] = {}
        # Searches run in a worker thread so the event loop never waits on the graph; the
        # lock keeps them from seeing it halfway through a write (usearch may reallocate).
        self._lock = threading.Lock()
        self._janitor: threading.Thread | None = None  # takes dead rows out of the graphs

    def add(self, entry_id: str, key: Key, vector: Vector | None) -> None:
        if vector is not None:
            self.add_many(key, [entry_id], vector[None, :])

    def add_many(
        self, key: Key, entry_ids: Sequence[str], vectors: Vector, threads: int = 1
    ) -> None:
        """Add rows of `vectors` under `entry_ids`. Loading a store passes `threads=0` (every
        core) from a worker thread, where building the graph cannot hold up requests."""
        if not entry_ids:
            return
        with self._lock:
            if key not in self._partitions:
                self._partitions[key] = _PartitionIndex(vectors.shape[1])
            self._partitions[key].add(entry_ids, vectors, threads)

    def add_all(self, items: Iterable[tuple[Key, str, Vector]], threads: int = 0) -> None:
        """Add (partition, entry id, vector) items, one graph call per partition; on every
        core by default, for loading a store from a worker thread."""
        grouped: dict[Key, tuple[list[str], list[Vector]]] = {}
        for key, entry_id, vector in items:
            ids, vectors = grouped.setdefault(key, ([], []))
            ids.append(entry_id)
            vectors.append(vector)
        for key, (ids, vectors) in grouped.items():
            self.add_many(key, ids, np.stack(vectors), threads)

    def remove(self, entry_id: str, key: Key) -> None:
        with self._lock:
            index = self._partitions.get(key)
            if index is not None and entry_id in index.rows:
                index.remove(entry_id)
                if not index.rows:
                    del self._partitions[key]
                elif self._janitor is None or not self._janitor.is_alive():
                    self._janitor = threading.Thread(
                        target=self._purge, name="kallm-index-purge", daemon=True
                    )
                    self._janitor.start()

    def _purge(self) -> None:
        """Take dead rows out of the graphs, a few at a time, so a search waits on the lock
        for a few milliseconds at most; then end (the next removal starts another)."""
        while True:
            with self._lock:
                dead = next((i for i in self._partitions.values() if i.dead), None)
                if dead is None:
                    return
                dead.purge(PURGE_BATCH)

    def purged(self) -> None:
        """Wait until the dead rows removed so far are out of the graphs (for tests)."""
        janitor = self._janitor
        if janitor is not None:
            janitor.join()

    def vector(self, entry_id: str, key: Key) -> Vector | None:
        """The float16 copy of an entry's vector, as float32."""
        with self._lock:
            index = self._partitions.get(key)
            return None if index is None else index.vector(entry_id)

    def save(self, folder: Path) -> None:
        """Write the index to `folder` (emptied first), for `load` after a restart: reading
        a million vectors back takes seconds, building their graph two minutes."""
        with self._lock:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            keys = list(self._partitions)
            for number, key in enumerate(keys):
                self._partitions[key].save(folder, str(number))
            (folder / "partitions.json").write_text(json.dumps(keys))

    @classmethod
    def load(cls, folder: Path) -> VectorIndex:
        index = cls()
        keys = json.loads((folder / "partitions.json").read_text())
        for number, key in enumerate(keys):
            index._partitions[tuple(key)] = _PartitionIndex.load(folder, str(number))
        return index

    def absorb(self, other: VectorIndex) -> None:
        """Add every vector of `other` (from its float16 copies)."""
        for key, index in list(other._partitions.items()):
            live = [(row, entry_id) for row, entry_id in enumerate(index.ids) if entry_id]
            self.add_many(key, [i for _, i in live], index.copies.get([r for r, _ in live]))

    def __len__(self) -> int:
        return sum(len(index.rows) for index in self._partitions.values())

    async def nearest(self, key: Key, vector: Vector, limit: int) -> list[tuple[str, float]]:
        index = self._partitions.get(key)
        if index is None:
            return []

        def search() -> list[tuple[str, float]]:
            with self._lock:
                return index.nearest(vector, limit)

        return await asyncio.to_thread(search)
