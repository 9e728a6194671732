"""The request path of every cached API but embeddings: admit, parse, key, look up, then
replay or forward.

Decisions live in admission, keys, match.decision and the provider module (one per wire
format); this file does the I/O, and fails open: when the store or the embedder fails, the
request is forwarded as if it had missed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from kallm import keys, upstream
from kallm.activity import ServedHit
from kallm.embedders.base import Embedder
from kallm.match import decision
from kallm.match.matcher import Candidate, Matcher
from kallm.metrics import Metrics, Outcome
from kallm.pricing import PriceTable
from kallm.providers.base import Call, InvalidRequest, Parsed, Provider, Upstream, check_value
from kallm.proxy import bookkeeping
from kallm.proxy.admission import Admission
from kallm.proxy.auth import Refused
from kallm.proxy.directives import RequestPolicy
from kallm.proxy.flights import Flight, Flights
from kallm.settings import Settings
from kallm.sse import SSEParser
from kallm.storage.base import Cache, Entry, Meta, Report, Vector, block_key

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("kallm")


@dataclass
class Lookup:
    """What the cache knew: the candidate to serve (if any), the nearest candidate, and the
    vector computed on the way (reused when the answer is stored)."""

    hit: Candidate | None = None
    nearest: Candidate | None = None
    vector: Vector | None = None
    exact: bool = False
    failed: bool = False  # the store did not answer


@dataclass(frozen=True)
class Core:
    """What every provider's proxy shares: admission, the cache, the matcher and the
    bookkeeping."""

    settings: Settings
    admission: Admission
    store: Cache
    embedder: Embedder
    matcher: Matcher
    client: httpx.AsyncClient
    metrics: Metrics
    prices: PriceTable
    clock: Callable[[], float]  # time.time, or a test's
    flights: Flights

    def cache_failed(self, component: str) -> None:
        """Count and log a cache failure the request survives. Called inside `except`: one
        line with the error, not a traceback per request (and during an outage, one line an
        interval: logs.configure)."""
        self.metrics.cache_error(component)
        log.warning("cache %s failed (%r); answering without it", component, sys.exc_info()[1])


# Stores a whole answer for the request it answers: None when stored, else why not.
Commit = Callable[[dict[str, Any]], Awaitable[str | None]]


class CacheProxy:
    """One cached API: `provider` knows its wire format, `target` where it goes upstream."""

    def __init__(self, provider: Provider, target: Upstream, core: Core) -> None:
        self._provider = provider
        self._target = target
        self._core = core
        self.route = provider.route
        # Whether callers' credentials go upstream (and so divide the cache).
        self.forwards_credentials = target.api_key is None

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        core = self._core
        try:
            admitted = await core.admission.admit(
                request, self.route, not self.forwards_credentials
            )
            caller = admitted.caller
            path = upstream.raw_path(request.scope)
            call = Call(admitted.body, path, request.path_params, caller.query, caller.headers)
            parsed, looked_in = await offload(
                len(admitted.body), self._understand, call, admitted.namespaces
            )
            rules = admitted.for_model(self.route, parsed.model)
        except InvalidRequest as error:
            return self._refuse(started, Refused(400, str(error), "invalid_request_error"))
        except Refused as refused:
            return self._refuse(started, refused)
        namespace = admitted.namespace

        found = Lookup()
        if rules.lookup:
            found = await self._lookup(looked_in, rules.threshold, admitted.min_probability)
        if found.hit is not None:
            replayed = await self._replay(parsed, found, started)
            if replayed is not None:
                if not found.exact:
                    self._served(parsed, looked_in[0], found.hit)
                return replayed
            found = Lookup(vector=found.vector)  # a broken entry: answer from upstream

        # An identical request already upstream: wait for its answer to be stored.
        flight = core.flights.join(looked_in[0].exact) if rules.lookup and rules.store else None
        if flight is not None and not flight.leads:
            await core.flights.wait(flight)
            flight = None  # goes upstream alone if the leader stored nothing
            coalesced = await self._exact(looked_in)
            if coalesced.hit is not None and (
                replayed := await self._replay(parsed, coalesced, started)
            ):
                return replayed
        try:
            response, relaying = await self._forward(
                call, parsed, looked_in[0], found, rules, started, namespace, flight
            )
        except BaseException:
            if flight is not None:
                core.flights.land(flight)
            raise
        if flight is not None and not relaying:
            core.flights.land(flight)  # a relayed stream lands when it ends
        return response

    async def _forward(
        self,
        call: Call,
        parsed: Parsed,
        key: keys.CacheKey,
        found: Lookup,
        rules: RequestPolicy,
        started: float,
        namespace: str,
        flight: Flight | None,
    ) -> tuple[Response, bool]:
        """Upstream's answer, relayed and (when whole and wanted) stored; and whether it is
        being relayed as a stream, which lands `flight` itself when it ends."""
        core, provider = self._core, self._provider
        outcome = Outcome.MISS if rules.lookup else Outcome.BYPASS
        try:
            outgoing = provider.upstream_request(core.client, call, self._target, parsed)
        except (upstream.UnsafePath, httpx.InvalidURL) as error:
            message = f"Not a URL kallm can send: {error}"
            return self._refuse(started, Refused(400, message, "invalid_request_error")), False
        sending = time.perf_counter()
        try:
            sent = await upstream.send(core.client, outgoing)
        except upstream.UpstreamFailure as failure:
            return self._no_answer(started, failure.status, str(failure), outcome, namespace), False
        # Until the upstream's answer begins: what a MISS waits for beyond kallm's own work.
        core.metrics.activity.upstream(time.perf_counter() - sending)

        headers = upstream.response_headers(sent.headers, decoded=True)
        headers.update(_match_headers(outcome, found.nearest, accepted=False))
        if sent.status_code != 200:
            core.metrics.upstream_error(self.route)
        commit: Commit | None = None
        if rules.store and sent.status_code == 200:
            commit = functools.partial(self.store, parsed, key, found.vector, rules.ttl)
        if "text/event-stream" in sent.headers.get("content-type", ""):
            relay = self._relay(sent, commit, started, outcome, namespace, flight)
            return StreamingResponse(relay, sent.status_code, headers=headers), True
        try:
            answer = await upstream.read_prefix(sent, core.settings.max_answer_size)
        except upstream.UpstreamFailure as failure:
            return self._no_answer(started, failure.status, str(failure), outcome, namespace), False
        similarity = found.nearest.similarity if found.nearest else None
        if not answer.whole:
            # Too large to cache: relayed as it comes, never held whole in memory.
            self._finish(outcome, sent.status_code, started, namespace, similarity)
            rest = upstream.relay_rest(answer, sent)
            return StreamingResponse(rest, sent.status_code, headers=headers), False
        await sent.aclose()
        if commit is not None:
            whole = await offload(len(answer.head), provider.parse_answer, answer.head)
            if whole is not None:
                await commit(whole)
        self._finish(outcome, sent.status_code, started, namespace, similarity)
        return Response(answer.head, sent.status_code, headers=headers), False

    def _understand(self, call: Call, namespaces: list[str]) -> tuple[Parsed, list[keys.CacheKey]]:
        """The parsed request and its key in each namespace it may be served from; raises
        InvalidRequest. Pure CPU work, proportional to the body (see `offload`)."""
        parsed = self._provider.parse(call)
        parts = self._provider.key_parts(parsed)
        return parsed, keys.cache_keys(
            namespaces, self.route, parts.context, parts.final, parts.text
        )

    async def _exact(self, looked_in: list[keys.CacheKey]) -> Lookup:
        """The exact repeat, in the caller's own namespace first, then in those it shares
        with; `failed` when the store did not answer."""
        core = self._core
        now = core.clock()
        for key in looked_in:
            try:
                entry = await core.store.get_exact(key.namespace, key.exact, now)
            except Exception:
                core.cache_failed("store")
                return Lookup(failed=True)
            if entry is not None:
                exact = Candidate(entry, 1.0, None)
                return Lookup(hit=exact, nearest=exact, exact=True)
        return Lookup()

    async def _lookup(
        self, looked_in: list[keys.CacheKey], threshold: float, min_probability: float
    ) -> Lookup:
        """The exact repeat, else the semantic candidate to serve (see `_exact`)."""
        core = self._core
        found = await self._exact(looked_in)
        if found.hit is not None or found.failed:
            return found
        now = core.clock()
        text = looked_in[0].text
        if text is None:
            return Lookup()
        vector = await self._embed(text)
        if vector is None:
            return Lookup()
        candidates: list[Candidate] = []
        try:
            for key in looked_in:
                candidates += await core.matcher.candidates(
                    key.namespace, key.partition, text, vector, threshold, now
                )
        except Exception:
            core.cache_failed("store")
            return Lookup(vector=vector)
        if not candidates:
            return Lookup(vector=vector)
        candidates.sort(key=lambda candidate: candidate.similarity, reverse=True)
        nearest = candidates[0]
        hit = decision.choose(candidates, threshold, min_probability)
        while hit is not None and await self._blocked(hit.entry, looked_in):
            candidates.remove(hit)
            hit = decision.choose(candidates, threshold, min_probability)
        nearest = hit or nearest
        core.metrics.candidate(
            nearest.similarity,
            decision.verdict(hit, nearest, threshold),
            self.route,
            keys.redacted(nearest.entry.namespace),
        )
        return Lookup(hit=hit, nearest=nearest, vector=vector)

    def _served(self, request: Parsed, key: keys.CacheKey, hit: Candidate) -> None:
        """A semantic hit, for the dashboard's list of those to report."""
        entry = hit.entry
        served = ServedHit(
            self._core.clock(), self.route, keys.redacted(entry.namespace), entry.id,
            entry.text, key.text, round(hit.similarity, 4), self._provider.keyed_request(request),
        )  # fmt: skip
        self._core.metrics.activity.served(served)

    async def _blocked(self, entry: Entry, looked_in: list[keys.CacheKey]) -> bool:
        """Whether a wrong report blocked `entry`'s answer for this request (in the entry's
        namespace's form). A store that does not answer blocks: never risk a reported
        wrong answer."""
        asked = next(key for key in looked_in if key.namespace == entry.namespace)
        try:
            blocked = await self._core.store.blocked(
                block_key(entry.namespace, entry.exact, asked.exact)
            )
        except Exception:
            self._core.cache_failed("store")
            return True
        if blocked:
            self._core.metrics.blocked()
        return blocked

    async def _embed(self, text: str) -> Vector | None:
        try:
            return await self._core.embedder.embed(text)
        except Exception:
            self._core.cache_failed("embedder")
            return None

    async def _replay(self, request: Parsed, found: Lookup, started: float) -> Response | None:
        """The cached answer, rebuilt for this request; None when the stored entry cannot be
        replayed (then it is dropped, and the request goes upstream)."""
        assert found.hit is not None
        core, provider = self._core, self._provider
        entry, similarity = found.hit.entry, found.hit.similarity
        stream = request.stream
        try:
            if not provider.is_cacheable(entry.response):
                raise ValueError("the stored answer is not one kallm would have cached")
            if stream:
                chunks = list(provider.replay_stream(request, entry.response))
            else:
                content = provider.replay_json(request, entry.response)
        except Exception:
            log.warning("a cached entry could not be replayed (%r); dropped", sys.exc_info()[1])
            try:
                await core.store.delete(entry.id)
            except Exception:
                core.cache_failed("store")
            return None
        try:
            await core.store.record_hit(entry, core.clock())
        except Exception:
            core.cache_failed("store")
        usage = entry.meta.usage
        core.metrics.hit(not found.exact, entry.model, usage, core.prices.cost(entry.model, usage))
        headers = _match_headers(Outcome.HIT, found.hit, accepted=True)
        self._finish(Outcome.HIT, 200, started, entry.namespace, similarity)
        if stream:
            return StreamingResponse(
                _iterate(chunks), media_type="text/event-stream", headers=headers
            )
        return Response(content, media_type="application/json", headers=headers)

    async def _relay(
        self,
        sent: httpx.Response,
        commit: Commit | None,
        started: float,
        outcome: Outcome,
        namespace: str,
        flight: Flight | None,
    ) -> AsyncIterator[bytes]:
        """Forward each piece of the upstream stream as it arrives, recording on the side.
        Recording stops, and nothing is stored, once the answer passes KALLM_MAX_ANSWER_SIZE
        or holds what the provider module cannot read: the client still gets every byte."""
        limit = self._core.settings.max_answer_size
        recording = _Recording(self._provider, limit) if commit else None
        try:
            async for piece in sent.aiter_bytes():
                if recording is not None and commit is not None:
                    answer = recording.feed(piece)
                    if answer is not None:
                        # Store before the client sees the end, so its next request can hit.
                        await commit(answer)
                    if answer is not None or recording.stopped:
                        recording = None
                yield piece
        except httpx.HTTPError as error:
            # The upstream broke off: break the client's stream too, rather than end it
            # cleanly and let a partial answer look whole. Nothing is stored.
            self._core.metrics.upstream_error(self.route)
            self._finish(Outcome.TRUNCATED, sent.status_code, started, namespace)
            raise upstream.BrokenStream from error
        finally:
            await sent.aclose()
            if flight is not None:
                self._core.flights.land(flight)
        self._finish(outcome, sent.status_code, started, namespace)

    async def store(
        self,
        request: Parsed,
        key: keys.CacheKey,
        vector: Vector | None,
        ttl: float,
        answer: dict[str, Any],
    ) -> str | None:
        """Store a whole answer: None when stored, else why not (`kallm warm` tells it). An
        answer the provider module does not fully understand is not stored."""
        core = self._core
        try:
            check_value(answer)
            cacheable = self._provider.is_cacheable(answer)
            usage = self._provider.usage(request, answer)
        except Exception:
            log.warning("an upstream answer was not understood (%r)", sys.exc_info()[1])
            return f"the answer is not one this API gives ({sys.exc_info()[1]})"
        if not cacheable:
            return "the answer is not whole: cut short, filtered or an error"
        if key.text is not None and vector is None:
            # Without a vector (the embedder failed) the entry still serves exact repeats.
            vector = await self._embed(key.text)
        scope = keys.scope(key.namespace)
        now = core.clock()
        entry = Entry(
            id=uuid.uuid4().hex,
            namespace=key.namespace,
            partition=key.partition,
            exact=key.exact,
            text=key.text,
            vector=vector,
            embedding_model=core.embedder.name,
            model=str(answer.get("model") or request.model),
            response=answer,
            created=now,
            expires=now + ttl,
            # What identifies the request, so an export can be warmed back in.
            meta=Meta(self.route, usage, self._provider.keyed_request(request)),
            scope=scope,
        )
        try:
            await core.store.put(entry, core.admission.policies.get(scope).max_entries)
        except Exception:
            core.cache_failed("store")
            return "the cache store did not answer"
        return None

    async def warm(
        self, namespace: str, exported: Any, answer: dict[str, Any], ttl: float
    ) -> str | None:
        """Store a known answer as if it had just come from upstream; as `store`.
        `exported` is a request as an export writes it; raises InvalidRequest for one this
        API would refuse."""
        request, key = self._keyed(namespace, exported)
        vector = await self._embed(key.text) if key.text is not None else None
        return await self.store(request, key, vector, ttl, answer)

    async def report(self, entry: Entry, asked: Any, right: bool) -> Report:
        """An operator's verdict on `entry`'s answer for the request `asked` (as it was sent,
        or as an export writes it), as a report to keep; raises InvalidRequest for a
        request this API would refuse."""
        _, key = self._keyed(entry.namespace, asked)
        vector = await self._embed(key.text) if key.text is not None else None
        similarity = None
        if vector is not None and entry.vector is not None:
            similarity = round(float(vector @ entry.vector), 4)
        return Report(
            uuid.uuid4().hex, entry.namespace, entry.exact, key.exact, entry.text, key.text,
            right, similarity, self._core.clock(),
        )  # fmt: skip

    def _keyed(self, namespace: str, exported: Any) -> tuple[Parsed, keys.CacheKey]:
        request = self._provider.parse_keyed(exported)
        parts = self._provider.key_parts(request)
        return request, keys.cache_key(
            namespace, self.route, parts.context, parts.final, parts.text
        )

    def _finish(
        self,
        outcome: Outcome,
        status: int,
        started: float,
        namespace: str | None = None,
        similarity: float | None = None,
    ) -> None:
        bookkeeping.finish(
            self._core.metrics, self.route, outcome, status, started, namespace, similarity
        )

    def _no_answer(
        self, started: float, status: int, message: str, outcome: Outcome, namespace: str
    ) -> Response:
        """The upstream gave no (whole) answer: 502 or 504 in the provider's error shape."""
        self._core.metrics.upstream_error(self.route)
        self._finish(Outcome.ERROR, status, started, namespace)
        return Response(
            self._provider.error_body(status, message, "upstream_error"),
            status,
            media_type="application/json",
            headers={"x-kallm-cache": outcome.name},
        )

    def _refuse(self, started: float, refused: Refused) -> Response:
        self._finish(Outcome.INVALID, refused.status, started)
        body = self._provider.error_body(refused.status, str(refused), refused.kind)
        return Response(body, refused.status, media_type="application/json")


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


async def _iterate(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _match_headers(outcome: Outcome, candidate: Candidate | None, accepted: bool) -> dict[str, str]:
    """X-Kallm-Cache, and for the candidate served or nearest: its id, its similarity and,
    when the verifier judged it, its verdict and score."""
    headers = {"x-kallm-cache": outcome.name}
    if candidate is not None:
        # What a report names (README, "Correcting wrong hits"): the entry served, or on a
        # MISS the nearest one, which "should have hit" reports name.
        headers["x-kallm-entry" if accepted else "x-kallm-nearest"] = candidate.entry.id
        headers["x-kallm-similarity"] = f"{candidate.similarity:.4f}"
        if candidate.probability is not None:
            headers["x-kallm-verifier"] = "accepted" if accepted else "rejected"
            headers["x-kallm-verifier-score"] = f"{candidate.probability:.4f}"
    return headers
