"""Per-request cache policy: Cache-Control, X-Kallm-Threshold and X-Kallm-TTL."""

from __future__ import annotations

import pytest


def test_no_cache_skips_the_lookup_and_refreshes_the_entry(caller, upstream):
    old = caller.chat("What is the speed of light?")
    fresh = caller.chat("What is the speed of light?", headers={"Cache-Control": "no-cache"})
    later = caller.chat("What is the speed of light?")

    assert old.cache == "MISS"
    assert fresh.cache == "BYPASS"
    assert fresh.content != old.content, "a bypass must fetch a fresh answer"
    assert later.cache == "HIT"
    assert later.content == fresh.content, "the fresh answer replaces the old one"
    assert len(upstream.chat_calls()) == 2


def test_no_cache_on_a_stream_bypasses_too(caller, upstream):
    caller.stream("Name a planet with rings.")
    fresh = caller.stream("Name a planet with rings.", headers={"Cache-Control": "no-cache"})

    assert fresh.cache == "BYPASS"
    assert fresh.content.startswith("Simulated answer #")
    assert len(upstream.chat_calls()) == 2


def test_no_store_stores_nothing(caller, upstream):
    first = caller.chat("Name a noble gas.", headers={"Cache-Control": "no-store"})
    second = caller.chat("Name a noble gas.")

    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert len(upstream.chat_calls()) == 2


def test_no_store_may_still_read_the_cache(caller, upstream):
    stored = caller.chat("Name a metal that is liquid at room temperature.")
    reply = caller.chat(
        "Name a metal that is liquid at room temperature.", headers={"Cache-Control": "no-store"}
    )

    assert reply.cache == "HIT"
    assert reply.content == stored.content
    assert len(upstream.chat_calls()) == 1


def test_threshold_one_accepts_only_identical_text(caller):
    caller.chat("How do I reverse a list in Python?")
    paraphrase = caller.chat(
        "How can I reverse a list in Python?", headers={"X-Kallm-Threshold": "1"}
    )
    same = caller.chat("How do I reverse a list in Python?", headers={"X-Kallm-Threshold": "1"})

    assert paraphrase.cache == "MISS"
    assert same.cache == "HIT"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Kallm-Threshold", "high"),
        ("X-Kallm-Threshold", "1.5"),
        ("X-Kallm-Threshold", "-0.1"),
        ("X-Kallm-TTL", "soon"),
        ("X-Kallm-TTL", "-5"),
        ("X-Kallm-TTL", "0"),
    ],
)
def test_an_invalid_policy_header_is_a_400(caller, http, upstream, error_of, header, value):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there."}]}
    response = http.post(
        "/v1/chat/completions", json=body, headers={**caller.headers, header: value}
    )

    assert response.status_code == 400
    error = error_of(response)
    assert header.lower() in error["message"].lower()
    assert upstream.chat_calls() == []
