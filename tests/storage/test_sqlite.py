import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from contract import StoreContract, entry, vec

from kallm.storage import EntryQuery
from kallm.storage.sqlite import SqliteStore


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
        try:
            hits = await store.search("ns", "p", vec(1, 0.05, 0), "m", 1, time.time())
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
