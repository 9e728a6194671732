"""A shared store that did not answer when kallm started.

kallm must start, and answer every request, while Redis or PostgreSQL is down. This wrapper
tries to start the real store at most once a second, on the calls that come in; until that
works each call raises (and the proxy forwards the request as a MISS); after it, every call
goes straight to the store. So caching resumes by itself, without a restart.
"""

from __future__ import annotations

import time
from typing import Protocol

from kallm.storage.base import Entry, EntryQuery, Hit, Report, Search, Store


class Startable(Store, Protocol):
    async def start(self) -> None: ...


class StoreUnavailable(ConnectionError):
    pass


class LazyStart:
    def __init__(self, store: Startable, retry_every: float = 1.0) -> None:
        self._store = store
        self._retry_every = retry_every
        self._started = False
        self._next_try = 0.0

    async def _ready(self) -> Store:
        if self._started:
            return self._store
        if time.monotonic() < self._next_try:
            raise StoreUnavailable("the store has not started yet")
        self._next_try = time.monotonic() + self._retry_every
        await self._store.start()
        self._started = True
        return self._store

    async def get_exact(self, namespace: str, exact: str, now: float) -> Entry | None:
        return await (await self._ready()).get_exact(namespace, exact, now)

    async def search(self, query: Search) -> list[Hit]:
        return await (await self._ready()).search(query)

    async def put(self, entry: Entry, scope_limit: int | None = None) -> None:
        await (await self._ready()).put(entry, scope_limit)

    async def record_hit(self, entry: Entry, now: float) -> None:
        await (await self._ready()).record_hit(entry, now)

    async def count(self, now: float) -> int:
        return await (await self._ready()).count(now)

    async def delete(self, entry_id: str) -> bool:
        return await (await self._ready()).delete(entry_id)

    async def clear(self, namespace: str | None) -> int:
        return await (await self._ready()).clear(namespace)

    async def entries(self, query: EntryQuery, now: float) -> list[Entry]:
        return await (await self._ready()).entries(query, now)

    async def get(self, entry_id: str, now: float) -> Entry | None:
        return await (await self._ready()).get(entry_id, now)

    async def add_report(self, report: Report) -> None:
        await (await self._ready()).add_report(report)

    async def reports(self) -> list[Report]:
        return await (await self._ready()).reports()

    async def blocked(self, block: str) -> bool:
        return await (await self._ready()).blocked(block)

    async def embedding_models(self, now: float) -> set[str]:
        return await (await self._ready()).embedding_models(now)

    def loading(self) -> bool:
        return self._started and self._store.loading()

    async def ping(self) -> bool:
        return await (await self._ready()).ping()

    async def close(self) -> None:
        await self._store.close()
