"""PostgresStore against a real PostgreSQL with pgvector, started once for the session."""

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from contract import NOW, StoreContract, entry, vec
from postgres_server import postgres_server, start_again
from psycopg.conninfo import conninfo_to_dict

from kallm.storage.base import Search
from kallm.storage.postgres import PostgresStore


@pytest.fixture(scope="session")
def pg_server():
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_url(pg_server):
    return pg_server.get_uri()


def fresh_table():
    """Each test gets its own table, so none sees another's rows."""
    return f"kallm_test_{uuid.uuid4().hex[:12]}"


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def make_store(self, pg_url):
        table = fresh_table()

        async def make(max_entries):
            return await start_store(pg_url, max_entries, table=table)

        return make


def run(body):
    asyncio.run(body())


async def start_store(url, max_entries, **options):
    store = PostgresStore(url, max_entries, **options)
    try:
        await store.start()
    except BaseException:
        await store.close()
        raise
    return store


@contextlib.asynccontextmanager
async def opened(url, max_entries=10, **options):
    store = await start_store(url, max_entries, **options)
    try:
        yield store
    finally:
        await store.close()


def test_the_server_url_is_a_unix_socket_url(pg_url):
    # What pgserver hands out, and what users of a local server write.
    params = conninfo_to_dict(pg_url)
    assert pg_url.startswith("postgresql://") and params["host"].startswith("/")


def test_without_start_the_first_call_creates_the_schema(pg_url):
    async def body():
        store = PostgresStore(pg_url, 10, table=fresh_table())
        try:
            assert await store.get_exact("ns", "exact1", NOW) is None
            await store.put(entry(1, vec(1, 0)))
            assert await store.count(NOW) == 1
        finally:
            await store.close()

    run(body)


def test_a_table_dropped_under_the_store_is_created_again(pg_url):
    table = fresh_table()

    async def body():
        async with opened(pg_url, table=table) as store:
            await store.put(entry(1, vec(1, 0)))
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                await conn.execute(f"DROP TABLE {table}")
            with pytest.raises(psycopg.errors.UndefinedTable):
                await store.count(NOW)
            await store.put(entry(2, vec(1, 0)))
            assert [
                h.entry.id for h in await store.search(Search("ns", "p", vec(1, 0), "m", 5, NOW))
            ] == ["id2"]

    run(body)


def test_two_stores_on_one_database_share_entries(pg_url):
    table = fresh_table()

    async def body():
        async with opened(pg_url, table=table) as one, opened(pg_url, table=table) as two:
            await one.put(entry(1, vec(1, 0, 0)))
            hits = await two.search(Search("ns", "p", vec(1, 0.1, 0), "m", 5, NOW))
            assert [h.entry.id for h in hits] == ["id1"]
            assert (await two.get_exact("ns", "exact1", NOW)).response == {"n": 1}
            await two.record_hit(hits[0].entry, NOW + 1)
            assert (await one.get_exact("ns", "exact1", NOW)).hits == 1
            assert await two.delete("id1") and await one.count(NOW) == 0

    run(body)


def test_stores_sharing_a_table_keep_its_bound_once_they_count_it_again(pg_url):
    # Each store evicts by its own count of the table, taken again every `recount` seconds:
    # the other's puts go unseen until then, and no longer.
    table = fresh_table()

    async def body():
        async with (
            opened(pg_url, 3, table=table, recount=0) as one,
            opened(pg_url, 3, table=table, recount=0) as two,
        ):
            for i in (1, 2, 3):
                await two.put(entry(i, vec(1, i), age=10 - i))
            await one.put(entry(4, vec(1, 4)))
            assert await one.count(NOW) == 4  # `one` counted an empty table at its start
            await one._recount  # the count the put started in the background
            await one.put(entry(5, vec(1, 5)))
            kept = [i for i in range(1, 6) if await one.get_exact("ns", f"exact{i}", NOW)]
            assert kept == [3, 4, 5]

    run(body)


def test_entries_survive_closing_and_reopening(pg_url):
    table = fresh_table()

    async def body():
        async with opened(pg_url, table=table) as store:
            await store.put(entry(1, vec(1, 0, 0)))
            await store.put(entry(2, None))
        async with opened(pg_url, table=table) as store:
            assert (await store.get_exact("ns", "exact2", NOW)).vector is None
            hits = await store.search(Search("ns", "p", vec(1, 0, 0), "m", 5, NOW))
            assert [h.entry.id for h in hits] == ["id1"]
            assert hits[0].similarity == pytest.approx(1.0, abs=1e-6)

    run(body)


def test_each_dimension_gets_an_hnsw_index_that_search_uses(pg_url):
    table = fresh_table()

    async def body():
        async with opened(pg_url, table=table) as store:
            await store.put(entry(1, vec(1, 0, 0)))
            await store.put(entry(2, vec(1, 0, 0, 0), namespace="four"))
            search = store._search_sql(3)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", (table,)
            )
            indexes = dict(await cursor.fetchall())
            for dim in (3, 4):
                definition = indexes[f"{table}_hnsw_{dim}"]
                assert "USING hnsw" in definition and "vector_cosine_ops" in definition
                assert f"vector_dims(embedding) = {dim}" in definition
            # With few rows the planner rightly scans; forbid that to see the index match.
            await conn.execute("SET enable_seqscan = off")
            await conn.execute("SET enable_bitmapscan = off")
            params = {
                "q": "[1,0,0]", "namespace": "ns", "partition": "p", "model": "m", "now": NOW,
                "limit": 5,
            }  # fmt: skip
            cursor = await conn.execute(psycopg.sql.SQL("EXPLAIN ") + search, params)
            plan = "\n".join(row[0] for row in await cursor.fetchall())
            assert f"Index Scan using {table}_hnsw_3" in plan, plan

    run(body)


def test_a_killed_session_is_replaced_without_a_failed_call(pg_url):
    table = fresh_table()
    name = f"kallm_{uuid.uuid4().hex[:8]}"
    url = f"{pg_url}&application_name={name}"

    async def body():
        async with opened(url, table=table) as store:
            await store.put(entry(1, vec(1, 0)))
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                cursor = await conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (name,),
                )
                assert (await cursor.fetchone())[0] >= 1
            await asyncio.sleep(0.05)  # let the server's goodbye reach the socket
            assert (await store.get_exact("ns", "exact1", NOW)).id == "id1"

    run(body)


def test_a_stopped_server_fails_fast_and_the_store_recovers(pg_server, pg_url):
    table = fresh_table()

    async def body():
        async with opened(pg_url, table=table) as store:
            await store.put(entry(1, vec(1, 0)))
            pg_server.stop()
            try:
                for call in (store.get_exact("ns", "exact1", NOW), store.count(NOW)):
                    started = time.perf_counter()
                    with pytest.raises((psycopg.OperationalError, TimeoutError)):
                        await call
                    assert time.perf_counter() - started < 0.5
                assert await store.ping() is False
            finally:
                start_again(pg_server)
            assert pg_server.get_uri() == pg_url
            assert (await store.get_exact("ns", "exact1", NOW)).id == "id1"
            assert await store.ping() is True

    run(body)


class Relay:
    """A Unix socket in front of the server that can stop forwarding, as a host that drops
    off the network does: connections stay open and nothing comes back."""

    def __init__(self, target):
        self.target = target
        self.dir = tempfile.mkdtemp(prefix="kallm-relay-")
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.writers = set()
        self.tasks = set()

    async def start(self):
        self.server = await asyncio.start_unix_server(
            self._serve, path=str(Path(self.dir) / ".s.PGSQL.5432")
        )

    async def _serve(self, reader, writer):
        self.writers.add(writer)
        self.tasks.add(asyncio.current_task())
        with contextlib.suppress(OSError):
            await self.flowing.wait()
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
            self.writers.add(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader, writer):
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def close(self):
        # Closing every socket ends every pump: no task is cancelled mid-read.
        self.flowing.set()
        self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.tasks)
        await self.server.wait_closed()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_an_unresponsive_server_hits_the_deadline_and_the_store_recovers(pg_url):
    params = conninfo_to_dict(pg_url)
    target = str(Path(params["host"]) / f".s.PGSQL.{params.get('port') or 5432}")

    async def body():
        relay = Relay(target)
        await relay.start()
        url = f"postgresql://postgres@/postgres?host={relay.dir}"
        try:
            async with opened(url, table=fresh_table(), timeout=0.3) as store:
                await store.put(entry(1, vec(1, 0)))
                relay.flowing.clear()
                # On the pooled session, on a new one that cannot connect, and at start().
                for call in (
                    store.get_exact("ns", "exact1", NOW),
                    store.count(NOW),
                    start_store(url, 10, table=fresh_table(), timeout=0.3),
                ):
                    started = time.perf_counter()
                    with pytest.raises(TimeoutError):
                        await call
                    assert time.perf_counter() - started < 0.6
                relay.flowing.set()
                assert (await store.get_exact("ns", "exact1", NOW)).id == "id1"
        finally:
            await relay.close()

    run(body)


def test_a_table_from_before_scopes_gets_the_column_and_its_index(pg_url):
    table = fresh_table()

    async def body():
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            await conn.execute(
                psycopg.sql.SQL(
                    "CREATE TABLE {t} (id text PRIMARY KEY, namespace text NOT NULL, "
                    "partition text NOT NULL, exact text NOT NULL, text text, "
                    "embedding vector, embedding_model text NOT NULL, model text NOT NULL, "
                    "response jsonb NOT NULL, created float8 NOT NULL, "
                    "expires float8 NOT NULL, hits bigint NOT NULL DEFAULT 0, "
                    "last_hit float8, last_used float8 NOT NULL, "
                    "extra jsonb NOT NULL DEFAULT '{{}}', UNIQUE (namespace, exact))"
                ).format(t=psycopg.sql.Identifier(table))
            )
            await conn.execute(
                psycopg.sql.SQL(
                    "INSERT INTO {t} (id, namespace, partition, exact, text, embedding_model, "
                    "model, response, created, expires, last_used) VALUES ('old', 'ns', 'p', "
                    "'exact-old', 'hi', 'm', 'gpt', '{{}}', %s, %s, %s)"
                ).format(t=psycopg.sql.Identifier(table)),
                (NOW - 10, NOW + 100, NOW - 10),
            )
        async with opened(pg_url, table=table) as store:
            assert (await store.get_exact("ns", "exact-old", NOW)).scope == ""
            # The old row counts against its namespace: the oldest, it goes first.
            await store.put(entry(1, vec(1, 0, 0)), 1)
            assert await store.get_exact("ns", "exact-old", NOW) is None
            assert (await store.get_exact("ns", "exact1", NOW)).id == "id1"
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("SET enable_seqscan = off")
            await conn.execute("SET enable_bitmapscan = off")
            cursor = await conn.execute(
                psycopg.sql.SQL(
                    "EXPLAIN SELECT id FROM {t} WHERE coalesce(nullif(scope, ''), namespace) "
                    "= 'ns' ORDER BY last_used DESC, id DESC OFFSET 3"
                ).format(t=psycopg.sql.Identifier(table))
            )
            plan = "\n".join(row[0] for row in await cursor.fetchall())
            assert f"Index Scan Backward using {table}_owner" in plan, plan

    run(body)
