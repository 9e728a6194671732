"""OpenAI's legacy Completions API through kallm, driven by the official openai SDK against
the stand-in (kallm.simulator.responses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from openai.types import Completion
from processes import SERVER_KEY, Caller, Simulator

PATH = "/v1/completions"
MODEL = "gpt-3.5-turbo-instruct"


@dataclass
class Answer:
    completion: Completion
    headers: httpx.Headers

    @property
    def cache(self) -> str | None:
        return self.headers.get("x-kallm-cache")

    @property
    def text(self) -> str:
        return self.completion.choices[0].text


@dataclass
class Streamed:
    headers: httpx.Headers
    chunks: list[Completion] = field(default_factory=list)

    @property
    def cache(self) -> str | None:
        return self.headers.get("x-kallm-cache")

    @property
    def text(self) -> str:
        return "".join(c.choices[0].text for c in self.chunks if c.choices)

    @property
    def finish_reason(self) -> str | None:
        reasons = [c.choices[0].finish_reason for c in self.chunks if c.choices]
        return next((r for r in reversed(reasons) if r), None)


def complete(caller: Caller, prompt: Any, **params: Any) -> Answer:
    params.setdefault("model", MODEL)
    raw = caller.client.completions.with_raw_response.create(prompt=prompt, **params)
    return Answer(raw.parse(), raw.headers)


def stream(caller: Caller, prompt: Any, **params: Any) -> Streamed:
    params.setdefault("model", MODEL)
    with caller.client.completions.with_streaming_response.create(
        prompt=prompt, stream=True, **params
    ) as response:
        streamed = Streamed(response.headers)
        streamed.chunks.extend(response.parse())
    return streamed


def calls(upstream: Simulator) -> list[dict[str, Any]]:
    return upstream.requests(PATH)


def test_a_repeated_prompt_is_a_hit_without_an_upstream_call(caller, upstream):
    first = complete(caller, "The tallest mountain on Earth is")
    second = complete(caller, ["The tallest mountain on Earth is"])

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert first.text.startswith("Simulated completion #")
    assert second.text == first.text
    assert second.completion.object == "text_completion"
    assert second.completion.id.startswith("cmpl-kallm-")
    assert second.completion.choices[0].finish_reason == "stop"
    assert len(calls(upstream)) == 1
    assert calls(upstream)[0]["headers"]["authorization"] == f"Bearer {SERVER_KEY}"


def test_a_paraphrased_prompt_is_a_semantic_hit(caller, upstream):
    first = complete(caller, "How do I reverse a list in Python?")
    second = complete(caller, "How can I reverse a list in Python?")

    assert second.cache == "HIT"
    assert second.text == first.text
    assert len(calls(upstream)) == 1


def test_a_streamed_hit_replays_several_chunks(caller, upstream):
    first = stream(caller, "Describe the sky in one sentence:")
    second = stream(caller, "Describe the sky in one sentence:")

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert second.text == first.text
    assert len([c for c in second.chunks if c.choices and c.choices[0].text]) >= 3
    assert all(c.object == "text_completion" for c in second.chunks)
    assert second.finish_reason == "stop"
    assert len(calls(upstream)) == 1


def test_a_hit_replays_usage_when_asked(caller, upstream):
    complete(caller, "Count to three:")
    streamed = stream(caller, "Count to three:", stream_options={"include_usage": True})

    assert streamed.cache == "HIT"
    last = streamed.chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.total_tokens > 0


def test_a_streamed_answer_serves_a_non_stream_request(caller, upstream):
    streamed = stream(caller, "Bees make")
    answer = complete(caller, "Bees make")

    assert answer.cache == "HIT"
    assert answer.text == streamed.text
    assert answer.completion.choices[0].finish_reason == "stop"
    assert len(calls(upstream)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"model": "davinci-002"},
        {"temperature": 0.1},
        {"max_tokens": 5},
        {"suffix": " The end."},
        {"stop": ["\n"]},
        {"n": 2},
        {"echo": True},
    ],
)
def test_changed_parameters_are_a_miss(caller, upstream, change):
    complete(caller, "A haiku about autumn:")
    changed = complete(caller, "A haiku about autumn:", **change)

    assert changed.cache == "MISS"
    assert len(calls(upstream)) == 2


def test_an_echoed_prompt_is_never_served_to_a_paraphrase(caller, upstream):
    first = complete(caller, "How do I reverse a list in Python?", echo=True)
    second = complete(caller, "How can I reverse a list in Python?", echo=True)

    assert second.cache == "MISS"
    assert second.text.startswith("How can I reverse")
    assert first.text.startswith("How do I reverse")


@pytest.mark.parametrize(
    ("directive", "error", "status"),
    [
        ("[sim:error500]", openai.InternalServerError, 500),
        ("[sim:error429]", openai.RateLimitError, 429),
    ],
)
def test_upstream_errors_pass_through_and_are_not_cached(
    caller, upstream, directive, error, status
):
    for _ in range(2):
        with pytest.raises(error) as raised:
            complete(caller, f"{directive} Will this fail?")
        assert raised.value.status_code == status
        assert raised.value.response.headers.get("x-kallm-cache") == "MISS"
    assert isinstance(raised.value.body, dict) and "simulated" in raised.value.body["message"]
    assert len(calls(upstream)) == 2


def test_length_cut_completions_are_cached(caller, upstream):
    first = complete(caller, "[sim:length] A long story:")
    second = complete(caller, "[sim:length] A long story:")

    assert second.cache == "HIT"
    assert second.completion.choices[0].finish_reason == "length"
    assert second.text == first.text


def test_an_invalid_body_is_refused_without_an_upstream_call(http, caller, upstream, error_of):
    response = http.post(PATH, json={"model": MODEL, "prompt": 42}, headers=caller.headers)

    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"
    assert calls(upstream) == []
