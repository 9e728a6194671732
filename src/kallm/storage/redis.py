"""Redis: the store shared by several replicas (stock Redis 6 or later, no modules).

Redis is the source of truth; each replica keeps only a vector index in memory.

Keys, all under `prefix`:
- `{prefix}:e:{id}`: a hash with every `Entry` field (vector as float32 bytes, response and
  extra as JSON), `PEXPIREAT` at `entry.expires`, so Redis drops it on time by itself.
- `{prefix}:x:{namespace}:{exact}`: the id of the entry for an exact request, same expiry.
  Exact keys are hex digests, so the last `:` separates them from namespaces that hold `:`.
- `{prefix}:lru`: a sorted set, id by last use (`max(created, last_hit)`), for the size bound.
- `{prefix}:s:{owner}`: the same, for the entries of one scope (`Entry.owner`), for a put's
  `scope_limit`; and `{prefix}:own`, a hash of each id's owner, so an entry whose hash Redis
  has expired still leaves its scope's set.
- `{prefix}:exp`: a sorted set, id by `expires`. It counts live entries without reading
  them, lists every entry (a ZSCAN of the set, not a SCAN of a keyspace other apps may
  share), and finds ids whose hashes Redis has expired, so they leave `lru` too.
- `{prefix}:events`: a stream of `put` (with the vector) and `del` events, capped near
  10,000, from which every replica keeps its index in step.

Every write is one Lua script, so the entry, the sorted sets and the event change together
(a crash or a concurrent replica never sees half of it). `put` replaces the entry of the same
exact request, drops up to 100 expired ids, evicts the least recently used of its scope
beyond `scope_limit` (when given), then those beyond `max_entries`. A clear is a `del` event
per removed entry, never one "clear namespace" event: an entry another replica writes while
the clear runs survives in Redis, and a blanket event would drop it from every index.

Search is local: the nearest ids come from the replica's `VectorIndex` (storage/vectors.py),
then the candidate entries are read back from Redis, so deletion, eviction and expiry on any
replica count at once; ids found missing leave the index. Reads also filter by `expires > now`.
Listing (`entries`, `embedding_models`, `clear` of one namespace) reads a few fields of
every entry in pipelined batches: linear, for the admin API and start-up, not for requests.

A background task loads the index (so kallm serves while it loads, `loading`), then follows
the stream with `XREAD BLOCK` from the stream id read just before the index was loaded, so
nothing written during the load is missed; events apply idempotently (the replica's own
writes come back to it). When Redis goes away the task retries with a
backoff up to 1 s and, once Redis answers, reloads the whole index: events may have been
missed, or the server may have come back empty. It reloads as well when it falls so far
behind that the stream has been trimmed past its position.

Every command has a socket timeout of `timeout` seconds and at most one immediate retry on a
dropped connection (a server restart leaves the pool's connections dead), so with Redis down
a call raises within about twice `timeout`: the proxy catches it and fails open.

Redis Cluster is not supported: the scripts touch keys they compute themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from typing import TypeVar, cast

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from kallm.storage.base import Entry, EntryQuery, Hit, Meta, Report, Search, Vector
from kallm.storage.vectors import Key, VectorIndex, hits

log = logging.getLogger("kallm")

T = TypeVar("T")

STREAM_MAXLEN = 10_000
_BATCH = 500  # ids per pipeline or script call when a command covers many entries
_EVENTS_PER_READ = 1000
_BLOCK_MS = 2000  # one XREAD waits this long for events before it is sent again
_RETRY_MIN, _RETRY_MAX = 0.05, 1.0  # follower backoff, seconds
_SEARCH_ROUNDS = 3  # searches again when candidates turned out to be gone from Redis

# Removes entries by id: the hash, the exact key if it still names this id, both sorted
# sets, and a `del` event so every replica drops the vector. Shared by every script.
_REMOVE = """
local prefix, maxlen = ARGV[1], ARGV[2]
local lru, expiries, events = prefix .. ':lru', prefix .. ':exp', prefix .. ':events'
local owners = prefix .. ':own'
local existed = 0
local function remove(id, gone)
  local key = prefix .. ':e:' .. id
  local found = redis.call('HMGET', key, 'namespace', 'exact')
  if found[1] then
    local exact_key = prefix .. ':x:' .. found[1] .. ':' .. found[2]
    if redis.call('GET', exact_key) == id then redis.call('DEL', exact_key) end
    redis.call('DEL', key)
    existed = existed + 1
  end
  local tracked = redis.call('ZREM', lru, id) + redis.call('ZREM', expiries, id)
  local owner = redis.call('HGET', owners, id)
  if owner then
    redis.call('ZREM', prefix .. ':s:' .. owner, id)
    tracked = tracked + redis.call('HDEL', owners, id)
  end
  if found[1] or tracked > 0 then
    redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'op', 'del', 'id', id)
    gone[#gone + 1] = id
  end
end
"""

# ARGV: prefix, maxlen, then ids. Returns how many of them had an entry.
_DELETE = (
    _REMOVE
    + """
local gone = {}
for i = 3, #ARGV do remove(ARGV[i], gone) end
return existed
"""
)

# ARGV: prefix, maxlen, id, namespace, exact, expires (ms, integer), expires, last used,
# max entries, partition, embedding model, vector ('' for none), owner, scope limit ('' for
# none), then the hash's field value pairs. Returns {ids removed before the write, ids
# removed after it}.
_PUT = (
    _REMOVE
    + """
local id = ARGV[3]
local key = prefix .. ':e:' .. id
local exact_key = prefix .. ':x:' .. ARGV[4] .. ':' .. ARGV[5]
local scope = prefix .. ':s:' .. ARGV[13]
local replaced, evicted = {}, {}
local old = redis.call('GET', exact_key)
if old then remove(old, replaced) end
if redis.call('EXISTS', key) == 1 or redis.call('HEXISTS', owners, id) == 1 then
  remove(id, replaced)
end
redis.call('HSET', key, unpack(ARGV, 15))
redis.call('PEXPIREAT', key, ARGV[6])
redis.call('SET', exact_key, id)
redis.call('PEXPIREAT', exact_key, ARGV[6])
redis.call('ZADD', lru, ARGV[8], id)
redis.call('ZADD', expiries, ARGV[7], id)
redis.call('HSET', owners, id, ARGV[13])
redis.call('ZADD', scope, ARGV[8], id)
if ARGV[12] ~= '' then
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'op', 'put', 'id', id,
    'namespace', ARGV[4], 'partition', ARGV[10], 'model', ARGV[11], 'vector', ARGV[12])
end
-- Redis's clock: it is the one that expires the hashes. Bounded, so a put stays quick.
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
for _, victim in ipairs(redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, 100)) do
  remove(victim, evicted)
end
if ARGV[14] ~= '' then
  local excess = redis.call('ZCARD', scope) - math.max(tonumber(ARGV[14]), 0)
  if excess > 0 then
    for _, victim in ipairs(redis.call('ZRANGE', scope, 0, math.min(excess, 1000) - 1)) do
      remove(victim, evicted)
    end
  end
end
local excess = redis.call('ZCARD', lru) - tonumber(ARGV[9])
if excess > 0 then
  for _, victim in ipairs(redis.call('ZRANGE', lru, 0, math.min(excess, 1000) - 1)) do
    remove(victim, evicted)
  end
end
return {replaced, evicted}
"""
)

# ARGV: prefix, namespace, exact. The entry's hash as a flat list, or nil.
_GET_EXACT = """
local id = redis.call('GET', ARGV[1] .. ':x:' .. ARGV[2] .. ':' .. ARGV[3])
if not id then return nil end
return redis.call('HGETALL', ARGV[1] .. ':e:' .. id)
"""

# ARGV: prefix, id, now. The new hit count, or -1 when the entry is gone (HINCRBY on a
# missing hash would create one without an expiry).
_RECORD_HIT = """
local key = ARGV[1] .. ':e:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return -1 end
local hits = redis.call('HINCRBY', key, 'hits', 1)
redis.call('HSET', key, 'last_hit', ARGV[3])
redis.call('ZADD', ARGV[1] .. ':lru', 'XX', ARGV[3], ARGV[2])
local owner = redis.call('HGET', ARGV[1] .. ':own', ARGV[2])
if owner then redis.call('ZADD', ARGV[1] .. ':s:' .. owner, 'XX', ARGV[3], ARGV[2]) end
return hits
"""


def _fields(entry: Entry) -> list[bytes | str | float | int]:
    """The entry as hash field value pairs; absent fields stand for None."""
    fields: dict[str, bytes | str | float | int] = {
        "id": entry.id,
        "namespace": entry.namespace,
        "partition": entry.partition,
        "exact": entry.exact,
        "embedding_model": entry.embedding_model,
        "model": entry.model,
        "response": json.dumps(entry.response),
        "created": entry.created,  # redis-py writes floats with repr: they round-trip
        "expires": entry.expires,
        "hits": entry.hits,
        "extra": json.dumps(entry.meta.to_json()),
        "scope": entry.scope,
    }
    if entry.text is not None:
        fields["text"] = entry.text
    if entry.vector is not None:
        fields["vector"] = entry.vector.astype(np.float32).tobytes()
    if entry.last_hit is not None:
        fields["last_hit"] = entry.last_hit
    return [item for pair in fields.items() for item in pair]


def _entry(fields: dict[bytes, bytes]) -> Entry:
    text, vector, last_hit = fields.get(b"text"), fields.get(b"vector"), fields.get(b"last_hit")
    return Entry(
        id=fields[b"id"].decode(),
        namespace=fields[b"namespace"].decode(),
        partition=fields[b"partition"].decode(),
        exact=fields[b"exact"].decode(),
        text=None if text is None else text.decode(),
        vector=None if vector is None else np.frombuffer(vector, dtype=np.float32),
        embedding_model=fields[b"embedding_model"].decode(),
        model=fields[b"model"].decode(),
        response=json.loads(fields[b"response"]),
        created=float(fields[b"created"]),
        expires=float(fields[b"expires"]),
        hits=int(fields[b"hits"]),
        last_hit=None if last_hit is None else float(last_hit),
        meta=Meta.from_json(json.loads(fields[b"extra"])),
        scope=fields.get(b"scope", b"").decode(),  # absent in entries stored before scopes
    )


def _str(value: object) -> str:
    """A reply item as text (replies come as bytes: the client does not decode them)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise TypeError(f"unexpected reply item {value!r}")


def _stream_id(value: object) -> tuple[int, int]:
    ms, _, seq = _str(value).partition("-")
    return int(ms), int(seq or 0)


def _batches(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


class _Index:
    """The vectors of one replica, with the key of every id so events can remove them."""

    def __init__(self) -> None:
        self.vectors = VectorIndex()
        self.keys: dict[str, Key] = {}

    @classmethod
    def built(cls, ids: Sequence[str], rows: Sequence[Sequence[bytes | None]]) -> _Index:
        """An index of the entries with these ids and (namespace, partition, embedding
        model, vector) rows."""
        index = cls()
        items = []
        for entry_id, (namespace, partition, model, vector) in zip(ids, rows, strict=True):
            if namespace is None or partition is None or model is None or vector is None:
                continue  # exact only, or expired since the id was listed
            key = (namespace.decode(), partition.decode(), model.decode())
            index.keys[entry_id] = key
            items.append((key, entry_id, np.frombuffer(vector, dtype=np.float32)))
        index.vectors.add_all(items)
        return index

    def add(self, entry_id: str, key: Key, vector: Vector) -> None:
        if entry_id not in self.keys:  # events repeat what a replica already applied
            self.keys[entry_id] = key
            self.vectors.add(entry_id, key, vector)

    def remove(self, entry_id: str) -> None:
        key = self.keys.pop(entry_id, None)
        if key is not None:
            self.vectors.remove(entry_id, key)


class RedisStore:
    def __init__(
        self, url: str, max_entries: int, *, prefix: str = "kallm", timeout: float = 0.25
    ) -> None:
        self._max_entries = max_entries
        self._prefix = prefix
        self._events = f"{prefix}:events"
        self._lru = f"{prefix}:lru"
        self._expiries = f"{prefix}:exp"
        self._reports = f"{prefix}:reports"  # a list of Report JSON, oldest first
        self._blocks = f"{prefix}:blocks"  # a set of `Report.block`
        # One immediate retry, on a dropped connection only: after a server restart every
        # pooled connection is dead, and the retry reconnects. A timeout is not retried.
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            protocol=2,  # the reply shapes parsed here, and no HELLO round trip
        )
        # XREAD BLOCK holds its connection for _BLOCK_MS: a client of its own, whose read
        # timeout outlasts the block.
        self._follower = aioredis.Redis.from_url(
            url,
            socket_timeout=_BLOCK_MS / 1000 + timeout + 1,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )
        self._put = self._redis.register_script(_PUT)
        self._delete = self._redis.register_script(_DELETE)
        self._get_exact = self._redis.register_script(_GET_EXACT)
        self._record_hit = self._redis.register_script(_RECORD_HIT)
        self._index = _Index()
        self._last_event = "0-0"
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()  # wakes the follower from its backoff at close
        self._loaded = asyncio.Event()

    async def start(self) -> None:
        """Connect, then load the index and follow changes in the background (`loading`);
        raises when Redis does not answer, and may then be called again (`LazyStart`
        retries it until Redis is back)."""
        if self._task is not None:
            return
        try:
            await self._redis.ping()
        except BaseException:
            await self._close_clients()  # drops the connections; the clients stay usable
            raise
        self._task = asyncio.create_task(self._follow(), name=f"kallm-redis-{self._prefix}")

    async def loaded(self) -> None:
        """Wait until the index has been loaded once."""
        await self._loaded.wait()

    async def get_exact(self, namespace: str, exact: str, now: float) -> Entry | None:
        flat = await self._get_exact(args=[self._prefix, namespace, exact])
        if not flat:
            return None
        entry = _entry(dict(zip(flat[::2], flat[1::2], strict=True)))
        return entry if entry.expires > now else None

    async def search(self, query: Search) -> list[Hit]:
        for _ in range(_SEARCH_ROUNDS):
            index = self._index
            found = await index.vectors.nearest(query.index, query.vector, query.limit)
            if not found:
                return []
            entries = await self._read([entry_id for entry_id, _ in found])
            gone = [entry_id for entry_id, _ in found if entry_id not in entries]
            for entry_id in gone:  # deleted, evicted or expired: no event told us (yet)
                index.remove(entry_id)
            if not gone:
                break
        return hits(found, entries, query)

    async def put(self, entry: Entry, scope_limit: int | None = None) -> None:
        vector = b"" if entry.vector is None else entry.vector.astype(np.float32).tobytes()
        replaced, evicted = await self._put(
            args=[
                self._prefix, STREAM_MAXLEN, entry.id, entry.namespace, entry.exact,
                math.ceil(entry.expires * 1000), entry.expires,
                max(entry.created, entry.last_hit or 0.0), self._max_entries, entry.partition,
                entry.embedding_model, vector, entry.owner,
                "" if scope_limit is None else scope_limit, *_fields(entry),
            ]
        )  # fmt: skip
        # Applied here at once, so this replica finds its own write; the stream brings it
        # back later, and adding an id twice is a no-op.
        index = self._index
        for entry_id in replaced:
            index.remove(entry_id.decode())
        if entry.vector is not None:
            key = (entry.namespace, entry.partition, entry.embedding_model)
            index.add(entry.id, key, entry.vector.astype(np.float32))
        for entry_id in evicted:
            index.remove(entry_id.decode())

    async def record_hit(self, entry: Entry, now: float) -> None:
        hits = int(await self._record_hit(args=[self._prefix, entry.id, now]))
        if hits >= 0:
            entry.hits = hits  # counts the hits of every replica
            entry.last_hit = now

    async def count(self, now: float) -> int:
        return int(await self._redis.zcount(self._expiries, f"({now!r}", "+inf"))

    async def delete(self, entry_id: str) -> bool:
        return await self._remove([entry_id]) > 0

    async def clear(self, namespace: str | None) -> int:
        ids = await self._ids()
        if namespace is not None:
            names = await self._hmget(ids, "namespace")
            ids = [i for i, (name,) in zip(ids, names, strict=True) if name == namespace.encode()]
        removed = 0
        for batch in _batches(ids):
            removed += await self._remove(batch)
        return removed

    async def entries(self, query: EntryQuery, now: float) -> list[Entry]:
        ids = await self._ids(expiring_after=now)
        # Filters and orders on a few small fields; only the page is read whole.
        rows = await self._hmget(ids, "namespace", "model", "text", "created")
        matching: list[tuple[float, str]] = []
        for entry_id, (namespace, model, text, created) in zip(ids, rows, strict=True):
            if namespace is None or model is None or created is None:
                continue  # expired since the id was listed
            if (
                (query.namespace is None or namespace.decode() == query.namespace)
                and (query.model is None or model.decode() == query.model)
                and (query.text is None or query.text.lower() in (text or b"").decode().lower())
            ):
                matching.append((float(created), entry_id))
        matching.sort()
        page = [entry_id for _, entry_id in matching[query.offset : query.offset + query.limit]]
        found = await self._read(page)
        return [found[i] for i in page if i in found and found[i].expires > now]

    async def get(self, entry_id: str, now: float) -> Entry | None:
        entry = (await self._read([entry_id])).get(entry_id)
        return entry if entry is not None and entry.expires > now else None

    async def add_report(self, report: Report) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(self._reports, json.dumps(report.to_json()))
        if report.block is not None:
            pipe.sadd(self._blocks, report.block)
        await pipe.execute()

    async def reports(self) -> list[Report]:
        return [
            Report.from_json(json.loads(raw))
            for raw in await self._redis.lrange(self._reports, 0, -1)
        ]

    async def blocked(self, block: str) -> bool:
        return bool(await self._redis.sismember(self._blocks, block))

    async def embedding_models(self, now: float) -> set[str]:
        ids = await self._ids(expiring_after=now)
        return {model.decode() for (model,) in await self._hmget(ids, "embedding_model") if model}

    def loading(self) -> bool:
        return not self._loaded.is_set()

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        self._closing = True
        self._closed.set()
        task, self._task = self._task, None
        # Closing the follower's connection wakes its XREAD with an error, and the loop then
        # sees `_closing` and returns. Cancellation alone is not enough: redis-py can swallow
        # a cancel that lands while a read is under its socket timeout, and the loop would
        # go on reading.
        await self._follower.aclose()
        if task is not None:
            done, _ = await asyncio.wait([task], timeout=_BLOCK_MS / 1000 + 1)
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=1)
        await self._redis.aclose()

    async def _close_clients(self) -> None:
        await self._follower.aclose()
        await self._redis.aclose()

    async def _remove(self, ids: Sequence[str]) -> int:
        existed = int(await self._delete(args=[self._prefix, STREAM_MAXLEN, *ids]))
        index = self._index
        for entry_id in ids:
            index.remove(entry_id)
        return existed

    async def _ids(self, expiring_after: float | None = None) -> list[str]:
        """Every id in the store, or those expiring after a time. ZSCAN walks the set with a
        cursor, so a large cache never comes back as one reply that outlasts the timeout;
        it may return an id twice, never skip one that stays."""
        ids: dict[str, None] = {}
        async for member, expires in self._redis.zscan_iter(self._expiries, count=_BATCH):
            if expiring_after is None or expires > expiring_after:
                ids[_str(member)] = None
        return list(ids)

    async def _read(self, ids: Sequence[str]) -> dict[str, Entry]:
        """The entries still in Redis, by id."""
        found: dict[str, Entry] = {}
        for batch in _batches(ids):
            pipe = self._redis.pipeline(transaction=False)
            for entry_id in batch:
                pipe.hgetall(f"{self._prefix}:e:{entry_id}")
            for fields in await pipe.execute():
                if fields:
                    entry = _entry(fields)
                    found[entry.id] = entry
        return found

    async def _hmget(self, ids: Sequence[str], *fields: str) -> list[list[bytes | None]]:
        rows: list[list[bytes | None]] = []
        for batch in _batches(ids):
            pipe = self._redis.pipeline(transaction=False)
            for entry_id in batch:
                pipe.hmget(f"{self._prefix}:e:{entry_id}", list(fields))
            rows.extend(await pipe.execute())
        return rows

    async def _load(self) -> None:
        """Build the index from Redis. The stream position is read first: what changes
        during the load comes again as events, and applying them twice is harmless."""
        last = await self._redis.xrevrange(self._events, count=1)
        last_event = _str(last[0][0]) if last else "0-0"
        ids = await self._ids()
        rows = await self._hmget(ids, "namespace", "partition", "embedding_model", "vector")
        # Built in a worker thread on every core (a million vectors take a minute or two),
        # then swapped in whole: a search never sees an index half loaded.
        self._index = await asyncio.to_thread(_Index.built, ids, rows)
        self._last_event = last_event
        self._loaded.set()

    async def _follow(self) -> None:
        """Apply the stream's events to the index, for as long as the store is open."""
        stale, delay = not self._loaded.is_set(), _RETRY_MIN
        while not self._closing:
            try:
                if stale:
                    reload = self._loaded.is_set()
                    await self._load()
                    if reload:
                        log.info("redis store: reconnected, index reloaded")
                    stale, delay = False, _RETRY_MIN
                reply = await self._follower.xread(
                    {self._events: self._last_event}, count=_EVENTS_PER_READ, block=_BLOCK_MS
                )
                # Without decode_responses (RESP2): [[stream, [(id, {field: value})]]].
                streams = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], reply)
                for _stream, events in streams or []:
                    if len(events) == _EVENTS_PER_READ and await self._trimmed_past():
                        stale = True  # events were dropped before this replica read them
                        break
                    for event_id, fields in events:
                        self._apply(fields)
                        self._last_event = _str(event_id)
            except Exception as error:  # Redis gone, or anything else: never end the task
                if self._closing:
                    return
                if not stale:
                    log.warning("redis store: following changes failed, retrying: %r", error)
                stale = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), delay)
                delay = min(delay * 2, _RETRY_MAX)

    async def _trimmed_past(self) -> bool:
        first = await self._follower.xrange(self._events, count=1)
        if not first:
            return False
        return _stream_id(first[0][0]) > _stream_id(self._last_event)

    def _apply(self, fields: dict[bytes, bytes]) -> None:
        entry_id = fields[b"id"].decode()
        if fields[b"op"] == b"put":
            key = (
                fields[b"namespace"].decode(),
                fields[b"partition"].decode(),
                fields[b"model"].decode(),
            )
            self._index.add(entry_id, key, np.frombuffer(fields[b"vector"], dtype=np.float32))
        elif fields[b"op"] == b"del":
            self._index.remove(entry_id)
