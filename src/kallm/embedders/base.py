"""The embedder protocol."""

from __future__ import annotations

from typing import Protocol

from kallm.storage.base import Vector


class Embedder(Protocol):
    """`name` tags stored vectors, so vectors of different models are never compared."""

    name: str

    async def embed(self, text: str) -> Vector | None:
        """A unit-length float32 vector for `text`, or None when the text is longer than the
        model reads (such texts are matched exactly only)."""
        ...

    async def close(self) -> None: ...
