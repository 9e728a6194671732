"""The request path of every cached API: parse, key, look up, then replay or forward.

Decisions live in keys, policy and the provider module (one per wire format); this file does
the I/O, and fails open: when the store or the embedder fails, the request is forwarded as if
it had missed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ParamSpec, TypeVar

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from kallm import keys, policy, upstream
from kallm.admission import Gate
from kallm.auth import Refused
from kallm.embedders.base import Embedder
from kallm.match.matcher import Candidate, Matcher
from kallm.metrics import Metrics
from kallm.policies import Policy, PolicyBook
from kallm.pricing import PriceTable
from kallm.providers.base import Call, InvalidRequest, Provider, Upstream, check_value
from kallm.settings import Settings
from kallm.sse import SSEParser
from kallm.storage.base import Entry, Store, Vector

P = ParamSpec("P")
T = TypeVar("T")
NO_POLICY = Policy()  # a namespace without a policy keeps kallm's settings
log = logging.getLogger("kallm")


@dataclass
class Lookup:
    """What the cache knew: the candidate to serve (if any), the nearest candidate, and the
    vector computed on the way (reused when the answer is stored)."""

    hit: Candidate | None = None
    nearest: Candidate | None = None
    vector: Vector | None = None
    exact: bool = False


@dataclass(frozen=True)
class Decision:
    """How semantic candidates are judged by default (per request, X-Kallm-Threshold wins)."""

    threshold: float
    min_probability: float


@dataclass(frozen=True)
class Core:
    """What every provider's proxy shares: the cache, the matcher and the bookkeeping."""

    settings: Settings
    store: Store
    embedder: Embedder
    matcher: Matcher
    decision: Decision
    client: httpx.AsyncClient
    metrics: Metrics
    prices: PriceTable
    policies: PolicyBook
    gate: Gate

    def shared_with(self, namespace: str, local: Policy) -> list[str]:
        """Where a request looks after its own namespace: when its policy shares, the
        caller's namespaces in the other tenants that share."""
        if not local.share:
            return []
        own = keys.scope(namespace)
        return [keys.peer(namespace, other) for other in self.policies.sharing() if other != own]

    def cache_failed(self, component: str) -> None:
        """Count and log a cache failure the request survives. Called inside `except`: one
        line with the error, not a traceback per request (and during an outage, one line an
        interval: logs.configure)."""
        self.metrics.cache_error(component)
        log.warning("cache %s failed (%r); answering without it", component, sys.exc_info()[1])

    def ttl_rules(self, headers: Mapping[str, str], local: Policy) -> policy.RequestPolicy:
        """This request's rules: its headers within its namespace's policy and kallm's
        settings (raises policy.InvalidPolicyHeader)."""
        return policy.request_policy(
            headers,
            _first(local.similarity_threshold, self.decision.threshold),
            _first(local.ttl, self.settings.cache_ttl),
            self.settings.ttl_limit,
        )


class CacheProxy:
    """One cached API: `provider` knows its wire format, `target` where it goes upstream."""

    def __init__(self, provider: Provider, target: Upstream, core: Core) -> None:
        self._provider = provider
        self._target = target
        self._settings = core.settings
        self._store = core.store
        self._embedder = core.embedder
        self._matcher = core.matcher
        self._decision = core.decision
        self._client = core.client
        self._metrics = core.metrics
        self._prices = core.prices
        self._policies = core.policies
        self._core = core
        self.route = provider.route
        # Whether callers' credentials go upstream (and so divide the cache).
        self.forwards_credentials = target.api_key is None

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        provider = self._provider
        try:
            caller = self._core.gate.admit(request, self.route, self._target.api_key is not None)
        except Refused as refused:
            return self._invalid(started, refused.status, str(refused), refused.kind)
        assert caller.namespace is not None
        namespace = caller.namespace
        body = await upstream.read_limited(request.stream(), self._settings.max_body_size)
        if body is None:
            return self._invalid(
                started, 413, "The request body is too large.", "request_too_large"
            )
        path = upstream.raw_path(request.scope)
        call = Call(body, path, request.path_params, caller.query, caller.headers)
        local = self._policies.get(keys.scope(namespace)) or NO_POLICY
        try:
            rules = self._core.ttl_rules(request.headers, local)
            others = self._core.shared_with(namespace, local) if rules.lookup else []
            payload, looked_in = await offload(
                len(body), self._understand, call, [namespace, *others]
            )
            caller.check_model(payload["model"])
        except (InvalidRequest, policy.InvalidPolicyHeader) as error:
            return self._invalid(started, 400, str(error), "invalid_request_error")
        except Refused as refused:
            return self._invalid(started, refused.status, str(refused), refused.kind)
        if local.bypasses(self.route, payload["model"], request.headers):
            rules = replace(rules, lookup=False, store=False)
        min_probability = _first(local.verifier_threshold, self._decision.min_probability)

        key = looked_in[0]
        found = Lookup()
        if rules.lookup:
            found = await self._lookup(looked_in, rules.threshold, min_probability)
        if found.hit is not None:
            replayed = await self._replay(payload, found, started)
            if replayed is not None:
                return replayed
            found = Lookup(vector=found.vector)  # a broken entry: answer from upstream

        outcome = "MISS" if rules.lookup else "BYPASS"
        try:
            outgoing = provider.upstream_request(self._client, call, self._target, payload)
        except (upstream.UnsafePath, httpx.InvalidURL) as error:
            return self._invalid(
                started, 400, f"Not a URL kallm can send: {error}", "invalid_request_error"
            )
        try:
            sent = await upstream.send(self._client, outgoing)
        except upstream.UpstreamFailure as failure:
            return self._no_answer(started, failure.status, str(failure), outcome, namespace)

        headers = upstream.response_headers(sent.headers, decoded=True)
        headers.update(_match_headers(outcome, found.nearest, accepted=False))
        store = rules.store and sent.status_code == 200
        if sent.status_code != 200:
            self._metrics.upstream_error(self.route)
        commit = _Commit(self, payload, key, found.vector, rules.ttl) if store else None
        if "text/event-stream" in sent.headers.get("content-type", ""):
            return StreamingResponse(
                self._relay(sent, commit, started, outcome, namespace),
                sent.status_code,
                headers=headers,
            )
        try:
            answer = await upstream.read_prefix(sent, self._settings.max_answer_size)
        except upstream.UpstreamFailure as failure:
            return self._no_answer(started, failure.status, str(failure), outcome, namespace)
        similarity = found.nearest.similarity if found.nearest else None
        if not answer.whole:
            # Too large to cache: relayed as it comes, never held whole in memory.
            self._count(outcome, started, sent.status_code, similarity, namespace)
            return StreamingResponse(
                upstream.relay_rest(answer, sent), sent.status_code, headers=headers
            )
        await sent.aclose()
        if commit is not None:
            parsed = await offload(len(answer.head), provider.parse_answer, answer.head)
            if parsed is not None:
                await commit.store(parsed)
        self._count(outcome, started, sent.status_code, similarity, namespace)
        return Response(answer.head, sent.status_code, headers=headers)

    def _understand(
        self, call: Call, namespaces: list[str]
    ) -> tuple[dict[str, Any], list[keys.CacheKey]]:
        """The parsed request and its key in each namespace it may be served from; raises
        InvalidRequest. Pure CPU work, proportional to the body (see `offload`)."""
        payload = self._provider.parse(call)
        parts = self._provider.key_parts(payload)
        return payload, keys.cache_keys(
            namespaces, self.route, parts.context, parts.final, parts.text
        )

    async def _lookup(
        self, looked_in: list[keys.CacheKey], threshold: float, min_probability: float
    ) -> Lookup:
        """Look in the caller's own namespace first, then in those it shares with."""
        now = time.time()
        for key in looked_in:
            try:
                entry = await self._store.get_exact(key.namespace, key.exact, now)
            except Exception:
                self._core.cache_failed("store")
                return Lookup()
            if entry is not None:
                exact = Candidate(entry, 1.0, None)
                return Lookup(hit=exact, nearest=exact, exact=True)
        text = looked_in[0].text
        if text is None:
            return Lookup()
        vector = await self._embed(text)
        if vector is None:
            return Lookup()
        candidates: list[Candidate] = []
        try:
            for key in looked_in:
                candidates += await self._matcher.candidates(
                    key.namespace, key.partition, text, vector, threshold, now
                )
        except Exception:
            self._core.cache_failed("store")
            return Lookup(vector=vector)
        if not candidates:
            return Lookup(vector=vector)
        candidates.sort(key=lambda candidate: candidate.similarity, reverse=True)
        hit = policy.choose(candidates, threshold, min_probability)
        nearest = hit or candidates[0]
        self._metrics.candidate(nearest.similarity, accepted=hit is not None)
        return Lookup(hit=hit, nearest=nearest, vector=vector)

    async def _embed(self, text: str) -> Vector | None:
        try:
            return await self._embedder.embed(text)
        except Exception:
            self._core.cache_failed("embedder")
            return None

    async def _replay(
        self, payload: dict[str, Any], found: Lookup, started: float
    ) -> Response | None:
        """The cached answer, rebuilt for this request; None when the stored entry cannot be
        replayed (then it is dropped, and the request goes upstream)."""
        assert found.hit is not None
        entry, similarity = found.hit.entry, found.hit.similarity
        provider = self._provider
        stream = provider.wants_stream(payload)
        try:
            if not provider.is_cacheable(entry.response):
                raise ValueError("the stored answer is not one kallm would have cached")
            if stream:
                chunks = list(provider.replay_stream(payload, entry.response))
            else:
                content = provider.replay_json(payload, entry.response)
        except Exception:
            log.warning("a cached entry could not be replayed (%r); dropped", sys.exc_info()[1])
            try:
                await self._store.delete(entry.id)
            except Exception:
                self._core.cache_failed("store")
            return None
        try:
            await self._store.record_hit(entry, time.time())
        except Exception:
            self._core.cache_failed("store")
        usage = entry.extra.get("usage")
        self._metrics.hit(
            not found.exact, entry.model, usage, self._prices.cost(entry.model, usage)
        )
        headers = _match_headers("HIT", found.hit, accepted=True)
        self._log(started, 200, "hit", similarity, entry.namespace)
        self._metrics.request(self.route, "hit", time.perf_counter() - started)
        if stream:
            return StreamingResponse(
                _iterate(chunks), media_type="text/event-stream", headers=headers
            )
        return Response(content, media_type="application/json", headers=headers)

    async def _relay(
        self,
        sent: httpx.Response,
        commit: _Commit | None,
        started: float,
        outcome: str,
        namespace: str,
    ) -> AsyncIterator[bytes]:
        """Forward each piece of the upstream stream as it arrives, recording on the side.
        Recording stops, and nothing is stored, once the answer passes KALLM_MAX_ANSWER_SIZE
        or holds what the provider module cannot read: the client still gets every byte."""
        recording = _Recording(self._provider, self._settings.max_answer_size) if commit else None
        try:
            async for piece in sent.aiter_bytes():
                if recording is not None and commit is not None:
                    answer = recording.feed(piece)
                    if answer is not None:
                        # Store before the client sees the end, so its next request can hit.
                        await commit.store(answer)
                    if answer is not None or recording.stopped:
                        recording = None
                yield piece
        except httpx.HTTPError as error:
            # The upstream broke off: break the client's stream too, rather than end it
            # cleanly and let a partial answer look whole. Nothing is stored.
            self._metrics.upstream_error(self.route)
            self._metrics.request(self.route, "error", time.perf_counter() - started)
            self._log(started, sent.status_code, "truncated", None, namespace)
            raise upstream.BrokenStream from error
        finally:
            await sent.aclose()
        self._count(outcome, started, sent.status_code, None, namespace)

    async def store(
        self,
        payload: dict[str, Any],
        key: keys.CacheKey,
        vector: Vector | None,
        ttl: float,
        answer: dict[str, Any],
    ) -> bool:
        """Store a whole answer; whether it was stored (the store may be down). An answer
        the provider module does not fully understand is not stored."""
        try:
            check_value(answer)
            cacheable = self._provider.is_cacheable(answer)
            usage = self._provider.usage(payload, answer)
        except Exception:
            log.warning("an upstream answer was not understood (%r)", sys.exc_info()[1])
            return False
        if not cacheable:
            return False
        if key.text is not None and vector is None:
            # Without a vector (the embedder failed) the entry still serves exact repeats.
            vector = await self._embed(key.text)
        scope = keys.scope(key.namespace)
        share = (self._policies.get(scope) or NO_POLICY).max_entries
        now = time.time()
        entry = Entry(
            id=uuid.uuid4().hex,
            namespace=key.namespace,
            partition=key.partition,
            exact=key.exact,
            text=key.text,
            vector=vector,
            embedding_model=self._embedder.name,
            model=str(answer.get("model") or payload["model"]),
            response=answer,
            created=now,
            expires=now + ttl,
            extra={
                "usage": usage,
                # What identifies the request, so an export can be warmed back in.
                "route": self.route,
                "request": self._provider.keyed_request(payload),
            },
            scope=scope,
        )
        try:
            await self._store.put(entry, share)
        except Exception:
            self._core.cache_failed("store")
            return False
        return True

    async def warm(
        self, namespace: str, payload: dict[str, Any], answer: dict[str, Any], ttl: float
    ) -> bool:
        """Store a known answer as if it had just come from upstream; whether it was kept.
        `payload` is a request as an export writes it (the provider's keyed request)."""
        parts = self._provider.key_parts(payload)
        key = keys.cache_key(namespace, self.route, parts.context, parts.final, parts.text)
        vector = await self._embed(key.text) if key.text is not None else None
        return await self.store(payload, key, vector, ttl, answer)

    def _count(
        self, outcome: str, started: float, status: int, similarity: float | None, namespace: str
    ) -> None:
        if status >= 400:
            label = "error"
        elif outcome == "MISS":
            label = "miss"
            self._metrics.tally.misses += 1
        else:
            label = "bypass"
            self._metrics.tally.bypasses += 1
        self._metrics.request(self.route, label, time.perf_counter() - started)
        self._log(started, status, label, similarity, namespace)

    def _no_answer(
        self, started: float, status: int, message: str, outcome: str, namespace: str
    ) -> Response:
        """The upstream gave no (whole) answer: 502 or 504 in OpenAI's error shape."""
        self._metrics.upstream_error(self.route)
        self._metrics.request(self.route, "error", time.perf_counter() - started)
        self._log(started, status, "error", None, namespace)
        return Response(
            self._provider.error_body(status, message, "upstream_error"),
            status,
            media_type="application/json",
            headers={"x-kallm-cache": outcome},
        )

    def _invalid(self, started: float, status: int, message: str, kind: str) -> Response:
        self._metrics.tally.invalid_requests += 1
        self._metrics.request(self.route, "error", time.perf_counter() - started)
        self._log(started, status, "invalid", None, None)
        body = self._provider.error_body(status, message, kind)
        return Response(body, status, media_type="application/json")

    def _log(
        self,
        started: float,
        status: int,
        outcome: str,
        similarity: float | None,
        namespace: str | None,
    ) -> None:
        # The namespace's key-hash suffix is dropped: it identifies an API key.
        fields: dict[str, Any] = {
            "route": self.route,
            "status": status,
            "outcome": outcome,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "namespace": namespace.split("@", 1)[0] if namespace else None,
        }
        if similarity is not None:
            fields["similarity"] = round(similarity, 4)
        log.info("request", extra={"fields": fields})


class _Recording:
    """An answer being rebuilt from a stream as it passes through. `feed` returns the whole
    answer once the stream has given it; `stopped` once it never will (too large, or events
    the recorder cannot read)."""

    def __init__(self, provider: Provider, limit: int) -> None:
        self._parser = SSEParser()
        self._recorder = provider.recorder()
        self._left = limit
        self.stopped = False

    def feed(self, piece: bytes) -> dict[str, Any] | None:
        self._left -= len(piece)
        if self._left < 0:
            self.stopped = True
            return None
        try:
            for data in self._parser.feed(piece):
                self._recorder.add(data)
            return self._recorder.answer()
        except Exception:
            log.warning("an upstream stream was not understood (%r)", sys.exc_info()[1])
            self.stopped = True
            return None


# Bodies up to this size are parsed and keyed on the event loop (a thread hop costs more);
# larger ones in a worker thread, so one large request never stalls the others.
OFFLOAD_BYTES = 64 * 1024


async def offload(size: int, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`work(*args)`, on the event loop for small inputs, in a thread for large ones."""
    if size <= OFFLOAD_BYTES:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)


@dataclass
class _Commit:
    """Stores an answer once it is known to be whole."""

    proxy: CacheProxy
    payload: dict[str, Any]
    key: keys.CacheKey
    vector: Vector | None
    ttl: float

    async def store(self, answer: dict[str, Any]) -> None:
        await self.proxy.store(self.payload, self.key, self.vector, self.ttl, answer)


async def _iterate(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _match_headers(outcome: str, candidate: Candidate | None, accepted: bool) -> dict[str, str]:
    """X-Kallm-Cache, and for the candidate served or nearest: its similarity and, when the
    verifier judged it, its verdict and score."""
    headers = {"x-kallm-cache": outcome}
    if candidate is not None:
        headers["x-kallm-similarity"] = f"{candidate.similarity:.4f}"
        if candidate.probability is not None:
            headers["x-kallm-verifier"] = "accepted" if accepted else "rejected"
            headers["x-kallm-verifier-score"] = f"{candidate.probability:.4f}"
    return headers


def _first(value: float | None, default: float) -> float:
    """A namespace policy's value when it sets one, else kallm's."""
    return default if value is None else value
