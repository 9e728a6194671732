"""Hostile input and odd answers in process (issue 10, items 9, 10 and 13): every cached API
refuses what it cannot hold with a 400 in its provider's format, without calling upstream;
an answer too large to cache is relayed whole; a stored entry that cannot be replayed is
dropped and the request forwarded."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from starlette.testclient import TestClient

from kallm.app import Parts, create_app
from kallm.settings import load_settings
from kallm.storage.base import Entry, EntryQuery
from kallm.storage.memory import MemoryStore

ROUTES = {
    "/v1/chat/completions": ("messages", "error"),
    "/v1/completions": ("prompt", "error"),
    "/v1/responses": ("input", "error"),
    "/v1/messages": ("messages", "type"),
    "/v1beta/models/gemini-2.5-flash:generateContent": ("contents", "error"),
    "/v1/embeddings": ("input", "error"),
}
HOSTILE = {
    "lone surrogate": b'{"model": "m", "FIELD": "\\ud800"}',
    "5,000 digits": b'{"model": "m", "FIELD": ' + b"7" * 5000 + b"}",
    "deep nesting": b'{"model": "m", "FIELD": ' + b"[" * 4000 + b"]" * 4000 + b"}",
    "NaN": b'{"model": "m", "temperature": NaN, "FIELD": "x"}',
    "1e400": b'{"model": "m", "temperature": 1e400, "FIELD": "x"}',
    "invalid UTF-8": b'{"model": "m", "FIELD": "\xff\xfe"}',
}


class Upstream:
    def __init__(self, content: str = "fine") -> None:
        self.calls = 0
        self.content = content

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        message = {"role": "assistant", "content": self.content}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        body = {"id": "x", "object": "chat.completion", "created": 1, "choices": [choice]}
        return httpx.Response(200, json={**body, "model": "gpt-4o-mini"})


def client(upstream: Upstream, store: MemoryStore | None = None, **settings: object) -> TestClient:
    config = load_settings(
        openai_base_url="http://upstream.test/v1", host="127.0.0.1", verifier=False, **settings
    )
    parts = Parts(store=store, transport=httpx.MockTransport(upstream))
    return TestClient(create_app(config, parts))


@pytest.fixture(scope="module")
def hostile():
    upstream = Upstream()
    with client(upstream) as test_client:
        yield test_client, upstream


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("path", sorted(ROUTES))
def test_hostile_json_is_a_400_in_the_providers_format(hostile, path, kind):
    test_client, upstream = hostile
    field, error_key = ROUTES[path]
    before = upstream.calls
    body = HOSTILE[kind].replace(b"FIELD", field.encode())
    answer = test_client.post(path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert error_key in answer.json()
    assert upstream.calls == before


def test_an_answer_over_the_size_bound_is_relayed_and_not_cached():
    upstream = Upstream(content="word " * 300_000)  # a 1.5 MB answer
    with client(upstream, max_answer_size=1024 * 1024) as test_client:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Long?"}]}
        for _ in range(2):
            answer = test_client.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200
            assert answer.json()["choices"][0]["message"]["content"] == upstream.content
            assert answer.headers["x-kallm-cache"] == "MISS"
    assert upstream.calls == 2


@pytest.mark.parametrize("stream", [False, True])
def test_a_stored_entry_that_cannot_be_replayed_is_dropped_and_forwarded(stream):
    store = MemoryStore(100)
    upstream = Upstream()
    with client(upstream, store=store) as test_client:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Broken?"}]}
        assert test_client.post("/v1/chat/completions", json=body).status_code == 200
        (entry,) = test_client.portal.call(store.entries, EntryQuery(), time.time())
        # What a store holding a bad answer (an older kallm's, a hand-made warm) returns.
        broken = Entry(**{**vars(entry), "response": {"choices": "not a list"}})
        test_client.portal.call(store.put, broken, None)
        answer = test_client.post("/v1/chat/completions", json=body | {"stream": stream})
        assert answer.status_code == 200
        assert answer.headers["x-kallm-cache"] == "MISS"
        assert upstream.calls == 2
        again = test_client.post("/v1/chat/completions", json=body)
        assert again.headers["x-kallm-cache"] == "HIT"
        assert json.loads(again.text)["choices"][0]["message"]["content"] == "fine"
