"""The embedder protocol."""

from __future__ import annotations

from typing import Protocol

from kallm.storage.base import Vector


class Embedder(Protocol):
    """`name` tags stored vectors, so vectors of different models are never compared."""

    name: str

    async def embed(self, text: str) -> Vector:
        """A unit-length float32 vector for `text`."""
        ...

    async def close(self) -> None: ...
