"""The embedded default store: a dict with LRU order and TTL, plus the vector index. Lives
and dies with the process. Each scope keeps its own LRU order too, for per-scope bounds.

Held lean for a million entries (bench/scale.py): the vector lives only in the index, the
answer and metadata as one compressed JSON blob decoded on a hit, and the names that
thousands of entries share (namespace, partition, models, scope) as one string each.
"""

from __future__ import annotations

import heapq
import json
import sys
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from kallm.storage.base import Entry, EntryQuery, Hit, Meta, Report, Search, Vector
from kallm.storage.vectors import Key, VectorIndex, index_key


@dataclass(slots=True)
class _Kept:
    """An entry as held: its fields, less the vector, with the answer and `Meta` packed."""

    id: str
    namespace: str
    partition: str
    exact: str
    text: str | None
    embedding_model: str
    model: str
    packed: bytes
    created: float
    expires: float
    hits: int
    last_hit: float | None
    scope: str

    @classmethod
    def of(cls, entry: Entry) -> _Kept:
        packed = json.dumps([entry.response, entry.meta.to_json()], separators=(",", ":"))
        return cls(
            entry.id, sys.intern(entry.namespace), sys.intern(entry.partition), entry.exact,
            entry.text, sys.intern(entry.embedding_model), sys.intern(entry.model),
            zlib.compress(packed.encode(), 1), entry.created, entry.expires, entry.hits,
            entry.last_hit, sys.intern(entry.scope),
        )  # fmt: skip

    def entry(self, vector: Vector | None) -> Entry:
        response, meta = json.loads(zlib.decompress(self.packed))
        return Entry(
            self.id, self.namespace, self.partition, self.exact, self.text, vector,
            self.embedding_model, self.model, response, self.created, self.expires, self.hits,
            self.last_hit, Meta.from_json(meta), self.scope,
        )  # fmt: skip

    @property
    def owner(self) -> str:
        return self.scope or self.namespace

    @property
    def key(self) -> Key:
        return (self.namespace, self.partition, self.embedding_model)


class MemoryStore:
    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, _Kept] = OrderedDict()  # least recently used first
        # The ids of each scope (`Entry.owner`), least recently used first.
        self._scopes: dict[str, OrderedDict[str, None]] = {}
        self._exact: dict[str, dict[str, str]] = {}  # namespace, exact request: id
        self._vectors = VectorIndex()
        self._expiry: list[tuple[float, str]] = []
        self._reports: list[Report] = []
        self._blocks: set[str] = set()

    async def get_exact(self, namespace: str, exact: str, now: float) -> Entry | None:
        entry_id = self._exact.get(namespace, {}).get(exact)
        kept = self._live(entry_id, now) if entry_id else None
        return self._entry(kept) if kept else None

    async def search(self, query: Search) -> list[Hit]:
        found = await self._vectors.nearest(query.index, query.vector, query.limit)
        return [
            Hit(self._entry(kept), score)
            for entry_id, score in found
            if (kept := self._live(entry_id, query.now))
        ]

    async def put(self, entry: Entry, scope_limit: int | None = None) -> None:
        self._keep(entry)
        self._vectors.add(entry.id, index_key(entry), entry.vector)
        self._purge_expired(entry.created)
        if scope_limit is not None:
            scope = self._scopes.get(entry.owner)
            while scope and len(scope) > scope_limit:
                self._remove(next(iter(scope)))
        self._bound()

    def load(self, entries: Iterable[Entry]) -> None:
        """Put many entries at once, each as `put` without a scope limit, for filling a store
        before it serves (an import, a benchmark): the index takes their vectors in one
        call on every core. Slow for its size and not safe beside requests: call it from
        a worker thread while nothing else uses the store."""
        entries = list(entries)
        for entry in entries:
            self._keep(entry)
        self._vectors.add_all(
            (index_key(e), e.id, e.vector)
            for e in entries
            if e.vector is not None and e.id in self._entries  # not replaced in the batch
        )
        self._bound()

    def _keep(self, entry: Entry) -> None:
        """Hold `entry` (not yet its vector), replacing what it replaces."""
        old_id = self._exact.get(entry.namespace, {}).get(entry.exact)
        if old_id is not None:
            self._remove(old_id)
        if entry.id in self._entries:  # the same id under another request: replaced too
            self._remove(entry.id)
        kept = _Kept.of(entry)
        self._entries[kept.id] = kept
        self._scopes.setdefault(kept.owner, OrderedDict())[kept.id] = None
        self._exact.setdefault(kept.namespace, {})[kept.exact] = kept.id
        heapq.heappush(self._expiry, (kept.expires, kept.id))
        if len(self._expiry) > 2 * self._max_entries:
            # Evicted and replaced entries leave stale items behind; drop them.
            self._expiry = [(e.expires, e.id) for e in self._entries.values()]
            heapq.heapify(self._expiry)

    def _bound(self) -> None:
        while len(self._entries) > self._max_entries:
            self._remove(next(iter(self._entries)))

    async def record_hit(self, entry: Entry, now: float) -> None:
        kept = self._entries.get(entry.id)
        if kept is not None:
            entry.hits = kept.hits = kept.hits + 1
            entry.last_hit = kept.last_hit = now
            self._entries.move_to_end(entry.id)
            self._scopes[kept.owner].move_to_end(entry.id)

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
            (
                e
                for e in self._entries.values()
                if e.expires > now and query.matches(e.namespace, e.model, e.text)
            ),
            key=lambda e: (e.created, e.id),
        )
        return [self._entry(kept) for kept in live[query.offset : query.offset + query.limit]]

    async def get(self, entry_id: str, now: float) -> Entry | None:
        kept = self._live(entry_id, now)
        return self._entry(kept) if kept else None

    async def add_report(self, report: Report) -> None:
        self._reports.append(report)
        if report.block is not None:
            self._blocks.add(report.block)

    async def reports(self) -> list[Report]:
        return list(self._reports)

    async def blocked(self, block: str) -> bool:
        return block in self._blocks

    async def embedding_models(self, now: float) -> set[str]:
        return {e.embedding_model for e in self._entries.values() if e.expires > now}

    def loading(self) -> bool:
        return False

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        pass

    def _entry(self, kept: _Kept) -> Entry:
        return kept.entry(self._vectors.vector(kept.id, kept.key))

    def _live(self, entry_id: str, now: float) -> _Kept | None:
        kept = self._entries.get(entry_id)
        return kept if kept is not None and kept.expires > now else None

    def _purge_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            expires, entry_id = heapq.heappop(self._expiry)
            kept = self._entries.get(entry_id)
            # The heap may hold stale items for entries already replaced or evicted.
            if kept is not None and kept.expires == expires:
                self._remove(entry_id)

    def _remove(self, entry_id: str) -> None:
        kept = self._entries.pop(entry_id)
        scope = self._scopes[kept.owner]
        del scope[entry_id]
        if not scope:
            del self._scopes[kept.owner]
        exact = self._exact[kept.namespace]
        if exact.get(kept.exact) == entry_id:
            del exact[kept.exact]
            if not exact:
                del self._exact[kept.namespace]
        self._vectors.remove(entry_id, kept.key)
