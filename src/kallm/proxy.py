"""The request path for chat completions: parse, key, look up, then replay or forward.

Decisions live in keys, policy and the provider module; this file does the I/O, and fails
open: when the store or the embedder fails, the request is forwarded as if it had missed.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from kallm import keys, policy, upstream
from kallm.embedders.base import Embedder
from kallm.match.matcher import Candidate, Matcher
from kallm.metrics import Metrics
from kallm.policies import Policy, PolicyBook
from kallm.pricing import PriceTable
from kallm.providers import openai_chat as chat
from kallm.settings import Settings
from kallm.sse import SSEParser
from kallm.storage.base import Entry, Store, Vector

ROUTE = "chat.completions"
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


class ChatProxy:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        embedder: Embedder,
        matcher: Matcher,
        decision: Decision,
        client: httpx.AsyncClient,
        metrics: Metrics,
        prices: PriceTable,
        policies: PolicyBook | None = None,
        pod_namespace: Callable[[str], str | None] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._embedder = embedder
        self._matcher = matcher
        self._decision = decision
        self._client = client
        self._metrics = metrics
        self._prices = prices
        self._policies = policies or PolicyBook()
        self._pod_namespace = pod_namespace
        self._url = httpx.URL(f"{settings.openai_base_url}/chat/completions")
        self._api_key = (
            settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        )

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        body = await upstream.read_limited(request.stream(), self._settings.max_body_size)
        if body is None:
            return self._invalid(
                started, 413, "The request body is too large.", "request_too_large"
            )
        try:
            payload = chat.parse_request(body)
            client_key = None if self._api_key else request.headers.get("authorization")
            tenant = self._tenant(request)
            namespace = keys.namespace(request.headers.get("x-kallm-namespace"), client_key, tenant)
            policy_name = tenant or namespace.split("@", 1)[0]
            local = self._policies.get(policy_name) or NO_POLICY
            rules = policy.request_policy(
                request.headers,
                _first(local.similarity_threshold, self._decision.threshold),
                _first(local.ttl, self._settings.cache_ttl),
            )
        except (chat.InvalidRequest, policy.InvalidPolicyHeader, keys.InvalidNamespace) as error:
            return self._invalid(started, 400, str(error), "invalid_request_error")
        if local.bypasses(ROUTE, payload["model"], request.headers):
            rules = replace(rules, lookup=False, store=False)
        min_probability = _first(local.verifier_threshold, self._decision.min_probability)

        parts = chat.key_parts(payload)
        key = keys.cache_key(namespace, ROUTE, parts.context, parts.final, parts.text)
        found = (
            await self._lookup(key, rules.threshold, min_probability) if rules.lookup else Lookup()
        )
        if found.hit is not None:
            return await self._replay(payload, found, started)

        outcome = "MISS" if rules.lookup else "BYPASS"
        try:
            sent = await upstream.send(
                self._client,
                self._client.build_request(
                    "POST",
                    self._url,
                    headers=upstream.request_headers(request.headers, self._api_key, decoded=True),
                    content=body,
                ),
            )
        except upstream.UpstreamFailure as failure:
            return self._no_answer(started, failure.status, str(failure), outcome, namespace)

        headers = upstream.response_headers(sent.headers, decoded=True)
        headers.update(_match_headers(outcome, found.nearest, accepted=False))
        store = rules.store and sent.status_code == 200
        if sent.status_code != 200:
            self._metrics.upstream_error(ROUTE)
        commit = _Commit(self, payload, key, found.vector, rules.ttl) if store else None
        if "text/event-stream" in sent.headers.get("content-type", ""):
            return StreamingResponse(
                self._relay(sent, commit, started, outcome, namespace),
                sent.status_code,
                headers=headers,
            )
        try:
            answer = await sent.aread()
        except httpx.HTTPError:
            message = "The upstream API broke off its answer."
            return self._no_answer(started, 502, message, outcome, namespace)
        finally:
            await sent.aclose()
        if commit is not None:
            await commit.json(answer)
        similarity = found.nearest.similarity if found.nearest else None
        self._count(outcome, started, sent.status_code, similarity, namespace)
        return Response(answer, sent.status_code, headers=headers)

    def _tenant(self, request: Request) -> str | None:
        """The caller's Kubernetes namespace, from its pod IP, when kallm maps IPs. A caller
        kallm cannot place gets a namespace of its own address, shared with nobody."""
        if self._pod_namespace is None:
            return None
        host = request.client.host if request.client else "unknown"
        return self._pod_namespace(host) or f"unknown-pod-{host}"

    async def _lookup(self, key: keys.CacheKey, threshold: float, min_probability: float) -> Lookup:
        now = time.time()
        try:
            entry = await self._store.get_exact(key.namespace, key.exact, now)
        except Exception:
            self._cache_failed("store")
            return Lookup()
        if entry is not None:
            exact = Candidate(entry, 1.0, None)
            return Lookup(hit=exact, nearest=exact, exact=True)
        if key.text is None:
            return Lookup()
        vector = await self._embed(key.text)
        if vector is None:
            return Lookup()
        try:
            candidates = await self._matcher.candidates(
                key.namespace, key.partition, key.text, vector, threshold, now
            )
        except Exception:
            self._cache_failed("store")
            return Lookup(vector=vector)
        if not candidates:
            return Lookup(vector=vector)
        hit = policy.choose(candidates, threshold, min_probability)
        nearest = hit or candidates[0]
        self._metrics.candidate(nearest.similarity, accepted=hit is not None)
        return Lookup(hit=hit, nearest=nearest, vector=vector)

    async def _embed(self, text: str) -> Vector | None:
        try:
            return await self._embedder.embed(text)
        except Exception:
            self._cache_failed("embedder")
            return None

    async def _replay(self, payload: dict[str, Any], found: Lookup, started: float) -> Response:
        assert found.hit is not None
        entry, similarity = found.hit.entry, found.hit.similarity
        try:
            await self._store.record_hit(entry, time.time())
        except Exception:
            self._cache_failed("store")
        usage = entry.extra.get("usage") or {}
        self._metrics.hit(
            not found.exact, entry.model, usage, self._prices.cost(entry.model, usage)
        )
        headers = _match_headers("HIT", found.hit, accepted=True)
        self._log(started, 200, "hit", similarity, entry.namespace)
        self._metrics.request(ROUTE, "hit", time.perf_counter() - started)
        if chat.wants_stream(payload):
            return StreamingResponse(
                _iterate(chat.replay_stream(entry.response, chat.wants_usage(payload))),
                media_type="text/event-stream",
                headers=headers,
            )
        return Response(
            chat.dumps(chat.replay_json(entry.response)),
            media_type="application/json",
            headers=headers,
        )

    async def _relay(
        self,
        sent: httpx.Response,
        commit: _Commit | None,
        started: float,
        outcome: str,
        namespace: str,
    ) -> AsyncIterator[bytes]:
        """Forward each piece of the upstream stream as it arrives, recording on the side."""
        parser = SSEParser()
        recorder = chat.StreamRecorder()
        try:
            async for piece in sent.aiter_bytes():
                for data in parser.feed(piece):
                    recorder.add(data)
                completion = recorder.completion()
                if commit is not None and completion is not None:
                    # Store before the client sees the end, so its next request can hit.
                    await commit.store(completion)
                    commit = None
                yield piece
        except httpx.HTTPError as error:
            # The upstream broke off: break the client's stream too, rather than end it
            # cleanly and let a partial answer look whole. Nothing is stored.
            self._metrics.upstream_error(ROUTE)
            self._metrics.request(ROUTE, "error", time.perf_counter() - started)
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
        completion: dict[str, Any],
    ) -> bool:
        """Store a whole answer; whether it was stored (the store may be down)."""
        if not chat.is_cacheable(completion):
            return False
        if key.text is not None and vector is None:
            # Without a vector (the embedder failed) the entry still serves exact repeats.
            vector = await self._embed(key.text)
        usage = completion.get("usage")
        now = time.time()
        entry = Entry(
            id=uuid.uuid4().hex,
            namespace=key.namespace,
            partition=key.partition,
            exact=key.exact,
            text=key.text,
            vector=vector,
            embedding_model=self._embedder.name,
            model=str(completion.get("model") or payload["model"]),
            response=completion,
            created=now,
            expires=now + ttl,
            extra={
                "usage": usage or chat.estimate_usage(payload, completion),
                # What identifies the request, so an export can be warmed back in.
                "request": chat.keyed_request(payload),
            },
        )
        try:
            await self._store.put(entry)
        except Exception:
            self._cache_failed("store")
            return False
        return True

    async def warm(
        self, namespace: str, payload: dict[str, Any], completion: dict[str, Any], ttl: float
    ) -> bool:
        """Store a known answer as if it had just come from upstream; whether it was kept."""
        parts = chat.key_parts(payload)
        key = keys.cache_key(namespace, ROUTE, parts.context, parts.final, parts.text)
        vector = await self._embed(key.text) if key.text is not None else None
        return await self.store(payload, key, vector, ttl, completion)

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
        self._metrics.request(ROUTE, label, time.perf_counter() - started)
        self._log(started, status, label, similarity, namespace)

    def _no_answer(
        self, started: float, status: int, message: str, outcome: str, namespace: str
    ) -> Response:
        """The upstream gave no (whole) answer: 502 or 504 in OpenAI's error shape."""
        self._metrics.upstream_error(ROUTE)
        self._metrics.request(ROUTE, "error", time.perf_counter() - started)
        self._log(started, status, "error", None, namespace)
        return Response(
            chat.error_body(message, "upstream_error"),
            status,
            media_type="application/json",
            headers={"x-kallm-cache": outcome},
        )

    def _invalid(self, started: float, status: int, message: str, kind: str) -> Response:
        self._metrics.tally.invalid_requests += 1
        self._metrics.request(ROUTE, "error", time.perf_counter() - started)
        self._log(started, status, "invalid", None, None)
        return Response(chat.error_body(message, kind), status, media_type="application/json")

    def _cache_failed(self, component: str) -> None:
        # Called inside `except`: one line with the error, not a traceback per request.
        self._metrics.cache_error(component)
        log.warning("cache %s failed (%r); answering without it", component, sys.exc_info()[1])

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
            "route": ROUTE,
            "status": status,
            "outcome": outcome,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "namespace": namespace.split("@", 1)[0] if namespace else None,
        }
        if similarity is not None:
            fields["similarity"] = round(similarity, 4)
        log.info("request", extra={"fields": fields})


@dataclass
class _Commit:
    """Stores an answer once it is known to be whole."""

    proxy: ChatProxy
    payload: dict[str, Any]
    key: keys.CacheKey
    vector: Vector | None
    ttl: float

    async def store(self, completion: dict[str, Any]) -> None:
        await self.proxy.store(self.payload, self.key, self.vector, self.ttl, completion)

    async def json(self, body: bytes) -> None:
        completion = chat.parse_completion(body)
        if completion is not None:
            await self.store(completion)


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
