"""Pure decisions about one request from its headers: may it read the cache, may its answer
be stored, with which threshold and for how long."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


class InvalidPolicyHeader(ValueError):
    def __init__(self, message: str, header: str) -> None:
        super().__init__(message)
        self.header = header


@dataclass(frozen=True)
class RequestPolicy:
    lookup: bool
    store: bool
    threshold: float
    ttl: float


def request_policy(
    headers: Mapping[str, str], default_threshold: float, default_ttl: float, max_ttl: float
) -> RequestPolicy:
    """Cache-Control follows RFC 9111's request directives: `no-cache` means do not answer
    from the cache (but the fresh answer may be stored), `no-store` means store nothing.
    X-Kallm-TTL asks for a TTL of its own, at most `max_ttl` (KALLM_MAX_TTL)."""
    directives = {
        part.strip().split("=", 1)[0].lower()
        for part in headers.get("cache-control", "").split(",")
        if part.strip()
    }
    threshold = default_threshold
    if (raw := headers.get("x-kallm-threshold")) is not None:
        threshold = _number(raw, "X-Kallm-Threshold")
        if not 0 <= threshold <= 1:
            raise InvalidPolicyHeader(
                "X-Kallm-Threshold must be between 0 and 1.", "x-kallm-threshold"
            )
    ttl = default_ttl
    if (raw := headers.get("x-kallm-ttl")) is not None:
        ttl = _number(raw, "X-Kallm-TTL")
        if ttl <= 0:
            raise InvalidPolicyHeader(
                "X-Kallm-TTL must be a positive number of seconds.", "x-kallm-ttl"
            )
        ttl = min(ttl, max_ttl)
    return RequestPolicy(
        lookup="no-cache" not in directives,
        store="no-store" not in directives,
        threshold=threshold,
        ttl=ttl,
    )


def _number(raw: str, header: str) -> float:
    if len(raw) > 64:  # no number worth reading is longer
        raise InvalidPolicyHeader(f"{header} must be a number.", header)
    try:
        value = float(raw)
    except ValueError:
        raise InvalidPolicyHeader(f"{header} must be a number, got {raw!r}.", header) from None
    if not math.isfinite(value):
        raise InvalidPolicyHeader(f"{header} must be a finite number.", header)
    return value
