import asyncio

import numpy as np
import pytest
from contract import NOW, StoreContract, entry

from kallm.storage import MemoryStore
from kallm.storage.base import Search


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def make_store(self):
        async def make(max_entries):
            return MemoryStore(max_entries)

        return make


def test_a_bulk_load_is_searched_and_bounded_like_puts():
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = MemoryStore(250)
    # The oldest 50 go to the bound; an exact-only entry and a replaced one load too.
    store.load(
        [entry(i, vectors[i], age=300 - i) for i in range(300)]
        + [entry(1000, None), entry(299, vectors[0])]
    )

    async def check():
        assert await store.count(NOW) == 250
        assert await store.get_exact("ns", "exact1000", NOW) is not None
        for i in (100, 200, 298):
            (hit,) = await store.search(Search("ns", "p", vectors[i], "m", 1, NOW))
            assert hit.entry.id == f"id{i}" and hit.similarity == pytest.approx(1.0, abs=5e-4)
        (hit, _) = await store.search(Search("ns", "p", vectors[0], "m", 2, NOW))
        assert hit.entry.id == "id299"  # the replacement's vector, not the first one's
        evicted = await store.search(Search("ns", "p", vectors[10], "m", 3, NOW))
        assert "id10" not in [h.entry.id for h in evicted]
        assert len(store._vectors) == 249  # 250 held, one of them without a vector

    asyncio.run(check())
