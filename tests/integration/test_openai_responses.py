"""The OpenAI Responses API through kallm, driven by the official openai SDK against the
stand-in (kallm.simulator.responses), which stores responses and checks previous_response_id
the way OpenAI does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)
from processes import MODEL, SERVER_KEY, Caller, Simulator

PATH = "/v1/responses"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@dataclass
class Answer:
    response: Response
    headers: httpx.Headers

    @property
    def cache(self) -> str | None:
        return self.headers.get("x-kallm-cache")


@dataclass
class Streamed:
    headers: httpx.Headers
    events: list[ResponseStreamEvent] = field(default_factory=list)

    @property
    def cache(self) -> str | None:
        return self.headers.get("x-kallm-cache")

    @property
    def text(self) -> str:
        return "".join(e.delta for e in self.events if isinstance(e, ResponseTextDeltaEvent))

    @property
    def final(self) -> Response:
        last = self.events[-1]
        assert isinstance(last, ResponseCompletedEvent), last
        return last.response


def create(caller: Caller, prompt: Any, **params: Any) -> Answer:
    params.setdefault("model", MODEL)
    raw = caller.client.responses.with_raw_response.create(input=prompt, **params)
    return Answer(raw.parse(), raw.headers)


def stream(caller: Caller, prompt: Any, **params: Any) -> Streamed:
    params.setdefault("model", MODEL)
    with caller.client.responses.with_streaming_response.create(
        input=prompt, stream=True, **params
    ) as response:
        streamed = Streamed(response.headers)
        streamed.events.extend(response.parse())
    return streamed


def calls(upstream: Simulator) -> list[dict[str, Any]]:
    return upstream.requests(PATH)


def test_a_repeated_request_is_a_hit_without_an_upstream_call(caller, upstream):
    first = create(caller, "What is the tallest mountain on Earth?")
    second = create(caller, "What is the tallest mountain on Earth?")

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert first.response.output_text.startswith("Simulated response #")
    assert second.response.output_text == first.response.output_text
    assert second.response.status == "completed"
    assert second.response.usage is not None and second.response.usage.output_tokens > 0
    # The upstream's id, so that the caller can continue the conversation from it.
    assert second.response.id == first.response.id
    assert len(calls(upstream)) == 1


def test_kallms_own_key_is_used_upstream(caller, upstream):
    create(caller, "Which key travels upstream?")

    (sent,) = calls(upstream)
    assert sent["headers"]["authorization"] == f"Bearer {SERVER_KEY}"


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("How do I reverse a list in Python?", "How can I reverse a list in Python?"),
        (
            "Explain photosynthesis in simple terms.",
            [{"role": "user", "content": "Can you explain photosynthesis in simple terms?"}],
        ),
    ],
)
def test_a_paraphrase_is_a_semantic_hit(caller, upstream, stored, asked):
    first = create(caller, stored)
    second = create(caller, asked)

    assert second.cache == "HIT"
    assert 0.9 <= float(second.headers["x-kallm-similarity"]) < 1.0
    assert second.response.output_text == first.response.output_text
    assert len(calls(upstream)) == 1


def test_a_streamed_hit_replays_the_typed_event_sequence(caller, upstream):
    first = stream(caller, "Describe the colour of the sky in one sentence.")
    second = stream(caller, "Describe the colour of the sky in one sentence.")

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert second.headers["content-type"].startswith("text/event-stream")
    assert len(calls(upstream)) == 1
    events = second.events
    assert isinstance(events[0], ResponseCreatedEvent)
    assert isinstance(events[1], ResponseInProgressEvent)
    assert isinstance(events[2], ResponseOutputItemAddedEvent)
    assert isinstance(events[-2], ResponseOutputItemDoneEvent)
    assert isinstance(events[-1], ResponseCompletedEvent)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert len(deltas) >= 3, "a hit should stream in several pieces"
    assert second.text == first.text == first.final.output_text
    assert second.final.output_text == first.final.output_text
    assert second.final.id == first.final.id


def test_the_sdks_stream_helper_accumulates_a_replayed_stream(caller, upstream):
    prompt = "Name three rivers in Africa."
    first = create(caller, prompt)

    with caller.client.responses.stream(model=MODEL, input=prompt) as events:
        texts = [e.delta for e in events if e.type == "response.output_text.delta"]
        final = events.get_final_response()

    assert "".join(texts) == first.response.output_text
    assert final.output_text == first.response.output_text
    assert len(calls(upstream)) == 1


def test_a_streamed_answer_serves_a_non_stream_request(caller, upstream):
    streamed = stream(caller, "What do bees make?")
    answer = create(caller, "What do bees make?")

    assert answer.cache == "HIT"
    assert answer.response.output_text == streamed.text
    assert answer.response.id == streamed.final.id
    assert len(calls(upstream)) == 1


def test_a_non_stream_answer_serves_a_stream_request(caller, upstream):
    answer = create(caller, "What do cows drink?")
    streamed = stream(caller, "What do cows drink?")

    assert streamed.cache == "HIT"
    assert streamed.text == answer.response.output_text
    assert len(calls(upstream)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"instructions": "Answer like a pirate."},
        {"model": "gpt-4o"},
        {"tools": [WEATHER_TOOL]},
        {"temperature": 0.1},
        {"text": {"format": {"type": "json_object"}}},
        {"store": False},
    ],
)
def test_a_changed_context_is_a_miss(caller, upstream, change):
    create(caller, "Plan a weekend in Lisbon.", instructions="Be brief.")
    changed = create(
        caller, "Plan a weekend in Lisbon.", **({"instructions": "Be brief."} | change)
    )

    assert changed.cache == "MISS"
    assert len(calls(upstream)) == 2


def test_fields_that_do_not_change_the_answer_still_hit(caller, upstream):
    create(caller, "Recommend a board game.", metadata={"team": "a"}, user="u1")
    second = create(caller, "Recommend a board game.", metadata={"team": "b"}, user="u2")

    assert second.cache == "HIT"
    assert second.response.metadata == {"team": "b"}
    assert len(calls(upstream)) == 1


def test_previous_response_id_keeps_conversations_apart(caller, upstream):
    one = create(caller, "Let us talk about cats.")
    two = create(caller, "Let us talk about dogs.")

    first = create(caller, "Tell me more.", previous_response_id=one.response.id)
    other = create(caller, "Tell me more.", previous_response_id=two.response.id)
    again = create(caller, "Tell me more.", previous_response_id=one.response.id)

    assert (first.cache, other.cache, again.cache) == ("MISS", "MISS", "HIT")
    assert other.response.output_text != first.response.output_text
    assert again.response.output_text == first.response.output_text
    assert len(calls(upstream)) == 4


def test_a_replayed_id_continues_the_conversation_upstream(caller, upstream):
    create(caller, "Let us plan a garden.")
    hit = create(caller, "Let us plan a garden.")

    following = create(caller, "What should I plant first?", previous_response_id=hit.response.id)

    assert hit.cache == "HIT"
    assert following.cache == "MISS" and following.response.status == "completed"
    assert calls(upstream)[-1]["body"]["previous_response_id"] == hit.response.id


def test_stored_responses_are_retrieved_and_deleted_through_kallm(caller, upstream):
    created = create(caller, "Remember this answer.")

    retrieved = caller.client.responses.retrieve(created.response.id)
    caller.client.responses.delete(created.response.id)
    with pytest.raises(openai.NotFoundError):
        caller.client.responses.retrieve(created.response.id)

    assert retrieved.output_text == created.response.output_text
    methods = [(r["method"], r["path"]) for r in upstream.requests()]
    stored = f"{PATH}/{created.response.id}"
    assert methods == [("POST", PATH), ("GET", stored), ("DELETE", stored), ("GET", stored)]
    assert all(r["headers"]["authorization"] == f"Bearer {SERVER_KEY}" for r in upstream.requests())


def test_a_function_call_is_cached_and_streamed_back(caller, upstream):
    prompt = "[sim:tool] What is the weather in Paris?"
    first = create(caller, prompt, tools=[WEATHER_TOOL])
    second = stream(caller, prompt, tools=[WEATHER_TOOL])

    assert second.cache == "HIT"
    (call,) = first.response.output
    assert call.type == "function_call"
    deltas = [e for e in second.events if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent)]
    assert len(deltas) >= 2
    assert "".join(d.delta for d in deltas) == call.arguments
    (replayed,) = second.final.output
    assert replayed.type == "function_call" and replayed.call_id == call.call_id
    assert len(calls(upstream)) == 1


@pytest.mark.parametrize(
    ("directive", "error", "status"),
    [
        ("[sim:error500]", openai.InternalServerError, 500),
        ("[sim:error429]", openai.RateLimitError, 429),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
def test_upstream_errors_pass_through_and_are_not_cached(
    caller, upstream, directive, error, status, streaming
):
    ask = stream if streaming else create
    for _ in range(2):
        with pytest.raises(error) as raised:
            ask(caller, f"{directive} Will this fail?")
        assert raised.value.status_code == status
        assert raised.value.response.headers.get("x-kallm-cache") == "MISS"
    assert isinstance(raised.value.body, dict) and "simulated" in raised.value.body["message"]
    assert len(calls(upstream)) == 2


@pytest.mark.parametrize("streaming", [False, True])
def test_incomplete_responses_are_not_cached(caller, upstream, streaming):
    ask = stream if streaming else create
    for _ in range(2):
        answer = ask(caller, "[sim:length] Write a long story.")
        assert answer.cache == "MISS"
    assert len(calls(upstream)) == 2


def test_a_stream_that_fails_is_not_cached(caller, upstream):
    for _ in range(2):
        failed = stream(caller, "[sim:fail] Try to answer.")
        assert failed.events[-1].type == "response.failed"
    assert len(calls(upstream)) == 2


def test_a_stream_broken_off_is_not_cached(caller, upstream):
    for _ in range(2):
        with pytest.raises((httpx.HTTPError, openai.APIError)):
            stream(caller, "[sim:truncate] Start answering.")
    assert len(calls(upstream)) == 2


def test_conversation_requests_always_go_upstream(caller, upstream):
    # The conversation grows with each turn upstream: a replay would leave the turn out.
    for _ in range(2):
        answer = create(caller, "Add this to our conversation.", conversation="conv_1")
        assert answer.cache == "MISS"
    assert len(calls(upstream)) == 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": MODEL, "input": 42}, "input"),
        ({"model": MODEL, "input": ["not an item"]}, "input[0]"),
    ],
)
def test_an_invalid_body_is_refused_without_an_upstream_call(
    http, caller, upstream, error_of, body, param
):
    response = http.post(PATH, json=body, headers=caller.headers)

    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]
    assert calls(upstream) == []


def test_the_sdk_raises_bad_request_for_kallms_own_errors(caller, upstream):
    with pytest.raises(openai.BadRequestError) as raised:
        caller.client.responses.create(model=MODEL, input=42)  # type: ignore[arg-type]
    assert raised.value.status_code == 400
    assert calls(upstream) == []


def test_without_its_own_key_kallm_forwards_the_clients_and_isolates_by_it(
    make_caller, kallm_forwarding, upstream
):
    alice = make_caller(kallm_forwarding, api_key="sk-alice-aaaaaaaaaaaa")
    bob = make_caller(kallm_forwarding, api_key="sk-bob-bbbbbbbbbbbbbb")

    first = create(alice, "Which key travels upstream now?")
    other = create(bob, "Which key travels upstream now?")

    assert (first.cache, other.cache) == ("MISS", "MISS")
    keys = [r["headers"]["authorization"] for r in calls(upstream)]
    assert keys == ["Bearer sk-alice-aaaaaaaaaaaa", "Bearer sk-bob-bbbbbbbbbbbbbb"]
