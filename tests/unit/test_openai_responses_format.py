import json
from typing import Any

import pytest
from hypothesis import given
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from test_openai_chat import (
    HOSTILE,
    answers,
    assert_records_safely,
    assert_survives,
    spoiled_events,
    stream_data,
)

from kallm.providers import openai_responses as responses
from kallm.providers.base import InvalidRequest
from kallm.sse import SSEParser

EVENT = TypeAdapter(ResponseStreamEvent)

MESSAGE = {
    "type": "message",
    "id": "msg_1",
    "status": "completed",
    "role": "assistant",
    "content": [
        {
            "type": "output_text",
            "text": "Paris is the capital of France, and has been for centuries.",
            "annotations": [],
            "logprobs": [],
        }
    ],
}
CALL = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "lookup",
    "arguments": '{"city": "Paris", "units": "metric"}',
    "status": "completed",
}
REASONING = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [{"type": "summary_text", "text": "The user asks about a capital city."}],
}
RESPONSE: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "instructions": "Be brief.",
    "metadata": {"team": "first"},
    "model": "gpt-4o-mini",
    "output": [REASONING, MESSAGE, CALL],
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "store": True,
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "usage": {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 22,
    },
    "user": None,
}
REQUEST: dict[str, Any] = {"model": "gpt-4o-mini", "input": "What is the capital of France?"}


def body(**fields: Any) -> bytes:
    return json.dumps({**REQUEST, **fields}).encode()


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{not json", None),
        (b"[1]", None),
        (b'{"input": "hi"}', "model"),
        (b'{"model": 3, "input": "hi"}', "model"),
        (b'{"model": "m", "input": 3}', "input"),
        (b'{"model": "m", "input": ["hi"]}', "input[0]"),
        (b'{"model": "m", "input": "hi", "previous_response_id": 7}', "previous_response_id"),
        (b'{"model": "m", "input": "hi", "instructions": ["x"]}', "instructions"),
    ],
)
def test_invalid_requests_are_rejected_with_the_parameter(raw: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as error:
        responses.parse_request(raw)
    assert error.value.param == param


def test_a_stored_prompt_may_stand_in_for_the_model() -> None:
    parsed = responses.parse_request(b'{"prompt": {"id": "pmpt_1"}, "input": "hi"}')
    assert parsed["model"] == ""


@pytest.mark.parametrize(
    "final",
    [
        "What is the capital of France?",
        {"role": "user", "content": "What is the capital of France?"},
        {"type": "message", "role": "user", "content": "What is the capital of France?"},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "What is the capital of France?"}],
        },
    ],
)
def test_plain_user_text_is_compared_by_meaning(final: Any) -> None:
    request = {**REQUEST, "input": final if isinstance(final, str) else [final]}
    parts = responses.key_parts(request)
    assert parts.text == "What is the capital of France?"
    assert parts.context["input"] == []


@pytest.mark.parametrize(
    "final",
    [
        {"role": "assistant", "content": "Paris."},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "hi", "extra": 1}]},
        {"role": "user", "content": []},
        {"type": "item_reference", "id": "msg_1"},
    ],
)
def test_anything_else_matches_only_exactly(final: dict[str, Any]) -> None:
    assert responses.key_parts({**REQUEST, "input": [final]}).text is None


def test_no_input_matches_only_exactly() -> None:
    parts = responses.key_parts({"model": "m", "previous_response_id": "resp_1"})
    assert (parts.final, parts.text) == (None, None)


def test_earlier_items_instructions_and_sampling_are_context() -> None:
    earlier = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    request = {
        **REQUEST,
        "input": [*earlier, {"role": "user", "content": "Capital of France?"}],
        "instructions": "Be brief.",
        "temperature": 0.2,
        "tools": [{"type": "function", "name": "lookup", "parameters": {}}],
        "text": {"format": {"type": "json_object"}},
        "reasoning": {"effort": "low"},
        "some_new_field": 1,
    }
    context = responses.key_parts(request).context
    assert context["input"] == earlier
    for name in ("instructions", "temperature", "tools", "text", "reasoning", "some_new_field"):
        assert context[name] == request[name]


def test_previous_response_id_and_conversation_split_the_partition() -> None:
    base = responses.key_parts(REQUEST).context
    one = responses.key_parts({**REQUEST, "previous_response_id": "resp_1"}).context
    two = responses.key_parts({**REQUEST, "previous_response_id": "resp_2"}).context
    conversation = responses.key_parts({**REQUEST, "conversation": "conv_1"}).context
    assert len({json.dumps(c, sort_keys=True) for c in (base, one, two, conversation)}) == 4


def test_fields_that_do_not_change_the_answer_stay_out_of_the_key() -> None:
    noisy = {
        **REQUEST,
        "stream": True,
        "stream_options": {"include_obfuscation": False},
        "metadata": {"a": "b"},
        "user": "u1",
        "service_tier": "flex",
        "prompt_cache_key": "k",
        "safety_identifier": "s",
        "store": True,
    }
    assert responses.key_parts(noisy).context == responses.key_parts(REQUEST).context


def test_store_false_is_kept_apart_from_stored_answers() -> None:
    stored = responses.key_parts(REQUEST).context
    unstored = responses.key_parts({**REQUEST, "store": False}).context
    assert stored != unstored
    assert responses.keyed_request({**REQUEST, "store": False, "user": "u"}) == {
        **REQUEST,
        "store": False,
    }


def test_a_completed_response_is_cacheable() -> None:
    assert responses.is_cacheable(RESPONSE)


@pytest.mark.parametrize(
    "change",
    [
        {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
        {"status": "failed", "error": {"code": "server_error", "message": "boom"}},
        {"status": "in_progress"},
        {"status": "queued", "background": True},
        {"background": True},
        {"conversation": {"id": "conv_1"}},
        {"object": "list"},
        {"output": []},
        {"output": [{**MESSAGE, "status": "incomplete"}]},
        {"output": [{**MESSAGE, "content": [{"type": "refusal", "refusal": "No."}]}]},
    ],
)
def test_partial_failed_refused_or_stateful_responses_are_not_cacheable(
    change: dict[str, Any],
) -> None:
    assert not responses.is_cacheable({**RESPONSE, **change})


def test_a_replay_keeps_the_upstream_id_and_shows_the_callers_own_fields() -> None:
    replayed = json.loads(
        PROVIDER.replay_json(PROVIDER.parse_keyed({**REQUEST, "user": "u2"}), RESPONSE)
    )
    assert replayed["id"] == "resp_1"
    assert replayed["output"] == RESPONSE["output"]
    assert (replayed["metadata"], replayed["user"]) == ({}, "u2")
    Response.model_validate(replayed)


def _events(chunks: list[bytes]) -> list[dict[str, Any]]:
    parser = SSEParser()
    return [json.loads(data) for chunk in chunks for data in parser.feed(chunk)]


def test_a_replayed_stream_is_the_full_typed_event_sequence() -> None:
    chunks = list(responses.replay_stream(REQUEST, RESPONSE))
    events = _events(chunks)

    for chunk, payload in zip(chunks, events, strict=True):
        # Each event names its type on an `event:` line too, as OpenAI sends them.
        assert chunk.startswith(f"event: {payload['type']}\n".encode())
        EVENT.validate_python(payload)  # strictly: every required field is there
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_item.added") == 3
    assert kinds.count("response.output_item.done") == 3
    assert kinds.count("response.output_text.delta") >= 3
    assert kinds.count("response.function_call_arguments.delta") >= 2
    assert kinds.count("response.reasoning_summary_text.delta") >= 2
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == []
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == MESSAGE["content"][0]["text"]  # type: ignore[index]
    arguments = "".join(
        e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
    )
    assert arguments == CALL["arguments"]
    assert events[-1]["response"]["output"] == RESPONSE["output"]


def test_the_recorder_rebuilds_the_response_a_replay_streams() -> None:
    recorder = responses.StreamRecorder()
    chunks = list(responses.replay_stream(REQUEST, RESPONSE))
    parser = SSEParser()
    for chunk in chunks[:-1]:
        for data in parser.feed(chunk):
            recorder.add(data)
    assert recorder.answer() is None, "no answer before response.completed"
    for data in parser.feed(chunks[-1]):
        recorder.add(data)
    assert recorder.answer() == responses.replay_response(REQUEST, RESPONSE)


def _recorded(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    recorder = responses.StreamRecorder()
    for number, payload in enumerate(events):
        recorder.add(json.dumps({"sequence_number": number, **payload}))
    return recorder.answer()


@pytest.mark.parametrize(
    "last",
    [
        {"type": "response.failed", "response": {**RESPONSE, "status": "failed"}},
        {"type": "response.incomplete", "response": {**RESPONSE, "status": "incomplete"}},
        {"type": "error", "code": "server_error", "message": "boom", "param": None},
    ],
)
def test_a_stream_that_fails_records_nothing(last: dict[str, Any]) -> None:
    events = list(responses.replay_events(RESPONSE))
    assert _recorded([*events[:-1], last]) is None
    assert _recorded([*events[:3], last, *events[3:]]) is None


def test_a_stream_with_events_out_of_order_records_nothing() -> None:
    recorder = responses.StreamRecorder()
    for number in (0, 2, 1):
        recorder.add(json.dumps({"type": "response.in_progress", "sequence_number": number}))
    recorder.add(json.dumps({"type": "response.completed", "sequence_number": 3, "response": {}}))
    assert recorder.answer() is None


def test_unreadable_events_record_nothing() -> None:
    events = list(responses.replay_events(RESPONSE))
    recorder = responses.StreamRecorder()
    recorder.add("not json")
    for payload in events:
        recorder.add(json.dumps(payload))
    assert recorder.answer() is None


def test_a_completed_event_without_output_is_rebuilt_from_the_done_items() -> None:
    events = list(responses.replay_events(RESPONSE))
    events[-1] = {**events[-1], "response": {**RESPONSE, "output": []}}
    assert _recorded(events) == RESPONSE


def test_a_completed_event_that_disagrees_with_the_stream_records_nothing() -> None:
    events = list(responses.replay_events(RESPONSE))
    events[-1] = {**events[-1], "response": {**RESPONSE, "output": [MESSAGE]}}
    assert _recorded(events) is None


def test_usage_comes_from_the_response_or_is_estimated() -> None:
    assert responses.usage(REQUEST, RESPONSE) == {"prompt_tokens": 10, "completion_tokens": 12}
    estimated = responses.usage(REQUEST, {**RESPONSE, "usage": None})
    assert estimated["estimated"] is True
    assert estimated["prompt_tokens"] > 0 and estimated["completion_tokens"] > 0


def test_kallms_own_errors_are_in_openais_shape() -> None:
    error = json.loads(responses.OpenAIResponses().error_body(400, "bad", "invalid_request_error"))
    assert error == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
    }


# Hostile answers (the helpers are shared with the chat tests).

PROVIDER = responses.OpenAIResponses()
REQUESTS: list[dict[str, Any]] = [REQUEST, {**REQUEST, "stream": True, "metadata": {"a": "b"}}]


def with_output(*items: Any) -> dict[str, Any]:
    return {**RESPONSE, "output": list(items)}


def with_text(**fields: Any) -> dict[str, Any]:
    part = MESSAGE["content"][0]  # type: ignore[index]
    return with_output({**MESSAGE, "content": [{**part, **fields}]})


MALFORMED = {
    "output not a list": {**RESPONSE, "output": {"0": MESSAGE}},
    "an item not an object": with_output("message"),
    "an item without a type": with_output({k: v for k, v in MESSAGE.items() if k != "type"}),
    "a list type": with_output({**MESSAGE, "type": ["message"]}),
    "a string message content": with_output({**MESSAGE, "content": "Paris."}),
    "a message without content": with_output({**MESSAGE, "content": None}),
    "a part not an object": with_output({**MESSAGE, "content": ["Paris."]}),
    "a part without a type": with_output({**MESSAGE, "content": [{"text": "Paris."}]}),
    "a number text": with_text(text=5),
    "a missing text": with_output({**MESSAGE, "content": [{"type": "output_text"}]}),
    "arguments not a string": with_output({**CALL, "arguments": {"city": "Paris"}}),
    "a call without a name": with_output({**CALL, "name": None}),
    "a summary not a list": with_output({**REASONING, "summary": "thinking"}),
    "a summary with number text": with_output({**REASONING, "summary": [{"text": 5}]}),
    "a number item id": with_output({**MESSAGE, "id": 5}),
    "a list status": {**RESPONSE, "status": ["completed"]},
    "a model object": {**RESPONSE, "model": {}},
    "usage a list": {**RESPONSE, "usage": [10, 12]},
    "a huge input_tokens": {**RESPONSE, "usage": {"input_tokens": 10**400, "output_tokens": 1}},
    "a string output_tokens": {**RESPONSE, "usage": {"input_tokens": 1, "output_tokens": "abc"}},
    "a negative total_tokens": {**RESPONSE, "usage": {"total_tokens": -1}},
    "an infinite input_tokens": {**RESPONSE, "usage": {"input_tokens": float("inf")}},
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_answer_kallm_does_not_fully_understand_is_not_cached(answer: dict[str, Any]) -> None:
    assert responses.is_cacheable(answer) is False
    assert_survives(PROVIDER, REQUESTS, answer)


@pytest.mark.parametrize(
    "counts", [{"input_tokens": 10**400, "output_tokens": 3}, {"input_tokens": 1}, "x"]
)
def test_counts_that_are_not_counts_are_estimated(counts: Any) -> None:
    assert responses.usage(REQUEST, {**RESPONSE, "usage": counts})["estimated"] is True


def numbered(*payloads: Any) -> list[str]:
    return [json.dumps({"sequence_number": n, **p}) for n, p in enumerate(payloads)]


COMPLETED = {"type": "response.completed", "response": RESPONSE}
ODD_STREAMS = {
    "a list type": [json.dumps({"type": ["error"]}), json.dumps(COMPLETED)],
    "an event that is a list": ["[1]", json.dumps(COMPLETED)],
    "an event that is a string": ['"response.completed"', json.dumps(COMPLETED)],
    "a string sequence number": [
        *numbered({"type": "response.in_progress"}),
        json.dumps({**COMPLETED, "sequence_number": "1"}),
    ],
    "a response that is a list": numbered({**COMPLETED, "response": [RESPONSE]}),
    "a completed response kallm does not cache": numbered(
        {**COMPLETED, "response": {**RESPONSE, "usage": {"input_tokens": "abc"}}}
    ),
    "done items of other types": numbered(
        {"type": "response.output_item.done", "output_index": 0, "item": "x"},
        {**COMPLETED, "response": {**RESPONSE, "output": []}},
    ),
    "too deep to parse": ["[" * 100_000, json.dumps(COMPLETED)],
}


@pytest.mark.parametrize("events", ODD_STREAMS.values(), ids=ODD_STREAMS.keys())
def test_an_odd_stream_never_raises_and_records_nothing(events: list[str]) -> None:
    assert assert_records_safely(PROVIDER, REQUESTS, events) is None


@HOSTILE
@given(answers(RESPONSE))
def test_no_answer_makes_kallm_raise(answer: dict[str, Any]) -> None:
    assert_survives(PROVIDER, REQUESTS, answer)


@HOSTILE
@given(spoiled_events(stream_data(responses.replay_stream(REQUEST, RESPONSE))))
def test_no_stream_makes_the_recorder_raise(events: list[str]) -> None:
    assert_records_safely(PROVIDER, REQUESTS, events)
