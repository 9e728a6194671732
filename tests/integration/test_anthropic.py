"""Anthropic Messages through kallm, driven with the official `anthropic` SDK against the
stand-in Messages API (kallm.simulator.anthropic)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from processes import Kallm, Simulator, free_port, start_kallm, unique_namespace

MODEL = "claude-sonnet-4-6"
MESSAGES = "/v1/messages"
CLIENT_KEY = "sk-ant-client-aaaaaaaaaaaa"
OTHER_CLIENT_KEY = "sk-ant-client-bbbbbbbbbbbb"
KALLM_KEY = "sk-ant-kallm-server-0123456789"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@dataclass
class Answer:
    message: Message
    headers: httpx.Headers

    @property
    def cache(self) -> str | None:
        return self.headers.get("x-kallm-cache")

    @property
    def text(self) -> str:
        return "".join(block.text for block in self.message.content if block.type == "text")


@dataclass
class Streamed:
    events: list[RawMessageStreamEvent]
    message: Message
    headers: httpx.Headers

    @property
    def cache(self) -> str | None:
        return self.headers.get("x-kallm-cache")

    @property
    def text(self) -> str:
        return "".join(block.text for block in self.message.content if block.type == "text")

    def deltas(self, kind: str) -> list[Any]:
        return [
            e.delta for e in self.events if e.type == "content_block_delta" and e.delta.type == kind
        ]


class Claude:
    """An anthropic SDK client bound to one kallm, namespace and API key."""

    def __init__(self, kallm: Kallm, namespace: str, api_key: str = CLIENT_KEY) -> None:
        self.namespace = namespace
        self.client = anthropic.Anthropic(
            base_url=kallm.root,
            api_key=api_key,
            max_retries=0,  # the SDK would retry 429/5xx and hide what kallm did
            timeout=30,
            default_headers={"X-Kallm-Namespace": namespace},
        )

    def ask(self, prompt: str | list[dict[str, Any]], **params: Any) -> Answer:
        params.setdefault("model", MODEL)
        params.setdefault("max_tokens", 256)
        raw = self.client.messages.with_raw_response.create(messages=as_turns(prompt), **params)
        return Answer(raw.parse(), raw.headers)

    def stream(self, prompt: str | list[dict[str, Any]], **params: Any) -> Streamed:
        """Stream with the SDK's helper, keeping each raw event it saw on the way."""
        params.setdefault("model", MODEL)
        params.setdefault("max_tokens", 256)
        events: list[RawMessageStreamEvent] = []
        with self.client.messages.stream(messages=as_turns(prompt), **params) as stream:
            for event in stream:
                if event.type in RAW_EVENTS:
                    events.append(event)  # type: ignore[arg-type]
            message = stream.get_final_message()
            headers = stream.response.headers
        return Streamed(events, message, headers)

    def raw_stream(self, prompt: str, **params: Any) -> list[RawMessageStreamEvent]:
        """The raw event iterator (create with stream=True)."""
        params.setdefault("model", MODEL)
        params.setdefault("max_tokens", 256)
        with self.client.messages.create(
            messages=as_turns(prompt), stream=True, **params
        ) as stream:
            return list(stream)


RAW_EVENTS = {
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
}


def as_turns(prompt: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def calls(simulator: Simulator) -> list[dict[str, Any]]:
    return simulator.requests(MESSAGES)


def key_sent(call: dict[str, Any]) -> str | None:
    """The API key the stand-in received: as x-api-key, or as a bearer token (this SDK's)."""
    headers = call["headers"]
    bearer = headers.get("authorization", "")
    return headers.get("x-api-key") or (bearer.removeprefix("Bearer ") if bearer else None)


@pytest.fixture
def make_claude(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Build SDK clients for any kallm, in this test's namespace unless told otherwise."""
    made: list[Claude] = []
    default = unique_namespace(request)

    def make(proxy: Kallm, api_key: str = CLIENT_KEY, namespace: str = default) -> Claude:
        made.append(Claude(proxy, namespace, api_key))
        return made[-1]

    yield make
    for caller in made:
        caller.client.close()


@pytest.fixture
def claude(make_claude: Any, kallm: Kallm) -> Claude:
    """The default kallm (no ANTHROPIC_API_KEY: it forwards the client's key)."""
    caller: Claude = make_claude(kallm)
    return caller


@pytest.fixture(scope="module")
def kallm_keyed(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Kallm]:
    """A kallm with its own ANTHROPIC_API_KEY."""
    proxy = start_kallm(tmp_path_factory, simulator, "kallm-anthropic", ANTHROPIC_API_KEY=KALLM_KEY)
    yield proxy
    proxy.process.stop()


@pytest.fixture(scope="module")
def kallm_stranded(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator
) -> Iterator[Kallm]:
    """A kallm whose ANTHROPIC_BASE_URL is a port where nothing listens."""
    proxy = start_kallm(
        tmp_path_factory,
        simulator,
        "kallm-anthropic-stranded",
        ANTHROPIC_BASE_URL=f"http://127.0.0.1:{free_port()}",
    )
    yield proxy
    proxy.process.stop()


def test_a_repeat_is_a_hit_without_an_upstream_call(claude: Claude, upstream: Simulator) -> None:
    first = claude.ask("What is the tallest mountain on Earth?")
    second = claude.ask("What is the tallest mountain on Earth?")

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert first.text.startswith("Simulated answer #")
    assert second.text == first.text
    assert second.message.id.startswith("msg_kallm_") and second.message.id != first.message.id
    assert second.message.stop_reason == "end_turn"
    assert second.message.usage.output_tokens == first.message.usage.output_tokens
    (sent,) = calls(upstream)
    # Without its own key, kallm forwards the client's, and Anthropic's headers pass on.
    assert key_sent(sent) == CLIENT_KEY
    assert (
        sent["headers"]["anthropic-version"] == claude.client.default_headers["anthropic-version"]
    )
    assert "x-kallm-namespace" not in sent["headers"]


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("How do I reverse a list in Python?", "How can I reverse a list in Python?"),
        (
            "Explain photosynthesis in simple terms.",
            "Can you explain photosynthesis in simple terms?",
        ),
    ],
)
def test_a_paraphrase_is_a_semantic_hit(
    claude: Claude, upstream: Simulator, stored: str, asked: str
) -> None:
    first = claude.ask(stored)
    second = claude.ask(asked)

    assert second.cache == "HIT"
    assert 0.95 <= float(second.headers["x-kallm-similarity"]) < 1.0
    assert second.text == first.text
    assert len(calls(upstream)) == 1


def test_an_unrelated_prompt_misses(claude: Claude, upstream: Simulator) -> None:
    claude.ask("What is the capital of France?")
    other = claude.ask("How do I bake sourdough bread?")

    assert other.cache == "MISS"
    assert len(calls(upstream)) == 2


def test_a_streamed_hit_is_replayed_as_an_event_stream(claude: Claude, upstream: Simulator) -> None:
    prompt = "Describe the colour of the sky in one sentence."
    first = claude.stream(prompt)
    second = claude.stream(prompt)

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert second.text == first.text and second.text.startswith("Simulated answer #")
    assert len(second.deltas("text_delta")) >= 3, "a hit should replay as several deltas"
    kinds = [e.type for e in second.events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert second.message.stop_reason == "end_turn"
    assert second.message.usage.output_tokens == first.message.usage.output_tokens
    assert second.message.id.startswith("msg_kallm_")
    assert len(calls(upstream)) == 1

    # The raw event iterator parses the replay too.
    raw = claude.raw_stream(prompt)
    assert raw[0].type == "message_start"
    text = "".join(
        e.delta.text
        for e in raw
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == first.text
    assert len(calls(upstream)) == 1


def test_a_replayed_stream_names_each_event(claude: Claude, kallm: Kallm) -> None:
    prompt = "Name three rivers in Africa."
    claude.ask(prompt)
    body = {"model": MODEL, "max_tokens": 256, "stream": True, "messages": as_turns(prompt)}
    # The SDK sent its key as a bearer token; the same key as x-api-key finds the same answers.
    headers = {
        "x-api-key": CLIENT_KEY,
        "anthropic-version": "2023-06-01",
        "x-kallm-namespace": claude.namespace,
    }
    response = httpx.post(f"{kallm.root}{MESSAGES}", json=body, headers=headers, timeout=30)

    assert response.headers["x-kallm-cache"] == "HIT"
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    for block in blocks:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")
    assert "ping" in response.text


def test_a_streamed_answer_serves_a_non_stream_request(claude: Claude, upstream: Simulator) -> None:
    streamed = claude.stream("What do bees make?")
    answer = claude.ask("What do bees make?")

    assert answer.cache == "HIT"
    assert answer.text == streamed.text
    assert answer.message.stop_reason == "end_turn"
    assert answer.message.usage.input_tokens == streamed.message.usage.input_tokens
    assert len(calls(upstream)) == 1


def test_a_non_stream_answer_serves_a_stream_request(claude: Claude, upstream: Simulator) -> None:
    answer = claude.ask("What do cows drink?")
    streamed = claude.stream("What do cows drink?")

    assert streamed.cache == "HIT"
    assert streamed.text == answer.text
    assert len(streamed.deltas("text_delta")) >= 2
    assert streamed.message.stop_reason == "end_turn"
    assert len(calls(upstream)) == 1


def test_a_tool_use_answer_is_cached_and_replayed(claude: Claude, upstream: Simulator) -> None:
    prompt = "[sim:tool] What is the weather in Paris?"
    first = claude.stream(prompt, tools=[WEATHER_TOOL])
    second = claude.stream(prompt, tools=[WEATHER_TOOL])
    third = claude.ask(prompt, tools=[WEATHER_TOOL])

    assert (first.cache, second.cache, third.cache) == ("MISS", "HIT", "HIT")
    for reply in (second, third):
        assert reply.message.stop_reason == "tool_use"
        tool = reply.message.content[-1]
        assert tool.type == "tool_use" and tool.name == "get_weather"
        assert tool.input == {"city": "Paris", "units": "celsius"}
        assert tool.id == first.message.content[-1].id  # type: ignore[union-attr]
    assert len(second.deltas("input_json_delta")) >= 2
    assert len(calls(upstream)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"system": "Answer like a pirate."},
        {"model": "claude-haiku-4-5"},
        {"tools": [WEATHER_TOOL]},
        # This SDK takes sampling parameters as extra body fields.
        {"extra_body": {"temperature": 0.1}},
        {
            "prompt": [
                {"role": "user", "content": "Let us talk about geography."},
                {"role": "assistant", "content": "Gladly."},
                {"role": "user", "content": "What is the capital of Italy?"},
            ]
        },
    ],
    ids=["system", "model", "tools", "temperature", "earlier-turns"],
)
def test_a_changed_context_is_a_miss(
    claude: Claude, upstream: Simulator, change: dict[str, Any]
) -> None:
    claude.ask("What is the capital of Italy?")
    changed = dict(change)
    prompt = changed.pop("prompt", "What is the capital of Italy?")
    other = claude.ask(prompt, **changed)
    again = claude.ask(prompt, **changed)

    assert (other.cache, again.cache) == ("MISS", "HIT")
    assert len(calls(upstream)) == 2


def test_metadata_does_not_change_the_answer(claude: Claude, upstream: Simulator) -> None:
    claude.ask("What is the capital of Spain?", metadata={"user_id": "user-1"})
    other = claude.ask("What is the capital of Spain?", metadata={"user_id": "user-2"})

    assert other.cache == "HIT"
    assert len(calls(upstream)) == 1


def test_beta_headers_pass_on_and_split_the_key(claude: Claude, upstream: Simulator) -> None:
    beta = {"anthropic-beta": "output-128k-2025-02-19"}
    claude.ask("What is the capital of Portugal?")
    with_beta = claude.ask("What is the capital of Portugal?", extra_headers=beta)

    assert with_beta.cache == "MISS"
    assert calls(upstream)[-1]["headers"]["anthropic-beta"] == "output-128k-2025-02-19"


@pytest.mark.parametrize(
    ("directive", "error", "status", "kind"),
    [
        ("[sim:error500]", anthropic.InternalServerError, 500, "api_error"),
        ("[sim:error429]", anthropic.RateLimitError, 429, "rate_limit_error"),
        ("[sim:error529]", anthropic.OverloadedError, 529, "overloaded_error"),
    ],
)
def test_upstream_errors_pass_through_and_are_not_cached(
    claude: Claude,
    upstream: Simulator,
    directive: str,
    error: type[anthropic.APIStatusError],
    status: int,
    kind: str,
) -> None:
    for _ in range(2):
        with pytest.raises(error) as raised:
            claude.ask(f"{directive} Will this fail?")
        assert raised.value.status_code == status
        assert raised.value.type == kind
        assert raised.value.response.headers.get("x-kallm-cache") == "MISS"
    assert len(calls(upstream)) == 2


def test_an_upstream_error_on_a_stream_passes_through(claude: Claude, upstream: Simulator) -> None:
    for _ in range(2):
        with pytest.raises(anthropic.InternalServerError):
            claude.stream("[sim:error500] Stream a failure.")
    assert len(calls(upstream)) == 2


def test_an_error_event_mid_stream_is_not_cached(claude: Claude, upstream: Simulator) -> None:
    for _ in range(2):
        with pytest.raises(anthropic.APIStatusError) as raised:
            claude.stream("[sim:stream_error] Tell me a long story about a lighthouse keeper.")
        assert raised.value.type == "overloaded_error"
    assert len(calls(upstream)) == 2


def test_a_broken_off_stream_is_not_cached(claude: Claude, upstream: Simulator) -> None:
    prompt = "[sim:truncate] Tell me a long story about a lighthouse keeper and her cat."
    for _ in range(2):
        # kallm drops the client's connection too; the SDK lets its transport's error out.
        with pytest.raises(Exception, match=r"incomplete|peer closed"):
            claude.stream(prompt)
    assert len(calls(upstream)) == 2


def test_a_refusal_is_not_cached(claude: Claude, upstream: Simulator) -> None:
    first = claude.ask("[sim:refusal] Something the model declines.")
    second = claude.ask("[sim:refusal] Something the model declines.")

    assert first.message.stop_reason == "refusal"
    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert len(calls(upstream)) == 2


def test_an_invalid_request_is_refused_in_anthropics_shape(
    claude: Claude, upstream: Simulator, kallm: Kallm
) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.ask([])
    assert raised.value.type == "invalid_request_error"
    assert "messages" in str(raised.value.api_message)

    response = httpx.post(
        f"{kallm.root}{MESSAGES}",
        content=b"{not json",
        headers={"x-api-key": CLIENT_KEY, "content-type": "application/json"},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert calls(upstream) == []


def test_client_keys_do_not_share_answers(
    make_claude: Any, kallm: Kallm, upstream: Simulator
) -> None:
    one = make_claude(kallm, CLIENT_KEY)
    other = make_claude(kallm, OTHER_CLIENT_KEY)

    first = one.ask("What is the capital of Norway?")
    second = other.ask("What is the capital of Norway?")
    again = one.ask("What is the capital of Norway?")

    assert (first.cache, second.cache, again.cache) == ("MISS", "MISS", "HIT")
    assert [key_sent(c) for c in calls(upstream)] == [CLIENT_KEY, OTHER_CLIENT_KEY]


def test_kallms_own_key_is_used_upstream(
    make_claude: Any, kallm_keyed: Kallm, upstream: Simulator
) -> None:
    one = make_claude(kallm_keyed, CLIENT_KEY)
    other = make_claude(kallm_keyed, OTHER_CLIENT_KEY)

    first = one.ask("What is the capital of Sweden?")
    # One key upstream: answers are shared within the namespace whatever key a client holds.
    second = other.ask("What is the capital of Sweden?")

    assert (first.cache, second.cache) == ("MISS", "HIT")
    (sent,) = calls(upstream)
    assert sent["headers"]["x-api-key"] == KALLM_KEY
    assert "authorization" not in sent["headers"]
    assert CLIENT_KEY not in json.dumps(sent["headers"])


def test_count_tokens_passes_through(claude: Claude, upstream: Simulator) -> None:
    counted = claude.client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Count the words in this sentence."}]
    )

    assert counted.input_tokens == 8
    (sent,) = upstream.requests("/v1/messages/count_tokens")
    assert key_sent(sent) == CLIENT_KEY
    assert calls(upstream) == []


def test_count_tokens_uses_kallms_own_key(
    make_claude: Any, kallm_keyed: Kallm, upstream: Simulator
) -> None:
    client = make_claude(kallm_keyed).client
    client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hi there."}])

    (sent,) = upstream.requests("/v1/messages/count_tokens")
    assert sent["headers"]["x-api-key"] == KALLM_KEY
    assert "authorization" not in sent["headers"]


def test_a_body_too_large_is_refused_in_anthropics_shape(
    claude: Claude, upstream: Simulator
) -> None:
    huge = "x" * (10 * 1024 * 1024 + 1)  # the default KALLM_MAX_BODY_SIZE is 10 MiB
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude.ask(huge)

    assert raised.value.status_code == 413
    assert raised.value.type == "request_too_large"
    assert calls(upstream) == []


def test_an_unreachable_upstream_is_a_502_in_anthropics_shape(
    make_claude: Any, kallm_stranded: Kallm
) -> None:
    with pytest.raises(anthropic.InternalServerError) as raised:
        make_claude(kallm_stranded).ask("Is anyone there?")

    assert raised.value.status_code == 502
    assert raised.value.type == "api_error"
    assert "could not be reached" in str(raised.value.api_message)
