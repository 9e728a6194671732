"""Cache stores: one protocol, one module per backend."""

from kallm.storage.base import Entry, EntryQuery, Hit, Search, Store
from kallm.storage.memory import MemoryStore

__all__ = ["Entry", "EntryQuery", "Hit", "MemoryStore", "Search", "Store"]
