import json
from typing import Any

import pytest
from openai.types import Completion
from pydantic import TypeAdapter

from kallm.providers import openai_completions as legacy
from kallm.providers.base import InvalidRequest
from kallm.sse import SSEParser

CHUNK = TypeAdapter(Completion)

COMPLETION: dict[str, Any] = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1,
    "model": "gpt-3.5-turbo-instruct",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "text": " Paris is the capital of France, and has been for centuries.",
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
        },
        {
            "text": " Paris.",
            "index": 1,
            "logprobs": {
                "tokens": [" Paris", "."],
                "token_logprobs": [-0.1, -0.2],
                "top_logprobs": [{" Paris": -0.1}, {".": -0.2}],
                "text_offset": [10, 16],
            },
            "finish_reason": "length",
        },
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 14, "total_tokens": 19},
}
REQUEST: dict[str, Any] = {"model": "gpt-3.5-turbo-instruct", "prompt": "The capital of France is"}


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{not json", None),
        (b'"text"', None),
        (b'{"prompt": "hi"}', "model"),
        (b'{"model": "m", "prompt": 3}', "prompt"),
        (b'{"model": "m", "prompt": []}', "prompt"),
        (b'{"model": "m", "prompt": [{"text": "hi"}]}', "prompt"),
        (b'{"model": "m", "prompt": [[1, true]]}', "prompt"),
    ],
)
def test_invalid_requests_are_rejected_with_the_parameter(raw: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as error:
        legacy.parse_request(raw)
    assert error.value.param == param


@pytest.mark.parametrize("prompt", ["hi", ["hi"], ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_every_prompt_shape_the_api_takes_is_accepted(prompt: Any) -> None:
    assert legacy.parse_request(json.dumps({"model": "m", "prompt": prompt}).encode())


@pytest.mark.parametrize(
    ("prompt", "text"),
    [
        ("The capital of France is", "The capital of France is"),
        (["The capital of France is"], "The capital of France is"),
        (["one", "two"], None),
        ([1, 2, 3], None),
        ([[1, 2], [3]], None),
    ],
)
def test_a_single_text_prompt_is_compared_by_meaning(prompt: Any, text: str | None) -> None:
    parts = legacy.key_parts({**REQUEST, "prompt": prompt})
    assert parts.text == text
    assert parts.final == prompt
    assert "prompt" not in parts.context


def test_echo_matches_only_exactly() -> None:
    # The answer repeats the prompt: a paraphrase must not be served someone else's words.
    assert legacy.key_parts({**REQUEST, "echo": True}).text is None


def test_every_parameter_but_streaming_and_user_is_context() -> None:
    request = {
        **REQUEST,
        "suffix": "!",
        "max_tokens": 5,
        "temperature": 0,
        "n": 2,
        "stop": ["\n"],
        "logprobs": 2,
        "best_of": 3,
        "unknown": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u",
    }
    context = legacy.key_parts(request).context
    assert set(context) == {
        "model",
        "suffix",
        "max_tokens",
        "temperature",
        "n",
        "stop",
        "logprobs",
        "best_of",
        "unknown",
    }
    assert legacy.keyed_request(request) == {"prompt": REQUEST["prompt"], **context}


def test_whole_completions_are_cacheable() -> None:
    assert legacy.is_cacheable(COMPLETION)


@pytest.mark.parametrize(
    "change",
    [
        {"object": "chat.completion"},
        {"choices": []},
        {"choices": [{**COMPLETION["choices"][0], "finish_reason": "content_filter"}]},
        {"choices": [{**COMPLETION["choices"][0], "finish_reason": None}]},
        {"choices": [{**COMPLETION["choices"][0], "text": None}]},
    ],
)
def test_cut_or_filtered_completions_are_not_cacheable(change: dict[str, Any]) -> None:
    assert not legacy.is_cacheable({**COMPLETION, **change})


def test_a_replay_is_a_new_completion() -> None:
    replayed = json.loads(legacy.OpenAICompletions().replay_json(REQUEST, COMPLETION))
    assert replayed["id"].startswith("cmpl-kallm-") and replayed["created"] > 1
    assert replayed["choices"] == COMPLETION["choices"]
    Completion.model_validate(replayed)


def _chunks(stream: list[bytes]) -> list[str]:
    parser = SSEParser()
    return [data for piece in stream for data in parser.feed(piece)]


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_replayed_stream_is_several_chunks_that_rebuild_the_answer(include_usage: bool) -> None:
    events = _chunks(list(legacy.replay_stream(COMPLETION, include_usage)))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        # The SDK types finish_reason as required, though streams send null until the end.
        choices = [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk["choices"]]
        CHUNK.validate_python({**chunk, "choices": choices})
    first = [
        c["choices"][0]["text"] for c in chunks if c["choices"] and c["choices"][0]["index"] == 0
    ]
    assert len([t for t in first if t]) >= 3
    assert "".join(first) == COMPLETION["choices"][0]["text"]
    assert len({c["id"] for c in chunks}) == 1
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == COMPLETION["usage"]
    else:
        assert all("usage" not in c for c in chunks)

    recorder = legacy.StreamRecorder()
    for data in events:
        recorder.add(data)
    rebuilt = recorder.answer()
    assert rebuilt is not None
    assert rebuilt["choices"] == COMPLETION["choices"]
    assert ("usage" in rebuilt) is include_usage


def test_logprobs_replay_token_by_token() -> None:
    events = _chunks(list(legacy.replay_stream(COMPLETION, False)))
    second = [
        json.loads(e)["choices"][0] for e in events[:-1] if json.loads(e)["choices"][0]["index"]
    ]
    assert [c["text"] for c in second] == [" Paris", ".", ""]
    assert second[0]["logprobs"] == {
        "tokens": [" Paris"],
        "token_logprobs": [-0.1],
        "top_logprobs": [{" Paris": -0.1}],
        "text_offset": [10],
    }


@pytest.mark.parametrize(
    "events",
    [
        ['{"object": "text_completion", "choices": [{"index": 0, "text": "a"}]}'],
        ["[DONE]"],
        ["{broken", '{"choices": [{"index": 0, "text": "a", "finish_reason": "stop"}]}', "[DONE]"],
        [
            '{"choices": [{"index": 0, "text": "a"}]}',
            '{"error": {"message": "overloaded"}}',
            "[DONE]",
        ],
    ],
)
def test_a_stream_that_did_not_end_normally_records_nothing(events: list[str]) -> None:
    recorder = legacy.StreamRecorder()
    for data in events:
        recorder.add(data)
    assert recorder.answer() is None


def test_usage_comes_from_the_completion_or_is_estimated() -> None:
    assert legacy.usage(REQUEST, COMPLETION) == COMPLETION["usage"]
    estimated = legacy.usage(REQUEST, {**COMPLETION, "usage": None})
    assert estimated["estimated"] is True and estimated["completion_tokens"] > 0


def test_kallms_own_errors_are_in_openais_shape() -> None:
    error = json.loads(legacy.OpenAICompletions().error_body(400, "bad", "invalid_request_error"))
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"] == "bad"
