"""Entries expire by the clock kallm is given: KALLM_CACHE_TTL, X-Kallm-TTL, and KALLM_MAX_TTL
as the bound on what a request may ask for, without waiting for time to pass."""

from __future__ import annotations

from typing import Any

from inprocess import MODEL, Clock, Upstream, running, sdk


def ask(client: Any, prompt: str, **headers: str) -> str:
    raw = sdk(client).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], extra_headers=headers
    )
    return raw.headers["x-kallm-cache"]


def test_an_entry_lives_for_the_configured_ttl():
    upstream = Upstream()
    with running(upstream, cache_ttl=60) as (client, parts):
        clock = parts.clock
        assert isinstance(clock, Clock)
        assert ask(client, "Name a spring flower.") == "MISS"
        clock.advance(59)
        assert ask(client, "Name a spring flower.") == "HIT"
        clock.advance(2)
        assert ask(client, "Name a spring flower.") == "MISS"
    assert len(upstream.calls) == 2


def test_a_ttl_header_sets_the_entrys_life_within_the_bound():
    upstream = Upstream()
    with running(upstream, cache_ttl=60, max_ttl=600) as (client, parts):
        clock = parts.clock
        assert isinstance(clock, Clock)
        assert ask(client, "Name a winter sport.", **{"X-Kallm-TTL": "5"}) == "MISS"
        clock.advance(4)
        assert ask(client, "Name a winter sport.") == "HIT"
        clock.advance(2)
        assert ask(client, "Name a winter sport.") == "MISS"  # stored again, for 60 s

        # Asking for a year gets the bound, KALLM_MAX_TTL.
        assert ask(client, "Name a summer sport.", **{"X-Kallm-TTL": str(365 * 86400)}) == "MISS"
        clock.advance(599)
        assert ask(client, "Name a summer sport.") == "HIT"
        clock.advance(2)
        assert ask(client, "Name a summer sport.") == "MISS"
    assert len(upstream.calls) == 4
