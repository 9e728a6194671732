import asyncio
import time
import uuid

import contract
import pytest
from contract import StoreContract, entry, vec
from redis.exceptions import RedisError
from redis_server import RedisServer

from kallm.storage.base import Search
from kallm.storage.redis import RedisStore


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def fresh_prefix():
    return f"kallm-test-{uuid.uuid4().hex[:12]}"


class TestRedisStore(StoreContract):
    @pytest.fixture
    def make_store(self, redis_server):
        async def make(max_entries):
            store = RedisStore(redis_server.url, max_entries, prefix=fresh_prefix())
            await store.start()
            await store.loaded()
            return store

        return make


def live(i, v=None, ttl=100.0, **fields):
    """An entry expiring `ttl` seconds from now, by the real clock Redis expires by."""
    e = entry(i, v, **fields)
    e.created, e.expires = time.time(), time.time() + ttl
    return e


async def within(seconds, check):
    """Seconds until `check()` is true; fails after `seconds`."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def ids(store, namespace="ns", v=None, now=None):
    hits = await store.search(
        Search(namespace, "p", v or vec(1, 0, 0), "m", 10, now or time.time())
    )
    return {h.entry.id for h in hits}


async def replicas(url, prefix, n=2):
    stores = [RedisStore(url, 100, prefix=prefix) for _ in range(n)]
    for store in stores:
        await store.start()
        await store.loaded()
    return stores


def test_a_put_on_one_replica_is_found_by_the_others_search_within_a_second(redis_server):
    async def go():
        a, b = await replicas(redis_server.url, fresh_prefix())
        try:
            await a.put(live(1, vec(1, 0, 0)))
            assert (await b.get_exact("ns", "exact1", time.time())).id == "id1"
            await within(1.0, lambda: _has(b, "id1"))
            await a.put(live(2, vec(1, 0.1, 0)))  # the follower keeps following
            await within(1.0, lambda: _has(b, "id2"))
            hits = await b.search(Search("ns", "p", vec(1, 0, 0), "m", 1, time.time()))
            assert [h.entry.id for h in hits] == ["id1"] and hits[0].entry.response == {"n": 1}
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


async def _has(store, entry_id):
    return entry_id in await ids(store)


def test_delete_and_clear_on_one_replica_take_effect_on_the_other(redis_server):
    async def go():
        a, b = await replicas(redis_server.url, fresh_prefix())
        try:
            for i, namespace in enumerate(["a", "a", "b"]):
                await a.put(live(i, vec(1, i, 0), namespace=namespace))
            await within(1.0, lambda: _all_found(b))
            assert await a.delete("id0") is True
            # At once: B reads its candidates back from Redis.
            assert await ids(b, "a") == {"id1"}
            assert await b.get_exact("a", "exact0", time.time()) is None
            assert await a.clear("a") == 1
            assert await ids(b, "a") == set()
            assert await b.count(time.time()) == 1
            assert await ids(b, "b") == {"id2"}
            assert await b.clear(None) == 1
            assert await ids(a, "b") == set() and await a.count(time.time()) == 0
            # The events reach the other index too, so no stale vector stays behind.
            await within(1.0, lambda: _index_empty(a, b))
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


async def _all_found(store):
    return await ids(store, "a") == {"id0", "id1"} and await ids(store, "b") == {"id2"}


async def _index_empty(*stores):
    return all(not store._index.keys for store in stores)


def test_an_entry_is_gone_from_the_other_replica_after_it_expires(redis_server):
    async def go():
        a, b = await replicas(redis_server.url, fresh_prefix())
        try:
            await a.put(live(1, vec(1, 0, 0), ttl=0.4))
            before = time.time()
            await within(1.0, lambda: _has(b, "id1"))
            await asyncio.sleep(0.5)
            # Redis has expired it: gone even for a reader whose clock says it is not due.
            assert await ids(b, now=before) == set()
            assert await b.get_exact("ns", "exact1", before) is None
            assert await b.count(time.time()) == 0
            assert await b.entries(contract.EntryQuery(), time.time()) == []
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_a_store_started_after_entries_exist_loads_them(redis_server):
    async def go():
        prefix = fresh_prefix()
        (a,) = await replicas(redis_server.url, prefix, 1)
        for i in range(3):
            await a.put(live(i, vec(1, i, 0)))
        await a.put(live(9, None))  # exact only
        await a.close()
        (c,) = await replicas(redis_server.url, prefix, 1)
        try:
            assert await ids(c) == {"id0", "id1", "id2"}  # without waiting for any event
            assert (await c.get_exact("ns", "exact9", time.time())).vector is None
            assert await c.count(time.time()) == 4
        finally:
            await c.close()

    asyncio.run(go())


def test_calls_fail_fast_while_redis_is_down_and_work_again_after_it_restarts(tmp_path):
    server = RedisServer(tmp_path, durable=True)
    server.start()

    async def go():
        a, b = await replicas(server.url, fresh_prefix())
        try:
            await a.put(live(1, vec(1, 0, 0)))
            await within(1.0, lambda: _has(b, "id1"))
            server.stop()
            now = time.time()
            calls = [
                lambda: a.get_exact("ns", "exact1", now),
                lambda: a.search(Search("ns", "p", vec(1, 0, 0), "m", 5, now)),
                lambda: a.put(live(2, vec(1, 0, 0))),
                lambda: a.record_hit(entry(1), now),
                lambda: b.count(now),
                lambda: b.delete("id1"),
                lambda: b.ping(),
            ]
            for call in calls:
                start = time.monotonic()
                with pytest.raises((RedisError, OSError)):
                    await asyncio.wait_for(call(), 5)
                assert time.monotonic() - start < 1.0
            await asyncio.sleep(0.3)  # the followers notice and back off
            server.start()  # same port, same append-only file
            assert (await a.get_exact("ns", "exact1", time.time())).id == "id1"
            assert await b.ping() is True
            await a.put(live(3, vec(1, 0.1, 0)))
            await within(3.0, lambda: _has(b, "id3"))  # B's follower has reconnected
            await a.put(live(4, vec(1, 0.2, 0)))
            assert await within(1.0, lambda: _has(b, "id4")) < 1.0
            assert await ids(a) == {"id1", "id3", "id4"}
        finally:
            await a.close()
            await b.close()

    try:
        asyncio.run(go())
    finally:
        server.stop()


def test_start_fails_fast_without_a_server_and_can_be_retried(tmp_path):
    server = RedisServer(tmp_path)  # not started yet

    async def go():
        store = RedisStore(server.url, 10, prefix=fresh_prefix())
        start = time.monotonic()
        with pytest.raises((RedisError, OSError)):
            await store.start()
        assert time.monotonic() - start < 1.0
        server.start()
        await store.start()  # as LazyStart does, once Redis answers
        await store.loaded()
        try:
            await store.put(live(1, vec(1, 0, 0)))
            assert await ids(store) == {"id1"}
        finally:
            await store.close()

    try:
        asyncio.run(go())
    finally:
        server.stop()


def test_a_replica_that_fell_behind_a_trimmed_stream_reloads(redis_server, monkeypatch):
    import kallm.storage.redis as module

    monkeypatch.setattr(module, "STREAM_MAXLEN", 10)  # Redis trims whole nodes of 100
    monkeypatch.setattr(module, "_EVENTS_PER_READ", 50)

    async def go():
        prefix = fresh_prefix()
        a = RedisStore(redis_server.url, 1000, prefix=prefix)
        await a.start()
        b = RedisStore(redis_server.url, 1000, prefix=prefix)
        await b._load()  # loaded, not yet following: it falls behind
        try:
            for i in range(250):
                await a.put(live(i, vec(1, i, 0)))
            assert await a._redis.xlen(f"{prefix}:events") < 250  # the oldest events are gone
            b._task = asyncio.create_task(b._follow())
            await within(2.0, lambda: _indexed(b, 250))
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


async def _indexed(store, n):
    return len(store._index.keys) == n


def test_scope_evictions_reach_the_other_replica_and_leave_no_keys_behind(redis_server):
    async def go():
        prefix = fresh_prefix()
        a, b = await replicas(redis_server.url, prefix)
        try:
            for i in range(3):
                await a.put(live(i, vec(1, i, 0), namespace=f"n{i % 2}", scope="s"), 2)
            assert await a.get_exact("n0", "exact0", time.time()) is None
            # The eviction went out as a `del` event: B's index drops the vector too.
            await within(1.0, lambda: _indexed_ids(b, {"id1", "id2"}))
            members = await a._redis.zrange(f"{prefix}:s:s", 0, -1)
            assert members == [b"id1", b"id2"]
            await a.put(live(3, vec(1, 0, 0), ttl=0.3, namespace="n0", scope="s"))
            await asyncio.sleep(0.5)
            await a.put(live(4, vec(1, 0, 0), namespace="other"))  # purges the expired one
            assert await a._redis.zrange(f"{prefix}:s:s", 0, -1) == [b"id1", b"id2"]
            assert await a._redis.hkeys(f"{prefix}:own") != []
            assert await b.delete("id1") is True
            assert await a._redis.zrange(f"{prefix}:s:s", 0, -1) == [b"id2"]
            await a.clear(None)
            keys = [k async for k in a._redis.scan_iter(f"{prefix}:*")]
            assert keys == [f"{prefix}:events".encode()]
            await within(1.0, lambda: _index_empty(a, b))
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


async def _indexed_ids(store, expected):
    return set(store._index.keys) == expected


def test_an_entry_stored_before_scopes_reads_with_an_empty_scope(redis_server):
    async def go():
        prefix = fresh_prefix()
        (a,) = await replicas(redis_server.url, prefix, 1)
        try:
            await a.put(live(1, vec(1, 0, 0), scope="team"))
            await a._redis.hdel(f"{prefix}:e:id1", "scope")
            found = await a.get_exact("ns", "exact1", time.time())
            assert found.scope == "" and found.owner == "ns"
        finally:
            await a.close()

    asyncio.run(go())


def test_a_replica_starts_at_once_and_loads_its_index_in_the_background(redis_server):
    async def go():
        prefix = fresh_prefix()
        (a,) = await replicas(redis_server.url, prefix, 1)
        b = RedisStore(redis_server.url, 100, prefix=prefix)
        try:
            for i in range(30):
                await a.put(live(i, vec(1, i, 0), partition="p" if i % 2 else "q"))
            await b.start()
            assert b.loading()  # started before its index is built
            assert (await b.get_exact("ns", "exact3", time.time())).id == "id3"
            await b.loaded()
            assert not b.loading() and len(b._index.keys) == 30
            # Search stays in partition "p": the odd ids, all 15 of them.
            found = await b.search(Search("ns", "p", vec(1, 29, 0), "m", 20, time.time()))
            assert {h.entry.id for h in found} == {f"id{i}" for i in range(1, 30, 2)}
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())
