"""Counters behind /stats and /metrics. Prometheus labels are bounded: route and outcome
only, never a namespace, model or user."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kallm.activity import SIMILARITY_BUCKETS, Activity
from kallm.pricing import token_counts


class Outcome(StrEnum):
    """How a cached API's request ended: the log line's `outcome`; X-Kallm-Cache is its name."""

    HIT = "hit"
    MISS = "miss"  # looked up, not found, forwarded
    BYPASS = "bypass"  # forwarded without looking (Cache-Control, policy)
    ERROR = "error"  # no answer from upstream, or an error status
    INVALID = "invalid"  # kallm refused the request itself
    TRUNCATED = "truncated"  # the upstream broke off its stream

    @property
    def label(self) -> str:
        """The Prometheus label: hit, miss, bypass or error, so its values stay bounded."""
        return self.value if self in _LABELLED else "error"


_LABELLED = frozenset({Outcome.HIT, Outcome.MISS, Outcome.BYPASS})


@dataclass
class Tally:
    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    bypasses: int = 0
    upstream_errors: int = 0
    invalid_requests: int = 0
    store_errors: int = 0
    embedding_errors: int = 0
    blocked_hits: int = 0
    saved_usd: float = 0.0
    saved_prompt_tokens: int = 0
    saved_completion_tokens: int = 0
    unpriced_models: set[str] = field(default_factory=set)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tally = Tally()
        self.activity = Activity()  # what /ui draws beyond these counters
        self.requests = Counter(
            "kallm_requests",
            "Cacheable requests by route and cache outcome (hit, miss, bypass, error).",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kallm_request_duration_seconds",
            "Time from request to the end of the response, by route and outcome.",
            ["route", "outcome"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.similarity = Histogram(
            "kallm_candidate_similarity",
            "Cosine similarity of the nearest entry of each semantic lookup: served (hit), "
            "refused at or over the threshold (rejected), or under it (below).",
            ["decision"],
            buckets=SIMILARITY_BUCKETS,
            registry=self.registry,
        )
        self.blocked_hits = Counter(
            "kallm_blocked_hits",
            "Semantic hits not served because a report said the answer was wrong for that request.",
            registry=self.registry,
        )
        self.reports = Counter(
            "kallm_reports",
            "Operators' reports on cached answers, by verdict (wrong, right).",
            ["verdict"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "kallm_upstream_errors",
            "Upstream answers that were not 2xx, or no answer at all (unreachable, timeout).",
            ["route"],
            registry=self.registry,
        )
        self.cache_errors = Counter(
            "kallm_cache_errors",
            "Failures of the cache store or embedder; the request was still answered.",
            ["component"],
            registry=self.registry,
        )
        self.saved_usd = Counter(
            "kallm_saved_usd",
            "Estimated upstream cost of the answers served from the cache.",
            registry=self.registry,
        )
        self.saved_tokens = Counter(
            "kallm_saved_tokens",
            "Upstream tokens not spent thanks to hits.",
            ["kind"],
            registry=self.registry,
        )
        self.entries = Gauge(
            "kallm_cache_entries", "Entries in the cache store.", registry=self.registry
        )
        self.store_up = Gauge(
            "kallm_store_up",
            "1 when the cache store answered the last check (/stats, /metrics), else 0.",
            registry=self.registry,
        )

    def finished(
        self,
        route: str,
        outcome: Outcome,
        seconds: float,
        misses: int = 1,
        namespace: str | None = None,
    ) -> None:
        """One request ended; `misses`: how many items of a MISS were not cached (an
        embeddings batch counts per item); `namespace` as it may be shown."""
        self.activity.finished(time.time(), route, outcome.label, seconds, namespace)
        if outcome is Outcome.MISS:
            self.tally.misses += misses
        elif outcome is Outcome.BYPASS:
            self.tally.bypasses += 1
        elif outcome is Outcome.INVALID:
            self.tally.invalid_requests += 1
        self.requests.labels(route, outcome.label).inc()
        self.latency.labels(route, outcome.label).observe(seconds)

    def candidate(self, similarity: float, verdict: str, route: str, namespace: str) -> None:
        """The nearest entry of a semantic lookup; `verdict` from `decision.verdict`,
        `namespace` as it may be shown."""
        self.similarity.labels(verdict).observe(similarity)
        self.activity.looked_up(route, namespace, similarity, verdict)

    def blocked(self) -> None:
        self.tally.blocked_hits += 1
        self.blocked_hits.inc()

    def reported(self, right: bool) -> None:
        self.reports.labels("right" if right else "wrong").inc()

    def hit(self, semantic: bool, model: str, usage: Any, usd: float | None) -> None:
        if semantic:
            self.tally.semantic_hits += 1
        else:
            self.tally.exact_hits += 1
        prompt, completion = token_counts(usage)
        self.tally.saved_prompt_tokens += prompt
        self.tally.saved_completion_tokens += completion
        self.saved_tokens.labels("prompt").inc(prompt)
        self.saved_tokens.labels("completion").inc(completion)
        if usd is None:
            # Model names come from clients: keep the list short.
            if len(self.tally.unpriced_models) < 20:
                self.tally.unpriced_models.add(model)
        else:
            self.tally.saved_usd += usd
            self.saved_usd.inc(usd)

    def upstream_error(self, route: str) -> None:
        self.tally.upstream_errors += 1
        self.upstream_errors.labels(route).inc()

    def cache_error(self, component: str) -> None:
        if component == "store":
            self.tally.store_errors += 1
        else:
            self.tally.embedding_errors += 1
        self.cache_errors.labels(component).inc()

    def stats(self, entries: int, prices_as_of: str, detail: bool) -> dict[str, Any]:
        """The /stats body; the models seen without a price only with `detail` (they come
        from every tenant's requests)."""
        t = self.tally
        hits = t.exact_hits + t.semantic_hits
        looked_up = hits + t.misses
        return {
            "total_entries": entries,
            "total_hits": hits,
            "exact_hits": t.exact_hits,
            "semantic_hits": t.semantic_hits,
            "total_misses": t.misses,
            "hit_rate": round(hits / looked_up, 4) if looked_up else 0.0,
            "bypasses": t.bypasses,
            "upstream_errors": t.upstream_errors,
            "invalid_requests": t.invalid_requests,
            "store_errors": t.store_errors,
            "embedding_errors": t.embedding_errors,
            "blocked_hits": t.blocked_hits,
            "saved_tokens": {
                "prompt": t.saved_prompt_tokens,
                "completion": t.saved_completion_tokens,
            },
            "estimated_saved_usd": round(t.saved_usd, 6),
            "pricing": {
                "prices_as_of": prices_as_of,
                "unpriced_models": sorted(t.unpriced_models) if detail else None,
                "note": "Tokens of hits on unpriced models are counted, but not in dollars. "
                "Answers cached from streams without usage carry an estimate (4 characters "
                "a token).",
            },
        }

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
