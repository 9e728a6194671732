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
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from kallm import keys, policy, upstream
from kallm.admission import Caller
from kallm.auth import Refused
from kallm.policies import Policy
from kallm.providers import openai_embeddings as wire
from kallm.providers.base import InvalidRequest, Upstream
from kallm.providers.openai import error_body
from kallm.proxy import NO_POLICY, Core, offload
from kallm.storage.base import Entry

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
            caller = self._core.gate.admit(request, self.route, self._target.api_key is not None)
        except Refused as refused:
            return self._invalid(started, refused.status, str(refused), refused.kind, None)
        body = await upstream.read_limited(request.stream(), self._core.settings.max_body_size)
        if body is None:
            return self._invalid(
                started, 413, "The request body is too large.", "request_too_large", None
            )
        admitted = await offload(len(body), self._admit, request, caller, body)
        if isinstance(admitted, Refused):
            return self._invalid(started, admitted.status, str(admitted), admitted.kind, None)
        if isinstance(admitted, InvalidRequest):
            return self._invalid(
                started, 400, str(admitted), "invalid_request_error", admitted.param
            )
        asked, namespace, local, rules, item_keys = admitted

        cached: dict[str, Entry] = {}
        if rules.lookup:
            others = self._core.shared_with(namespace, local)
            cached = await self._lookup(asked, item_keys, others)
        served = [cached.get(key.exact) for key in item_keys]
        hits = sum(entry is not None for entry in served)
        outcome = cache_header(hits, len(served), rules.lookup)
        headers = {"x-kallm-cache": outcome, "x-kallm-cache-hits": f"{hits}/{len(served)}"}
        batch = Batch(asked, namespace, item_keys, served, headers, started)
        if outcome == "HIT":
            return await self._replay(batch)
        forward = plan_forward(asked, item_keys, cached, body)
        return await self._forward(caller, batch, forward, rules, local.max_entries)

    def _admit(
        self, request: Request, caller: Caller, body: bytes
    ) -> (
        tuple[wire.EmbeddingsRequest, str, Policy, policy.RequestPolicy, list[keys.CacheKey]]
        | InvalidRequest
        | Refused
    ):
        """The request, its namespace, the namespace's policy, this request's rules and each
        item's key; or why the request is refused. CPU work proportional to the body."""
        headers = request.headers
        assert caller.namespace is not None
        try:
            asked = wire.parse_request(body)
            caller.check_model(asked.model)
            local = self._core.policies.get(keys.scope(caller.namespace)) or NO_POLICY
            rules = self._core.ttl_rules(headers, local)
        except (InvalidRequest, Refused) as error:
            return error
        except policy.InvalidPolicyHeader as error:
            return InvalidRequest(str(error))
        if local.bypasses(self.route, asked.model, headers):
            rules = replace(rules, lookup=False, store=False)
        return asked, caller.namespace, local, rules, wire.item_keys(caller.namespace, asked)

    async def _forward(
        self,
        caller: Caller,
        batch: Batch,
        forward: Forward,
        rules: policy.RequestPolicy,
        limit: int | None,
    ) -> Response:
        """Ask upstream for what the cache lacks, store it, and answer the whole batch."""
        try:
            sent = await upstream.send(self._core.client, self._upstream_request(caller, forward))
        except upstream.UpstreamFailure as failure:
            return self._no_answer(batch, failure.status, str(failure))
        headers = upstream.response_headers(sent.headers, decoded=True) | batch.headers
        try:
            prefix = await upstream.read_prefix(sent, ANSWER_LIMIT)
        except upstream.UpstreamFailure as failure:
            return self._no_answer(batch, failure.status, str(failure))
        if not prefix.whole:
            if not forward.whole:
                await sent.aclose()
                message = "The upstream API's answer is too large to put together."
                return self._no_answer(batch, 502, message)
            self._count(batch, sent.status_code, "miss" if rules.lookup else "bypass")
            return StreamingResponse(
                upstream.relay_rest(prefix, sent), sent.status_code, headers=headers
            )
        await sent.aclose()
        answer = prefix.head
        if sent.status_code != 200:
            # The upstream's error, as it sent it; the cached items are not served alone.
            self._core.metrics.upstream_error(self.route)
            self._count(batch, sent.status_code, "error")
            return Response(answer, sent.status_code, headers=headers)

        label = "miss" if rules.lookup else "bypass"
        fresh = await offload(len(answer), wire.read_answer, answer, len(forward.items))
        if fresh is None:
            if not forward.whole:
                message = "The upstream API's answer could not be read as embeddings."
                return self._no_answer(batch, 502, message)
            # Not an answer kallm can split into items: pass it on, store nothing.
            self._count(batch, 200, label)
            return Response(answer, 200, headers=headers)
        if rules.store:
            await self._store(batch, forward, fresh, rules.ttl, limit)
        await self._record_hits(batch.served)
        self._count(batch, 200, label)
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
        auth = upstream.bearer(self._target.api_key)
        return self._core.client.build_request(
            "POST",
            f"{self._target.base_url}/embeddings",
            headers=upstream.request_headers(caller.headers, auth, decoded=True),
            content=forward.body,
        )

    async def _lookup(
        self, asked: wire.EmbeddingsRequest, item_keys: list[keys.CacheKey], others: list[str]
    ) -> dict[str, Entry]:
        """The cached entries by the item's own key: each item is looked for in the caller's
        namespace, then in those it shares with. A store that fails: nothing is cached."""
        now = time.time()
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
        self._core.metrics.request(self.route, "hit", time.perf_counter() - batch.started)
        self._log(batch, 200, "hit")
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
        now = time.time()
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
                    # No "request": admin export/warm only know the cached chat-like routes.
                    extra={
                        "usage": {"prompt_tokens": share, "total_tokens": share},
                        "route": self.route,
                    },
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
        not found a miss, in `_count`)."""
        now = time.time()
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
            usage = entry.extra.get("usage") or {}
            metrics.hit(False, entry.model, usage, prices.cost(entry.model, usage))

    def _count(self, batch: Batch, status: int, label: str) -> None:
        metrics = self._core.metrics
        if label == "miss":
            metrics.tally.misses += len(batch.served) - batch.hits
        elif label == "bypass":
            metrics.tally.bypasses += 1
        metrics.request(self.route, label, time.perf_counter() - batch.started)
        self._log(batch, status, label)

    def _no_answer(self, batch: Batch, status: int, message: str) -> Response:
        """No usable answer from upstream: 502 or 504 in OpenAI's error shape."""
        self._core.metrics.upstream_error(self.route)
        self._count(batch, status, "error")
        return Response(
            error_body(message, "upstream_error"),
            status,
            media_type="application/json",
            headers=batch.headers,
        )

    def _invalid(
        self, started: float, status: int, message: str, kind: str, param: str | None
    ) -> Response:
        self._core.metrics.tally.invalid_requests += 1
        self._core.metrics.request(self.route, "error", time.perf_counter() - started)
        self._write_log(started, status, "invalid", {})
        return Response(error_body(message, kind, param), status, media_type="application/json")

    def _log(self, batch: Batch, status: int, outcome: str) -> None:
        # The namespace's key-hash suffix is dropped: it identifies an API key.
        fields = {
            "namespace": batch.namespace.split("@", 1)[0],
            "items": len(batch.served),
            "cached_items": batch.hits,
        }
        self._write_log(batch.started, status, outcome, fields)

    def _write_log(self, started: float, status: int, outcome: str, extra: dict[str, Any]) -> None:
        fields: dict[str, Any] = {
            "route": self.route,
            "status": status,
            "outcome": outcome,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            **extra,
        }
        log.info("request", extra={"fields": fields})


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
