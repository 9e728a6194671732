"""KALLM_BACKEND → a store. Shared backends are imported only when chosen."""

from __future__ import annotations

from pathlib import Path

from kallm.storage.base import Store
from kallm.storage.memory import MemoryStore
from kallm.storage.sqlite import SqliteStore


async def open_store(url: str, max_entries: int) -> Store:
    """The store named by `url`, started. SQLite URLs follow SQLAlchemy: three slashes and a
    relative path (sqlite:///kallm.db), four for an absolute one (sqlite:////data/kallm.db)."""
    if url == "memory":
        return MemoryStore(max_entries)
    if url.startswith("sqlite:///"):
        store = SqliteStore(Path(url.removeprefix("sqlite:///")), max_entries)
        await store.start()
        return store
    raise ValueError(f"unsupported KALLM_BACKEND {url.split(':', 1)[0]}://")
