"""The public seams: what kallm exports, and that a new provider is one module and one line."""

import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import numpy as np
from starlette.testclient import TestClient

import kallm
from kallm.app import Parts, create_app
from kallm.providers import PROVIDERS
from kallm.providers.base import Call, KeyParts, Parsed, Upstream, parse_object
from kallm.settings import load_settings


def test_the_package_exports_its_seams_and_they_load():
    assert kallm.__all__ == [
        "Embedder", "Parts", "Provider", "Settings", "Store", "create_app", "load_settings",
    ]  # fmt: skip
    for name in kallm.__all__:
        assert getattr(kallm, name).__name__ == name


class Toy:
    """A wire format of its own: POST /toy/ask {"model", "prompt"} -> {"model", "text"}."""

    route = "toy"
    paths = ("/toy/ask",)
    vendor = "openai"

    def caches(self, params: Mapping[str, str]) -> bool:
        return True

    def parse(self, call: Call) -> Parsed:
        return self.parse_keyed(parse_object(call.body))

    def parse_keyed(self, request: Any) -> Parsed:
        return Parsed(request["model"], False, request)

    def key_parts(self, request: Parsed) -> KeyParts:
        body = request.body
        return KeyParts(request.model, {"model": request.model}, body["prompt"], None)

    def keyed_request(self, request: Parsed) -> dict[str, Any]:
        return request.body

    def auth(self, api_key: str | None) -> dict[str, str] | None:
        return None

    def client_key(self, call: Call) -> str | None:
        return None

    def upstream_request(
        self, client: httpx.AsyncClient, call: Call, target: Upstream, request: Parsed
    ) -> httpx.Request:
        return client.build_request("POST", f"{target.base_url}/toy", content=call.body)

    def recorder(self) -> Any:
        raise AssertionError("the toy never streams")

    def parse_answer(self, body: bytes) -> dict[str, Any] | None:
        return json.loads(body)

    def is_cacheable(self, answer: dict[str, Any]) -> bool:
        return isinstance(answer.get("text"), str)

    def usage(self, request: Parsed, answer: dict[str, Any]) -> dict[str, Any]:
        return {"prompt_tokens": 1, "completion_tokens": 1}

    def replay_json(self, request: Parsed, answer: dict[str, Any]) -> bytes:
        return json.dumps(answer).encode()

    def replay_stream(self, request: Parsed, answer: dict[str, Any]) -> Iterator[bytes]:
        raise AssertionError("the toy never streams")

    def error_body(self, status: int, message: str, kind: str) -> bytes:
        return json.dumps({"toy_error": message}).encode()


class Embedder:
    name = "fake"

    async def embed(self, text: str) -> np.ndarray:
        return np.ones(4, dtype=np.float32) / 2

    async def close(self) -> None:
        pass


def test_a_provider_registered_in_one_line_is_cached():
    calls = []

    def upstream(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json={"model": "toy-1", "text": "hello"})

    parts = Parts(
        embedder=Embedder(),
        transport=httpx.MockTransport(upstream),
        providers=(*PROVIDERS, Toy()),  # the one line
    )
    settings = load_settings(openai_base_url="http://upstream.test/v1", host="127.0.0.1")
    with TestClient(create_app(settings, parts)) as client:
        asked = {"model": "toy-1", "prompt": "say hello"}
        first, second = client.post("/toy/ask", json=asked), client.post("/toy/ask", json=asked)
        assert [first.headers["x-kallm-cache"], second.headers["x-kallm-cache"]] == ["MISS", "HIT"]
        assert second.json() == {"model": "toy-1", "text": "hello"}
        assert calls == ["/v1/toy"]
        # Its own error shape for what kallm refuses.
        refused = client.post("/toy/ask", content=b"not json")
        assert refused.status_code == 400 and "toy_error" in refused.json()
        assert calls == ["/v1/toy"]
