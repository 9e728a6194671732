"""A cache that fails must never fail a request: it is forwarded and counted instead."""

import asyncio
import json
import logging
import time

import httpx
import numpy as np
from starlette.testclient import TestClient

from kallm.app import Parts, create_app
from kallm.settings import load_settings
from kallm.storage.memory import MemoryStore

ANSWER = {
    "id": "chatcmpl-up",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


class BrokenStore:
    async def get_exact(self, *args):
        raise ConnectionError("store down")

    search = put = record_hit = count = get_exact

    async def ping(self):
        return False

    def loading(self):
        return False

    async def close(self):
        pass


class Embedder:
    name = "fake"

    def __init__(self, fail=False):
        self.fail = fail

    async def embed(self, text):
        if self.fail:
            raise RuntimeError("embedder down")
        return np.ones(4, dtype=np.float32) / 2

    async def close(self):
        pass


def client_for(parts, calls):
    def upstream(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        return httpx.Response(200, json=ANSWER)

    parts.transport = httpx.MockTransport(upstream)
    settings = load_settings(
        openai_base_url="http://upstream.test/v1", openai_api_key="sk-test", host="127.0.0.1"
    )
    return TestClient(create_app(settings, parts))


def ask(client):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of France?"}]}
    return client.post("/v1/chat/completions", json=body)


def test_a_failing_store_forwards_every_request():
    calls = []
    with client_for(Parts(store=BrokenStore(), embedder=Embedder()), calls) as client:
        answers = [ask(client), ask(client)]
        assert [a.status_code for a in answers] == [200, 200]
        assert [a.headers["x-kallm-cache"] for a in answers] == ["MISS", "MISS"]
        assert answers[1].json()["choices"][0]["message"]["content"] == "Paris."
        assert len(calls) == 2
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["store"] == "degraded"
        stats = client.get("/stats").json()
        assert stats["store_errors"] >= 4 and stats["store"]["status"] == "degraded"
        assert "kallm_store_up 0.0" in client.get("/metrics").text


def test_a_failing_embedder_still_serves_exact_hits():
    calls = []
    with client_for(Parts(embedder=Embedder(fail=True)), calls) as client:
        first, second = ask(client), ask(client)
        assert (first.status_code, first.headers["x-kallm-cache"]) == (200, "MISS")
        assert (second.status_code, second.headers["x-kallm-cache"]) == (200, "HIT")
        assert len(calls) == 1
        # The lookup's embedding failed, and so did storing's second try.
        assert client.get("/stats").json()["embedding_errors"] == 2


def test_entries_of_another_embedding_model_are_reported_at_start(caplog):
    from kallm.storage import Entry, MemoryStore

    store = MemoryStore(10)
    vector, now = np.ones(4, dtype=np.float32) / 2, time.time()
    old = Entry("id1", "default", "p", "x", "hi", vector, "text-embedding-3-small",
                "gpt-4o-mini", {}, now, now + 60)  # fmt: skip
    asyncio.run(store.put(old))
    with (
        caplog.at_level(logging.WARNING, logger="kallm"),
        client_for(Parts(store=store, embedder=Embedder()), []),
    ):
        pass
    assert any("text-embedding-3-small" in r.getMessage() for r in caplog.records)


class LoadingStore(MemoryStore):
    """A memory store that says it is still loading vectors until told otherwise."""

    still_loading = True

    def loading(self):
        return self.still_loading


def test_ready_reports_a_store_still_loading_its_vectors_and_serves_meanwhile():
    calls = []
    store = LoadingStore(100)
    with client_for(Parts(store=store, embedder=Embedder()), calls) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["index"] == "loading"
        ask(client)
        assert ask(client).headers["x-kallm-cache"] == "HIT"  # exact hits meanwhile
        store.still_loading = False
        assert client.get("/ready").json() == {"ready": True, "store": "ok", "index": "ready"}
