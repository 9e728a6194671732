import json
from typing import Any

import pytest
from hypothesis import given
from openai.types import Completion
from pydantic import TypeAdapter
from test_openai_chat import (
    HOSTILE,
    answers,
    assert_records_safely,
    assert_survives,
    spoiled_events,
    stream_data,
)

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

    recorder = legacy.recorder()
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
    recorder = legacy.recorder()
    for data in events:
        recorder.add(data)
    assert recorder.answer() is None


def test_usage_comes_from_the_completion_or_is_estimated() -> None:
    assert legacy.usage(REQUEST, COMPLETION) == {"prompt_tokens": 5, "completion_tokens": 14}
    estimated = legacy.usage(REQUEST, {**COMPLETION, "usage": None})
    assert estimated["estimated"] is True and estimated["completion_tokens"] > 0


def test_kallms_own_errors_are_in_openais_shape() -> None:
    error = json.loads(legacy.OpenAICompletions().error_body(400, "bad", "invalid_request_error"))
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"] == "bad"


# Hostile answers (the helpers are shared with the chat tests).

PROVIDER = legacy.OpenAICompletions()
REQUESTS: list[dict[str, Any]] = [
    REQUEST,
    {**REQUEST, "stream": True},
    {**REQUEST, "stream": True, "stream_options": {"include_usage": True}},
]
CHOICE = COMPLETION["choices"][0]


def with_choice(**fields: Any) -> dict[str, Any]:
    return {**COMPLETION, "choices": [{**CHOICE, **fields}]}


MALFORMED = {
    "choices not objects": {**COMPLETION, "choices": [" Paris", 1]},
    "a list finish_reason": with_choice(finish_reason=["stop"]),
    "a number text": with_choice(text=5),
    "a list text": with_choice(text=["Paris"]),
    "a string index": with_choice(index="0"),
    "no index": {**COMPLETION, "choices": [{k: v for k, v in CHOICE.items() if k != "index"}]},
    "mixed index types": {**COMPLETION, "choices": [CHOICE, {**CHOICE, "index": "1"}]},
    "a repeated index": {**COMPLETION, "choices": [CHOICE, CHOICE]},
    "logprobs a list": with_choice(logprobs=[1]),
    "a model number": {**COMPLETION, "model": 3},
    "usage a string": {**COMPLETION, "usage": "lots"},
    "a huge prompt_tokens": {**COMPLETION, "usage": {"prompt_tokens": 10**400}},
    "a string prompt_tokens": {**COMPLETION, "usage": {"prompt_tokens": "abc"}},
    "a negative completion_tokens": {**COMPLETION, "usage": {"completion_tokens": -1}},
    "an infinite total_tokens": {**COMPLETION, "usage": {"total_tokens": float("inf")}},
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_answer_kallm_does_not_fully_understand_is_not_cached(answer: dict[str, Any]) -> None:
    assert legacy.is_cacheable(answer) is False
    assert_survives(PROVIDER, REQUESTS, answer)


@pytest.mark.parametrize("counts", [{"prompt_tokens": 5, "completion_tokens": 10**400}, [1, 2]])
def test_counts_that_are_not_counts_are_estimated(counts: Any) -> None:
    assert legacy.usage(REQUEST, {**COMPLETION, "usage": counts})["estimated"] is True


def piece(index: Any = 0, text: Any = "a", finish: Any = None, **fields: Any) -> str:
    choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish} | fields
    return json.dumps({"object": "text_completion", "choices": [choice]})


GOOD = [piece(text="Paris"), piece(text="", finish="stop")]
ODD_STREAMS = {
    "a list finish_reason": [GOOD[0], piece(text="", finish=["stop"])],
    "an unhashable index": [piece([0]), GOOD[1]],
    "mixed index types": [*GOOD, piece("1"), piece("1", finish="stop")],
    "a chunk that is a list": [GOOD[0], "[1]", GOOD[1]],
    "a choice that is a string": [GOOD[0], json.dumps({"choices": ["x"]}), GOOD[1]],
    "choices an object": [GOOD[0], json.dumps({"choices": {}}), GOOD[1]],
    "a number text": [piece(text=5), GOOD[1]],
    "logprobs a list": [piece(logprobs=[1]), GOOD[1]],
    "usage a list": [*GOOD, json.dumps({"choices": [], "usage": [1]})],
    "a huge usage": [*GOOD, json.dumps({"choices": [], "usage": {"prompt_tokens": 10**400}})],
    "too deep to parse": [GOOD[0], "[" * 100_000, GOOD[1]],
}


@pytest.mark.parametrize("events", ODD_STREAMS.values(), ids=ODD_STREAMS.keys())
def test_an_odd_stream_never_raises_and_records_nothing(events: list[str]) -> None:
    assert assert_records_safely(PROVIDER, REQUESTS, [*events, "[DONE]"]) is None


def test_logprobs_lists_that_stop_coming_are_kept() -> None:
    lists = {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": None, "text_offset": [0]}
    events = [piece(logprobs=lists), piece(text="", finish="stop", logprobs=None), "[DONE]"]
    answer = assert_records_safely(PROVIDER, REQUESTS, events)
    assert answer is not None and answer["choices"][0]["logprobs"] == lists


@HOSTILE
@given(answers(COMPLETION))
def test_no_answer_makes_kallm_raise(answer: dict[str, Any]) -> None:
    assert_survives(PROVIDER, REQUESTS, answer)


@HOSTILE
@given(spoiled_events(stream_data(legacy.replay_stream(COMPLETION, include_usage=True))))
def test_no_stream_makes_the_recorder_raise(events: list[str]) -> None:
    assert_records_safely(PROVIDER, REQUESTS, events)
