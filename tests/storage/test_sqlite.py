import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from contract import StoreContract, entry, vec

from kallm.storage import EntryQuery
from kallm.storage import sqlite as sqlite_store
from kallm.storage.base import Search
from kallm.storage.lazy import LazyStart
from kallm.storage.sqlite import _COLUMNS, SqliteStore


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path):
        counter = iter(range(1000))

        async def make(max_entries):
            store = SqliteStore(tmp_path / f"kallm-{next(counter)}.db", max_entries)
            await store.start()
            return store

        return make


def test_entries_survive_a_restart(tmp_path):
    path = tmp_path / "kallm.db"

    async def first():
        store = SqliteStore(path, 10)
        await store.start()
        await store.put(entry(1, vec(1, 0, 0)))
        await store.close()

    async def second():
        store = SqliteStore(path, 10)
        await store.start()
        await store.loaded()
        try:
            hits = await store.search(Search("ns", "p", vec(1, 0.05, 0), "m", 1, time.time()))
            assert [h.entry.id for h in hits] == ["id1"]
            assert (await store.get_exact("ns", "exact1", time.time())).response == {"n": 1}
        finally:
            await store.close()

    asyncio.run(first())
    asyncio.run(second())


WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    import numpy as np
    from kallm.storage import Entry
    from kallm.storage.sqlite import SqliteStore

    async def main():
        store = SqliteStore(__import__("pathlib").Path(sys.argv[1]), 100_000)
        await store.start()
        i = 0
        while True:
            v = np.random.default_rng(i).normal(size=384).astype(np.float32)
            now = time.time()
            v /= np.linalg.norm(v)
            entry = Entry(f"id{i}", "ns", "p", f"e{i}", "x" * 2000, v, "m", "gpt", {"i": i}, now,
                          now + 3600)
            await store.put(entry)
            i += 1
            if i == 50:
                print("writing", flush=True)

    asyncio.run(main())
    """
)


def test_kill_9_during_a_write_burst_leaves_a_consistent_database(tmp_path):
    path = tmp_path / "kallm.db"
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE
    ) as writer:
        try:
            assert writer.stdout.readline().strip() == b"writing"
            time.sleep(0.5)  # mid-burst
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait(10)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        written = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    assert written >= 50

    async def reopen():
        store = SqliteStore(path, 100_000)
        await store.start()
        try:
            assert await store.count(time.time()) == written
            (last,) = await store.entries(EntryQuery(offset=written - 1), time.time())
            assert last.response["i"] == written - 1 and len(last.vector) == 384
        finally:
            await store.close()

    asyncio.run(reopen())


def test_a_database_from_before_scopes_gets_the_column_and_its_index(tmp_path):
    path = tmp_path / "kallm.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE entries (id TEXT PRIMARY KEY, namespace TEXT NOT NULL, "
            "partition TEXT NOT NULL, exact TEXT NOT NULL, text TEXT, vector BLOB, "
            "embedding_model TEXT NOT NULL, model TEXT NOT NULL, response TEXT NOT NULL, "
            "created REAL NOT NULL, expires REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0, "
            "last_hit REAL, last_used REAL NOT NULL, extra TEXT NOT NULL)"
        )
        now = time.time()
        db.execute(
            "INSERT INTO entries (id, namespace, partition, exact, text, embedding_model, "
            "model, response, created, expires, last_used, extra) "
            "VALUES ('old', 'ns', 'p', 'exact-old', 'hi', 'm', 'gpt', '{}', ?, ?, ?, '{}')",
            (now - 10, now + 100, now - 10),
        )
    db.close()

    async def body():
        store = SqliteStore(path, 10)
        await store.start()
        try:
            assert (await store.get_exact("ns", "exact-old", time.time())).scope == ""
            # The old row counts against its namespace: the oldest, it goes first.
            await store.put(entry(1, vec(1, 0, 0)), 1)
            assert await store.get_exact("ns", "exact-old", time.time()) is None
            assert (await store.get_exact("ns", "exact1", time.time())).id == "id1"
        finally:
            await store.close()

    asyncio.run(body())
    with sqlite3.connect(path) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM entries "
            "WHERE (CASE WHEN scope = '' THEN namespace ELSE scope END) = 'ns' "
            "ORDER BY last_used LIMIT 1"
        ).fetchall()
    db.close()
    assert "USING INDEX entries_scope" in str(plan), plan


def test_a_put_whose_scope_bound_evicts_the_entry_itself_leaves_no_vector(tmp_path):
    async def body():
        store = SqliteStore(tmp_path / "kallm.db", 10)
        await store.start()
        try:
            await store.put(entry(1, vec(1, 0, 0)), 0)
            assert await store.count(time.time()) == 0
            assert store._vectors._partitions == {}
        finally:
            await store.close()

    asyncio.run(body())


def test_lazy_start_passes_the_scope_limit_on(tmp_path):
    async def body():
        store = LazyStart(SqliteStore(tmp_path / "kallm.db", 10))
        try:
            for i in range(3):
                await store.put(entry(i, vec(1, i, 0), age=3 - i, scope="s"), 2)
            assert {e.id for e in await store.entries(EntryQuery(), time.time())} == {"id1", "id2"}
        finally:
            await store.close()

    asyncio.run(body())


def filled(path, rows):
    """Random unit vectors put into a SQLite store at `path`, closed cleanly."""
    vectors = np.random.default_rng(3).standard_normal((rows, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    async def fill():
        store = SqliteStore(path, 1000)
        await store.start()
        for i, vector in enumerate(vectors):
            await store.put(entry(i, vector))
        await store.close()

    asyncio.run(fill())
    return vectors


def test_vectors_load_after_start_and_removals_meanwhile_stay_out(tmp_path, monkeypatch):
    # Small pages, so the load takes many steps and the test's writes land in between.
    monkeypatch.setattr(sqlite_store, "_LOAD_PAGE", 10)
    path = tmp_path / "kallm.db"
    vectors = filled(path, 200)
    shutil.rmtree(tmp_path / "kallm.db.index")  # as after a crash: built from the rows

    async def reopen():
        store = SqliteStore(path, 1000)
        await store.start()
        try:
            assert store.loading()
            assert (await store.get_exact("ns", "exact150", time.time())).id == "id150"
            assert await store.delete("id199")  # its page is not loaded yet
            await store.put(entry(500, vec(1, 0, 0, 0, 0, 0, 0, 0)))
            await store.loaded()
            assert not store.loading()
            assert len(store._vectors) == 200 - 1 + 1
            found = await store.search(Search("ns", "p", vectors[199], "m", 3, time.time()))
            assert "id199" not in [h.entry.id for h in found]
            found = await store.search(Search("ns", "p", vectors[7], "m", 1, time.time()))
            assert [h.entry.id for h in found] == ["id7"]
            assert found[0].similarity == pytest.approx(1.0, abs=1e-6)  # float32, read back
        finally:
            await store.close()

    asyncio.run(reopen())


def test_a_closed_store_saves_its_index_for_the_next_start_only(tmp_path):
    path = tmp_path / "kallm.db"
    vectors = filled(path, 50)
    assert (tmp_path / "kallm.db.index" / "token").exists()

    async def reopen_from_the_saved_index():
        store = SqliteStore(path, 1000)
        await store.start()
        try:
            # Written while the saved index loads: kept when it is swapped in.
            await store.put(entry(100, vec(1, 0, 0, 0, 0, 0, 0, 0)))
            assert await store.delete("id3")
            await store.loaded()
            assert len(store._vectors) == 50 - 1 + 1
            found = await store.search(Search("ns", "p", vectors[7], "m", 1, time.time()))
            assert [h.entry.id for h in found] == ["id7"]
            (new,) = await store.search(
                Search("ns", "p", vec(1, 0, 0, 0, 0, 0, 0, 0), "m", 1, time.time())
            )
            assert new.entry.id == "id100"
            others = await store.search(Search("ns", "p", vectors[3], "m", 3, time.time()))
            assert "id3" not in [h.entry.id for h in others]
            # The start took the saved index's token: a second start (as after a crash of
            # this one) cannot use the files, and rebuilds from the rows.
            second = SqliteStore(path, 1000)
            await second.start()
            await second.loaded()
            assert len(second._vectors) == 50
            await second.close()
        finally:
            await store.close()

    asyncio.run(reopen_from_the_saved_index())


def test_a_row_deleted_between_its_page_read_and_its_indexing_stays_out(tmp_path, monkeypatch):
    """The window the load leaves open: a page is read, then indexed on another thread; a
    delete in between finds nothing to take out of the index yet."""
    path = tmp_path / "kallm.db"
    filled(path, 30)
    shutil.rmtree(tmp_path / "kallm.db.index")  # built from the rows
    store = SqliteStore(path, 1000)
    read = sqlite_store._vector_page

    def page_then_delete(db, after, until):
        rows = read(db, after, until)
        if rows and rows[0]["id"] == "id0":  # as `delete("id5")` would, just after the read
            (gone,) = db.execute(f"DELETE FROM entries WHERE id = 'id5' RETURNING {_COLUMNS}")
            store._unindex([sqlite_store._entry(gone)])
        return rows

    monkeypatch.setattr(sqlite_store, "_vector_page", page_then_delete)

    async def go():
        await store.start()
        try:
            await store.loaded()
            assert len(store._vectors) == 29
        finally:
            await store.close()

    asyncio.run(go())
