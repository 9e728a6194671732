"""Streamed chat completions: forwarded as they arrive on a miss, replayed on a hit."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest


def test_a_streamed_answer_is_replayed_as_a_stream(caller, upstream):
    first = caller.stream("Describe the colour of the sky in one sentence.")
    second = caller.stream("Describe the colour of the sky in one sentence.")

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert first.content.startswith("Simulated answer #")
    assert second.content == first.content
    assert len(second.content_chunks) >= 2, "a hit should replay as several chunks"
    assert second.finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in second.chunks)
    assert all(c.id.startswith("chatcmpl-kallm-") for c in second.chunks)
    assert len({c.id for c in second.chunks}) == 1
    assert len(upstream.chat_calls()) == 1


def test_a_replayed_stream_is_well_formed_server_sent_events(caller, http, sse_events):
    caller.stream("Name three rivers in Africa.")
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "Name three rivers in Africa."}],
    }
    response = http.post("/v1/chat/completions", json=body, headers=caller.headers)

    assert response.status_code == 200
    assert response.headers["x-kallm-cache"] == "HIT"
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c or c["usage"] is None for c in chunks)


@pytest.mark.parametrize("stored_as", ["stream", "non-stream"])
def test_a_hit_replays_usage_when_asked(caller, stored_as):
    prompt = "How many legs does a spider have?"
    if stored_as == "stream":
        caller.stream(prompt, stream_options={"include_usage": True})
    else:
        caller.chat(prompt)

    with_usage = caller.stream(prompt, stream_options={"include_usage": True})
    without = caller.stream(prompt)

    assert (with_usage.cache, without.cache) == ("HIT", "HIT")
    last = with_usage.chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.total_tokens > 0
    assert all(c.usage is None for c in with_usage.chunks[:-1])
    assert all(c.usage is None for c in without.chunks)


def test_a_streamed_answer_serves_a_non_stream_request(caller, upstream):
    streamed = caller.stream("What do bees make?")
    reply = caller.chat("What do bees make?")

    assert reply.cache == "HIT"
    assert reply.content == streamed.content
    assert reply.completion.object == "chat.completion"
    assert reply.completion.choices[0].finish_reason == "stop"
    assert len(upstream.chat_calls()) == 1


def test_a_non_stream_answer_serves_a_stream_request(caller, upstream):
    reply = caller.chat("What do cows drink?")
    streamed = caller.stream("What do cows drink?")

    assert streamed.cache == "HIT"
    assert streamed.content == reply.content
    assert streamed.finish_reason == "stop"
    assert len(upstream.chat_calls()) == 1


def test_a_miss_is_forwarded_chunk_by_chunk(caller):
    # The simulator sends 6 chunks 0.4 s apart: a proxy that buffered the stream would
    # deliver the first chunk only when the last one arrives.
    reply = caller.stream("[sim:slow] Count slowly to six.")

    assert reply.cache == "MISS"
    first_content = next(
        t
        for t, c in zip(reply.arrivals, reply.chunks, strict=True)
        if c.choices and c.choices[0].delta.content
    )
    assert reply.finished >= 1.8
    assert reply.finished - first_content >= 1.2
    assert len(reply.content_chunks) >= 6

    replay = caller.stream("[sim:slow] Count slowly to six.")
    assert replay.cache == "HIT"
    assert replay.content == reply.content


def test_a_slow_stream_does_not_hold_up_other_requests(caller):
    async def scenario() -> tuple[float, float, str | None]:
        async with caller.async_client() as client:

            async def slow() -> float:
                started = time.monotonic()
                stream = await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "[sim:slow] Take your time."}],
                    stream=True,
                )
                async with stream:
                    async for _ in stream:
                        pass
                return time.monotonic() - started

            async def quick() -> tuple[float, str | None]:
                await asyncio.sleep(0.3)  # let the slow stream get going first
                started = time.monotonic()
                raw = await client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "Quick: what is two plus two?"}],
                )
                return time.monotonic() - started, raw.headers.get("x-kallm-cache")

            slow_time, (quick_time, cache) = await asyncio.gather(slow(), quick())
            return slow_time, quick_time, cache

    slow_time, quick_time, cache = asyncio.run(scenario())

    assert cache == "MISS"
    assert slow_time >= 1.8
    assert quick_time < 1.0


def test_an_async_stream_misses_then_hits(caller, upstream):
    async def collect() -> list[tuple[str | None, str]]:
        results = []
        async with caller.async_client() as client:
            for _ in range(2):
                async with client.chat.completions.with_streaming_response.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "Name a large ocean."}],
                    stream=True,
                ) as response:
                    text = ""
                    async for chunk in await response.parse():
                        if chunk.choices:
                            text += chunk.choices[0].delta.content or ""
                    results.append((response.headers.get("x-kallm-cache"), text))
        return results

    (first_cache, first_text), (second_cache, second_text) = asyncio.run(collect())

    assert (first_cache, second_cache) == ("MISS", "HIT")
    assert second_text == first_text and first_text
    assert len(upstream.chat_calls()) == 1


def test_a_streamed_tool_call_is_replayed(caller):
    def arguments(reply) -> tuple[str, str]:
        name, args = "", ""
        for chunk in reply.chunks:
            calls = chunk.choices[0].delta.tool_calls if chunk.choices else None
            for call in calls or []:
                if call.function:
                    name += call.function.name or ""
                    args += call.function.arguments or ""
        return name, args

    first = caller.stream("[sim:tool] Weather in Paris, please.")
    second = caller.stream("[sim:tool] Weather in Paris, please.")

    assert second.cache == "HIT"
    assert arguments(second) == arguments(first) == ("get_weather", '{"city": "Paris"}')
    assert second.finish_reason == "tool_calls"


def test_a_truncated_stream_is_not_cached(caller, http, upstream):
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "[sim:truncate] Tell me a long story."}],
    }

    def attempt() -> tuple[str | None, str]:
        cache, received = None, ""
        try:
            with http.stream(
                "POST", "/v1/chat/completions", json=body, headers=caller.headers
            ) as r:
                cache = r.headers.get("x-kallm-cache")
                for text in r.iter_text():
                    received += text
        except httpx.HTTPError:
            pass  # passing the broken connection on to the client is one right answer
        return cache, received

    first_cache, first_body = attempt()
    second_cache, _ = attempt()

    assert "[DONE]" not in first_body, "a cut-off stream must not look complete to the client"
    assert "Simulated answer" in first_body, "the chunks that did arrive are forwarded"
    assert (first_cache, second_cache) == ("MISS", "MISS")
    assert len(upstream.chat_calls()) == 2


def test_a_content_filtered_stream_is_not_cached(caller, upstream):
    first = caller.stream("[sim:content_filter] Something unsafe.")
    second = caller.stream("[sim:content_filter] Something unsafe.")

    assert first.finish_reason == "content_filter"
    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert len(upstream.chat_calls()) == 2
