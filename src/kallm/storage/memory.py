"""The embedded default store: a dict with LRU order and TTL, plus the vector index. Lives
and dies with the process. Each scope keeps its own LRU order too, for per-scope bounds."""

from __future__ import annotations

import heapq
from collections import OrderedDict

from kallm.storage.base import Entry, EntryQuery, Hit, Search
from kallm.storage.vectors import VectorIndex, index_key


class MemoryStore:
    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        # The ids of each scope (`Entry.owner`), least recently used first.
        self._scopes: dict[str, OrderedDict[str, None]] = {}
        self._exact: dict[tuple[str, str], str] = {}
        self._vectors = VectorIndex()
        self._expiry: list[tuple[float, str]] = []

    async def get_exact(self, namespace: str, exact: str, now: float) -> Entry | None:
        entry_id = self._exact.get((namespace, exact))
        return self._live(entry_id, now) if entry_id else None

    async def search(self, query: Search) -> list[Hit]:
        found = await self._vectors.nearest(query.index, query.vector, query.limit)
        return [
            Hit(e, score) for entry_id, score in found if (e := self._live(entry_id, query.now))
        ]

    async def put(self, entry: Entry, scope_limit: int | None = None) -> None:
        old_id = self._exact.get((entry.namespace, entry.exact))
        if old_id is not None:
            self._remove(old_id)
        if entry.id in self._entries:  # the same id under another request: replaced too
            self._remove(entry.id)
        self._entries[entry.id] = entry
        self._scopes.setdefault(entry.owner, OrderedDict())[entry.id] = None
        self._exact[(entry.namespace, entry.exact)] = entry.id
        self._vectors.add(entry.id, index_key(entry), entry.vector)
        heapq.heappush(self._expiry, (entry.expires, entry.id))
        if len(self._expiry) > 2 * self._max_entries:
            # Evicted and replaced entries leave stale items behind; drop them.
            self._expiry = [(e.expires, e.id) for e in self._entries.values()]
            heapq.heapify(self._expiry)
        self._purge_expired(entry.created)
        if scope_limit is not None:
            scope = self._scopes.get(entry.owner)
            while scope and len(scope) > scope_limit:
                self._remove(next(iter(scope)))
        while len(self._entries) > self._max_entries:
            self._remove(next(iter(self._entries)))

    async def record_hit(self, entry: Entry, now: float) -> None:
        stored = self._entries.get(entry.id)
        if stored is not None:
            entry.hits += 1
            entry.last_hit = now
            self._entries.move_to_end(entry.id)
            self._scopes[stored.owner].move_to_end(entry.id)

    async def count(self, now: float) -> int:
        self._purge_expired(now)
        return len(self._entries)

    async def delete(self, entry_id: str) -> bool:
        if entry_id not in self._entries:
            return False
        self._remove(entry_id)
        return True

    async def clear(self, namespace: str | None) -> int:
        doomed = [e.id for e in self._entries.values() if namespace in (None, e.namespace)]
        for entry_id in doomed:
            self._remove(entry_id)
        return len(doomed)

    async def entries(self, query: EntryQuery, now: float) -> list[Entry]:
        live = sorted(
            (e for e in self._entries.values() if e.expires > now and query.matches(e)),
            key=lambda e: (e.created, e.id),
        )
        return live[query.offset : query.offset + query.limit]

    async def embedding_models(self, now: float) -> set[str]:
        return {e.embedding_model for e in self._entries.values() if e.expires > now}

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
        scope = self._scopes[entry.owner]
        del scope[entry_id]
        if not scope:
            del self._scopes[entry.owner]
        if self._exact.get((entry.namespace, entry.exact)) == entry_id:
            del self._exact[(entry.namespace, entry.exact)]
        self._vectors.remove(entry_id, index_key(entry))
