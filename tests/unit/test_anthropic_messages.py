import json
from typing import Any

import httpx
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message
from hypothesis import given
from starlette.datastructures import Headers
from test_openai_chat import (
    HOSTILE,
    answers,
    assert_records_safely,
    assert_survives,
    spoiled_events,
    stream_data,
)

from kallm import keys
from kallm.providers import anthropic as messages
from kallm.providers.base import Call, InvalidRequest, Parsed, Upstream
from kallm.sse import SSEParser

TEXT_MESSAGE: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [
        {
            "type": "text",
            "text": "Paris is the capital of France, and has been for a great many centuries.",
        }
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 5,
        "output_tokens": 17,
    },
}

MIXED_MESSAGE: dict[str, Any] = {
    **TEXT_MESSAGE,
    "id": "msg_02",
    "content": [
        {
            "type": "thinking",
            "thinking": "The user wants the weather in Paris.",
            "signature": "c2ln",
        },
        {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
        {
            "type": "text",
            "text": "Let me check that for you.",
            "citations": [
                {
                    "type": "char_location",
                    "cited_text": "Paris",
                    "document_index": 0,
                    "document_title": None,
                    "start_char_index": 0,
                    "end_char_index": 5,
                }
            ],
        },
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "get_weather",
            "input": {"city": "Paris", "units": "celsius", "days": [1, 2]},
        },
    ],
    "stop_reason": "tool_use",
}


def request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    return body | fields


def parse(body: dict[str, Any], beta: str | None = None) -> Parsed:
    headers = Headers({messages.BETA: beta} if beta is not None else {})
    return PROVIDER.parse(Call(json.dumps(body).encode(), "/v1/messages", {}, {}, headers))


def partition(body: dict[str, Any], beta: str | None = None) -> str:
    parts = PROVIDER.key_parts(parse(body, beta))
    return keys.cache_key("ns", "messages", parts.context, parts.final, parts.text).partition


def exact(body: dict[str, Any]) -> str:
    parts = PROVIDER.key_parts(parse(body))
    return keys.cache_key("ns", "messages", parts.context, parts.final, parts.text).exact


def events_of(stream: bytes) -> list[dict[str, Any]]:
    return [json.loads(data) for data in SSEParser().feed(stream)]


def record(stream: bytes) -> dict[str, Any] | None:
    recorder = messages.StreamRecorder()
    for data in SSEParser().feed(stream):
        recorder.add(data)
    return recorder.answer()


def replayed(message: dict[str, Any]) -> bytes:
    return b"".join(messages.replay_stream(message))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": ["hi"]}', "messages.0"),
        (b'{"model": "m", "messages": [{"role": "system", "content": "hi"}]}', "messages.0"),
        (b'{"model": "m", "messages": [{"role": "user"}]}', "messages.0"),
        (b'{"model": "m", "messages": [{"role": "user", "content": 3}]}', "messages.0"),
        (b"\xff\xfe", None),
    ],
)
def test_invalid_requests_are_refused(body: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as raised:
        messages.parse_request(body)
    assert raised.value.param == param


def test_fields_that_never_change_the_answer_stay_out_of_the_key() -> None:
    base = partition(request())
    assert partition(request(stream=True)) == base
    assert partition(request(metadata={"user_id": "u-1"})) == base
    assert partition(request(service_tier="auto")) == base


@pytest.mark.parametrize(
    "change",
    [
        {"model": "claude-haiku-4-5"},
        {"system": "Answer in French."},
        {"max_tokens": 1024},
        {"temperature": 0.2},
        {"top_p": 0.5},
        {"top_k": 5},
        {"stop_sequences": ["\n\n"]},
        {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        {"tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]},
        {"tool_choice": {"type": "any"}},
        {"some_new_parameter": True},
        {
            "messages": [
                {"role": "user", "content": "Hello."},
                {"role": "assistant", "content": "Hi! How can I help?"},
                {"role": "user", "content": "What is the capital of France?"},
            ]
        },
    ],
)
def test_what_can_change_the_answer_splits_the_partition(change: dict[str, Any]) -> None:
    assert partition(request(**change)) != partition(request())


def test_the_beta_header_is_keyed_in_any_order() -> None:
    plain = partition(request())
    one = partition(request(), "interleaved-thinking-2025-05-14, output-128k-2025-02-19")
    other = partition(request(), "output-128k-2025-02-19,interleaved-thinking-2025-05-14")
    assert one == other != plain


def test_a_body_cannot_claim_the_beta_headers_place() -> None:
    with pytest.raises(InvalidRequest):
        parse(request(**{"anthropic-beta": ["x"]}))


def test_cache_control_markers_do_not_split_the_key() -> None:
    mark = {"cache_control": {"type": "ephemeral"}}
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    earlier = [
        {"role": "user", "content": [{"type": "text", "text": "Hello."}]},
        {"role": "assistant", "content": "Hi!"},
    ]
    final = {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}
    plain = request(
        system=[{"type": "text", "text": "Be brief."}], tools=[tool], messages=[*earlier, final]
    )
    marked = request(
        system=[{"type": "text", "text": "Be brief.", **mark}],
        tools=[tool | mark],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hello.", **mark}]},
            earlier[1],
            {"role": "user", "content": [{"type": "text", "text": "Capital of France?", **mark}]},
        ],
    )
    assert partition(marked) == partition(plain)
    assert exact(marked) == exact(plain)
    assert PROVIDER.key_parts(parse(marked)).text == "Capital of France?"


def test_cache_control_is_dropped_inside_tool_results_too() -> None:
    def turn(block: dict[str, Any]) -> dict[str, Any]:
        result = {"type": "tool_result", "tool_use_id": "t1", "content": [block]}
        return request(messages=[{"role": "user", "content": [result]}])

    text = {"type": "text", "text": "18 degrees"}
    marked = text | {"cache_control": {"type": "ephemeral"}}
    assert exact(turn(marked)) == exact(turn(text))
    assert exact(turn({"type": "text", "text": "19 degrees"})) != exact(turn(text))


@pytest.mark.parametrize(
    ("final", "text"),
    [
        ({"role": "user", "content": "Hi there"}, "Hi there"),
        (
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            "a\nb",
        ),
        ({"role": "assistant", "content": "The answer is"}, None),
        (
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                ],
            },
            None,
        ),
        (
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "18 degrees"}],
            },
            None,
        ),
        ({"role": "user", "content": []}, None),
    ],
)
def test_only_a_plain_text_final_user_turn_is_compared_by_meaning(
    final: dict[str, Any], text: str | None
) -> None:
    parts = PROVIDER.key_parts(parse(request(messages=[final])))
    assert parts.text == text
    assert parts.model == "claude-sonnet-4-6"


def test_keyed_request_keeps_messages_and_drops_what_never_matters() -> None:
    parsed = parse(request(stream=True, metadata={"user_id": "u"}, top_k=3), "beta-1")
    keyed = PROVIDER.keyed_request(parsed)
    assert set(keyed) == {"model", "max_tokens", "messages", "top_k", "anthropic-beta"}
    assert parsed.features == ("beta-1",) and "anthropic-beta" not in parsed.body
    # An export warmed back in keys the same.
    assert PROVIDER.key_parts(PROVIDER.parse_keyed(keyed)) == PROVIDER.key_parts(parsed)


@pytest.mark.parametrize(
    ("stop_reason", "cacheable"),
    [
        ("end_turn", True),
        ("max_tokens", True),
        ("stop_sequence", True),
        ("tool_use", True),
        ("refusal", False),
        ("pause_turn", False),
        (None, False),
    ],
)
def test_only_whole_answers_are_cacheable(stop_reason: str | None, cacheable: bool) -> None:
    assert messages.is_cacheable(TEXT_MESSAGE | {"stop_reason": stop_reason}) is cacheable


def test_errors_are_not_cacheable() -> None:
    error = {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    assert not messages.is_cacheable(error)


def test_usage_counts_cached_prompt_tokens_as_prompt_tokens() -> None:
    assert messages.usage(request(), TEXT_MESSAGE) == {
        "prompt_tokens": 20,
        "completion_tokens": 17,
    }


def test_usage_is_estimated_when_the_answer_has_none() -> None:
    counted = messages.usage(request(), {k: v for k, v in TEXT_MESSAGE.items() if k != "usage"})
    assert counted["estimated"] is True
    assert counted["prompt_tokens"] > 0 and counted["completion_tokens"] > 0


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (413, "request_too_large", "request_too_large"),
        (401, "authentication_error", "authentication_error"),
        (502, "upstream_error", "api_error"),
        (504, "upstream_error", "timeout_error"),
    ],
)
def test_errors_have_anthropics_shape(status: int, kind: str, expected: str) -> None:
    body = json.loads(messages.error_body(status, "It went wrong.", kind))
    assert body == {"type": "error", "error": {"type": expected, "message": "It went wrong."}}


def test_a_json_replay_is_a_new_message() -> None:
    first = messages.replay_json(TEXT_MESSAGE)
    second = messages.replay_json(TEXT_MESSAGE)
    assert first["id"].startswith("msg_kallm_") and first["id"] != second["id"]
    assert {k: v for k, v in first.items() if k != "id"} == {
        k: v for k, v in TEXT_MESSAGE.items() if k != "id"
    }


def test_a_replayed_stream_is_the_full_event_sequence() -> None:
    stream = replayed(TEXT_MESSAGE)
    events = events_of(stream)
    kinds = [event["type"] for event in events]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert kinds[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert kinds.count("content_block_delta") >= 3
    # Every event's `event:` line names the type its data carries.
    names = [
        line.removeprefix(b"event: ").decode()
        for line in stream.split(b"\n")
        if line.startswith(b"event:")
    ]
    assert names == kinds
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["id"].startswith("msg_kallm_")
    closing = events[-2]
    assert closing["delta"]["stop_reason"] == "end_turn"
    assert closing["usage"]["output_tokens"] == 17


def test_tool_input_is_replayed_in_several_json_parts() -> None:
    events = events_of(replayed(MIXED_MESSAGE))
    parts = [
        e["delta"]["partial_json"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    ]
    assert len(parts) >= 2
    assert json.loads("".join(parts)) == MIXED_MESSAGE["content"][3]["input"]


@pytest.mark.parametrize("message", [TEXT_MESSAGE, MIXED_MESSAGE], ids=["text", "mixed"])
def test_a_replayed_stream_records_back_to_the_same_message(message: dict[str, Any]) -> None:
    answer = record(replayed(message))
    assert answer is not None
    assert {k: v for k, v in answer.items() if k != "id"} == {
        k: v for k, v in message.items() if k != "id"
    }


@pytest.mark.parametrize("message", [TEXT_MESSAGE, MIXED_MESSAGE], ids=["text", "mixed"])
def test_the_sdk_rebuilds_the_same_message_from_a_replay(message: dict[str, Any]) -> None:
    snapshot = None
    buffers: dict[int, bytes] = {}
    for event in events_of(replayed(message)):
        if event["type"] != "ping":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=buffers)  # type: ignore[arg-type]
    assert snapshot is not None
    expected = Message.model_validate(message).model_dump(exclude={"id"}, exclude_none=True)
    assert snapshot.model_dump(exclude={"id"}, exclude_none=True) == expected


def test_a_stream_without_message_stop_is_not_recorded() -> None:
    stream = replayed(TEXT_MESSAGE)
    assert record(stream.rsplit(b"event: message_stop", 1)[0]) is None


def test_an_error_event_spoils_the_recording() -> None:
    stream = replayed(TEXT_MESSAGE)
    head, tail = stream.split(b"event: message_delta", 1)
    failure = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    error = b"event: error\ndata: " + json.dumps(failure).encode() + b"\n\n"
    assert record(head + error + b"event: message_delta" + tail) is None


@pytest.mark.parametrize(
    "bad",
    [
        b"data: {not json\n\n",
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"some_new_delta"}}\n\n',
        # A delta for a block that was never started.
        b'data: {"type":"content_block_delta","index":7,"delta":{"type":"text_delta"}}\n\n',
    ],
)
def test_an_event_kallm_cannot_apply_spoils_the_recording(bad: bytes) -> None:
    stream = replayed(TEXT_MESSAGE)
    head, tail = stream.split(b"event: message_delta", 1)
    assert record(head + bad + b"event: message_delta" + tail) is None


def test_unknown_event_types_are_ignored() -> None:
    stream = replayed(TEXT_MESSAGE)
    head, tail = stream.split(b"event: message_delta", 1)
    extra = b'event: something_new\ndata: {"type":"something_new"}\n\n'
    assert record(head + extra + b"event: message_delta" + tail) is not None


def test_a_block_left_open_is_not_recorded() -> None:
    stream = replayed(TEXT_MESSAGE)
    head, tail = stream.split(b"event: content_block_stop", 1)
    assert record(head + tail.split(b"\n\n", 1)[1]) is None


def call(headers: dict[str, str], query: dict[str, str] | None = None) -> Call:
    return Call(b'{"model":"m"}', "/v1/messages", {}, query or {}, Headers(headers))


CLIENT_HEADERS = {
    "x-api-key": "sk-ant-client",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "output-128k-2025-02-19",
    "x-kallm-namespace": "team-a",
    "content-type": "application/json",
}


def test_kallms_own_key_replaces_the_clients_upstream() -> None:
    provider = messages.AnthropicMessages()
    target = Upstream("https://api.anthropic.com", "sk-ant-kallm")
    sent = provider.upstream_request(httpx.AsyncClient(), call(CLIENT_HEADERS), target, {})
    assert str(sent.url) == "https://api.anthropic.com/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-kallm"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "output-128k-2025-02-19"
    assert "x-kallm-namespace" not in sent.headers
    assert sent.content == b'{"model":"m"}'


def test_without_its_own_key_kallm_forwards_the_clients() -> None:
    provider = messages.AnthropicMessages()
    target = Upstream("http://sim", None)
    sent = provider.upstream_request(
        httpx.AsyncClient(), call(CLIENT_HEADERS, {"beta": "true"}), target, {}
    )
    assert str(sent.url) == "http://sim/v1/messages?beta=true"
    assert sent.headers["x-api-key"] == "sk-ant-client"
    assert provider.client_key(call(CLIENT_HEADERS)) == "sk-ant-client"
    # Either header carries the same key.
    assert provider.client_key(call({"authorization": "Bearer sk-ant-client"})) == "sk-ant-client"
    assert provider.client_key(call({})) is None


def test_auth_uses_anthropics_header() -> None:
    provider = messages.AnthropicMessages()
    assert provider.auth("sk-ant-kallm") == {"x-api-key": "sk-ant-kallm"}
    assert provider.auth(None) is None


# Hostile answers (the helpers are shared with the chat tests).

PROVIDER = messages.AnthropicMessages()
REQUESTS = [request(), request(stream=True)]
TEXT = TEXT_MESSAGE["content"][0]
TOOL = MIXED_MESSAGE["content"][3]


def with_blocks(*blocks: Any) -> dict[str, Any]:
    return {**TEXT_MESSAGE, "content": list(blocks)}


def with_usage(**counts: Any) -> dict[str, Any]:
    return {**TEXT_MESSAGE, "usage": {**TEXT_MESSAGE["usage"], **counts}}


MALFORMED = {
    "content a string": {**TEXT_MESSAGE, "content": "Paris."},
    "a block not an object": with_blocks("Paris."),
    "a block without a type": with_blocks({"text": "Paris."}),
    "a list type": with_blocks({**TEXT, "type": ["text"]}),
    "a number text": with_blocks({**TEXT, "text": 5}),
    "a missing text": with_blocks({"type": "text"}),
    "citations an object": with_blocks({**TEXT, "citations": {"a": 1}}),
    "a number thinking": with_blocks({"type": "thinking", "thinking": 1, "signature": "s"}),
    "a list signature": with_blocks({"type": "thinking", "thinking": "t", "signature": ["s"]}),
    "tool input a string": with_blocks({**TOOL, "input": '{"city": "Paris"}'}),
    "tool input a list": with_blocks({**TOOL, "input": [1]}),
    "a list stop_reason": {**TEXT_MESSAGE, "stop_reason": ["end_turn"]},
    "a number stop_sequence": {**TEXT_MESSAGE, "stop_sequence": 5},
    "a model list": {**TEXT_MESSAGE, "model": ["claude"]},
    "usage a list": {**TEXT_MESSAGE, "usage": [1, 2]},
    "usage a string": {**TEXT_MESSAGE, "usage": "abc"},
    "a string input_tokens": with_usage(input_tokens="abc"),
    "a huge output_tokens": with_usage(output_tokens=10**400),
    "a negative cache read": with_usage(cache_read_input_tokens=-3),
    "an infinite input_tokens": with_usage(input_tokens=float("inf")),
    "a bool output_tokens": with_usage(output_tokens=True),
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_answer_kallm_does_not_fully_understand_is_not_cached(answer: dict[str, Any]) -> None:
    assert messages.is_cacheable(answer) is False
    assert_survives(PROVIDER, REQUESTS, answer)


@pytest.mark.parametrize(
    "counts",
    [
        {"input_tokens": "abc", "output_tokens": 3},
        {"input_tokens": 3, "output_tokens": 10**400},
        {"input_tokens": 3, "cache_read_input_tokens": -1, "output_tokens": 3},
        ["x"],
    ],
)
def test_counts_that_are_not_counts_are_estimated(counts: Any) -> None:
    assert messages.usage(request(), {**TEXT_MESSAGE, "usage": counts})["estimated"] is True


def test_null_cache_counts_count_as_none() -> None:
    answer = with_usage(cache_creation_input_tokens=None, cache_read_input_tokens=None)
    assert messages.is_cacheable(answer)
    assert messages.usage(request(), answer) == {"prompt_tokens": 12, "completion_tokens": 17}


def event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


START = event("message_start", message={**TEXT_MESSAGE, "content": [], "stop_reason": None})
OPEN = event("content_block_start", index=0, content_block={"type": "text", "text": ""})
TEXT_DELTA = event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hi"})
CLOSE = event("content_block_stop", index=0)
END = event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 2})
STOP = event("message_stop")


def stream(*middle: str) -> list[str]:
    return [START, *middle, END, STOP]


ODD_STREAMS = {
    "a list index": stream(event("content_block_start", index=[0], content_block=TEXT)),
    "mixed index types": stream(
        OPEN,
        TEXT_DELTA,
        CLOSE,
        event("content_block_start", index="1", content_block={"type": "text", "text": ""}),
        event("content_block_stop", index="1"),
    ),
    "a float index": stream(event("content_block_start", index=0.0, content_block=TEXT)),
    "an event that is a list": stream(OPEN, "[1]", TEXT_DELTA, CLOSE),
    "an event that is a number": stream(OPEN, "7", TEXT_DELTA, CLOSE),
    "a list type": stream(OPEN, json.dumps({"type": ["ping"]}), TEXT_DELTA, CLOSE),
    "a message that is a list": [event("message_start", message=[["type", "message"]]), END, STOP],
    "a block that is a string": stream(event("content_block_start", index=0, content_block="x")),
    "a delta that is a string": stream(
        OPEN, event("content_block_delta", index=0, delta="x"), CLOSE
    ),
    "a number text delta": stream(
        OPEN, event("content_block_delta", index=0, delta={"type": "text_delta", "text": 5}), CLOSE
    ),
    "a list text delta": stream(
        event("content_block_start", index=0, content_block={"type": "text", "text": []}),
        event("content_block_delta", index=0, delta={"type": "text_delta", "text": ["x"]}),
        CLOSE,
    ),
    "a delta after the stop": stream(OPEN, CLOSE, TEXT_DELTA),
    "a stop twice": stream(OPEN, TEXT_DELTA, CLOSE, CLOSE),
    "tool input that is a list": stream(
        event("content_block_start", index=0, content_block={**TOOL, "input": {}}),
        event(
            "content_block_delta",
            index=0,
            delta={"type": "input_json_delta", "partial_json": "[1, 2]"},
        ),
        CLOSE,
    ),
    "citations a string": stream(
        event("content_block_start", index=0, content_block={**TEXT, "citations": "abc"}),
        event("content_block_delta", index=0, delta={"type": "citations_delta", "citation": {}}),
        CLOSE,
    ),
    "a list stop_reason": [
        START,
        OPEN,
        CLOSE,
        event("message_delta", delta={"stop_reason": ["end_turn"]}),
        STOP,
    ],
    "a delta usage that is a list": [
        START,
        OPEN,
        CLOSE,
        event("message_delta", delta={}, usage=[1]),
        STOP,
    ],
    "a string input count": [
        START,
        OPEN,
        TEXT_DELTA,
        CLOSE,
        event("message_delta", delta={"stop_reason": "end_turn"}, usage={"input_tokens": "abc"}),
        STOP,
    ],
    "a huge output count": [
        START,
        OPEN,
        TEXT_DELTA,
        CLOSE,
        event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 10**400}),
        STOP,
    ],
    "too deep to parse": stream(OPEN, "[" * 100_000, TEXT_DELTA, CLOSE),
}


@pytest.mark.parametrize("events", ODD_STREAMS.values(), ids=ODD_STREAMS.keys())
def test_an_odd_stream_never_raises_and_records_nothing(events: list[str]) -> None:
    assert assert_records_safely(PROVIDER, REQUESTS, events) is None


def test_a_plain_stream_still_records() -> None:
    answer = assert_records_safely(PROVIDER, REQUESTS, stream(OPEN, TEXT_DELTA, CLOSE))
    assert answer is not None and answer["content"] == [{"type": "text", "text": "Hi"}]


@HOSTILE
@given(answers(MIXED_MESSAGE))
def test_no_answer_makes_kallm_raise(answer: dict[str, Any]) -> None:
    assert_survives(PROVIDER, REQUESTS, answer)


@HOSTILE
@given(spoiled_events(stream_data(messages.replay_stream(MIXED_MESSAGE))))
def test_no_stream_makes_the_recorder_raise(events: list[str]) -> None:
    assert_records_safely(PROVIDER, REQUESTS, events)
