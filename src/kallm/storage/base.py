"""The storage protocol every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


@dataclass
class Entry:
    """One cached answer. `vector` is the embedding of `text` (None: exact match only)."""

    id: str
    namespace: str
    partition: str
    exact: str
    text: str | None
    vector: Vector | None
    embedding_model: str
    model: str
    response: dict[str, Any]
    created: float
    expires: float
    hits: int = 0
    last_hit: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    entry: Entry
    similarity: float


@dataclass(frozen=True)
class EntryQuery:
    """A filter over entries: exact namespace and model, `text` as a case-insensitive
    substring of the prompt; `offset`/`limit` page through the matches."""

    namespace: str | None = None
    model: str | None = None
    text: str | None = None
    offset: int = 0
    limit: int = 100

    def matches(self, entry: Entry) -> bool:
        return (
            (self.namespace is None or entry.namespace == self.namespace)
            and (self.model is None or entry.model == self.model)
            and (self.text is None or self.text.lower() in (entry.text or "").lower())
        )


class Store(Protocol):
    """A cache store. Lookups never return expired entries; `put` evicts the least recently
    used entries beyond the store's size bound. Search only looks inside one namespace and
    partition, and only at vectors made by `embedding_model`."""

    async def get_exact(self, namespace: str, exact: str, now: float) -> Entry | None: ...

    async def search(
        self,
        namespace: str,
        partition: str,
        vector: Vector,
        embedding_model: str,
        limit: int,
        now: float,
    ) -> list[Hit]: ...

    async def put(self, entry: Entry) -> None: ...

    async def record_hit(self, entry: Entry, now: float) -> None: ...

    async def count(self, now: float) -> int: ...

    async def delete(self, entry_id: str) -> bool:
        """Remove one entry; whether it existed."""
        ...

    async def clear(self, namespace: str | None) -> int:
        """Remove every entry of `namespace` (None: all); how many were removed."""
        ...

    async def entries(self, query: EntryQuery, now: float) -> list[Entry]:
        """Live entries matching `query`, oldest first, for listing and export."""
        ...

    async def embedding_models(self, now: float) -> set[str]:
        """The embedding models of live entries, so a model change is noticed and logged."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
