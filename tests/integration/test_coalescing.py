"""Identical misses coalesce (KALLM_COALESCE_TIMEOUT): while the first is upstream, the others
wait for its answer and are served it from the cache, streams included; a leader whose answer
is not stored lets them go upstream themselves. The simulator's `[sim:sleep=N]` keeps the
leader upstream long enough for every request to arrive."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
from processes import MODEL


def calls_with(upstream: Any, prompt: str) -> int:
    return sum(
        prompt in str(call.get("body", {}).get("messages")) for call in upstream.chat_calls()
    )


def ask_together(caller: Any, prompt: str, count: int, stream: bool) -> list[tuple[int, str]]:
    """`count` identical requests at once: each one's status and X-Kallm-Cache."""

    async def run() -> list[tuple[int, str]]:
        async with caller.async_client() as client:

            async def ask() -> tuple[int, str]:
                messages = [{"role": "user", "content": prompt}]
                try:
                    if stream:
                        async with client.chat.completions.with_streaming_response.create(
                            model=MODEL, messages=messages, stream=True
                        ) as response:
                            async for _ in await response.parse():
                                pass
                            return response.status_code, response.headers["x-kallm-cache"]
                    raw = await client.chat.completions.with_raw_response.create(
                        model=MODEL, messages=messages
                    )
                    return raw.status_code, raw.headers["x-kallm-cache"]
                except openai.APIStatusError as error:
                    return error.status_code, error.response.headers.get("x-kallm-cache", "")

            return await asyncio.gather(*(ask() for _ in range(count)))

    return asyncio.run(run())


def test_fifty_identical_misses_make_one_upstream_call(caller, upstream):
    prompt = "[sim:sleep=1] Name three rivers in Africa."
    replies = ask_together(caller, prompt, 50, stream=False)
    assert sorted(replies) == [(200, "HIT")] * 49 + [(200, "MISS")]
    assert calls_with(upstream, prompt) == 1


def test_twenty_identical_streams_make_one_upstream_call(caller, upstream):
    prompt = "[sim:sleep=1] Name three rivers in Asia."
    replies = ask_together(caller, prompt, 20, stream=True)
    assert sorted(replies) == [(200, "HIT")] * 19 + [(200, "MISS")]
    assert calls_with(upstream, prompt) == 1


def test_a_failed_leader_sends_its_waiters_upstream(caller, upstream):
    prompt = "[sim:sleep=1] [sim:error500] Name three rivers in Europe."
    replies = ask_together(caller, prompt, 10, stream=False)
    assert replies == [(500, "MISS")] * 10  # the upstream's error, passed on to each
    assert calls_with(upstream, prompt) == 10


def test_a_truncated_stream_sends_its_waiters_upstream(caller, upstream):
    prompt = "[sim:sleep=1] [sim:truncate] Name three rivers in Oceania."
    replies = ask_together(caller, prompt, 5, stream=False)
    assert calls_with(upstream, prompt) == 5
    assert all(status != 200 or cache == "MISS" for status, cache in replies)


def test_requests_that_store_nothing_do_not_wait(caller, upstream):
    prompt = "[sim:sleep=1] Name three rivers in South America."
    headers = {"Cache-Control": "no-store"}

    async def run() -> None:
        async with caller.async_client() as client:
            await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": prompt}],
                        extra_headers=headers,
                    )
                    for _ in range(5)
                )
            )

    asyncio.run(run())
    assert calls_with(upstream, prompt) == 5
