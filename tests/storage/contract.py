"""The contract every store keeps. A backend's test module subclasses `StoreContract` and
provides `make_store`: an async factory `(max_entries) -> Store` giving an empty store."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from kallm.storage import Entry, EntryQuery
from kallm.storage.base import Meta, Report, Search, block_key

NOW = time.time()  # real time: servers with native TTLs must not expire entries mid-test


def vec(*values):
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def entry(
    i, vector=None, namespace="ns", partition="p", ttl=100.0, model="m", text=None, age=0.0,
    scope="",
):  # fmt: skip
    return Entry(
        id=f"id{i}", namespace=namespace, partition=partition, exact=f"exact{i}",
        text=text or f"prompt {i}", vector=vector, embedding_model=model, model="gpt-4o-mini",
        response={"n": i}, created=NOW - age, expires=NOW + ttl,
        meta=Meta("chat.completions", {"prompt_tokens": i}, {"model": "m"}), scope=scope,
    )  # fmt: skip


class StoreContract:
    @pytest.fixture
    def make_store(self):
        raise NotImplementedError

    def scenario(self, make_store, max_entries, body):
        async def go():
            store = await make_store(max_entries)
            try:
                await body(store)
            finally:
                await store.close()

        asyncio.run(go())

    def test_exact_lookup_round_trips_the_entry_and_honours_expiry(self, make_store):
        async def body(store):
            await store.put(entry(1, vec(1, 0, 0), ttl=5))
            found = await store.get_exact("ns", "exact1", NOW + 4)
            assert found is not None and found.id == "id1" and found.response == {"n": 1}
            assert found.text == "prompt 1" and found.meta == Meta(
                "chat.completions", {"prompt_tokens": 1}, {"model": "m"}
            )
            assert np.allclose(found.vector, vec(1, 0, 0))
            assert await store.get_exact("ns", "exact1", NOW + 5) is None
            assert await store.get_exact("other", "exact1", NOW) is None
            assert await store.count(NOW + 6) == 0

        self.scenario(make_store, 10, body)

    def test_search_stays_inside_namespace_partition_and_model(self, make_store):
        async def body(store):
            await store.put(entry(1, vec(1, 0, 0)))
            await store.put(entry(2, vec(1, 0, 0), namespace="other"))
            await store.put(entry(3, vec(1, 0, 0), partition="q"))
            await store.put(entry(4, vec(1, 0, 0), model="other-model"))
            await store.put(entry(5, vec(0, 1, 0)))
            await store.put(entry(6, None))  # exact only
            hits = await store.search(Search("ns", "p", vec(1, 0.1, 0), "m", 5, NOW))
            assert [h.entry.id for h in hits] == ["id1", "id5"]
            assert hits[0].similarity == pytest.approx(
                float(vec(1, 0.1, 0) @ vec(1, 0, 0)), abs=1e-4
            )
            assert await store.search(Search("ns", "p", vec(1, 0, 0), "m", 5, NOW + 1000)) == []

        self.scenario(make_store, 10, body)

    def test_the_least_recently_used_entry_is_evicted_first(self, make_store):
        async def body(store):
            for i in range(3):
                await store.put(entry(i, vec(1, i, 0), age=10 - i))
            await store.record_hit(await store.get_exact("ns", "exact0", NOW), NOW + 1)
            await store.put(entry(3, vec(1, 3, 0)))
            assert await store.get_exact("ns", "exact1", NOW) is None
            found = {
                h.entry.id
                for h in await store.search(Search("ns", "p", vec(1, 1, 0), "m", 10, NOW))
            }
            assert found == {"id0", "id2", "id3"}
            assert await store.count(NOW) == 3
            hit = await store.get_exact("ns", "exact0", NOW)
            assert hit.hits == 1 and hit.last_hit == pytest.approx(NOW + 1)

        self.scenario(make_store, 3, body)

    def test_storing_the_same_request_again_replaces_it(self, make_store):
        async def body(store):
            await store.put(entry(1, vec(1, 0)))
            newer = entry(1, vec(1, 0))
            newer.id, newer.response = "id1b", {"n": "new"}
            await store.put(newer)
            assert (await store.get_exact("ns", "exact1", NOW)).response == {"n": "new"}
            assert [
                h.entry.id for h in await store.search(Search("ns", "p", vec(1, 0), "m", 5, NOW))
            ] == ["id1b"]
            assert await store.count(NOW) == 1

        self.scenario(make_store, 10, body)

    def test_delete_by_id_namespace_and_all(self, make_store):
        async def body(store):
            for i, namespace in enumerate(["a", "a", "b", "c"]):
                await store.put(entry(i, vec(1, i), namespace=namespace))
            assert await store.delete("id0") is True
            assert await store.delete("id0") is False
            assert await store.get_exact("a", "exact0", NOW) is None
            assert await store.search(Search("a", "p", vec(1, 0), "m", 5, NOW)) != []  # id1 remains
            assert await store.clear("a") == 1
            assert await store.search(Search("a", "p", vec(1, 0), "m", 5, NOW)) == []
            assert await store.count(NOW) == 2
            assert await store.clear(None) == 2
            assert await store.count(NOW) == 0

        self.scenario(make_store, 10, body)

    def test_entries_filter_and_page(self, make_store):
        async def body(store):
            for i in range(5):
                text = "Capital of France?" if i == 3 else None
                await store.put(
                    entry(i, vec(1, i), namespace="a" if i < 4 else "b", text=text, age=10 - i)
                )
            listed = await store.entries(EntryQuery(namespace="a"), NOW)
            assert [e.id for e in listed] == ["id0", "id1", "id2", "id3"]  # oldest first
            page = await store.entries(EntryQuery(namespace="a", offset=1, limit=2), NOW)
            assert [e.id for e in page] == ["id1", "id2"]
            assert [e.id for e in await store.entries(EntryQuery(text="france"), NOW)] == ["id3"]
            assert await store.entries(EntryQuery(model="gpt-4o"), NOW) == []
            assert await store.embedding_models(NOW) == {"m"}

        self.scenario(make_store, 10, body)

    def test_many_puts_keep_the_index_consistent(self, make_store):
        async def body(store):
            rng = np.random.default_rng(1)
            vectors = {}
            for i in range(120):
                v = rng.normal(size=8).astype(np.float32)
                vectors[i] = v / np.linalg.norm(v)
                await store.put(entry(i, vectors[i], age=200 - i))
            for i in range(100, 120):
                hits = await store.search(Search("ns", "p", vectors[i], "m", 1, NOW))
                # The memory store scores float16 copies: within 5e-4 of float32.
                assert hits[0].entry.id == f"id{i}" and hits[0].similarity == pytest.approx(
                    1.0, abs=5e-4
                )
            assert await store.count(NOW) == 40

        self.scenario(make_store, 40, body)

    def test_a_scope_limit_keeps_the_most_recently_used_of_the_scope(self, make_store):
        async def body(store):
            # Scope B: older than every entry of A, yet A's bound never touches it.
            for i in (10, 11):
                await store.put(entry(i, vec(1, 0, 0), namespace=f"b{i}", age=50, scope="B"), 3)
            # Scope A spans two namespaces: 0, 2, 4 in "a", 1, 3 in "a@key"; 0 oldest.
            namespaces = ["a", "a@key", "a", "a@key", "a"]
            for i in range(3):
                await store.put(entry(i, vec(1, i, 0), namespaces[i], age=10 - i, scope="A"), 3)
            await store.record_hit(await store.get_exact("a", "exact0", NOW), NOW + 1)
            for i in (3, 4):  # evict 1, then 2: 0 was used last
                await store.put(entry(i, vec(1, i, 0), namespaces[i], age=10 - i, scope="A"), 3)
            for i in (1, 2):
                assert await store.get_exact(namespaces[i], f"exact{i}", NOW) is None
            for i in (0, 3, 4):
                assert (await store.get_exact(namespaces[i], f"exact{i}", NOW)).id == f"id{i}"
            for namespace, expected in (("a", {"id0", "id4"}), ("a@key", {"id3"})):
                hits = await store.search(Search(namespace, "p", vec(1, 1, 0), "m", 10, NOW))
                assert {h.entry.id for h in hits} == expected
            for i in (10, 11):
                assert (await store.get_exact(f"b{i}", f"exact{i}", NOW)).id == f"id{i}"
            listed = await store.entries(EntryQuery(), NOW)
            assert {e.id for e in listed} == {"id0", "id3", "id4", "id10", "id11"}
            assert await store.count(NOW) == 5

        self.scenario(make_store, 10, body)

    def test_the_scope_round_trips(self, make_store):
        async def body(store):
            await store.put(entry(1, vec(1, 0, 0), namespace="k8s:team-a/x", scope="team-a"))
            await store.put(entry(2, vec(0, 1, 0), namespace="k8s:team-a/x"))
            found = await store.get_exact("k8s:team-a/x", "exact1", NOW)
            assert found.scope == "team-a" and found.owner == "team-a"
            found = await store.get_exact("k8s:team-a/x", "exact2", NOW)
            assert found.scope == "" and found.owner == "k8s:team-a/x"
            listed = await store.entries(EntryQuery(namespace="k8s:team-a/x"), NOW)
            assert {e.id: e.scope for e in listed} == {"id1": "team-a", "id2": ""}
            hits = await store.search(Search("k8s:team-a/x", "p", vec(1, 0, 0), "m", 1, NOW))
            assert [(h.entry.id, h.entry.scope) for h in hits] == [("id1", "team-a")]

        self.scenario(make_store, 10, body)

    def test_an_empty_scope_counts_against_the_namespace(self, make_store):
        async def body(store):
            await store.put(entry(0, vec(1, 0), namespace="t", age=5), 2)
            await store.put(entry(1, vec(1, 1), namespace="t", age=5, scope="other"), 2)
            await store.put(entry(2, vec(1, 2), namespace="u", age=5), 2)
            await store.put(entry(3, vec(1, 3), namespace="x", age=4, scope="t"), 2)
            await store.put(entry(4, vec(1, 4), namespace="t", age=3), 2)  # scope t: 0, 3, 4
            assert await store.get_exact("t", "exact0", NOW) is None
            assert await store.search(Search("t", "p", vec(1, 0), "m", 10, NOW)) != []
            assert {e.id for e in await store.entries(EntryQuery(), NOW)} == {
                "id1", "id2", "id3", "id4"
            }  # fmt: skip
            await store.put(entry(5, vec(1, 5), namespace="t", age=2, scope="other"), 1)
            assert await store.get_exact("t", "exact1", NOW) is None  # only scope other's
            assert await store.count(NOW) == 4

        self.scenario(make_store, 10, body)

    def test_reports_outlive_entries_and_block_only_their_wrong_pairs(self, make_store):
        async def body(store):
            await store.put(entry(1, vec(1, 0)))
            assert (await store.get("id1", NOW)).exact == "exact1"
            assert await store.get("id1", NOW + 200) is None  # past its TTL
            assert await store.get("id9", NOW) is None
            wrong = Report("r1", "ns", "exact1", "asked-a", "prompt 1", "other", False, 0.93, NOW)
            right = Report("r2", "ns", "exact1", "asked-b", "prompt 1", "same", True, None, NOW + 1)
            await store.add_report(wrong)
            await store.add_report(right)
            assert await store.blocked(block_key("ns", "exact1", "asked-a"))
            assert not await store.blocked(block_key("ns", "exact1", "asked-b"))  # right
            assert not await store.blocked(block_key("ns2", "exact1", "asked-a"))
            await store.clear(None)
            assert await store.reports() == [wrong, right]
            assert await store.blocked(wrong.block)

        self.scenario(make_store, 10, body)
