"""The one exit of every cached request's bookkeeping: its counters and its log line."""

from __future__ import annotations

import logging
import time
from typing import Any

from kallm import keys
from kallm.metrics import Metrics, Outcome

log = logging.getLogger("kallm")


def finish(
    metrics: Metrics,
    route: str,
    outcome: Outcome,
    status: int,
    started: float,
    namespace: str | None = None,
    similarity: float | None = None,
    misses: int = 1,
    **fields: Any,
) -> None:
    """Count the request and write its log line. A MISS or BYPASS the upstream answered
    with an error status counts as an error."""
    if status >= 400 and outcome in (Outcome.MISS, Outcome.BYPASS):
        outcome = Outcome.ERROR
    seconds = time.perf_counter() - started
    shown = keys.redacted(namespace) if namespace else None  # its key hash identifies a key
    metrics.finished(route, outcome, seconds, misses, shown)
    line: dict[str, Any] = {
        "route": route,
        "status": status,
        "outcome": outcome.value,
        "latency_ms": round(seconds * 1000, 2),
        "namespace": shown,
        **fields,
    }
    if similarity is not None:
        line["similarity"] = round(similarity, 4)
    log.info("request", extra={"fields": line})
