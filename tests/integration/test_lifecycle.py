"""Start-up settings, expiry, eviction, logs, stats, metrics and the remote embedder."""

from __future__ import annotations

import json
import time

import httpx
import pytest


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({"KALLM_CACHE_TTL": "banana"}, "KALLM_CACHE_TTL"),
        ({"KALLM_SIMILARITY_THRESHOLD": "2"}, "KALLM_SIMILARITY_THRESHOLD"),
        ({"KALLM_MAX_CACHE_SIZE": "lots"}, "KALLM_MAX_CACHE_SIZE"),
        ({"KALLM_UPSTREAM_TIMEOUT": "-1"}, "KALLM_UPSTREAM_TIMEOUT"),
        ({"KALLM_MAX_BODY_SIZE": "0"}, "KALLM_MAX_BODY_SIZE"),
        ({"OPENAI_BASE_URL": "localhost:9"}, "OPENAI_BASE_URL"),
        ({"KALLM_EMBEDDING_MODEL": "openai:text-embedding-3-small"}, "OPENAI_API_KEY"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_an_invalid_setting_stops_kallm_at_start(start_failing_kallm, settings, variable):
    status, output = start_failing_kallm(**settings)

    assert status != 0
    assert variable in output
    assert "Traceback" not in output, "a bad setting deserves a message, not a traceback"


def test_health_and_readiness(kallm):
    assert httpx.get(f"{kallm.root}/health").status_code == 200
    assert httpx.get(f"{kallm.root}/ready").status_code == 200


def test_kallm_serve_searches_on_one_blas_thread(kallm):
    """Beside the embedding threads, BLAS's own threads would slow every embedding down
    (bench/threads_bench.py); the startup line says how many it runs."""
    ready = next(
        json.loads(line)
        for line in kallm.process.log().splitlines()
        if line.startswith("{") and json.loads(line).get("msg") == "kallm ready"
    )
    assert ready["blas_threads"] == [1]


def test_the_least_recently_used_entry_is_evicted(make_caller, kallm_small, upstream):
    caller = make_caller(kallm_small)  # KALLM_MAX_CACHE_SIZE=3
    first, second, third, fourth = (
        "What colour is a ripe banana?",
        "How many days are in a leap year?",
        "Which planet is closest to the sun?",
        "What is the chemical symbol for gold?",
    )
    for prompt in (first, second, third):
        assert caller.chat(prompt).cache == "MISS"
    assert caller.chat(first).cache == "HIT"  # now the second is the least recently used
    assert caller.chat(fourth).cache == "MISS"

    assert caller.chat(second).cache == "MISS", "the least recently used entry should be gone"
    assert caller.chat(first).cache == "HIT"
    assert len(upstream.chat_calls()) == 5
    assert kallm_small.stats()["total_entries"] <= 3


def test_json_logs_have_one_line_per_request_and_no_prompt(caller, kallm):
    prompt = "Zanzibar marmalade question, please keep private"
    offset = kallm.log_size()
    caller.chat(prompt)
    caller.chat(prompt)
    lines = kallm.log_lines_since(offset, count=2)
    time.sleep(0.3)  # anything more would be a second line for the same request
    lines = kallm.log_lines_since(offset, count=2)

    assert len(lines) == 2, lines
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"route", "outcome", "latency_ms"} <= record.keys(), record
        assert isinstance(record["latency_ms"], int | float)
    assert [r["outcome"].upper() for r in records] == ["MISS", "HIT"]
    assert records[1].get("similarity") == pytest.approx(1.0)
    assert "Zanzibar" not in kallm.process.log()


def test_text_logs_have_one_line_per_request_and_no_prompt(make_caller, kallm_forwarding):
    caller = make_caller(kallm_forwarding)
    offset = kallm_forwarding.log_size()
    caller.chat("Quokka sandwich question, also private")
    caller.client.models.list()
    kallm_forwarding.log_lines_since(offset, count=2)
    time.sleep(0.3)
    lines = kallm_forwarding.log_lines_since(offset, count=2)

    assert len(lines) == 2, lines
    assert "miss" in lines[0].lower()
    assert "Quokka" not in kallm_forwarding.process.log()


def test_stats_count_hits_misses_and_savings(caller, kallm):
    before = kallm.stats()
    caller.chat("What is the square root of sixty-four?")
    caller.chat("What is the square root of sixty-four?")
    caller.chat("What is the square root of sixty-four?", headers={"Cache-Control": "no-cache"})
    after = kallm.stats()

    assert after["total_hits"] == before["total_hits"] + 1
    assert after["total_misses"] == before["total_misses"] + 1
    assert after["bypasses"] == before["bypasses"] + 1
    assert after["total_entries"] >= before["total_entries"] + 1
    looked_up = after["total_hits"] + after["total_misses"]
    assert after["hit_rate"] == round(after["total_hits"] / looked_up, 4)
    assert after["estimated_saved_usd"] > before["estimated_saved_usd"]


def test_metrics_are_prometheus_text(caller, kallm):
    caller.chat("What is the freezing point of water?")
    response = httpx.get(f"{kallm.root}/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "kallm_requests_total" in response.text
    samples = [
        line for line in response.text.splitlines() if line.startswith("kallm_requests_total")
    ]
    assert samples and all(float(line.rsplit(" ", 1)[1]) >= 0 for line in samples)


def test_the_remote_embedder_finds_paraphrases_upstream(make_caller, kallm_remote, upstream):
    # The simulator embeds a hashed bag of words: dropping one word of twenty keeps the
    # cosine similarity near 0.97.
    caller = make_caller(kallm_remote)
    stored = (
        "Please list three famous landmarks that tourists usually visit in Paris "
        "during the long warm summer holidays with their families"
    )
    asked = stored.replace("usually ", "")

    first = caller.chat(stored)
    second = caller.chat(asked)

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert second.similarity is not None and 0.95 <= float(second.similarity) < 1.0
    assert second.content == first.content
    assert len(upstream.chat_calls()) == 1
    embeddings = upstream.requests("/v1/embeddings")
    assert embeddings, "the remote embedder should call the upstream /v1/embeddings"
    assert embeddings[0]["body"]["model"] == "text-embedding-3-small"
    assert embeddings[0]["headers"]["authorization"] == f"Bearer {kallm_remote.upstream_key}"


def test_a_broken_upstream_stream_is_logged_as_one_request_line(caller, kallm):
    offset = kallm.log_size()
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "[sim:truncate] Start, then stop."}],
    }
    with httpx.Client(base_url=kallm.root, timeout=30) as http:
        try:
            with http.stream(
                "POST", "/v1/chat/completions", json=body, headers=caller.headers
            ) as r:
                for _ in r.iter_bytes():
                    pass
        except httpx.HTTPError:
            pass
    kallm.log_lines_since(offset, count=1)
    time.sleep(0.3)
    lines = kallm.log_lines_since(offset, count=1)

    assert len(lines) == 1, [line[:200] for line in lines]
    record = json.loads(lines[0])
    assert {"route", "outcome", "latency_ms"} <= record.keys(), record
