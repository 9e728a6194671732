"""Vectors kept in memory, one growable matrix per namespace, partition and embedding model.

Stores that persist entries elsewhere (SQLite) still search here: a matrix product over a
partition takes well under a millisecond, a scan of rows on disk would not.
"""

from __future__ import annotations

import asyncio
import bisect
import threading

import numpy as np

from kallm.storage.base import Entry, Vector

Key = tuple[str, str, str]  # namespace, partition, embedding model
FIRST_BLOCK = 8  # rows of a partition's first block


def index_key(entry: Entry) -> Key:
    """Where an entry's vector is searched: its namespace, partition and embedding model."""
    return (entry.namespace, entry.partition, entry.embedding_model)


class _PartitionIndex:
    """Vectors of one partition in blocks of rows; removal moves the last row in.

    Capacity doubles by adding a block as large as all the others, never by copying them:
    growing stays as cheap as one allocation however many vectors the partition holds (a
    copy of a 100,000-row matrix stalled the event loop for 150 ms). A search multiplies
    each block, about 17 of them at a million rows."""

    def __init__(self, dimensions: int) -> None:
        self.blocks = [np.empty((FIRST_BLOCK, dimensions), dtype=np.float32)]
        self.starts = [0]  # the first row of each block
        self.capacity = FIRST_BLOCK
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}

    def _at(self, row: int) -> tuple[Vector, int]:
        block = bisect.bisect_right(self.starts, row) - 1
        return self.blocks[block], row - self.starts[block]

    def add(self, entry_id: str, vector: Vector) -> None:
        if len(self.ids) == self.capacity:
            self.blocks.append(np.empty((self.capacity, self.blocks[0].shape[1]), np.float32))
            self.starts.append(self.capacity)
            self.capacity *= 2
        block, offset = self._at(len(self.ids))
        block[offset] = vector
        self.rows[entry_id] = len(self.ids)
        self.ids.append(entry_id)

    def remove(self, entry_id: str) -> None:
        row = self.rows.pop(entry_id)
        last_id = self.ids.pop()
        if last_id != entry_id:
            (to, at), (source, where) = self._at(row), self._at(len(self.ids))
            to[at] = source[where]
            self.ids[row] = last_id
            self.rows[last_id] = row

    def nearest(self, vector: Vector, limit: int) -> list[tuple[str, float]]:
        count = len(self.ids)
        if count == 0:  # emptied by a removal since the search found this partition
            return []
        # Rows past `count` hold nothing yet: only the filled part of a block is read.
        filled = [
            block[: count - start]
            for block, start in zip(self.blocks, self.starts, strict=True)
            if start < count
        ]
        scores = np.concatenate([block @ vector for block in filled])
        if limit < len(scores):  # a partial sort: only the best `limit` rows matter
            top = np.argpartition(-scores, limit - 1)[:limit]
        else:
            top = np.arange(len(scores))
        best = top[np.argsort(-scores[top])]
        return [(self.ids[row], float(scores[row])) for row in best]


class VectorIndex:
    def __init__(self) -> None:
        self._partitions: dict[Key, _PartitionIndex] = {}
        # Searches run in a worker thread so the event loop never waits on numpy; the lock
        # keeps them from seeing a matrix halfway through a write.
        self._lock = threading.Lock()

    def add(self, entry_id: str, key: Key, vector: Vector | None) -> None:
        if vector is None:
            return
        with self._lock:
            if key not in self._partitions:
                self._partitions[key] = _PartitionIndex(len(vector))
            self._partitions[key].add(entry_id, vector)

    def remove(self, entry_id: str, key: Key) -> None:
        with self._lock:
            index = self._partitions.get(key)
            if index is not None and entry_id in index.rows:
                index.remove(entry_id)
                if not index.ids:
                    del self._partitions[key]

    async def nearest(self, key: Key, vector: Vector, limit: int) -> list[tuple[str, float]]:
        index = self._partitions.get(key)
        if index is None:
            return []

        def search() -> list[tuple[str, float]]:
            with self._lock:
                return index.nearest(vector, limit)

        return await asyncio.to_thread(search)
