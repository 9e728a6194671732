"""Non-stream chat completions: what is a hit, what is a miss, and what a hit looks like."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

# Pairs whose all-MiniLM-L6-v2 cosine similarity is measured well above 0.95 but below 1.
PARAPHRASES = [
    ("How do I reverse a list in Python?", "How can I reverse a list in Python?"),
    ("Explain photosynthesis in simple terms.", "Can you explain photosynthesis in simple terms?"),
]


def test_a_repeated_request_is_an_exact_hit(caller, upstream):
    first = caller.chat("What is the tallest mountain on Earth?")
    second = caller.chat("What is the tallest mountain on Earth?")

    assert first.cache == "MISS"
    assert second.cache == "HIT"
    assert second.similarity == "1.0000"
    assert second.content == first.content
    assert first.content is not None and first.content.startswith("Simulated answer #")
    assert len(upstream.chat_calls()) == 1


def test_a_hit_is_a_fresh_completion_with_the_cached_content(caller):
    first = caller.chat("Name a primary colour.")
    time.sleep(1.1)  # so that a fresh `created` differs from the cached one
    second = caller.chat("Name a primary colour.")

    assert second.cache == "HIT"
    assert second.completion.id.startswith("chatcmpl-kallm-")
    assert second.completion.id != first.completion.id
    assert second.completion.created > first.completion.created
    assert second.completion.model == first.completion.model
    assert second.completion.choices[0].finish_reason == "stop"
    assert second.completion.choices[0].message.role == "assistant"


@pytest.mark.parametrize(("stored", "asked"), PARAPHRASES)
def test_a_paraphrase_is_a_semantic_hit(caller, upstream, stored, asked):
    first = caller.chat(stored)
    second = caller.chat(asked)

    assert second.cache == "HIT"
    assert second.similarity is not None and re.fullmatch(r"[01]\.\d{4}", second.similarity)
    assert 0.95 <= float(second.similarity) < 1.0
    assert second.content == first.content
    assert len(upstream.chat_calls()) == 1


def test_an_unrelated_prompt_misses(caller, upstream):
    caller.chat("What is the capital of France?")
    other = caller.chat("How do I bake sourdough bread?")

    assert other.cache == "MISS"
    assert other.content is not None and "sourdough" in other.content
    assert len(upstream.chat_calls()) == 2


def test_the_threshold_header_sets_the_similarity_a_candidate_needs(caller):
    # Measured cosine of this pair with the local model: about 0.97.
    stored, asked = "How many legs does a spider have?", "How many legs do spiders have?"
    caller.chat(stored)

    strict = {"X-Kallm-Threshold": "0.99", "Cache-Control": "no-store"}
    assert caller.chat(asked, headers=strict).cache == "MISS"
    reply = caller.chat(asked, headers={"X-Kallm-Threshold": "0.8"})
    assert reply.cache == "HIT"
    assert reply.similarity is not None and 0.8 <= float(reply.similarity) < 0.99


SYSTEM = {"role": "system", "content": "You are terse."}
QUESTION = {"role": "user", "content": "What is the boiling point of water at sea level?"}


@pytest.mark.parametrize(
    ("change", "outcome"),
    [
        ({"model": "gpt-4o"}, "MISS"),
        ({"temperature": 0.2}, "MISS"),
        ({"top_p": 0.5}, "MISS"),
        ({"max_tokens": 50}, "MISS"),
        ({"seed": 7}, "MISS"),
        ({"stop": ["\n"]}, "MISS"),
        ({"n": 2}, "MISS"),
        ({"response_format": {"type": "json_object"}}, "MISS"),
        ({"messages": [{"role": "system", "content": "You are verbose."}, QUESTION]}, "MISS"),
        ({"messages": [QUESTION]}, "MISS"),
        (
            {
                "messages": [
                    SYSTEM,
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    QUESTION,
                ]
            },
            "MISS",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "lookup", "parameters": {"type": "object"}},
                    }
                ]
            },
            "MISS",
        ),
        ({"user": "someone-else"}, "HIT"),
        ({"metadata": {"run": "other"}}, "HIT"),
        ({}, "HIT"),
    ],
    ids=[
        "model",
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "stop",
        "n",
        "response_format",
        "other-system-prompt",
        "no-system-prompt",
        "earlier-turns",
        "tools",
        "user-is-not-in-the-key",
        "metadata-is-not-in-the-key",
        "same-request",
    ],
)
def test_the_partition_decides_who_shares_an_answer(caller, change, outcome):
    base = {"messages": [SYSTEM, QUESTION], "temperature": 1.0, "user": "someone"}
    first = caller.chat(base["messages"], **{k: v for k, v in base.items() if k != "messages"})
    assert first.cache == "MISS"

    request = base | change
    reply = caller.chat(
        request["messages"], **{k: v for k, v in request.items() if k != "messages"}
    )
    assert reply.cache == outcome


def test_n_choices_are_cached_and_replayed(caller):
    first = caller.chat("Give me a fruit.", n=3)
    second = caller.chat("Give me a fruit.", n=3)

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert [c.index for c in second.completion.choices] == [0, 1, 2]
    assert [c.message.content for c in second.completion.choices] == [
        c.message.content for c in first.completion.choices
    ]


def test_a_tool_call_answer_is_cached(caller, upstream):
    first = caller.chat("[sim:tool] What is the weather in Paris?")
    second = caller.chat("[sim:tool] What is the weather in Paris?")

    assert second.cache == "HIT"
    call = second.completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris"}'
    assert second.completion.choices[0].finish_reason == "tool_calls"
    assert second.completion.choices[0].message.content is None
    assert first.completion.choices[0].message.tool_calls[0].id == call.id
    assert len(upstream.chat_calls()) == 1


def test_length_cut_answers_are_cached(caller, upstream):
    first = caller.chat("[sim:length] Write a long essay about rivers.")
    second = caller.chat("[sim:length] Write a long essay about rivers.")

    assert first.completion.choices[0].finish_reason == "length"
    assert second.cache == "HIT"
    assert second.completion.choices[0].finish_reason == "length"
    assert len(upstream.chat_calls()) == 1


def test_content_filtered_answers_are_not_cached(caller, upstream):
    first = caller.chat("[sim:content_filter] Tell me something forbidden.")
    second = caller.chat("[sim:content_filter] Tell me something forbidden.")

    assert first.completion.choices[0].finish_reason == "content_filter"
    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert second.content != first.content
    assert len(upstream.chat_calls()) == 2


TOOL_TURNS = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
]


def test_a_tool_result_final_turn_matches_exactly_only(caller, upstream):
    result = {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"}
    near = {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny!"}

    first = caller.chat([*TOOL_TURNS, result])
    again = caller.chat([*TOOL_TURNS, result])
    other = caller.chat([*TOOL_TURNS, near])

    assert (first.cache, again.cache, other.cache) == ("MISS", "HIT", "MISS")
    assert again.similarity == "1.0000"
    assert len(upstream.chat_calls()) == 2


def image_turn(text: str, pixel: str) -> list[dict]:
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}}
    return [{"role": "user", "content": [{"type": "text", "text": text}, image]}]


def test_a_final_turn_with_an_image_matches_exactly_only(caller):
    first = caller.chat(image_turn("Describe this picture.", "iVBORw0KGgo="))
    again = caller.chat(image_turn("Describe this picture.", "iVBORw0KGgo="))
    other_image = caller.chat(image_turn("Describe this picture.", "R0lGODlhAQABAAAAACw="))
    reworded = caller.chat(image_turn("Please describe this picture.", "iVBORw0KGgo="))

    assert first.cache == "MISS"
    assert again.cache == "HIT"
    assert other_image.cache == "MISS"
    assert reworded.cache == "MISS"


def test_the_async_client_gets_misses_and_hits(caller, upstream):
    prompts = [f"List {n} prime numbers." for n in ("two", "three", "four")]

    async def ask_all() -> list[tuple[str | None, str | None]]:
        async with caller.async_client() as client:

            async def ask(prompt: str) -> tuple[str | None, str | None]:
                raw = await client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
                )
                return raw.headers.get("x-kallm-cache"), raw.parse().choices[0].message.content

            misses = await asyncio.gather(*(ask(p) for p in prompts))
            hits = await asyncio.gather(*(ask(p) for p in prompts))
            return [*misses, *hits]

    replies = asyncio.run(ask_all())

    assert [cache for cache, _ in replies] == ["MISS"] * 3 + ["HIT"] * 3
    assert [text for _, text in replies[3:]] == [text for _, text in replies[:3]]
    assert len(upstream.chat_calls()) == 3
