"""Upstream errors, client errors, and the /v1 routes kallm passes through unchanged."""

from __future__ import annotations

import openai
import pytest

CHAT = "/v1/chat/completions"


def body(prompt: str, **params) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]} | params


@pytest.mark.parametrize(
    ("directive", "error", "status"),
    [
        ("[sim:error500]", openai.InternalServerError, 500),
        ("[sim:error429]", openai.RateLimitError, 429),
    ],
)
def test_upstream_errors_pass_through_and_are_not_cached(
    caller, kallm, upstream, directive, error, status
):
    errors_before = kallm.stats()["upstream_errors"]

    for _ in range(2):
        with pytest.raises(error) as raised:
            caller.chat(f"{directive} Will this fail?")
        assert raised.value.status_code == status
        assert raised.value.response.headers.get("x-kallm-cache") != "HIT"

    simulated = "simulated server error" if status == 500 else "simulated rate limit exceeded"
    assert isinstance(raised.value.body, dict) and raised.value.body["message"] == simulated
    assert len(upstream.chat_calls()) == 2
    assert kallm.stats()["upstream_errors"] >= errors_before + 2


def test_an_upstream_500_stream_passes_through(caller, upstream):
    with pytest.raises(openai.InternalServerError):
        caller.stream("[sim:error500] Stream a failure.")
    with pytest.raises(openai.InternalServerError):
        caller.stream("[sim:error500] Stream a failure.")
    assert len(upstream.chat_calls()) == 2


def test_models_list_passes_through(caller, upstream):
    models = caller.client.models.list()

    assert [m.id for m in models] == ["sim-small", "sim-large", "sim-embed"]
    assert [r["method"] for r in upstream.requests("/v1/models")] == ["GET"]


def test_embeddings_pass_through(caller, upstream):
    result = caller.client.embeddings.create(
        model="text-embedding-3-small", input=["first text", "second text"], dimensions=32
    )

    assert [len(item.embedding) for item in result.data] == [32, 32]
    (request,) = upstream.requests("/v1/embeddings")
    assert request["body"]["input"] == ["first text", "second text"]
    assert request["body"]["dimensions"] == 32


def test_query_strings_and_bodies_pass_through_unchanged(http, upstream):
    response = http.get("/v1/models?limit=2&order=desc")

    assert response.status_code == 200
    (request,) = upstream.requests("/v1/models")
    assert request["query"] == "limit=2&order=desc"


def test_an_upstream_404_passes_through(http, upstream, error_of):
    response = http.post("/v1/no/such/route", json={"hello": "world"})

    assert response.status_code == 404
    assert error_of(response)["code"] == "unknown_url"
    (request,) = upstream.requests("/v1/no/such/route")
    assert request["body"] == {"hello": "world"}


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"", b"[1, 2, 3]"],
    ids=["broken-json", "empty", "not-an-object"],
)
def test_an_unreadable_body_is_a_400_and_goes_nowhere(caller, http, upstream, error_of, payload):
    response = http.post(
        CHAT, content=payload, headers={**caller.headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 400
    error_of(response)
    assert upstream.chat_calls() == []


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "gpt-4o-mini"},
        {"messages": [{"role": "user", "content": "Hi"}]},
        {"model": "gpt-4o-mini", "messages": "Hi"},
    ],
    ids=["no-messages", "no-model", "messages-not-a-list"],
)
def test_a_request_without_model_or_messages_is_a_400(caller, http, upstream, error_of, payload):
    response = http.post(CHAT, json=payload, headers=caller.headers)

    assert response.status_code == 400
    error_of(response)
    assert upstream.chat_calls() == []


def test_a_body_over_the_size_limit_is_a_413(caller, http, upstream, error_of):
    huge = "x" * (10 * 1024 * 1024 + 1)  # the default KALLM_MAX_BODY_SIZE is 10 MiB
    response = http.post(CHAT, json=body(huge), headers=caller.headers)

    assert response.status_code == 413
    error_of(response)
    assert upstream.chat_calls() == []


def test_an_unreachable_upstream_is_a_502(make_caller, kallm_unreachable, error_of):
    caller = make_caller(kallm_unreachable)
    before = kallm_unreachable.stats()["upstream_errors"]
    with pytest.raises(openai.APIStatusError) as raised:
        caller.chat("Is anybody there?")

    assert raised.value.status_code == 502
    assert isinstance(raised.value.body, dict) and raised.value.body.get("message")
    assert kallm_unreachable.stats()["upstream_errors"] == before + 1


def test_an_unreachable_upstream_is_a_502_for_streams_and_passthrough(
    make_caller, kallm_unreachable
):
    caller = make_caller(kallm_unreachable)
    with pytest.raises(openai.APIStatusError) as streamed:
        caller.stream("Is anybody there?")
    with pytest.raises(openai.APIStatusError) as listed:
        caller.client.models.list()

    assert streamed.value.status_code == 502
    assert listed.value.status_code == 502


def test_a_slow_upstream_is_a_504(make_caller, kallm_small, upstream):
    caller = make_caller(kallm_small)  # KALLM_UPSTREAM_TIMEOUT=1
    with pytest.raises(openai.APIStatusError) as raised:
        caller.chat("[sim:sleep=3] Take your time.")

    assert raised.value.status_code == 504
    assert isinstance(raised.value.body, dict) and raised.value.body.get("message")
    assert len(upstream.chat_calls()) == 1


def test_a_slow_upstream_stream_is_a_504(make_caller, kallm_small):
    caller = make_caller(kallm_small)
    with pytest.raises(openai.APIStatusError) as raised:
        caller.stream("[sim:sleep=3] Take your time, streaming.")

    assert raised.value.status_code == 504


def test_a_broken_off_answer_is_a_502_and_not_cached(caller, upstream):
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as raised:
            caller.chat("[sim:truncate] Answer, then hang up.")
        assert raised.value.status_code == 502

    assert len(upstream.chat_calls()) == 2
