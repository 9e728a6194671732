"""A shared store on PostgreSQL with pgvector: every kallm instance pointed at one database
sees the same entries, and they outlive the processes.

Layout. One table (default `kallm_entries`) holds a row per entry, with a column per `Entry`
field (`response` and `extra` as JSONB, times as epoch seconds in float8 exactly as `Entry`
holds them) plus `last_used`, the LRU clock: max(created, last hit). `(namespace, exact)` is
unique, so storing the same request again replaces the old row in one upsert.

Vectors and dimensions. pgvector can only build an HNSW index over vectors of one fixed
dimension, yet one table may see several embedding models (384 dims for the local model,
1536 for a remote one, 2-8 in the tests). The `embedding` column is therefore an
unconstrained `vector`, and each dimension gets its own partial expression index, created
the first time a vector of that dimension is stored (pgvector's documented recipe):

    CREATE INDEX t_hnsw_384 ON t USING hnsw ((embedding::vector(384)) vector_cosine_ops)
        WHERE vector_dims(embedding) = 384

A search repeats that predicate and expression with the dimension as a literal, so the
planner can prove the partial index applies; similarity is 1 - cosine distance (`<=>`).
`hnsw.iterative_scan = strict_order` lets the index keep scanning when the namespace,
partition, model and expiry filters reject its first candidates, instead of returning
fewer rows than exist. Vectors above 2,000 dimensions cannot be HNSW-indexed by pgvector;
they are stored and searched exactly, without an index.

Size bound. After each put, in the same transaction: expired rows are deleted, then (when
the put has a `scope_limit`) every row of the entry's scope beyond it in `last_used` order,
walking the `(owner, last_used, id)` expression index, then every row beyond `max_entries`
in `last_used` order. Walking `max_entries` entries of the
`last_used` index costs a few milliseconds per 10,000 entries. Puts that run at the same
moment (several instances) each see only committed rows, so the bound may be overshot by
the puts in flight until the next put; deletes skip rows locked by others, so concurrent
puts never deadlock.

Failure. Every call runs under a client-side deadline (`timeout`, covering the wait for a
connection, connecting and the statements) and the server's `statement_timeout`, and raises
when either passes: the proxy catches the error and answers without its cache. A small
pool of connections is kept; a connection that errs or outlives its deadline is dropped,
along with the idle ones (the server likely went away under them too), and the next call
connects afresh, so the store recovers by itself once the server is back. The schema is
created by `start()`, or lazily by the first call that reaches the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import psycopg
from psycopg import errors, pq, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from kallm.storage.base import Entry, EntryQuery, Hit, Meta, Report, Search, Vector

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]
Query = sql.SQL | sql.Composed

# How often a store counts the table again: other replicas put and evict too.
RECOUNT_SECONDS = 30.0

# pgvector's HNSW index takes at most this many dimensions of type `vector`.
MAX_INDEXED_DIMENSIONS = 2000

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")

# Every Entry field, in Entry's order; `embedding` is `Entry.vector`.
_FIELDS = (
    "id", "namespace", "partition", "exact", "text", "embedding", "embedding_model", "model",
    "response", "created", "expires", "hits", "last_hit", "extra", "scope",
)  # fmt: skip

# `Entry.owner` in SQL; the scope index is on this expression, and the eviction query must
# spell it the same way for the planner to use that index.
_OWNER = sql.SQL("(coalesce(nullif(scope, ''), namespace))")


class PostgresStore:
    """Entries in one PostgreSQL table, searched through pgvector HNSW indexes."""

    def __init__(
        self,
        url: str,
        max_entries: int,
        *,
        table: str = "kallm_entries",
        timeout: float = 1.0,
        setup_timeout: float = 30.0,
        connections: int = 4,
        recount: float = RECOUNT_SECONDS,
    ) -> None:
        """`url` is any libpq connection string or URL, for instance
        `postgresql://user:secret@host/db` or, over a Unix socket,
        `postgresql://user@/db?host=/run/postgresql`. `table` may be schema-qualified.
        `timeout` bounds each call; `setup_timeout` bounds creating the schema and each
        dimension's index, which may take longer on a large table. The size bound is kept by
        a count of the table taken again every `recount` seconds (see `_rows`)."""
        schema, _, name = table.rpartition(".")
        if not _NAME.fullmatch(name) or (schema and not _NAME.fullmatch(schema)):
            raise ValueError(f"table must be [schema.]name of letters, digits, _: {table!r}")
        if max_entries < 1 or timeout <= 0 or setup_timeout <= 0 or connections < 1:
            raise ValueError("max_entries, timeout, setup_timeout and connections must be > 0")
        self._url = url
        self._max_entries = max_entries
        self._timeout = timeout
        self._setup_timeout = max(setup_timeout, timeout)
        self._name = name
        self._table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
        reports = f"{name}_reports"
        self._reports = sql.Identifier(schema, reports) if schema else sql.Identifier(reports)
        self._connect_args = _connect_args(url, timeout)
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[Connection] = []
        self._ready = False  # the schema exists (checked once per process)
        self._setup_lock = asyncio.Lock()
        self._dimensions: set[int] = set()  # dimensions whose HNSW index exists
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._closed = False
        # The table's rows as last counted (at setup, then every `recount` seconds), plus those
        # this store's calls added and removed since. A put evicts by this count from the
        # oldest end of the `last_used` index: walking to the bound from the newest end, as
        # it first did, cost 1.3 s a put at a million rows. With replicas the bound holds
        # to within what the others put between counts.
        self._rows = 0
        self._recount_seconds = recount
        self._counted_at = 0.0
        self._recount: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and create the extension, table and indexes where absent. Optional (the
        first call does it too) but fails loudly at boot, with the longer setup deadline."""

        async def connected(conn: Connection) -> None:
            pass

        # Reach the server under the ordinary deadline first: a host that does not answer
        # fails start() within `timeout`, not `setup_timeout`. The connection is pooled.
        await self._run(connected, self._timeout, prepare=False)
        await self._run(self._prepare, self._setup_timeout)

    # --- the Store protocol ---

    async def get_exact(self, namespace: str, exact: str, now: float) -> Entry | None:
        query = sql.SQL(
            "SELECT {fields} FROM {t} WHERE namespace = %s AND exact = %s AND expires > %s"
        ).format(fields=self._fields(), t=self._table)
        rows = await self._fetch(query, (namespace, exact, now))
        return _entry(rows[0]) if rows else None

    async def search(self, query: Search) -> list[Hit]:
        params = {
            "q": _vector_text(query.vector),
            "namespace": query.namespace,
            "partition": query.partition,
            "model": query.embedding_model,
            "now": query.now,
            "limit": query.limit,
        }
        rows = await self._fetch(self._search_sql(len(query.vector)), params)
        return [Hit(_entry(row[:-1]), float(row[-1])) for row in rows]

    async def put(self, entry: Entry, scope_limit: int | None = None) -> None:
        if entry.vector is not None:
            await self._ensure_index(len(entry.vector))
        columns = sql.SQL(", ").join(sql.Identifier(f) for f in (*_FIELDS, "last_used"))
        upsert = sql.SQL(
            "INSERT INTO {t} ({columns}) VALUES "
            "(%s, %s, %s, %s, %s, %s::vector, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (namespace, exact) DO UPDATE SET ({columns}) = ROW({excluded}) "
            "RETURNING xmax = 0"  # true for a new row, false for one replaced
        ).format(
            t=self._table,
            columns=columns,
            excluded=sql.SQL(", ").join(
                sql.SQL("excluded.{}").format(sql.Identifier(f)) for f in (*_FIELDS, "last_used")
            ),
        )
        vector = _vector_text(entry.vector) if entry.vector is not None else None
        last_used = max(entry.created, entry.last_hit or entry.created)
        values = (
            entry.id, entry.namespace, entry.partition, entry.exact, entry.text, vector,
            entry.embedding_model, entry.model, Jsonb(entry.response), entry.created,
            entry.expires, entry.hits, entry.last_hit, Jsonb(entry.meta.to_json()), entry.scope,
            last_used,
        )  # fmt: skip
        # The upsert comes first and the deletes skip rows other transactions hold: a put
        # waits for a lock only while it holds none, so concurrent puts cannot deadlock.
        purge = sql.SQL(
            "DELETE FROM {t} WHERE id IN "
            "(SELECT id FROM {t} WHERE expires <= %s FOR UPDATE SKIP LOCKED)"
        ).format(t=self._table)
        # Keep the scope's `scope_limit` most recently used rows, walking the scope's index
        # from its newest end: a walk as long as the limit, which is small beside the table.
        evict_scope = sql.SQL(
            "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE id IN "
            "(SELECT id FROM {t} WHERE {owner} = %s ORDER BY last_used DESC, id DESC OFFSET %s) "
            "FOR UPDATE SKIP LOCKED)"
        ).format(t=self._table, owner=_OWNER)

        async def op(conn: Connection) -> int:
            async with conn.transaction():
                async with conn.pipeline():  # one round trip for the three statements
                    upserted = await conn.execute(upsert, values)
                    purged = await conn.execute(purge, (entry.created,))
                    scoped = None
                    if scope_limit is not None:
                        scoped = await conn.execute(evict_scope, (entry.owner, max(scope_limit, 0)))
                inserted = await upserted.fetchone()
                added = int(bool(inserted and inserted[0])) - purged.rowcount
                added -= scoped.rowcount if scoped else 0
                excess = self._rows + added - self._max_entries
                if excess > 0:
                    added -= await self._evict(conn, excess)
                return added

        self._rows += await self._run(op)
        self._recount_now_and_then()

    async def record_hit(self, entry: Entry, now: float) -> None:
        query = sql.SQL(
            "UPDATE {t} SET hits = hits + 1, last_hit = %s, last_used = GREATEST(last_used, %s) "
            "WHERE id = %s RETURNING hits"
        ).format(t=self._table)
        rows = await self._fetch(query, (now, now, entry.id))
        if rows:  # as MemoryStore does, so the caller's copy agrees with the row
            entry.hits, entry.last_hit = int(rows[0][0]), now

    async def count(self, now: float) -> int:
        query = sql.SQL("SELECT count(*) FROM {t} WHERE expires > %s").format(t=self._table)
        return int((await self._fetch(query, (now,)))[0][0])

    async def delete(self, entry_id: str) -> bool:
        query = sql.SQL("DELETE FROM {t} WHERE id = %s").format(t=self._table)
        return await self._removed(query, (entry_id,)) > 0

    async def clear(self, namespace: str | None) -> int:
        if namespace is None:
            return await self._removed(sql.SQL("DELETE FROM {t}").format(t=self._table), ())
        query = sql.SQL("DELETE FROM {t} WHERE namespace = %s").format(t=self._table)
        return await self._removed(query, (namespace,))

    async def entries(self, query: EntryQuery, now: float) -> list[Entry]:
        where: list[sql.Composable] = [sql.SQL("expires > %s")]
        params: list[Any] = [now]
        if query.namespace is not None:
            where.append(sql.SQL("namespace = %s"))
            params.append(query.namespace)
        if query.model is not None:
            where.append(sql.SQL("model = %s"))
            params.append(query.model)
        if query.text is not None:
            # strpos, not LIKE: the text is matched literally, `%` and `_` included. lower()
            # folds case by the database's locale (ASCII only under the C locale).
            where.append(sql.SQL("strpos(lower(coalesce(text, '')), lower(%s)) > 0"))
            params.append(query.text)
        statement = sql.SQL(
            "SELECT {fields} FROM {t} WHERE {where} ORDER BY created, id OFFSET %s LIMIT %s"
        ).format(fields=self._fields(), t=self._table, where=sql.SQL(" AND ").join(where))
        rows = await self._fetch(statement, (*params, max(query.offset, 0), max(query.limit, 0)))
        return [_entry(row) for row in rows]

    async def get(self, entry_id: str, now: float) -> Entry | None:
        query = sql.SQL("SELECT {fields} FROM {t} WHERE id = %s AND expires > %s").format(
            fields=self._fields(), t=self._table
        )
        rows = await self._fetch(query, (entry_id, now))
        return _entry(rows[0]) if rows else None

    async def add_report(self, report: Report) -> None:
        query = sql.SQL("INSERT INTO {r} VALUES (%s, %s, %s, %s)").format(r=self._reports)
        await self._execute(
            query, (report.id, report.block, Jsonb(report.to_json()), report.created)
        )

    async def reports(self) -> list[Report]:
        query = sql.SQL("SELECT report FROM {r} ORDER BY created, id").format(r=self._reports)
        return [Report.from_json(row[0]) for row in await self._fetch(query, ())]

    async def blocked(self, block: str) -> bool:
        query = sql.SQL("SELECT 1 FROM {r} WHERE block = %s LIMIT 1").format(r=self._reports)
        return bool(await self._fetch(query, (block,)))

    async def embedding_models(self, now: float) -> set[str]:
        query = sql.SQL("SELECT DISTINCT embedding_model FROM {t} WHERE expires > %s").format(
            t=self._table
        )
        return {str(row[0]) for row in await self._fetch(query, (now,))}

    def loading(self) -> bool:
        return False

    async def ping(self) -> bool:
        try:
            await self._fetch(sql.SQL("SELECT 1"), ())
        except (psycopg.Error, OSError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        self._closed = True
        await self._drop_idle()
        # Calls that ran past their deadline are still unwinding (psycopg may be cancelling
        # their query); a second cancellation makes psycopg give up and close at once.
        if self._recount is not None:
            self._abandon(self._recount)
        for task in self._abandoned:
            task.cancel()
        if self._abandoned:
            await asyncio.wait(self._abandoned, timeout=self._timeout)

    # --- SQL ---

    def _fields(self) -> sql.Composable:
        return sql.SQL(", ").join(map(sql.Identifier, _FIELDS))

    def _search_sql(self, dimensions: int) -> sql.Composed:
        """The nearest-neighbour query for one dimension. The dimension must be a literal
        (not a parameter) for the planner to match the partial index's predicate."""
        dim = sql.Literal(dimensions)
        distance = sql.SQL("embedding::vector({dim}) <=> %(q)s::vector({dim})").format(dim=dim)
        return sql.SQL(
            "SELECT {fields}, 1 - ({distance}) FROM {t} "
            "WHERE vector_dims(embedding) = {dim} AND namespace = %(namespace)s "
            "AND partition = %(partition)s AND embedding_model = %(model)s "
            "AND expires > %(now)s ORDER BY {distance} LIMIT %(limit)s"
        ).format(fields=self._fields(), distance=distance, t=self._table, dim=dim)

    async def _evict(self, conn: Connection, excess: int) -> int:
        """Delete the `excess` least recently used rows; return how many went."""
        evict = sql.SQL(
            "DELETE FROM {t} WHERE id IN "
            "(SELECT id FROM {t} ORDER BY last_used, id LIMIT %s FOR UPDATE SKIP LOCKED)"
        ).format(t=self._table)
        return (await conn.execute(evict, (excess,))).rowcount

    async def _removed(self, query: Query, params: tuple[Any, ...]) -> int:
        removed = await self._execute(query, params)
        self._rows = max(self._rows - removed, 0)
        return removed

    async def _count_rows(self, conn: Connection) -> None:
        self._counted_at = time.monotonic()
        rows = await conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=self._table))
        self._rows = int((await rows.fetchone() or (0,))[0])

    def _recount_now_and_then(self) -> None:
        """Count the table again in the background once `recount` seconds have passed."""
        if self._recount is None and time.monotonic() - self._counted_at >= self._recount_seconds:
            self._recount = asyncio.ensure_future(self._counted())

    async def _counted(self) -> None:
        try:
            await self._run(self._count_rows, self._setup_timeout)
        except (psycopg.Error, OSError, TimeoutError, RuntimeError):
            pass  # counted again after the next put
        finally:
            self._recount = None

    def _index_name(self, suffix: str) -> sql.Identifier:
        return sql.Identifier(f"{self._name}_{suffix}")

    async def _prepare(self, conn: Connection) -> None:
        """Create the extension, table and indexes where absent. Other instances may do the
        same at the same moment: a transaction-scoped advisory lock takes turns, as
        `IF NOT EXISTS` alone races on the catalog."""
        t = self._table
        tables: list[Query] = [
            sql.SQL("CREATE EXTENSION IF NOT EXISTS vector"),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} ("
                "id text PRIMARY KEY, namespace text NOT NULL, partition text NOT NULL, "
                "exact text NOT NULL, text text, embedding vector, "
                "embedding_model text NOT NULL, model text NOT NULL, response jsonb NOT NULL, "
                "created float8 NOT NULL, expires float8 NOT NULL, "
                "hits bigint NOT NULL DEFAULT 0, last_hit float8, last_used float8 NOT NULL, "
                "extra jsonb NOT NULL DEFAULT '{{}}', scope text NOT NULL DEFAULT '', "
                "UNIQUE (namespace, exact))"
            ).format(t=t),
            # Reports (`Report`), each as its JSON; `block` is set for a wrong one.
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {r} (id text PRIMARY KEY, block text, "
                "report jsonb NOT NULL, created float8 NOT NULL)"
            ).format(r=self._reports),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {r} (block)").format(
                i=self._index_name("reports_block"), r=self._reports
            ),
        ]
        indexes: list[Query] = [
            # Search scope; also serves clear(namespace) and listing one namespace.
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {i} ON {t} (namespace, partition, embedding_model)"
            ).format(i=self._index_name("scope"), t=t),
            # LRU eviction walks this from the oldest end.
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (last_used, id)").format(
                i=self._index_name("last_used"), t=t
            ),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (expires)").format(
                i=self._index_name("expires"), t=t
            ),
            # Per-scope LRU eviction walks this from the newest end of one scope.
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} ({owner}, last_used, id)").format(
                i=self._index_name("owner"), t=t, owner=_OWNER
            ),
        ]
        # Tables made before entries had a scope get the column ("" counts every old row
        # against its namespace; a constant default adds no rewrite). Only when it is
        # missing: ALTER TABLE locks the table exclusively even when there is nothing to do.
        add_scope = sql.SQL(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS scope text NOT NULL DEFAULT ''"
        ).format(t=t)
        async with self._setup_lock:
            if self._ready:
                return
            async with conn.transaction():
                await self._lock_schema(conn)
                for statement in tables:
                    await conn.execute(statement)
                table = (t.as_string(conn),)
                scope = await conn.execute(
                    "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attname = 'scope' AND NOT attisdropped",
                    table,
                )
                if await scope.fetchone() is None:
                    await conn.execute(add_scope)
                for statement in indexes:
                    await conn.execute(statement)
                # Dimensions indexed by earlier runs or other instances need no DDL again.
                indexed = await conn.execute(
                    "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE i.indrelid = %s::regclass",
                    table,
                )
                pattern = re.compile(re.escape(self._name) + r"_hnsw_(\d+)")
                for (index,) in await indexed.fetchall():
                    if found := pattern.fullmatch(index):
                        self._dimensions.add(int(found[1]))
                await self._count_rows(conn)
            self._ready = True

    async def _ensure_index(self, dimensions: int) -> None:
        """The HNSW index for vectors of `dimensions`, created on the first put of one."""
        if dimensions in self._dimensions:
            return
        if dimensions > MAX_INDEXED_DIMENSIONS:
            self._dimensions.add(dimensions)  # searched exactly, without an index
            return
        dim = sql.Literal(dimensions)
        statement = sql.SQL(
            "CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw "
            "((embedding::vector({dim})) vector_cosine_ops) "
            "WHERE vector_dims(embedding) = {dim}"
        ).format(i=self._index_name(f"hnsw_{dimensions}"), t=self._table, dim=dim)

        async def op(conn: Connection) -> None:
            async with conn.transaction():
                await self._lock_schema(conn)
                await conn.execute(statement)

        await self._run(op, self._setup_timeout)
        self._dimensions.add(dimensions)

    async def _lock_schema(self, conn: Connection) -> None:
        # DDL, and waiting for another instance's, may take longer than a lookup: lift the
        # per-statement limit for this transaction first (a statement's limit is fixed when
        # it starts, so the lock needs a statement of its own).
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, true)",
            (f"{int(self._setup_timeout * 1000)}ms",),
        )
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('kallm schema ' || %s))",
            (self._table.as_string(conn),),
        )

    async def _fetch(self, query: Query, params: Any) -> list[TupleRow]:
        async def op(conn: Connection) -> list[TupleRow]:
            # Binary results: pgvector sends float4s as they are stored, no decimal text.
            async with conn.cursor(binary=True) as cursor:
                await cursor.execute(query, params)
                return await cursor.fetchall()

        return await self._run(op)

    async def _execute(self, query: Query, params: Any) -> int:
        async def op(conn: Connection) -> int:
            cursor = await conn.execute(query, params)
            return max(int(cursor.rowcount), 0)

        return await self._run(op)

    # --- connections and deadlines ---

    async def _run(
        self, op: Callable[[Connection], Awaitable[T]], timeout: float = 0.0, prepare: bool = True
    ) -> T:
        """Run `op` on a pooled connection within the deadline, or raise.

        `op` runs in its own task so the deadline holds: on timeout the caller gets
        TimeoutError at once, while the task is cancelled in the background. Cancelling it
        inline would wait for psycopg, which then tries to cancel the query on the server
        with its own 5 s timeouts — against a host that stopped answering, that is 10 s.
        """
        if self._closed:
            raise RuntimeError("the PostgreSQL store is closed")
        limit = timeout or self._timeout
        task = asyncio.ensure_future(self._attempt(op, prepare))
        try:
            done, _ = await asyncio.wait({task}, timeout=limit)
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        if not done:
            self._abandon(task)
            await self._drop_idle()  # the server stopped answering: they are likely dead too
            raise TimeoutError(f"PostgreSQL did not answer within {limit:g}s")
        return task.result()

    async def _attempt(self, op: Callable[[Connection], Awaitable[T]], prepare: bool) -> T:
        async with self._slots:
            conn = await self._checkout()
            try:
                if prepare and not self._ready:
                    await self._prepare(conn)
                result = await op(conn)
            except BaseException as error:
                if isinstance(error, (psycopg.OperationalError, asyncio.CancelledError)):
                    # Lost, or cancelled past its deadline: the server is in trouble, and
                    # the idle connections were likely cut off with this one.
                    await conn.close()
                    await self._drop_idle()
                else:
                    await self._checkin(conn)  # e.g. a constraint error: the session is fine
                    if isinstance(error, errors.UndefinedTable):
                        # Dropped under us (a reset by hand): create it again next call.
                        self._ready = False
                        self._dimensions.clear()
                raise
            await self._checkin(conn)
            return result

    async def _checkout(self) -> Connection:
        while self._idle:
            conn = self._idle.pop()
            if _alive(conn):
                return conn
            await conn.close()
        conn = await psycopg.AsyncConnection.connect(self._url, **self._connect_args)
        if self._closed:  # closed while connecting
            await conn.close()
            raise RuntimeError("the PostgreSQL store is closed")
        return conn

    async def _checkin(self, conn: Connection) -> None:
        if self._closed or not _reusable(conn):
            await conn.close()
        else:
            self._idle.append(conn)

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller already got a TimeoutError


def _connect_args(url: str, timeout: float) -> dict[str, Any]:
    """Connection settings layered over the URL's own: autocommit, bounded connecting and
    statements, and HNSW scans that go on past filtered-out candidates."""
    given = conninfo_to_dict(url)
    statement_ms = max(1, int(timeout * 1000))
    options = (
        f"{given.get('options') or ''} -c statement_timeout={statement_ms}"
        " -c hnsw.iterative_scan=strict_order"
    ).strip()
    args: dict[str, Any] = {"autocommit": True, "options": options}
    if "connect_timeout" not in given:
        # libpq counts whole seconds, at least 2; the call's own deadline is the tighter bound.
        args["connect_timeout"] = max(2, int(timeout + 0.999))
    if "application_name" not in given:
        args["application_name"] = "kallm"
    return args


def _reusable(conn: Connection) -> bool:
    return not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE


def _alive(conn: Connection) -> bool:
    """Whether an idle pooled connection may still be used. An idle session receives
    nothing, so anything readable (the FATAL a server sends on shutdown, or EOF) means it
    is gone; checking costs no round trip."""
    if not _reusable(conn):
        return False
    with contextlib.suppress(OSError, ValueError):
        if hasattr(select, "poll"):  # select() cannot watch fds above 1023; a proxy has many
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            return not poller.poll(0)  # POLLIN, or POLLHUP/POLLERR which come unasked
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
        return not readable
    return False


def _vector_text(vector: Iterable[float] | Vector) -> str:
    # Python's shortest repr of each float32 (held exactly as a double) parses back to the
    # same float32 in pgvector.
    return "[" + ",".join(map(str, np.asarray(vector, dtype=np.float32).tolist())) + "]"


def _vector(data: bytes | None) -> Vector | None:
    """pgvector's binary form: int16 dimensions, int16 unused, then big-endian float4s."""
    if data is None:
        return None
    return np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)


def _entry(row: TupleRow) -> Entry:
    """An entry from a row of _FIELDS (Entry's fields, in order, the vector as `embedding`)."""
    value = dict(zip(_FIELDS, row, strict=True))
    embedding, extra = value.pop("embedding"), value.pop("extra")
    read = {"vector": _vector(embedding), "hits": int(value["hits"]), "meta": Meta.from_json(extra)}
    return Entry(**value | read)
