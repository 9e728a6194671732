"""The HTTP client kallm talks to upstream APIs with."""

from __future__ import annotations

import httpx

from kallm.settings import Settings


def upstream_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The client for every upstream call; `transport` replaces the network (tests)."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(
            settings.upstream_timeout, connect=min(10.0, settings.upstream_timeout)
        ),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
    )
