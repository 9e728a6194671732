"""The Gemini API through kallm, driven by the google-genai SDK against the stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2  # what google-genai streams with
import pytest
from google import genai
from google.genai import errors, types
from processes import Kallm, Simulator, start_kallm, unique_namespace

MODEL = "gemini-2.5-flash"
CLIENT_KEY = "gm-client-key-aaaaaaaa"
OTHER_KEY = "gm-client-key-bbbbbbbb"
GEMINI_SERVER_KEY = "gm-kallm-server-key-0123"
# Raw requests use /v1beta (the SDK's own version may differ); the stand-in serves both.
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
METHODS = {"generateContent", "streamGenerateContent"}


@dataclass
class Gemini:
    """A google-genai client bound to one kallm, namespace and API key."""

    client: genai.Client

    def ask(self, prompt: str, **config: Any) -> tuple[types.GenerateContentResponse, str | None]:
        """The answer and its X-Kallm-Cache header."""
        model = config.pop("model", MODEL)
        response = self.client.models.generate_content(
            model=model, contents=prompt, config=types.GenerateContentConfig(**config)
        )
        return response, cache_of(response)

    def stream(self, prompt: str, **config: Any) -> StreamReply:
        reply = StreamReply()
        for chunk in self.client.models.generate_content_stream(
            model=MODEL, contents=prompt, config=types.GenerateContentConfig(**config)
        ):
            reply.chunks.append(chunk)
        return reply


@dataclass
class StreamReply:
    chunks: list[types.GenerateContentResponse] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(chunk.text or "" for chunk in self.chunks)

    @property
    def cache(self) -> str | None:
        return cache_of(self.chunks[0])


def cache_of(response: types.GenerateContentResponse) -> str | None:
    http = response.sdk_http_response
    headers = http.headers if http is not None and http.headers is not None else {}
    return {k.lower(): v for k, v in headers.items()}.get("x-kallm-cache")


@pytest.fixture
def make_gemini(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Build clients for any kallm; each gets this test's namespace unless told otherwise."""
    default = unique_namespace(request)
    clients: list[genai.Client] = []

    def make(proxy: Kallm, api_key: str = CLIENT_KEY, namespace: str = default) -> Gemini:
        options = types.HttpOptions(
            base_url=proxy.root, headers={"X-Kallm-Namespace": namespace}, timeout=30_000
        )
        client = genai.Client(api_key=api_key, http_options=options)
        clients.append(client)
        return Gemini(client)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def gemini(make_gemini: Any, kallm: Kallm) -> Gemini:
    """The default kallm (no GEMINI_API_KEY: it forwards the client's key)."""
    client: Gemini = make_gemini(kallm)
    return client


@pytest.fixture(scope="module")
def kallm_gemini_key(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator
) -> Iterator[Kallm]:
    """A kallm with its own GEMINI_API_KEY."""
    proxy = start_kallm(
        tmp_path_factory, simulator, "kallm-gemini-key", GEMINI_API_KEY=GEMINI_SERVER_KEY
    )
    yield proxy
    proxy.process.stop()


def generated(upstream: Simulator) -> list[dict[str, Any]]:
    """The stand-in's generateContent and streamGenerateContent calls, in order."""
    return [r for r in upstream.requests() if r["path"].rpartition(":")[2] in METHODS]


def streamed(upstream: Simulator) -> list[dict[str, Any]]:
    return [r for r in upstream.requests() if r["path"].endswith(":streamGenerateContent")]


def test_a_repeat_is_a_hit_without_an_upstream_call(gemini: Gemini, upstream: Simulator) -> None:
    first, first_cache = gemini.ask("What is the tallest mountain on Earth?")
    second, second_cache = gemini.ask("What is the tallest mountain on Earth?")

    assert (first_cache, second_cache) == ("MISS", "HIT")
    assert first.text is not None and first.text.startswith("Simulated answer #")
    assert second.text == first.text
    assert second.response_id != first.response_id
    assert second.usage_metadata is not None and second.usage_metadata.prompt_token_count
    assert len(generated(upstream)) == 1


def test_a_paraphrase_is_a_semantic_hit(gemini: Gemini, upstream: Simulator) -> None:
    first, _ = gemini.ask("How do I reverse a list in Python?")
    second, cache = gemini.ask("How can I reverse a list in Python?")

    assert cache == "HIT"
    assert second.text == first.text
    assert len(generated(upstream)) == 1


def test_a_streamed_hit_replays_several_chunks(gemini: Gemini, upstream: Simulator) -> None:
    prompt = "Describe the water cycle in a few plain words for a child."
    first = gemini.stream(prompt)
    second = gemini.stream(prompt)

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert len(second.chunks) > 2
    assert second.text == first.text and second.text.startswith("Simulated answer #")
    last = second.chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None and last.usage_metadata.candidates_token_count
    assert len(generated(upstream)) == 1
    assert "alt=sse" in streamed(upstream)[0]["query"]


def test_a_streamed_answer_serves_a_plain_request(gemini: Gemini, upstream: Simulator) -> None:
    streamed = gemini.stream("Name three rivers in Europe.")
    plain, cache = gemini.ask("Name three rivers in Europe.")

    assert cache == "HIT"
    assert plain.text == streamed.text
    assert len(generated(upstream)) == 1


def test_a_plain_answer_serves_a_stream(gemini: Gemini, upstream: Simulator) -> None:
    plain, _ = gemini.ask("Name three lakes in Africa.")
    streamed = gemini.stream("Name three lakes in Africa.")

    assert streamed.cache == "HIT"
    assert streamed.text == plain.text
    assert len(streamed.chunks) > 1
    assert len(generated(upstream)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"system_instruction": "Answer like a pirate."},
        {"model": "gemini-2.5-pro"},
        {"tools": [types.Tool(function_declarations=[types.FunctionDeclaration(name="lookup")])]},
        {"temperature": 1.5},
    ],
)
def test_a_changed_context_is_a_miss(
    gemini: Gemini, upstream: Simulator, change: dict[str, Any]
) -> None:
    gemini.ask("What is the boiling point of water?")
    _, cache = gemini.ask("What is the boiling point of water?", **change)

    assert cache == "MISS"
    assert len(generated(upstream)) == 2


def test_a_function_call_is_cached(gemini: Gemini, upstream: Simulator) -> None:
    _first, _ = gemini.ask("[sim:tool] What is the weather in Paris?")
    second, cache = gemini.ask("[sim:tool] What is the weather in Paris?")

    assert cache == "HIT"
    assert second.function_calls and second.function_calls[0].name == "get_weather"
    assert second.function_calls[0].args == {"city": "Paris"}
    assert len(generated(upstream)) == 1


@pytest.mark.parametrize(
    ("directive", "error", "status"),
    [("[sim:error500]", errors.ServerError, 500), ("[sim:error429]", errors.ClientError, 429)],
)
def test_upstream_errors_pass_through_and_are_not_cached(
    gemini: Gemini, upstream: Simulator, directive: str, error: type[Exception], status: int
) -> None:
    for _ in range(2):
        with pytest.raises(error) as raised:
            gemini.ask(f"{directive} Will this fail?")
        assert isinstance(raised.value, errors.APIError) and raised.value.code == status
    assert len(generated(upstream)) == 2


def test_a_withheld_answer_is_not_cached(gemini: Gemini, upstream: Simulator) -> None:
    gemini.ask("[sim:safety] Tell me something.")
    _, cache = gemini.ask("[sim:safety] Tell me something.")

    assert cache == "MISS"
    assert len(generated(upstream)) == 2


def test_a_broken_stream_is_not_cached(gemini: Gemini, upstream: Simulator) -> None:
    for _ in range(2):
        with pytest.raises((httpx.HTTPError, httpx2.HTTPError)):
            gemini.stream("[sim:truncate] Tell me a long story about the sea and its ships.")
    assert len(streamed(upstream)) == 2


def test_kallms_own_key_is_used_upstream(
    make_gemini: Any, kallm_gemini_key: Kallm, upstream: Simulator
) -> None:
    client = make_gemini(kallm_gemini_key)
    client.ask("Which key reaches the stand-in?")
    # A key in the query too: both must stay behind.
    with httpx.Client(base_url=kallm_gemini_key.root, timeout=30) as http:
        answer = http.post(
            STREAM,
            params={"alt": "sse", "key": CLIENT_KEY},
            json={"contents": [{"parts": [{"text": "And with a query key?"}]}]},
        )
    assert answer.status_code == 200

    calls = generated(upstream)
    assert len(calls) == 2
    for call in calls:
        assert call["headers"]["x-goog-api-key"] == GEMINI_SERVER_KEY
        assert CLIENT_KEY not in call["query"] and CLIENT_KEY not in json.dumps(call["headers"])
    assert "alt=sse" in streamed(upstream)[0]["query"]


def test_kallms_own_key_lets_different_clients_share(
    make_gemini: Any, kallm_gemini_key: Kallm, upstream: Simulator
) -> None:
    make_gemini(kallm_gemini_key, api_key=CLIENT_KEY).ask("Shared between keys?")
    _, cache = make_gemini(kallm_gemini_key, api_key=OTHER_KEY).ask("Shared between keys?")

    assert cache == "HIT"


def test_forwarded_client_keys_do_not_share_answers(
    make_gemini: Any, kallm: Kallm, upstream: Simulator
) -> None:
    make_gemini(kallm, api_key=CLIENT_KEY).ask("Is this answer mine alone?")
    _, cache = make_gemini(kallm, api_key=OTHER_KEY).ask("Is this answer mine alone?")

    assert cache == "MISS"
    assert [c["headers"]["x-goog-api-key"] for c in generated(upstream)] == [CLIENT_KEY, OTHER_KEY]


def test_a_query_key_is_forwarded_and_isolates(
    kallm: Kallm, upstream: Simulator, request: pytest.FixtureRequest
) -> None:
    headers = {"X-Kallm-Namespace": unique_namespace(request)}
    body = {"contents": [{"role": "user", "parts": [{"text": "Keyed by query?"}]}]}
    with httpx.Client(base_url=kallm.root, timeout=30, headers=headers) as http:
        caches = [
            http.post(GENERATE, params={"key": key}, json=body).headers["x-kallm-cache"]
            for key in (CLIENT_KEY, CLIENT_KEY, OTHER_KEY)
        ]

    assert caches == ["MISS", "HIT", "MISS"]
    assert [c["query"] for c in generated(upstream)] == [f"key={CLIENT_KEY}", f"key={OTHER_KEY}"]


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b"{}", b'{"contents": []}', b'{"contents": [{"role": "user"}]}'],
)
def test_an_invalid_body_is_a_400_in_googles_shape(
    kallm: Kallm, upstream: Simulator, body: bytes
) -> None:
    with httpx.Client(base_url=kallm.root, timeout=30) as http:
        answer = http.post(GENERATE, content=body, headers={"x-goog-api-key": CLIENT_KEY})

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT" and error["message"]
    assert upstream.requests() == []


def test_the_sdk_raises_a_client_error_for_kallms_400(
    kallm: Kallm, upstream: Simulator, gemini: Gemini
) -> None:
    with pytest.raises(errors.ClientError) as raised:
        # A turn without parts: the SDK sends it, kallm refuses it.
        gemini.client.models.generate_content(model=MODEL, contents=[types.Content(role="user")])
    assert raised.value.code == 400 and raised.value.status == "INVALID_ARGUMENT"
    assert upstream.requests() == []


def test_count_tokens_passes_through(gemini: Gemini, upstream: Simulator) -> None:
    counted = gemini.client.models.count_tokens(model=MODEL, contents="one two three")

    assert counted.total_tokens == 4
    (call,) = [r for r in upstream.requests() if r["path"].endswith(f"{MODEL}:countTokens")]
    assert call["headers"]["x-goog-api-key"] == CLIENT_KEY


def test_a_stream_without_sse_is_a_json_array(
    kallm: Kallm, upstream: Simulator, request: pytest.FixtureRequest
) -> None:
    body = {"contents": [{"parts": [{"text": "An array, please."}]}]}
    headers = {"x-goog-api-key": CLIENT_KEY, "X-Kallm-Namespace": unique_namespace(request)}
    with httpx.Client(base_url=kallm.root, timeout=30, headers=headers) as http:
        http.post(GENERATE, json=body)  # stores the answer
        answer = http.post(STREAM, json=body)

    assert answer.headers["x-kallm-cache"] == "HIT"
    assert answer.headers["content-type"].startswith("application/json")
    chunks = answer.json()
    assert isinstance(chunks, list) and len(chunks) > 1
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_passed_through_calls_carry_only_kallms_own_key(
    kallm_gemini_key: Kallm, upstream: Simulator
) -> None:
    with httpx.Client(base_url=kallm_gemini_key.root, timeout=30) as http:
        answer = http.post(
            f"/v1beta/models/{MODEL}:countTokens",
            params={"key": CLIENT_KEY, "other": "kept"},
            headers={"x-goog-api-key": CLIENT_KEY},
            json={"contents": [{"parts": [{"text": "one two"}]}]},
        )

    assert answer.status_code == 200
    (call,) = [r for r in upstream.requests() if r["path"].endswith(f"{MODEL}:countTokens")]
    assert call["headers"]["x-goog-api-key"] == GEMINI_SERVER_KEY
    assert call["query"] == "other=kept"
