"""`POST /v1/embeddings`, cached exactly and per input item.

Each item of a batch is looked up on its own. When every item is cached, kallm answers
without calling upstream; when none is, the request goes upstream unchanged and its answer
comes back unchanged; when some are, only the missing items go upstream and the answer is
put back together in the caller's order. Like the chat path this fails open: a store that
fails makes every item a miss, and the request is still answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from kallm import keys, upstream
from kallm.metrics import Outcome
from kallm.policies import Policy
from kallm.providers import openai_embeddings as wire
from kallm.providers.base import InvalidRequest, Upstream
from kallm.providers.openai import error_body
from kallm.proxy import bookkeeping
from kallm.proxy.admission import Caller
from kallm.proxy.auth import Refused
from kallm.proxy.cached import Core, offload
from kallm.proxy.directives import RequestPolicy
from kallm.storage.base import Entry, Meta

log = logging.getLogger("kallm")

T = TypeVar("T")
R = TypeVar("R")

# The largest embeddings answer kallm holds to split into items, whatever
# KALLM_MAX_ANSWER_SIZE says: its items are cached one by one, and a batch of a few hundred
# vectors is already megabytes of JSON. A larger answer is relayed and not cached.
ANSWER_LIMIT = 64 * 1024 * 1024

# Store calls run this many at a time: a batch of 2,048 items must not open 2,048 at once.
STORE_CONCURRENCY = 32


@dataclass(frozen=True)
class Forward:
    """What goes upstream: `items` (each distinct missing item once), their keys, and the
    body; `whole` when that is the request as the client sent it."""

    items: list[wire.Item]
    keys: list[keys.CacheKey]
    body: bytes
    whole: bool


def plan_forward(
    request: wire.EmbeddingsRequest,
    item_keys: Sequence[keys.CacheKey],
    cached: Mapping[str, Entry],
    body: bytes,
) -> Forward:
    """With nothing cached, the request goes as sent (byte for byte); otherwise only the
    missing items go, each distinct one once, in the order they were asked for."""
    if not cached:
        return Forward(list(request.items), list(item_keys), body, whole=True)
    items: list[wire.Item] = []
    sent: dict[str, keys.CacheKey] = {}
    for item, key in zip(request.items, item_keys, strict=True):
        if key.exact not in cached and key.exact not in sent:
            sent[key.exact] = key
            items.append(item)
    return Forward(items, list(sent.values()), wire.forwarded_body(request, items), whole=False)


@dataclass(frozen=True)
class Batch:
    """One request on its way: what was asked, under which keys, what the cache served
    (None where an item missed), and the X-Kallm-Cache headers every answer carries."""

    asked: wire.EmbeddingsRequest
    namespace: str
    item_keys: list[keys.CacheKey]
    served: list[Entry | None]
    headers: dict[str, str]
    started: float

    @property
    def hits(self) -> int:
        return sum(entry is not None for entry in self.served)


def merge(
    served: Sequence[Entry | None],
    item_keys: Sequence[keys.CacheKey],
    sent_keys: Sequence[keys.CacheKey],
    fresh: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every item of the batch in the caller's order: the cached ones, and the fresh ones
    (`fresh[i]` answers `sent_keys[i]`) wherever the cache missed."""
    by_key = dict(zip((key.exact for key in sent_keys), fresh, strict=True))
    return [
        entry.response if entry is not None else by_key[key.exact]
        for entry, key in zip(served, item_keys, strict=True)
    ]


def cache_header(cached: int, total: int, looked_up: bool) -> str:
    """X-Kallm-Cache for a batch: HIT (every item cached), PARTIAL (some), MISS (none), or
    BYPASS when the cache was not looked in."""
    if not looked_up:
        return "BYPASS"
    if cached == total:
        return "HIT"
    return "PARTIAL" if cached else "MISS"


class EmbeddingsProxy:
    route = wire.ROUTE

    def __init__(self, target: Upstream, core: Core) -> None:
        self._target = target
        self._core = core

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            own_key = self._target.api_key is not None
            admitted = await self._core.admission.admit(request, self.route, own_key)
            body = admitted.body
            asked, item_keys = await offload(len(body), _understand, body, admitted.namespace)
            rules = admitted.for_model(self.route, asked.model)
        except Refused as refused:
            return self._refuse(started, refused.status, str(refused), refused.kind)
        except InvalidRequest as error:
            return self._refuse(started, 400, str(error), "invalid_request_error", error.param)

        cached: dict[str, Entry] = {}
        if rules.lookup:
            cached = await self._lookup(asked, item_keys, admitted.namespaces[1:])
        served = [cached.get(key.exact) for key in item_keys]
        hits = sum(entry is not None for entry in served)
        outcome = cache_header(hits, len(served), rules.lookup)
        headers = {"x-kallm-cache": outcome, "x-kallm-cache-hits": f"{hits}/{len(served)}"}
        batch = Batch(asked, admitted.namespace, item_keys, served, headers, started)
        if outcome == "HIT":
            return await self._replay(batch)
        forward = plan_forward(asked, item_keys, cached, body)
        return await self._forward(admitted.caller, batch, forward, rules, admitted.policy)

    async def _forward(
        self,
        caller: Caller,
        batch: Batch,
        forward: Forward,
        rules: RequestPolicy,
        local: Policy,
    ) -> Response:
        """Ask upstream for what the cache lacks, store it, and answer the whole batch."""
        try:
            sent = await upstream.send(self._core.client, self._upstream_request(caller, forward))
        except upstream.UpstreamFailure as failure:
            return self._no_answer(batch, failure.status, str(failure))
        headers = upstream.response_headers(sent.headers, decoded=True) | batch.headers
        label = Outcome.MISS if rules.lookup else Outcome.BYPASS
        try:
            prefix = await upstream.read_prefix(sent, ANSWER_LIMIT)
        except upstream.UpstreamFailure as failure:
            return self._no_answer(batch, failure.status, str(failure))
        if not prefix.whole:
            if not forward.whole:
                await sent.aclose()
                message = "The upstream API's answer is too large to put together."
                return self._no_answer(batch, 502, message)
            self._finish(batch, sent.status_code, label)
            return StreamingResponse(
                upstream.relay_rest(prefix, sent), sent.status_code, headers=headers
            )
        await sent.aclose()
        answer = prefix.head
        if sent.status_code != 200:
            # The upstream's error, as it sent it; the cached items are not served alone.
            self._core.metrics.upstream_error(self.route)
            self._finish(batch, sent.status_code, Outcome.ERROR)
            return Response(answer, sent.status_code, headers=headers)

        fresh = await offload(len(answer), wire.read_answer, answer, len(forward.items))
        if fresh is None:
            if not forward.whole:
                message = "The upstream API's answer could not be read as embeddings."
                return self._no_answer(batch, 502, message)
            # Not an answer kallm can split into items: pass it on, store nothing.
            self._finish(batch, 200, label)
            return Response(answer, 200, headers=headers)
        if rules.store:
            await self._store(batch, forward, fresh, rules.ttl, local.max_entries)
        await self._record_hits(batch.served)
        self._finish(batch, 200, label)
        if forward.whole:
            return Response(answer, 200, headers=headers)
        items = merge(batch.served, batch.item_keys, forward.keys, fresh.items)
        return Response(
            wire.assemble(items, fresh.model or batch.asked.model, fresh.usage),
            200,
            headers=headers,
            media_type="application/json",
        )

    def _upstream_request(self, caller: Caller, forward: Forward) -> httpx.Request:
        url = f"{self._target.base_url}/embeddings"
        auth = upstream.bearer(self._target.api_key)
        return upstream.post(self._core.client, url, caller.headers, auth, forward.body)

    async def _lookup(
        self, asked: wire.EmbeddingsRequest, item_keys: list[keys.CacheKey], others: list[str]
    ) -> dict[str, Entry]:
        """The cached entries by the item's own key: each item is looked for in the caller's
        namespace, then in those it shares with. A store that fails: nothing is cached."""
        now = self._core.clock()
        places = [item_keys] + [wire.item_keys(other, asked) for other in others]
        first_of: dict[str, int] = {}  # each distinct item is looked up once
        for index, key in enumerate(item_keys):
            first_of.setdefault(key.exact, index)

        async def find(index: int) -> Entry | None:
            for place in places:
                key = place[index]
                entry = await self._core.store.get_exact(key.namespace, key.exact, now)
                if entry is not None:
                    return entry
            return None

        try:
            found = await _batched(find, list(first_of.values()))
        except Exception:
            self._core.cache_failed("store")
            return {}
        return {
            exact: entry for exact, entry in zip(first_of, found, strict=True) if entry is not None
        }

    async def _replay(self, batch: Batch) -> Response:
        """Every item was cached: the answer is put together without calling upstream."""
        entries = [entry for entry in batch.served if entry is not None]
        await self._record_hits(batch.served)
        self._finish(batch, 200, Outcome.HIT)
        body = wire.assemble(
            [entry.response for entry in entries], entries[0].model, wire.no_usage()
        )
        return Response(body, 200, headers=batch.headers, media_type="application/json")

    async def _store(
        self,
        batch: Batch,
        forward: Forward,
        fresh: wire.Answer,
        ttl: float,
        limit: int | None,
    ) -> None:
        """One exact-only entry per distinct item sent, carrying its share of the usage so a
        later hit counts the tokens it saved."""
        shares = wire.usage_shares(forward.items, wire.prompt_tokens(fresh.usage))
        now = self._core.clock()
        entries: dict[str, Entry] = {}
        for key, item, share in zip(forward.keys, fresh.items, shares, strict=True):
            entries.setdefault(
                key.exact,
                Entry(
                    id=uuid.uuid4().hex,
                    namespace=key.namespace,
                    partition=key.partition,
                    exact=key.exact,
                    text=None,
                    vector=None,
                    embedding_model=self._core.embedder.name,
                    model=fresh.model or batch.asked.model,
                    response=item,
                    created=now,
                    expires=now + ttl,
                    # No request: export and warm carry the APIs that answer one prompt.
                    meta=Meta(self.route, {"prompt_tokens": share, "total_tokens": share}),
                    scope=keys.scope(key.namespace),
                ),
            )
        try:
            await _batched(lambda entry: self._core.store.put(entry, limit), list(entries.values()))
        except Exception:
            self._core.cache_failed("store")

    async def _record_hits(self, served: Sequence[Entry | None]) -> None:
        """Refresh the served entries' LRU place, and count them: /stats counts embeddings per
        item, each cached item a hit with the tokens it saved (and each item looked up and
        not found a miss, in `_finish`)."""
        now = self._core.clock()
        distinct = {entry.id: entry for entry in served if entry is not None}
        try:
            await _batched(
                lambda entry: self._core.store.record_hit(entry, now), list(distinct.values())
            )
        except Exception:
            self._core.cache_failed("store")
        metrics, prices = self._core.metrics, self._core.prices
        for entry in served:
            if entry is None:
                continue
            usage = entry.meta.usage
            metrics.hit(False, entry.model, usage, prices.cost(entry.model, usage))

    def _finish(self, batch: Batch, status: int, outcome: Outcome) -> None:
        bookkeeping.finish(
            self._core.metrics,
            self.route,
            outcome,
            status,
            batch.started,
            batch.namespace,
            misses=len(batch.served) - batch.hits,
            items=len(batch.served),
            cached_items=batch.hits,
        )

    def _no_answer(self, batch: Batch, status: int, message: str) -> Response:
        """No usable answer from upstream: 502 or 504 in OpenAI's error shape."""
        self._core.metrics.upstream_error(self.route)
        self._finish(batch, status, Outcome.ERROR)
        return Response(
            error_body(message, "upstream_error"),
            status,
            media_type="application/json",
            headers=batch.headers,
        )

    def _refuse(
        self, started: float, status: int, message: str, kind: str, param: str | None = None
    ) -> Response:
        bookkeeping.finish(self._core.metrics, self.route, Outcome.INVALID, status, started)
        return Response(error_body(message, kind, param), status, media_type="application/json")


def _understand(body: bytes, namespace: str) -> tuple[wire.EmbeddingsRequest, list[keys.CacheKey]]:
    """The request and each item's key; raises InvalidRequest. CPU work proportional to the
    body (see `offload`)."""
    asked = wire.parse_request(body)
    return asked, wire.item_keys(namespace, asked)


async def _batched(run: Callable[[T], Awaitable[R]], args: Sequence[T]) -> list[R]:
    """`run` over `args`, STORE_CONCURRENCY at a time, results in order. Every call of a
    group is awaited before the first failure is raised, so none is left running."""
    results: list[R] = []
    for start in range(0, len(args), STORE_CONCURRENCY):
        group = args[start : start + STORE_CONCURRENCY]
        outcomes = await asyncio.gather(*(run(arg) for arg in group), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            results.append(outcome)
    return results
