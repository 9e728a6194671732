import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from starlette.datastructures import Headers, QueryParams
from test_openai_chat import (
    HOSTILE,
    answers,
    assert_records_safely,
    assert_survives,
    spoiled_events,
    stream_data,
)

from kallm import keys
from kallm.providers import gemini
from kallm.providers.base import Call, InvalidRequest, Parsed, Upstream
from kallm.sse import SSEParser

PROVIDER = gemini.Gemini()

RESPONSE = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [{"text": "Paris is the capital of France, and has been for centuries."}],
            },
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}
            ],
        },
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "Let me look that up for you right away."},
                    {"functionCall": {"name": "lookup", "args": {"city": "Paris"}}},
                ],
            },
            "finishReason": "MAX_TOKENS",
            "index": 1,
        },
    ],
    "usageMetadata": {
        "promptTokenCount": 9,
        "candidatesTokenCount": 30,
        "thoughtsTokenCount": 4,
        "totalTokenCount": 43,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "abc123",
}


def call(
    body: Any,
    target: str = "gemini-2.5-flash:generateContent",
    query: str = "",
    headers: dict[str, str] | None = None,
    version: str = "v1beta",
) -> Call:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Call(
        raw,
        f"/{version}/models/{target}",
        {"target": target},
        QueryParams(query),
        Headers(headers or {}),
    )


def request(body: dict[str, Any], **kwargs: Any) -> Parsed:
    return PROVIDER.parse(call(body, **kwargs))


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def key(parsed: Parsed) -> keys.CacheKey:
    parts = PROVIDER.key_parts(parsed)
    return keys.cache_key("ns", PROVIDER.route, parts.context, parts.final, parts.text)


# parse


def test_parse_takes_the_model_and_method_from_the_path() -> None:
    parsed = request({"contents": [user("hi")]}, target="models/gemini-2.5-pro:generateContent")
    assert parsed.model == parsed.body["model"] == "gemini-2.5-pro"
    assert not parsed.stream and not parsed.json_array


def test_path_model_wins_over_a_model_in_the_body() -> None:
    parsed = request({"model": "other", "contents": [user("hi")]})
    assert parsed.model == parsed.body["model"] == "gemini-2.5-flash"


def test_a_stream_is_wanted_only_with_alt_sse() -> None:
    body = {"contents": [user("hi")]}
    target = "gemini-2.5-flash:streamGenerateContent"
    sse, array = request(body, target=target, query="alt=sse"), request(body, target=target)
    assert (sse.stream, sse.json_array) == (True, False)
    assert (array.stream, array.json_array) == (False, True)
    # How the answer is wanted never reaches the body or the key.
    assert sse.body == array.body == request(body).body
    assert key(sse) == key(array) == key(request(body))


@pytest.mark.parametrize(
    ("body", "target"),
    [
        (b"not json", "gemini-2.5-flash:generateContent"),
        ([], "gemini-2.5-flash:generateContent"),
        ({}, "gemini-2.5-flash:generateContent"),
        ({"contents": []}, "gemini-2.5-flash:generateContent"),
        ({"contents": "hi"}, "gemini-2.5-flash:generateContent"),
        ({"contents": [{"role": "user"}]}, "gemini-2.5-flash:generateContent"),
        ({"contents": [user("hi")]}, "gemini-2.5-flash:countTokens"),
        ({"contents": [user("hi")]}, ":generateContent"),
    ],
)
def test_invalid_requests_are_rejected(body: Any, target: str) -> None:
    with pytest.raises(InvalidRequest):
        PROVIDER.parse(call(body, target=target))


# keys


def test_streamed_and_plain_requests_share_a_key() -> None:
    body = {"contents": [user("hi")], "generationConfig": {"temperature": 0}}
    plain = request(body)
    streamed = request(body, target="gemini-2.5-flash:streamGenerateContent", query="alt=sse")
    array = request(body, target="gemini-2.5-flash:streamGenerateContent", version="v1")
    assert key(plain) == key(streamed) == key(array)


def test_labels_do_not_change_the_key() -> None:
    body = {"contents": [user("hi")]}
    assert key(request(body)) == key(request({**body, "labels": {"team": "a"}}))


@pytest.mark.parametrize(
    "change",
    [
        {"systemInstruction": {"parts": [{"text": "Answer in French."}]}},
        {"tools": [{"functionDeclarations": [{"name": "lookup"}]}]},
        {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
        {"generationConfig": {"temperature": 1.5}},
        {"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]},
        {"cachedContent": "cachedContents/abc"},
        {"someFutureField": True},
        {"contents": [user("earlier"), {"role": "model", "parts": [{"text": "ok"}]}, user("hi")]},
    ],
)
def test_what_changes_the_answer_changes_the_partition(change: dict[str, Any]) -> None:
    base = {"contents": [user("hi")]}
    assert key(request(base)).partition != key(request({**base, **change})).partition


def test_the_model_changes_the_partition() -> None:
    body = {"contents": [user("hi")]}
    other = request(body, target="gemini-2.5-pro:generateContent")
    assert key(request(body)).partition != key(other).partition


def test_a_plain_user_turn_is_compared_by_meaning() -> None:
    parts = PROVIDER.key_parts(request({"contents": [{"parts": [{"text": "a"}, {"text": "b"}]}]}))
    assert parts.text == "a\nb"


@pytest.mark.parametrize(
    "final",
    [
        {"role": "model", "parts": [{"text": "hi"}]},
        {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}]},
        {"role": "user", "parts": [{"text": "hi"}, {"fileData": {"fileUri": "gs://x"}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]},
        {"role": "user", "parts": []},
    ],
)
def test_other_final_turns_only_match_exactly(final: dict[str, Any]) -> None:
    assert PROVIDER.key_parts(request({"contents": [final]})).text is None


@pytest.mark.parametrize("contents", [None, [], ["hi"], [{"role": "user"}]])
def test_a_warmed_request_without_proper_contents_is_refused(contents: Any) -> None:
    with pytest.raises(InvalidRequest):
        PROVIDER.parse_keyed({"model": "gemini-2.5-flash", "contents": contents})


def test_keyed_request_keeps_contents_and_model_and_rekeys_the_same() -> None:
    parsed = request(
        {"contents": [user("hi")], "labels": {"a": "b"}},
        target="gemini-2.5-flash:streamGenerateContent",
        query="alt=sse",
    )
    keyed = PROVIDER.keyed_request(parsed)
    assert keyed == {"contents": [user("hi")], "model": "gemini-2.5-flash"}
    assert key(PROVIDER.parse_keyed(keyed)) == key(parsed)


# answers


def test_whole_answers_are_cacheable() -> None:
    assert PROVIDER.is_cacheable(RESPONSE)


@pytest.mark.parametrize(
    "answer",
    [
        {**RESPONSE, "candidates": []},
        {"promptFeedback": {"blockReason": "SAFETY"}},
        {**RESPONSE, "promptFeedback": {"blockReason": "OTHER"}},
        {**RESPONSE, "candidates": [{**RESPONSE["candidates"][0], "finishReason": "SAFETY"}]},
        {**RESPONSE, "candidates": [{**RESPONSE["candidates"][0], "finishReason": "RECITATION"}]},
        {**RESPONSE, "candidates": [{**RESPONSE["candidates"][0], "finishReason": "OTHER"}]},
        {**RESPONSE, "candidates": [{**RESPONSE["candidates"][0], "finishReason": None}]},
        {"error": {"code": 500, "message": "x", "status": "INTERNAL"}},
    ],
)
def test_withheld_or_partial_answers_are_not(answer: dict[str, Any]) -> None:
    assert not PROVIDER.is_cacheable(answer)


def test_usage_counts_thoughts_as_output() -> None:
    assert gemini.usage({}, RESPONSE) == {"prompt_tokens": 9, "completion_tokens": 34}


def test_usage_is_estimated_without_metadata() -> None:
    answer = {k: v for k, v in RESPONSE.items() if k != "usageMetadata"}
    usage = gemini.usage({"contents": [user("hello there")]}, answer)
    assert usage["estimated"] is True and usage["completion_tokens"] > 0


def test_replay_json_is_the_answer_with_a_fresh_id() -> None:
    replayed = json.loads(PROVIDER.replay_json(request({"contents": [user("hi")]}), RESPONSE))
    assert replayed["responseId"] != RESPONSE["responseId"]
    assert {**replayed, "responseId": "abc123"} == RESPONSE


def test_a_stream_without_sse_replays_as_a_json_array() -> None:
    parsed = request({"contents": [user("hi")]}, target="gemini-2.5-flash:streamGenerateContent")
    replayed = json.loads(PROVIDER.replay_json(parsed, RESPONSE))
    assert isinstance(replayed, list) and len(replayed) > 2
    assert replayed[-1]["usageMetadata"] == RESPONSE["usageMetadata"]


def events(stream: bytes) -> list[str]:
    return list(SSEParser().feed(stream))


def test_replay_stream_streams_several_chunks_that_rebuild_the_answer() -> None:
    data = events(b"".join(gemini.replay_stream(RESPONSE)))
    assert len(data) > 4
    chunks = [json.loads(d) for d in data]
    assert all("usageMetadata" not in c for c in chunks[:-1])
    assert chunks[-1]["usageMetadata"] == RESPONSE["usageMetadata"]
    assert len({c["responseId"] for c in chunks}) == 1
    recorder = PROVIDER.recorder()
    for piece in data[:-1]:
        recorder.add(piece)
        assert recorder.answer() is None
    recorder.add(data[-1])
    rebuilt = recorder.answer()
    assert rebuilt is not None
    assert {**rebuilt, "responseId": "abc123"} == RESPONSE


def test_recorder_rebuilds_a_real_looking_stream() -> None:
    stream = [
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "r1",
        },
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}],
            "modelVersion": "gemini-2.5-flash",
            "responseId": "r1",
        },
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": "!"}]},
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "r1",
        },
    ]
    recorder = PROVIDER.recorder()
    for chunk in stream:
        assert recorder.answer() is None
        recorder.add(json.dumps(chunk))
    assert recorder.answer() == {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hello!"}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r1",
    }


def test_recorder_keeps_thoughts_apart_from_the_answer() -> None:
    recorder = PROVIDER.recorder()
    for part, finish in (
        ({"text": "thinking ", "thought": True}, None),
        ({"text": "more", "thought": True}, None),
        ({"text": "Answer"}, "STOP"),
    ):
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [part]}}
        if finish:
            candidate["finishReason"] = finish
        recorder.add(json.dumps({"candidates": [candidate]}))
    answer = recorder.answer()
    assert answer is not None
    assert answer["candidates"][0]["content"]["parts"] == [
        {"text": "thinking more", "thought": True},
        {"text": "Answer"},
    ]


@pytest.mark.parametrize(
    "bad",
    ['{"error": {"code": 500, "message": "x", "status": "INTERNAL"}}', "not json", "[1]"],
)
def test_recorder_gives_nothing_after_an_error(bad: str) -> None:
    data = events(b"".join(gemini.replay_stream(RESPONSE)))
    recorder = PROVIDER.recorder()
    recorder.add(data[0])
    recorder.add(bad)
    for piece in data[1:]:
        recorder.add(piece)
    assert recorder.answer() is None


def test_recorder_waits_for_every_candidate() -> None:
    recorder = PROVIDER.recorder()
    done = {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0}
    pending = {"content": {"parts": [{"text": "b"}]}, "index": 1}
    recorder.add(json.dumps({"candidates": [done, pending]}))
    assert recorder.answer() is None
    recorder.add(json.dumps({"candidates": [{"index": 1, "finishReason": "STOP"}]}))
    answer = recorder.answer()
    assert answer is not None and [c["index"] for c in answer["candidates"]] == [0, 1]


def test_a_blocked_prompt_stream_is_never_whole() -> None:
    recorder = PROVIDER.recorder()
    recorder.add(json.dumps({"promptFeedback": {"blockReason": "SAFETY"}}))
    assert recorder.answer() is None


# errors, keys and the upstream request


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (400, "INVALID_ARGUMENT"),
        (413, "INVALID_ARGUMENT"),
        (502, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
    ],
)
def test_errors_are_in_googles_shape(status: int, name: str) -> None:
    body = json.loads(PROVIDER.error_body(status, "nope", "upstream_error"))
    assert body == {"error": {"code": status, "message": "nope", "status": name}}


def test_the_client_key_comes_from_the_header_or_the_query() -> None:
    body = {"contents": [user("hi")]}
    assert PROVIDER.client_key(call(body, headers={"x-goog-api-key": "k1"})) == "k1"
    assert PROVIDER.client_key(call(body, query="key=k2&alt=sse")) == "k2"
    assert PROVIDER.client_key(call(body)) is None


def upstream_request(incoming: Call, api_key: str | None) -> httpx.Request:
    parsed = PROVIDER.parse(incoming)
    target = Upstream("https://gemini.example", api_key)
    return PROVIDER.upstream_request(httpx.AsyncClient(), incoming, target, parsed)


def test_the_client_key_is_forwarded_without_a_key_of_kallms() -> None:
    incoming = call(
        {"contents": [user("hi")]},
        target="gemini-2.5-flash:streamGenerateContent",
        query="alt=sse&key=client",
        headers={"x-goog-api-key": "client", "x-kallm-namespace": "n"},
    )
    sent = upstream_request(incoming, None)
    assert str(sent.url) == (
        "https://gemini.example/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        "?alt=sse&key=client"
    )
    assert sent.headers["x-goog-api-key"] == "client"
    assert "x-kallm-namespace" not in sent.headers
    assert sent.content == incoming.body


def test_kallms_key_replaces_the_clients_in_header_and_query() -> None:
    incoming = call(
        {"contents": [user("hi")]},
        query="key=client&alt=sse",
        headers={"x-goog-api-key": "client", "authorization": "Bearer client"},
        version="v1",
    )
    sent = upstream_request(incoming, "server")
    assert str(sent.url) == (
        "https://gemini.example/v1/models/gemini-2.5-flash:generateContent?alt=sse"
    )
    assert sent.headers["x-goog-api-key"] == "server"
    assert "authorization" not in sent.headers
    assert PROVIDER.auth("server") == {"x-goog-api-key": "server"}
    assert PROVIDER.auth(None) is None


# Hostile answers (the helpers are shared with the chat tests).

STREAM = "gemini-2.5-flash:streamGenerateContent"
REQUESTS = [
    request({"contents": [user("hi")]}),
    request({"contents": [user("hi")]}, target=STREAM),
    request({"contents": [user("hi")]}, target=STREAM, query="alt=sse"),
]
FIRST = RESPONSE["candidates"][0]  # type: ignore[index]


def with_candidate(**fields: Any) -> dict[str, Any]:
    return {**RESPONSE, "candidates": [{**FIRST, **fields}]}


def with_counts(**counts: Any) -> dict[str, Any]:
    return {**RESPONSE, "usageMetadata": {**RESPONSE["usageMetadata"], **counts}}  # type: ignore[dict-item]


MALFORMED = {
    "candidates an object": {**RESPONSE, "candidates": {"0": FIRST}},
    "a candidate not an object": {**RESPONSE, "candidates": ["STOP"]},
    "a list finishReason": with_candidate(finishReason=["STOP"]),
    "a string index": with_candidate(index="0"),
    "a float index": with_candidate(index=0.0),
    "mixed index types": {**RESPONSE, "candidates": [FIRST, {**FIRST, "index": "1"}]},
    "a repeated index": {**RESPONSE, "candidates": [FIRST, FIRST]},
    "two candidates without an index": {
        **RESPONSE,
        "candidates": [{k: v for k, v in FIRST.items() if k != "index"}] * 2,
    },
    "content a string": with_candidate(content="Paris."),
    "parts an object": with_candidate(content={"role": "model", "parts": {"text": "x"}}),
    "a part not an object": with_candidate(content={"role": "model", "parts": ["Paris."]}),
    "a number text": with_candidate(content={"role": "model", "parts": [{"text": 5}]}),
    "a list role": with_candidate(content={"role": ["model"], "parts": []}),
    "a modelVersion object": {**RESPONSE, "modelVersion": {}},
    "usageMetadata a list": {**RESPONSE, "usageMetadata": [9]},
    "a string promptTokenCount": with_counts(promptTokenCount="abc"),
    "a string candidatesTokenCount": with_counts(candidatesTokenCount="abc"),
    "a huge thoughtsTokenCount": with_counts(thoughtsTokenCount=10**400),
    "a negative totalTokenCount": with_counts(totalTokenCount=-1),
    "an infinite promptTokenCount": with_counts(promptTokenCount=float("inf")),
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_answer_kallm_does_not_fully_understand_is_not_cached(answer: dict[str, Any]) -> None:
    assert PROVIDER.is_cacheable(answer) is False
    assert_survives(PROVIDER, REQUESTS, answer)


def test_one_candidate_without_an_index_is_index_0() -> None:
    # proto3 JSON leaves zeros out, so Gemini's one candidate often has no index.
    answer = {**RESPONSE, "candidates": [{k: v for k, v in FIRST.items() if k != "index"}]}
    assert PROVIDER.is_cacheable(answer)
    assert_survives(PROVIDER, REQUESTS, answer)


@pytest.mark.parametrize(
    "counts",
    [
        {"promptTokenCount": "abc", "candidatesTokenCount": 3},
        {"promptTokenCount": 3, "candidatesTokenCount": "abc"},
        {"promptTokenCount": 3, "thoughtsTokenCount": 10**400},
        {"promptTokenCount": None},
        "x",
    ],
)
def test_counts_that_are_not_counts_are_estimated(counts: Any) -> None:
    assert PROVIDER.usage(REQUESTS[0], {**RESPONSE, "usageMetadata": counts})["estimated"] is True


def candidate(index: Any = 0, finish: Any = None, parts: Any = None, **fields: Any) -> str:
    content = {"role": "model", "parts": [{"text": "a"}] if parts is None else parts}
    chosen = {"content": content, "index": index} | fields
    if finish is not None:
        chosen["finishReason"] = finish
    return json.dumps({"candidates": [chosen]})


ODD_STREAMS = {
    "a list finishReason": [candidate(), candidate(finish=["STOP"])],
    "an unhashable index": [candidate([0], finish="STOP")],
    "mixed index types": [candidate(0, "STOP"), candidate("1", "STOP")],
    "a string index alone": [candidate("0", "STOP")],
    "a chunk that is a list": [candidate(), "[1]", candidate(finish="STOP")],
    "candidates an object": [candidate(), json.dumps({"candidates": {}}), candidate(finish="STOP")],
    "a candidate that is a string": [json.dumps({"candidates": ["x"]}), candidate(finish="STOP")],
    "parts an object": [candidate(parts={"text": "x"}), candidate(finish="STOP")],
    "a part that is a string": [candidate(parts=["x"]), candidate(finish="STOP")],
    "a number text": [candidate(parts=[{"text": 5}]), candidate(finish="STOP")],
    "content a string": [candidate(finish="STOP", content="x")],
    "a string count": [
        candidate(),
        json.dumps({"candidates": [], "usageMetadata": {"promptTokenCount": "abc"}}),
        candidate(finish="STOP"),
    ],
    "a huge count": [
        json.dumps({"usageMetadata": {"promptTokenCount": 10**400}}),
        candidate(finish="STOP"),
    ],
    "too deep to parse": [candidate(), "[" * 100_000, candidate(finish="STOP")],
}


@pytest.mark.parametrize("events", ODD_STREAMS.values(), ids=ODD_STREAMS.keys())
def test_an_odd_stream_never_raises_and_records_nothing(events: list[str]) -> None:
    assert assert_records_safely(PROVIDER, REQUESTS, events) is None


@HOSTILE
@given(answers(RESPONSE))
def test_no_answer_makes_kallm_raise(answer: dict[str, Any]) -> None:
    assert_survives(PROVIDER, REQUESTS, answer)


@HOSTILE
@given(spoiled_events(stream_data(gemini.replay_stream(RESPONSE))))
def test_no_stream_makes_the_recorder_raise(events: list[str]) -> None:
    assert_records_safely(PROVIDER, REQUESTS, events)
