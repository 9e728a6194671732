"""SQLite: the embedded store that survives restarts (one replica with a volume).

Entries live in one table in WAL mode, so a crash (even `kill -9`) mid-write leaves a
consistent database: the last committed entries are there, a half-written one is not.
Vectors are also kept in memory (`VectorIndex`), because searching a graph in memory is far
faster than reading rows back. After `start` they load in the background: read back from
the files a clean `close` saved beside the database (`<db>.index/`, seconds for a million),
or, when there are none that match (after a crash), built from the rows (two
minutes for a million). All SQL runs on one worker thread: sqlite3 connections belong to a
thread, and the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from kallm.storage.base import Entry, EntryQuery, Hit, Meta, Report, Search
from kallm.storage.vectors import Key, VectorIndex, hits, index_key

T = TypeVar("T")
_LOAD_PAGE = 1_000  # rows read, and added to the graph, at once while loading

_TABLE = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    partition TEXT NOT NULL,
    exact TEXT NOT NULL,
    text TEXT,
    vector BLOB,
    embedding_model TEXT NOT NULL,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    last_hit REAL,
    last_used REAL NOT NULL,
    extra TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT ''
)
"""
# `Entry.owner` in SQL. The scope index is on this very expression, and queries must spell
# it the same way for SQLite to use the index.
_OWNER = "(CASE WHEN scope = '' THEN namespace ELSE scope END)"
_INDEXES = f"""
CREATE UNIQUE INDEX IF NOT EXISTS entries_exact ON entries (namespace, exact);
CREATE INDEX IF NOT EXISTS entries_last_used ON entries (last_used);
CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires);
CREATE INDEX IF NOT EXISTS entries_scope ON entries ({_OWNER}, last_used);
"""
# Reports (`Report`), each as its JSON; `block` is set for a wrong one.
_REPORTS = """
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY, block TEXT, report TEXT NOT NULL, created REAL NOT NULL
)
"""
_COLUMNS = (
    "id, namespace, partition, exact, text, vector, embedding_model, model, response, "
    "created, expires, hits, last_hit, last_used, extra, scope"
)


def _row(entry: Entry) -> tuple[Any, ...]:
    vector = None if entry.vector is None else entry.vector.astype(np.float32).tobytes()
    return (
        entry.id, entry.namespace, entry.partition, entry.exact, entry.text, vector,
        entry.embedding_model, entry.model, json.dumps(entry.response), entry.created,
        entry.expires, entry.hits, entry.last_hit, max(entry.created, entry.last_hit or 0),
        json.dumps(entry.meta.to_json()), entry.scope,
    )  # fmt: skip


def _entry(row: sqlite3.Row) -> Entry:
    vector = None if row["vector"] is None else np.frombuffer(row["vector"], dtype=np.float32)
    return Entry(
        id=row["id"], namespace=row["namespace"], partition=row["partition"],
        exact=row["exact"], text=row["text"], vector=vector,
        embedding_model=row["embedding_model"], model=row["model"],
        response=json.loads(row["response"]), created=row["created"], expires=row["expires"],
        hits=row["hits"], last_hit=row["last_hit"], meta=Meta.from_json(json.loads(row["extra"])),
        scope=row["scope"],
    )  # fmt: skip


def _vector_page(db: sqlite3.Connection, after: int, until: int) -> list[sqlite3.Row]:
    """The next rows with a vector after rowid `after`, up to `until`, with only what the
    index reads: decoding each row's answer and metadata cost most of a load."""
    return db.execute(
        "SELECT rowid, id, namespace, partition, embedding_model, vector FROM entries "
        "WHERE vector IS NOT NULL AND rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?",
        (after, until, _LOAD_PAGE),
    ).fetchall()


class SqliteStore:
    def __init__(self, path: Path, max_entries: int) -> None:
        self._path = path
        self._max_entries = max_entries
        self._vectors = VectorIndex()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kallm-sqlite")
        self._db: sqlite3.Connection | None = None
        self._loader: asyncio.Task[None] | None = None
        self._removed: dict[str, Key] = {}  # ids removed while the vectors load
        # The index as the last close left it, beside the database.
        self._saved = path.with_name(path.name + ".index")

    async def start(self) -> None:
        """Open (or create) the database, and begin loading its vectors: until they are in,
        exact lookups work and a search sees those loaded so far (`loading`)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._open)
        saved = await self._run(self._take_saved)
        self._loader = asyncio.create_task(
            self._load_saved() if saved else self._load(), name="kallm-sqlite-vectors"
        )

    def loading(self) -> bool:
        return self._loader is not None and not self._loader.done()

    async def loaded(self) -> None:
        """Wait until the vectors stored before `start` are in the index."""
        if self._loader is not None:
            await asyncio.shield(self._loader)

    def _take_saved(self, db: sqlite3.Connection) -> bool:
        """Whether the saved index is the one the last close wrote for this database, as it
        still is; it is good for this start only (the token is taken)."""
        row = db.execute("DELETE FROM saved_index RETURNING token").fetchone()
        token = self._saved / "token"
        return row is not None and token.exists() and token.read_text() == row[0]

    async def _load_saved(self) -> None:
        saved = await asyncio.to_thread(VectorIndex.load, self._saved)
        await self._run(lambda _: self._adopt(saved))

    def _adopt(self, saved: VectorIndex) -> None:
        """Swap in the saved index with what was written while it loaded. On the SQL thread,
        where every other index write runs, so none comes in between."""
        saved.absorb(self._vectors)
        for entry_id, key in self._removed.items():
            saved.remove(entry_id, key)
        self._vectors = saved
        self._removed.clear()

    async def _save(self) -> None:
        """Save the index for the next start, then mark the database as matching it. A crash
        before the mark leaves none, so the next start rebuilds from the rows."""
        token = uuid.uuid4().hex

        def save(db: sqlite3.Connection) -> None:
            self._vectors.save(self._saved)
            (self._saved / "token").write_text(token)
            db.execute("DELETE FROM saved_index")  # the last to close wrote the files
            db.execute("INSERT INTO saved_index (token) VALUES (?)", (token,))

        await self._run(save)

    async def _load(self) -> None:
        # In pages by rowid, the graph built from a worker thread on every core, so requests
        # go on meanwhile. Rows written meanwhile are added by `put` (a page that reads one
        # again skips it); rows removed meanwhile are taken out after their page.
        after = 0
        until = await self._run(
            lambda db: db.execute("SELECT MAX(rowid) FROM entries").fetchone()[0]
        )
        while rows := await self._run(
            functools.partial(_vector_page, after=after, until=until or 0)
        ):
            after = rows[-1]["rowid"]
            items = [
                ((row["namespace"], row["partition"], row["embedding_model"]), row["id"],
                 np.frombuffer(row["vector"], np.float32))
                for row in rows
            ]  # fmt: skip
            await asyncio.to_thread(self._vectors.add_all, items)
            for entry_id in self._removed.keys() & {row["id"] for row in rows}:
                self._vectors.remove(entry_id, self._removed[entry_id])
        self._removed.clear()

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None)  # autocommit; BEGIN explicitly
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL with WAL: a process crash loses nothing committed; a power cut may lose the
        # last transactions but never corrupts the database.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute(_TABLE)
        # Tables made before entries had a scope get the column; "" counts every old entry
        # against its namespace. Under a write lock: another process may be opening too.
        db.execute("BEGIN IMMEDIATE")
        try:
            if "scope" not in {row["name"] for row in db.execute("PRAGMA table_info(entries)")}:
                db.execute("ALTER TABLE entries ADD COLUMN scope TEXT NOT NULL DEFAULT ''")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.executescript(_INDEXES)
        db.execute("CREATE TABLE IF NOT EXISTS saved_index (token TEXT NOT NULL)")
        db.execute(_REPORTS)
        db.execute("CREATE INDEX IF NOT EXISTS reports_block ON reports (block)")
        self._db = db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise RuntimeError("the SQLite store is closed")
            return work(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def get_exact(self, namespace: str, exact: str, now: float) -> Entry | None:
        rows = await self._run(lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE namespace = ? AND exact = ? AND expires > ?",
            (namespace, exact, now),
        ).fetchall())  # fmt: skip
        return _entry(rows[0]) if rows else None

    async def search(self, query: Search) -> list[Hit]:
        found = await self._vectors.nearest(query.index, query.vector, query.limit)
        if not found:
            return []
        ids = [entry_id for entry_id, _ in found]
        marks = ",".join("?" * len(ids))
        rows = await self._run(lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE id IN ({marks}) AND expires > ?",
            (*ids, query.now),
        ).fetchall())  # fmt: skip
        return hits(found, {row["id"]: _entry(row) for row in rows}, query)

    async def put(self, entry: Entry, scope_limit: int | None = None) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                gone = [_entry(r) for r in db.execute(
                    f"SELECT {_COLUMNS} FROM entries WHERE (namespace = ? AND exact = ?) "
                    "OR expires <= ?",
                    (entry.namespace, entry.exact, entry.created),
                )]  # fmt: skip
                db.executemany("DELETE FROM entries WHERE id = ?", [(e.id,) for e in gone])
                row = _row(entry)
                marks = ",".join("?" * len(row))
                db.execute(f"INSERT INTO entries ({_COLUMNS}) VALUES ({marks})", row)
                if scope_limit is not None:
                    # Both walk the scope's index, so the cost follows the scope's size.
                    excess = db.execute(
                        f"SELECT COUNT(*) FROM entries WHERE {_OWNER} = ?", (entry.owner,)
                    ).fetchone()[0] - max(scope_limit, 0)
                    if excess > 0:
                        evicted = [_entry(r) for r in db.execute(
                            f"SELECT {_COLUMNS} FROM entries WHERE {_OWNER} = ? "
                            "ORDER BY last_used LIMIT ?",
                            (entry.owner, excess),
                        )]  # fmt: skip
                        db.executemany(
                            "DELETE FROM entries WHERE id = ?", [(e.id,) for e in evicted]
                        )
                        gone += evicted
                excess = (
                    db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] - self._max_entries
                )
                if excess > 0:
                    evicted = [_entry(r) for r in db.execute(
                        f"SELECT {_COLUMNS} FROM entries ORDER BY last_used LIMIT ?",
                        (excess,),
                    )]  # fmt: skip
                    db.executemany("DELETE FROM entries WHERE id = ?", [(e.id,) for e in evicted])
                    gone += evicted
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._unindex(gone)
            if all(old.id != entry.id for old in gone):  # a bound may evict the entry itself
                self._vectors.add(entry.id, index_key(entry), entry.vector)

        await self._run(write)

    def _unindex(self, gone: list[Entry]) -> None:
        """Take removed entries out of the index. On the SQL thread, as every index write
        but the load's: waiting there for the index lock never holds up the event loop."""
        for old in gone:
            self._vectors.remove(old.id, index_key(old))
            if self.loading():
                self._removed[old.id] = index_key(old)

    async def record_hit(self, entry: Entry, now: float) -> None:
        entry.hits += 1
        entry.last_hit = now
        await self._run(lambda db: db.execute(
            "UPDATE entries SET hits = hits + 1, last_hit = ?, last_used = ? WHERE id = ?",
            (now, now, entry.id),
        ))  # fmt: skip

    async def count(self, now: float) -> int:
        count: int = await self._run(lambda db: db.execute(
            "SELECT COUNT(*) FROM entries WHERE expires > ?", (now,)
        ).fetchone()[0])  # fmt: skip
        return count

    async def delete(self, entry_id: str) -> bool:
        return await self._delete("id = ?", (entry_id,)) > 0

    async def clear(self, namespace: str | None) -> int:
        if namespace is None:
            return await self._delete("1 = 1", ())
        return await self._delete("namespace = ?", (namespace,))

    async def _delete(self, where: str, args: tuple[Any, ...]) -> int:
        def remove(db: sqlite3.Connection) -> int:
            rows = db.execute(f"DELETE FROM entries WHERE {where} RETURNING {_COLUMNS}", args)
            gone = [_entry(r) for r in rows.fetchall()]
            self._unindex(gone)
            return len(gone)

        return await self._run(remove)

    async def entries(self, query: EntryQuery, now: float) -> list[Entry]:
        rows = await self._run(lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE expires > ? "
            "AND (? IS NULL OR namespace = ?) AND (? IS NULL OR model = ?) "
            "AND (? IS NULL OR instr(lower(text), lower(?)) > 0) "
            "ORDER BY created, id LIMIT ? OFFSET ?",
            (now, query.namespace, query.namespace, query.model, query.model, query.text,
             query.text, query.limit, query.offset),
        ).fetchall())  # fmt: skip
        return [_entry(row) for row in rows]

    async def get(self, entry_id: str, now: float) -> Entry | None:
        row = await self._run(lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE id = ? AND expires > ?", (entry_id, now)
        ).fetchone())  # fmt: skip
        return None if row is None else _entry(row)

    async def add_report(self, report: Report) -> None:
        row = (report.id, report.block, json.dumps(report.to_json()), report.created)
        await self._run(lambda db: db.execute("INSERT INTO reports VALUES (?, ?, ?, ?)", row))

    async def reports(self) -> list[Report]:
        rows = await self._run(lambda db: db.execute(
            "SELECT report FROM reports ORDER BY created, id"
        ).fetchall())  # fmt: skip
        return [Report.from_json(json.loads(row[0])) for row in rows]

    async def blocked(self, block: str) -> bool:
        found = await self._run(lambda db: db.execute(
            "SELECT 1 FROM reports WHERE block = ? LIMIT 1", (block,)
        ).fetchone())  # fmt: skip
        return found is not None

    async def embedding_models(self, now: float) -> set[str]:
        rows = await self._run(lambda db: db.execute(
            "SELECT DISTINCT embedding_model FROM entries WHERE expires > ?", (now,)
        ).fetchall())  # fmt: skip
        return {row[0] for row in rows}

    async def ping(self) -> bool:
        return bool(await self._run(lambda db: db.execute("SELECT 1").fetchone()[0]))

    async def close(self) -> None:
        if self._loader is not None:
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader
            whole = not self._loader.cancelled() and self._loader.exception() is None
            if whole and self._db is not None:
                await self._save()  # a whole index: a partly loaded one is not saved
        if self._db is not None:
            await self._run(lambda db: db.close())
            self._db = None
        self._thread.shutdown(wait=True)
