"""The storage protocol every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Meta:
    """What kallm keeps beside an answer: the cached API it came from (`route`), the tokens
    a hit saves (`usage`), and the request that identifies it, for export and warm
    (`request`; None where an entry cannot be warmed back, as an embeddings item). Stores
    keep it as one JSON object."""

    route: str = "chat.completions"
    usage: dict[str, Any] = field(default_factory=dict)
    request: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"route": self.route, "usage": self.usage}
        if self.request is not None:
            value["request"] = self.request
        return value

    @classmethod
    def from_json(cls, value: Any) -> Meta:
        """The stored object, as any kallm wrote it (a part of another type is left out)."""
        if not isinstance(value, dict):
            return cls()
        route, usage, request = value.get("route"), value.get("usage"), value.get("request")
        return cls(
            route if isinstance(route, str) else cls.route,
            usage if isinstance(usage, dict) else {},
            request if isinstance(request, dict) else None,
        )


@dataclass
class Entry:
    """One cached answer. `vector` is the embedding of `text` (None: exact match only).
    `scope` is the tenant the entry counts against for a per-scope size bound, which may
    span several namespaces; "" stands for the entry's own namespace (see `owner`)."""

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
    meta: Meta = field(default_factory=Meta)
    scope: str = ""

    @property
    def owner(self) -> str:
        """The scope the entry counts against: `scope`, or else its namespace."""
        return self.scope or self.namespace


@dataclass(frozen=True)
class Hit:
    entry: Entry
    similarity: float


@dataclass(frozen=True)
class Report:
    """An operator's verdict on one pair: the cached request of an entry, in its namespace,
    and a request asked of it. `right` False: the entry's answer was wrong for that request,
    which is blocked from it at once (`block`); True: it was right (or should have been
    served). Reports are kept as labelled pairs for `kallm calibrate --from-reports`."""

    id: str
    namespace: str
    entry_exact: str
    asked_exact: str
    cached_text: str | None
    asked_text: str | None
    right: bool
    similarity: float | None
    created: float

    @property
    def block(self) -> str | None:
        """What `Cache.blocked` is asked for a wrong pair; None for a right one."""
        return None if self.right else block_key(self.namespace, self.entry_exact, self.asked_exact)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "namespace": self.namespace, "entry_exact": self.entry_exact,
            "asked_exact": self.asked_exact, "cached_text": self.cached_text,
            "asked_text": self.asked_text, "right": self.right, "similarity": self.similarity,
            "created": self.created,
        }  # fmt: skip

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Report:
        return cls(
            str(value["id"]), str(value["namespace"]), str(value["entry_exact"]),
            str(value["asked_exact"]), value.get("cached_text"), value.get("asked_text"),
            bool(value["right"]), value.get("similarity"), float(value["created"]),
        )  # fmt: skip


def block_key(namespace: str, entry_exact: str, asked_exact: str) -> str:
    """One wrong pair: the entry's namespace and exact request, and the request asked."""
    return f"{namespace}\n{entry_exact}\n{asked_exact}"


@dataclass(frozen=True)
class EntryQuery:
    """A filter over entries: exact namespace and model, `text` as a case-insensitive
    substring of the prompt; `offset`/`limit` page through the matches."""

    namespace: str | None = None
    model: str | None = None
    text: str | None = None
    offset: int = 0
    limit: int = 100

    def matches(self, namespace: str, model: str, text: str | None) -> bool:
        """Whether an entry of this namespace, model and prompt text is among the matches."""
        return (
            (self.namespace is None or namespace == self.namespace)
            and (self.model is None or model == self.model)
            and (self.text is None or self.text.lower() in (text or "").lower())
        )


@dataclass(frozen=True)
class Search:
    """A semantic lookup: the `limit` nearest vectors made by `embedding_model` in one
    namespace and partition, among entries unexpired at `now`."""

    namespace: str
    partition: str
    vector: Vector
    embedding_model: str
    limit: int
    now: float

    @property
    def index(self) -> tuple[str, str, str]:
        """Where the vectors it compares live (see storage.vectors)."""
        return (self.namespace, self.partition, self.embedding_model)


class Cache(Protocol):
    """What the request path uses of a store. Lookups never return expired entries; `put`
    evicts the least recently used entries beyond the store's size bound. Search only looks
    inside one namespace and partition, and only at vectors made by `embedding_model`."""

    async def get_exact(self, namespace: str, exact: str, now: float) -> Entry | None: ...

    async def search(self, query: Search) -> list[Hit]: ...

    async def put(self, entry: Entry, scope_limit: int | None = None) -> None:
        """Store `entry`, replacing the entry of the same namespace and exact request. Then,
        when `scope_limit` is given, evict the least recently used live entries of the
        entry's scope (`Entry.owner`, across namespaces) until at most `scope_limit` remain,
        by the same LRU order as the store's size bound (`record_hit` refreshes it); other
        scopes are untouched. The store's size bound applies as well, as always."""
        ...

    async def record_hit(self, entry: Entry, now: float) -> None: ...

    async def delete(self, entry_id: str) -> bool:
        """Remove one entry; whether it existed."""
        ...

    async def blocked(self, block: str) -> bool:
        """Whether a wrong report named this pair (`block_key`): then its entry's answer
        is never served to that request again, on any replica sharing the store."""
        ...


class Store(Cache, Protocol):
    """A cache store: the request path's operations, and those of management (the admin
    API, /stats and /ready, startup checks)."""

    async def count(self, now: float) -> int: ...

    async def clear(self, namespace: str | None) -> int:
        """Remove every entry of `namespace` (None: all); how many were removed."""
        ...

    async def entries(self, query: EntryQuery, now: float) -> list[Entry]:
        """Live entries matching `query`, oldest first, for listing and export."""
        ...

    async def get(self, entry_id: str, now: float) -> Entry | None:
        """One live entry by id."""
        ...

    async def add_report(self, report: Report) -> None:
        """Keep `report`; a wrong one blocks its pair at once. Reports outlive their
        entries and `clear`: they are the operator's corrections."""
        ...

    async def reports(self) -> list[Report]:
        """Every report, oldest first."""
        ...

    async def embedding_models(self, now: float) -> set[str]:
        """The embedding models of live entries, so a model change is noticed and logged."""
        ...

    async def ping(self) -> bool: ...

    def loading(self) -> bool:
        """Whether stored vectors are still loading: meanwhile a search sees only part."""
        ...

    async def close(self) -> None: ...
