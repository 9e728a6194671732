"""KALLM_BACKEND → a store. Shared backends are imported only when chosen."""

from __future__ import annotations

import logging
from pathlib import Path

from kallm.storage.base import Store
from kallm.storage.lazy import LazyStart, Startable
from kallm.storage.memory import MemoryStore
from kallm.storage.sqlite import SqliteStore

log = logging.getLogger("kallm")


async def open_store(url: str, max_entries: int) -> Store:
    """The store named by `url`. SQLite URLs follow SQLAlchemy: three slashes and a relative
    path (sqlite:///kallm.db), four for an absolute one (sqlite:////data/kallm.db). A shared
    store that does not answer yet is returned all the same, to be started on first use."""
    if url == "memory":
        return MemoryStore(max_entries)
    if url.startswith("sqlite:///"):
        sqlite = SqliteStore(Path(url.removeprefix("sqlite:///")), max_entries)
        await sqlite.start()
        return sqlite
    shared: Startable
    if url.startswith(("redis://", "rediss://")):
        from kallm.storage.redis import RedisStore

        shared = RedisStore(url, max_entries)
    elif url.startswith(("postgresql://", "postgres://")):
        from kallm.storage.postgres import PostgresStore

        shared = PostgresStore(url, max_entries)
    else:
        raise ValueError(f"unsupported KALLM_BACKEND {url.split(':', 1)[0]}://")
    try:
        await shared.start()
    except Exception as error:
        log.warning("cache store unavailable at start (%r); answering without it", error)
        return LazyStart(shared)
    return shared
