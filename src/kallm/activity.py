"""What the dashboard (/ui) draws beyond /stats: outcomes a minute over the last hour,
recent latencies (and the upstream's own), requests by API and by namespace, the similarity
of each semantic lookup's nearest entry (in all, by API, by namespace), and the latest
semantic hits (for reports).

In memory and per process, like /stats; bounded: 60 minutes, 1,000 latencies an outcome, 50
namespaces (the first seen; later ones count as "other"), 50 hits.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any

MINUTES = 60
LATENCIES = 1000
NAMESPACES = 50
RECENT_HITS = 50
OUTCOMES = ("hit", "miss", "bypass", "error")
DECISIONS = ("hit", "rejected", "below")  # as `decision.verdict` says
# Upper bounds of the similarity buckets (kallm_candidate_similarity's too).
SIMILARITY_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0)


@dataclass(frozen=True)
class ServedHit:
    """A semantic hit as served: enough to show it and to report it (`request` as the API's
    export form writes it)."""

    at: float
    route: str
    namespace: str
    entry: str
    cached_text: str | None
    asked_text: str | None
    similarity: float
    request: dict[str, Any] | None


@dataclass
class Activity:
    minutes: dict[int, dict[str, int]] = field(default_factory=dict)
    # By outcome, and "upstream": the time to the upstream's answer's head, on forwards.
    latencies: dict[str, deque[float]] = field(
        default_factory=lambda: {o: deque(maxlen=LATENCIES) for o in (*OUTCOMES, "upstream")}
    )
    routes: dict[str, dict[str, int]] = field(default_factory=dict)
    namespaces: dict[str, dict[str, int]] = field(default_factory=dict)
    hits: deque[ServedHit] = field(default_factory=lambda: deque(maxlen=RECENT_HITS))
    # By view ("all", "api:<route>", "namespace:<name>"), by decision: counts per bucket.
    similarity: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def finished(
        self, now: float, route: str, outcome: str, seconds: float, namespace: str | None
    ) -> None:
        """One request ended (`outcome`: a Prometheus label, one of OUTCOMES)."""
        minute = int(now // 60)
        if minute not in self.minutes:  # a new minute: the one an hour before it goes
            self.minutes[minute] = dict.fromkeys(OUTCOMES, 0)
            for old in [m for m in self.minutes if m <= minute - MINUTES]:
                del self.minutes[old]
        self.minutes[minute][outcome] += 1
        self.latencies[outcome].append(seconds)
        _count(self.routes, route, outcome)
        if namespace is not None:
            _count(self.namespaces, self._bounded(namespace), outcome)

    def looked_up(self, route: str, namespace: str, similarity: float, verdict: str) -> None:
        """A semantic lookup's nearest entry, and what became of it (`decision.verdict`)."""
        bucket = min(bisect_left(SIMILARITY_BUCKETS, similarity), len(SIMILARITY_BUCKETS) - 1)
        for view in ("all", f"api:{route}", f"namespace:{self._bounded(namespace)}"):
            counts = self.similarity.setdefault(
                view, {d: [0] * len(SIMILARITY_BUCKETS) for d in DECISIONS}
            )
            counts[verdict][bucket] += 1

    def _bounded(self, namespace: str) -> str:
        """`namespace`, or "other" once NAMESPACES others are known."""
        known = namespace in self.namespaces or len(self.namespaces) < NAMESPACES
        return namespace if known else "other"

    def upstream(self, seconds: float) -> None:
        self.latencies["upstream"].append(seconds)

    def served(self, hit: ServedHit) -> None:
        self.hits.appendleft(hit)

    def view(self, now: float) -> dict[str, Any]:
        """The dashboard's numbers, as JSON."""
        last = int(now // 60)
        return {
            "minutes": [
                {"minute": m * 60, **self.minutes.get(m, dict.fromkeys(OUTCOMES, 0))}
                for m in range(last - MINUTES + 1, last + 1)
            ],
            "latency_ms": {name: _percentiles(seconds) for name, seconds in self.latencies.items()},
            "routes": self.routes,
            "namespaces": self.namespaces,
            "recent_hits": [vars(hit) for hit in self.hits],
            "similarity": {"upper_bounds": SIMILARITY_BUCKETS, "views": self.similarity},
        }


def _count(table: dict[str, dict[str, int]], name: str, outcome: str) -> None:
    table.setdefault(name, dict.fromkeys(OUTCOMES, 0))[outcome] += 1


def _percentiles(seconds: deque[float]) -> dict[str, float | None]:
    ordered = sorted(seconds)
    if not ordered:
        return {"p50": None, "p95": None, "count": 0}

    def at(q: float) -> float:
        return round(1000 * ordered[min(int(q * len(ordered)), len(ordered) - 1)], 2)

    return {"p50": at(0.5), "p95": at(0.95), "count": len(ordered)}
