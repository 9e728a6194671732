"""The whole app in process: kallm's own routes and path, an upstream answered by a function
(httpx.MockTransport), a clock the test moves, and the official SDKs pointed at it through
their `http_client`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from starlette.testclient import TestClient

from kallm.app import Parts, create_app
from kallm.settings import load_settings

MODEL = "gpt-4o-mini"


@dataclass
class Clock:
    """Wall-clock seconds that pass only when the test says so."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat_answer(content: str, model: str = MODEL) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }


@dataclass
class Upstream:
    """Answers every chat call with the last user message echoed, and keeps what it got."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(body)
        return httpx.Response(200, json=chat_answer(f"answer to {body['messages'][-1]}"))


@contextmanager
def running(
    upstream: Callable[[httpx.Request], httpx.Response], **settings: Any
) -> Iterator[tuple[TestClient, Parts]]:
    """kallm on an upstream function, with its own key for it and a clock of its own
    (`parts.clock`), while the block runs."""
    config = load_settings(
        openai_base_url="http://upstream.test/v1",
        openai_api_key="sk-kallm-own",
        host="127.0.0.1",
        **settings,
    )
    parts = Parts(transport=httpx.MockTransport(upstream), clock=Clock())
    with TestClient(create_app(config, parts)) as client:
        yield client, parts


def sdk(client: TestClient) -> openai.OpenAI:
    """The openai SDK, talking to the in-process app."""
    return openai.OpenAI(base_url="http://testserver/v1", api_key="sk-caller", http_client=client)
