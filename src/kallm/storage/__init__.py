"""Cache stores: one protocol, one module per backend."""

from kallm.storage.base import Cache, Entry, EntryQuery, Hit, Meta, Search, Store
from kallm.storage.memory import MemoryStore

__all__ = ["Cache", "Entry", "EntryQuery", "Hit", "MemoryStore", "Meta", "Search", "Store"]
