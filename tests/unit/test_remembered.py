"""Recently embedded texts are not embedded again; the memory is bounded, least recently
used first out; failures are not remembered."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kallm.embedders.remembered import Remembered


class Counting:
    name = "counting"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = False

    async def embed(self, text: str) -> np.ndarray | None:
        self.calls.append(text)
        if self.fail:
            raise RuntimeError("down")
        return None if text == "too long" else np.full(2, len(text), dtype=np.float32)

    async def close(self) -> None:
        pass


def test_a_text_is_embedded_once_while_remembered():
    async def run() -> None:
        inner = Counting()
        embedder = Remembered(inner, size=2)
        assert embedder.name == "counting"
        first = await embedder.embed("a")
        assert np.array_equal(await embedder.embed("a"), first)
        assert await embedder.embed("too long") is None
        assert await embedder.embed("too long") is None
        assert inner.calls == ["a", "too long"]
        await embedder.embed("bb")  # "a" is now the least recently used: it goes
        await embedder.embed("a")
        assert inner.calls == ["a", "too long", "bb", "a"]

    asyncio.run(run())


def test_a_failure_is_not_remembered():
    async def run() -> None:
        inner = Counting()
        embedder = Remembered(inner)
        inner.fail = True
        with pytest.raises(RuntimeError):
            await embedder.embed("a")
        inner.fail = False
        assert await embedder.embed("a") is not None
        assert inner.calls == ["a", "a"]

    asyncio.run(run())
