"""Vectors kept in memory, one growable matrix per namespace, partition and embedding model.

Stores that persist entries elsewhere (SQLite) still search here: a matrix product over a
partition takes well under a millisecond, a scan of rows on disk would not.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from kallm.storage.base import Entry, Vector

Key = tuple[str, str, str]  # namespace, partition, embedding model


class _PartitionIndex:
    """Vectors of one partition in a growable matrix; removal swaps the last row in."""

    def __init__(self, dimensions: int) -> None:
        self.matrix = np.empty((8, dimensions), dtype=np.float32)
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}

    def add(self, entry_id: str, vector: Vector) -> None:
        if len(self.ids) == len(self.matrix):
            self.matrix = np.concatenate([self.matrix, np.empty_like(self.matrix)])
        self.rows[entry_id] = len(self.ids)
        self.matrix[len(self.ids)] = vector
        self.ids.append(entry_id)

    def remove(self, entry_id: str) -> None:
        row = self.rows.pop(entry_id)
        last_id = self.ids.pop()
        if last_id != entry_id:
            self.matrix[row] = self.matrix[len(self.ids)]
            self.ids[row] = last_id
            self.rows[last_id] = row

    def nearest(self, vector: Vector, limit: int) -> list[tuple[str, float]]:
        scores = self.matrix[: len(self.ids)] @ vector
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

    def add(self, entry: Entry) -> None:
        if entry.vector is None:
            return
        key = (entry.namespace, entry.partition, entry.embedding_model)
        with self._lock:
            if key not in self._partitions:
                self._partitions[key] = _PartitionIndex(len(entry.vector))
            self._partitions[key].add(entry.id, entry.vector)

    def remove(self, entry: Entry) -> None:
        key = (entry.namespace, entry.partition, entry.embedding_model)
        with self._lock:
            index = self._partitions.get(key)
            if index is not None and entry.id in index.rows:
                index.remove(entry.id)
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
