"""The vectors of texts embedded lately, kept so that the same text is embedded once: the
same question asked under other models, system prompts or tenants, a prompt asked again
after its entry expired or with `no-store`. A vector says nothing of any answer, so sharing
them across namespaces leaks nothing."""

from __future__ import annotations

from collections import OrderedDict

from kallm.embedders.base import Embedder
from kallm.storage.base import Vector


class Remembered:
    """`embedder`, remembering the vectors of its `size` most recently used texts (about
    1.5 KB each for MiniLM). Texts too long to embed are remembered as such too."""

    def __init__(self, embedder: Embedder, size: int = 10_000) -> None:
        self.name = embedder.name
        self._embedder = embedder
        self._size = size
        self._vectors: OrderedDict[str, Vector | None] = OrderedDict()

    async def embed(self, text: str) -> Vector | None:
        if text in self._vectors:
            self._vectors.move_to_end(text)
            return self._vectors[text]
        vector = await self._embedder.embed(text)
        self._vectors[text] = vector
        if len(self._vectors) > self._size:
            self._vectors.popitem(last=False)
        return vector

    async def close(self) -> None:
        await self._embedder.close()
