import json

import pytest

from kallm.providers import openai_chat as chat
from kallm.sse import SSEParser

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Paris is the capital of France, and has been for centuries.",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "lookup",
                            "arguments": '{"city": "Paris", "units": "metric"}',
                        },
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        },
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22},
}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": ["hi"]}', "messages[0]"),
        (b"\xff\xfe", None),
    ],
)
def test_invalid_requests(body, param):
    with pytest.raises(chat.InvalidRequest) as caught:
        chat.parse_request(body)
    assert caught.value.param == param


def events(chunks):
    parser = SSEParser()
    return [data for chunk in chunks for data in parser.feed(chunk)]


def test_a_replayed_stream_rebuilds_the_cached_answer():
    chunks = list(chat.replay_stream(COMPLETION, include_usage=True))
    data = events(chunks)
    assert data[-1] == "[DONE]"
    parsed = [json.loads(d) for d in data[:-1]]
    assert len(parsed) >= 6  # a real stream, not one blob
    assert all(p["object"] == "chat.completion.chunk" for p in parsed)
    assert all(p["id"] == parsed[0]["id"] != COMPLETION["id"] for p in parsed)
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"] == COMPLETION["usage"]
    assert all(p["usage"] is None for p in parsed[:-1])

    recorder = chat.StreamRecorder()
    for d in data:
        recorder.add(d)
    rebuilt = recorder.answer()
    assert rebuilt is not None
    assert [c["message"].get("content") for c in rebuilt["choices"]] == [
        c["message"]["content"] for c in COMPLETION["choices"]
    ]
    assert (
        rebuilt["choices"][1]["message"]["tool_calls"]
        == COMPLETION["choices"][1]["message"]["tool_calls"]
    )
    assert [c["finish_reason"] for c in rebuilt["choices"]] == ["stop", "tool_calls"]
    assert rebuilt["usage"] == COMPLETION["usage"]


def test_replay_without_usage_has_no_usage_chunk():
    parsed = [
        json.loads(d) for d in events(chat.replay_stream(COMPLETION, include_usage=False))[:-1]
    ]
    assert all("usage" not in p for p in parsed)
    assert all(p["choices"] for p in parsed)


def test_a_stream_without_done_is_not_an_answer():
    data = events(chat.replay_stream(COMPLETION, include_usage=False))[:-1]
    recorder = chat.StreamRecorder()
    for d in data:
        recorder.add(d)
    assert recorder.answer() is None


def test_an_unreadable_event_spoils_the_stream():
    recorder = chat.StreamRecorder()
    for d in [*events(chat.replay_stream(COMPLETION, include_usage=False))[:2], "{oops", "[DONE]"]:
        recorder.add(d)
    assert recorder.answer() is None


def test_json_replay_has_a_fresh_id_and_the_same_answer():
    replayed = chat.replay_json(COMPLETION)
    assert (
        replayed["id"].startswith("chatcmpl-kallm-")
        and replayed["created"] >= COMPLETION["created"]
    )
    assert replayed["choices"] == COMPLETION["choices"]


@pytest.mark.parametrize(
    ("finish", "cacheable"),
    [
        ("stop", True),
        ("length", True),
        ("tool_calls", True),
        ("content_filter", False),
        (None, False),
    ],
)
def test_what_is_cacheable(finish, cacheable):
    completion = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "finish_reason": finish}]}
    assert chat.is_cacheable(completion) is cacheable


def test_sse_parser_handles_split_events_and_crlf():
    chunks = [b'data: {"a"', b": 1}\r\n\r", b"\n: comment\n\ndata: [DONE]\n", b"\n"]
    assert events(chunks) == ['{"a": 1}', "[DONE]"]
