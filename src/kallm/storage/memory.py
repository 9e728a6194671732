"""The embedded default store: a dict with LRU order and TTL, plus one vector matrix per
namespace and partition. Lives and dies with the process."""

from __future__ import annotations

import asyncio
import heapq
import threading
from collections import OrderedDict

import numpy as np

from kallm.storage.base import Entry, Hit, Vector


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


class MemoryStore:
    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._exact: dict[tuple[str, str], str] = {}
        self._indexes: dict[tuple[str, str, str], _PartitionIndex] = {}
        self._expiry: list[tuple[float, str]] = []
        # Searches run in a worker thread so the event loop never waits on numpy; the lock
        # keeps them from seeing a matrix halfway through a write.
        self._lock = threading.Lock()

    async def get_exact(self, namespace: str, exact: str, now: float) -> Entry | None:
        entry_id = self._exact.get((namespace, exact))
        return self._live(entry_id, now) if entry_id else None

    async def search(
        self,
        namespace: str,
        partition: str,
        vector: Vector,
        embedding_model: str,
        limit: int,
        now: float,
    ) -> list[Hit]:
        index = self._indexes.get((namespace, partition, embedding_model))
        if index is None:
            return []

        def nearest() -> list[tuple[str, float]]:
            with self._lock:
                return index.nearest(vector, limit)

        found = await asyncio.to_thread(nearest)
        return [
            Hit(entry, score) for entry_id, score in found if (entry := self._live(entry_id, now))
        ]

    async def put(self, entry: Entry) -> None:
        with self._lock:
            old_id = self._exact.get((entry.namespace, entry.exact))
            if old_id is not None:
                self._remove(old_id)
            self._entries[entry.id] = entry
            self._exact[(entry.namespace, entry.exact)] = entry.id
            if entry.vector is not None:
                key = (entry.namespace, entry.partition, entry.embedding_model)
                if key not in self._indexes:
                    self._indexes[key] = _PartitionIndex(len(entry.vector))
                self._indexes[key].add(entry.id, entry.vector)
            heapq.heappush(self._expiry, (entry.expires, entry.id))
            if len(self._expiry) > 2 * self._max_entries:
                # Evicted and replaced entries leave stale items behind; drop them.
                self._expiry = [(e.expires, e.id) for e in self._entries.values()]
                heapq.heapify(self._expiry)
            self._purge_expired(entry.created)
            while len(self._entries) > self._max_entries:
                self._remove(next(iter(self._entries)))

    async def record_hit(self, entry: Entry, now: float) -> None:
        if entry.id in self._entries:
            entry.hits += 1
            entry.last_hit = now
            self._entries.move_to_end(entry.id)

    async def count(self, now: float) -> int:
        with self._lock:
            self._purge_expired(now)
        return len(self._entries)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        pass

    def _live(self, entry_id: str, now: float) -> Entry | None:
        entry = self._entries.get(entry_id)
        return entry if entry is not None and entry.expires > now else None

    def _purge_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            expires, entry_id = heapq.heappop(self._expiry)
            entry = self._entries.get(entry_id)
            # The heap may hold stale items for entries already replaced or evicted.
            if entry is not None and entry.expires == expires:
                self._remove(entry_id)

    def _remove(self, entry_id: str) -> None:
        entry = self._entries.pop(entry_id)
        if self._exact.get((entry.namespace, entry.exact)) == entry_id:
            del self._exact[(entry.namespace, entry.exact)]
        key = (entry.namespace, entry.partition, entry.embedding_model)
        if (index := self._indexes.get(key)) is not None and entry_id in index.rows:
            index.remove(entry_id)
            if not index.ids:
                del self._indexes[key]
