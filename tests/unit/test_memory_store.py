import asyncio

import numpy as np
import pytest

from kallm.storage import Entry, MemoryStore


def vec(*values):
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def entry(i, vector=None, namespace="ns", partition="p", created=0.0, ttl=100.0, model="m"):
    return Entry(
        id=f"id{i}",
        namespace=namespace,
        partition=partition,
        exact=f"exact{i}",
        text=f"t{i}",
        vector=vector,
        embedding_model=model,
        model="gpt",
        response={"n": i},
        created=created,
        expires=created + ttl,
    )


def run(coro):
    return asyncio.run(coro)


def test_exact_lookup_and_expiry():
    async def go():
        store = MemoryStore(10)
        await store.put(entry(1, ttl=5))
        assert (await store.get_exact("ns", "exact1", now=4)).id == "id1"
        assert await store.get_exact("ns", "exact1", now=5) is None
        assert await store.get_exact("other", "exact1", now=1) is None
        assert await store.count(now=6) == 0

    run(go())


def test_search_stays_inside_namespace_partition_and_model():
    async def go():
        store = MemoryStore(10)
        await store.put(entry(1, vec(1, 0, 0)))
        await store.put(entry(2, vec(1, 0, 0), namespace="other"))
        await store.put(entry(3, vec(1, 0, 0), partition="q"))
        await store.put(entry(4, vec(1, 0, 0), model="other-model"))
        await store.put(entry(5, vec(0, 1, 0)))
        hits = await store.search("ns", "p", vec(1, 0.1, 0), "m", 5, now=1)
        assert [h.entry.id for h in hits] == ["id1", "id5"]
        assert hits[0].similarity == pytest.approx(float(vec(1, 0.1, 0) @ vec(1, 0, 0)))

    run(go())


def test_least_recently_used_is_evicted_first():
    async def go():
        store = MemoryStore(3)
        for i in range(3):
            await store.put(entry(i, vec(1, i, 0)))
        await store.record_hit(await store.get_exact("ns", "exact0", 1), 1)
        await store.put(entry(3, vec(1, 3, 0)))
        assert await store.get_exact("ns", "exact1", 1) is None  # least recently used
        assert {h.entry.id for h in await store.search("ns", "p", vec(1, 1, 0), "m", 10, 1)} == {
            "id0",
            "id2",
            "id3",
        }
        assert await store.count(1) == 3

    run(go())


def test_storing_the_same_request_again_replaces_it():
    async def go():
        store = MemoryStore(10)
        await store.put(entry(1, vec(1, 0)))
        newer = entry(1, vec(1, 0))
        newer.id, newer.response = "id1b", {"n": "new"}
        await store.put(newer)
        assert (await store.get_exact("ns", "exact1", 1)).response == {"n": "new"}
        assert [h.entry.id for h in await store.search("ns", "p", vec(1, 0), "m", 5, 1)] == ["id1b"]
        assert await store.count(1) == 1

    run(go())


def test_many_puts_keep_the_index_consistent():
    async def go():
        rng = np.random.default_rng(1)
        store = MemoryStore(50)
        vectors = {}
        for i in range(300):
            v = rng.normal(size=8).astype(np.float32)
            v /= np.linalg.norm(v)
            vectors[i] = v
            await store.put(entry(i, v, created=float(i), ttl=1000))
        for i in range(250, 300):
            hits = await store.search("ns", "p", vectors[i], "m", 1, now=300)
            assert hits[0].entry.id == f"id{i}" and hits[0].similarity == pytest.approx(
                1.0, abs=1e-5
            )
        assert await store.count(300) == 50

    run(go())
