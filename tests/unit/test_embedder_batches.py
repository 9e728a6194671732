"""Concurrent texts are embedded in batches, with the vectors each would have alone; a text
too long for the window is None in a batch too; a cancelled request leaves the rest whole."""

from __future__ import annotations

import asyncio

import numpy as np

from kallm.embedders import LocalEmbedder

TEXTS = [f"How many {thing} fit in a {box}?" for thing in ("apples", "books", "cups",
         "shoes", "pens") for box in ("box", "car", "room", "bag")]  # fmt: skip
TOO_LONG = "word " * 300


def test_concurrent_texts_get_the_vectors_they_would_alone():
    embedder = LocalEmbedder()
    try:
        alone = [embedder.embed_sync(text) for text in TEXTS]

        async def together() -> list[np.ndarray | None]:
            return await asyncio.gather(*(embedder.embed(t) for t in [*TEXTS, TOO_LONG]))

        vectors = asyncio.run(together())
        assert vectors[-1] is None
        for one, batched in zip(alone, vectors[:-1], strict=True):
            assert batched is not None and np.allclose(one, batched, atol=1e-6)
    finally:
        asyncio.run(embedder.close())


def test_a_cancelled_request_does_not_spoil_its_batch():
    embedder = LocalEmbedder(threads=1)
    try:

        async def run() -> list[np.ndarray | None]:
            tasks = [asyncio.create_task(embedder.embed(t)) for t in TEXTS[:6]]
            await asyncio.sleep(0)  # all six are waiting or running
            tasks[3].cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            return [None if isinstance(v, BaseException) else v for v in done]

        vectors = asyncio.run(run())
        assert vectors[3] is None
        assert all(v is not None for i, v in enumerate(vectors) if i != 3)
    finally:
        asyncio.run(embedder.close())
