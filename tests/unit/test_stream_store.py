"""A streamed answer is stored as it passes, in process: the mutation that drops the store
of a streamed answer fails here in a second, not only in the subprocess suite."""

from __future__ import annotations

import json

import httpx
from starlette.testclient import TestClient

from kallm.app import Parts, create_app
from kallm.settings import load_settings


def chunk(delta: dict, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    return f"data: {json.dumps(body | {'choices': [choice]})}\n\n".encode()


STREAM = (
    chunk({"role": "assistant", "content": ""})
    + chunk({"content": "Par"})
    + chunk({"content": "is."})
    + chunk({}, "stop")
    + b"data: [DONE]\n\n"
)


def test_a_streamed_answer_is_stored_and_served_as_a_stream_and_as_json():
    calls = []

    def upstream(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, content=STREAM, headers={"content-type": "text/event-stream"})

    settings = load_settings(openai_base_url="http://upstream.test/v1", host="127.0.0.1")
    parts = Parts(transport=httpx.MockTransport(upstream))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of France?"}]}
    with TestClient(create_app(settings, parts)) as client:
        first = client.post("/v1/chat/completions", json=body | {"stream": True})
        assert first.headers["x-kallm-cache"] == "MISS"
        assert first.content == STREAM  # relayed byte for byte
        streamed = client.post("/v1/chat/completions", json=body | {"stream": True})
        assert streamed.headers["x-kallm-cache"] == "HIT"
        deltas = [
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in streamed.text.splitlines()
            if line.startswith("data: {")
        ]
        assert "".join(deltas) == "Paris."
        whole = client.post("/v1/chat/completions", json=body)
        assert whole.headers["x-kallm-cache"] == "HIT"
        assert whole.json()["choices"][0]["message"]["content"] == "Paris."
    assert calls == ["/v1/chat/completions"]
