"""A simulated OpenAI-compatible provider: a test double whose answers are canned.

`kallm demo`, the benchmarks and the integration tests need an upstream that costs
nothing, needs no key and behaves the same every time. The simulator speaks the
OpenAI wire format closely enough for the official SDK to parse it, and lets a caller
provoke upstream behaviours with directives in the final user message:

    [sim:error500] [sim:error429]    answer with that HTTP error
    [sim:content_filter] [sim:length] end with that finish_reason
    [sim:truncate]                   drop the connection mid-body
    [sim:slow]                       stream 6 chunks 0.4 s apart (non-stream: wait 2 s)
    [sim:sleep=N]                    wait N seconds before answering
    [sim:tool]                       answer with a get_weather tool call

Every /v1 request is recorded; GET /_sim/requests lists them and DELETE clears them,
so a test can tell whether kallm really called upstream.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

MODELS = ("sim-small", "sim-large", "sim-embed")
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = '{"city": "Paris"}'
DEFAULT_DIMENSIONS = 256
ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

_DIRECTIVE = re.compile(r"\[sim:([a-z0-9_]+)(?:=([0-9]+(?:\.[0-9]+)?))?\]")
_WORD = re.compile(r"[a-z0-9']+")

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Any], Awaitable[Response]]


class SimulatedDisconnect(Exception):
    """Raised mid-response so that uvicorn drops the connection, as a crashed upstream would."""


def error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def openai_error(directives: Collection[str]) -> JSONResponse | None:
    """The error `[sim:error500]` or `[sim:error429]` asks for, in OpenAI's shape."""
    if "error500" in directives:
        return error(500, "simulated server error", "server_error")
    if "error429" in directives:
        return error(429, "simulated rate limit exceeded", "requests", "rate_limit_exceeded")
    return None


def invalid(message: str) -> JSONResponse:
    return error(400, message, "invalid_request_error")


def tokens(text: str) -> int:
    # Close to what a BPE tokenizer gives for English prose: 4 tokens per 3 words.
    return math.ceil(len(text.split()) * 4 / 3)


def text_of(content: Any) -> str:
    """The text of a message's content, which is a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def pieces(text: str, count: int) -> list[str]:
    """Split text into about `count` pieces that join back to it, at word boundaries if possible."""
    words = re.findall(r"\S+\s*", text)
    if len(words) < count:
        step = max(1, math.ceil(len(text) / count))
        return [text[i : i + step] for i in range(0, len(text), step)]
    bounds = [round(i * len(words) / count) for i in range(count + 1)]
    return ["".join(words[bounds[i] : bounds[i + 1]]) for i in range(count)]


def embed(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A hashed bag of words: texts that share most words get a high cosine similarity."""
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        # hashlib rather than hash(): the latter is salted per process, and the
        # embeddings must agree between runs and processes.
        value = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        vector[value % dimensions] += 1.0 if value >> 63 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        # Keep empty texts a unit vector so cosine similarity stays defined.
        vector[0], norm = 1.0, 1.0
    return [x / norm for x in vector]


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


class Simulator:
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.calls = 0  # numbers the answers, so each upstream call is recognisable
        self.requests: list[dict[str, Any]] = []

    async def begin(self, text: str) -> tuple[dict[str, str], int]:
        """The directives in `text` and this call's number, after the simulated latency
        (plus any `[sim:sleep=N]`). Every stand-in starts an answer with this."""
        directives = dict(_DIRECTIVE.findall(text))
        self.calls += 1
        delay = self.latency + float(directives.get("sleep") or 0)
        if delay:
            await asyncio.sleep(delay)
        return directives, self.calls

    def recorded(self, handler: Handler) -> Endpoint:
        """Record the request, reject invalid JSON, then hand the parsed body to `handler`."""

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body, valid = (json.loads(raw) if raw else None), True
            except ValueError:
                body, valid = None, False
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "query": request.url.query,
                    "headers": dict(request.headers.items()),
                    "body": body,
                }
            )
            if not valid:
                return invalid("We could not parse the JSON body of your request.")
            return await handler(request, body)

        return endpoint

    async def chat(self, request: Request, body: Any) -> Response:
        if not (
            isinstance(body, dict)
            and isinstance(body.get("model"), str)
            and isinstance(body.get("messages"), list)
        ):
            return invalid("'model' (a string) and 'messages' (a list) are required.")
        choices = body.get("n") or 1
        if not isinstance(choices, int) or not 1 <= choices <= 16:
            return invalid("'n' must be an integer from 1 to 16.")
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        user = next(
            (text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        directives, number = await self.begin(user)
        if (failure := openai_error(directives)) is not None:
            return failure

        tool = "tool" in directives
        finish: str | None = next(
            (r for r in ("content_filter", "length") if r in directives), None
        )
        text = f"Simulated answer #{number}: {user}"
        prompt_tokens = sum(tokens(text_of(m.get("content"))) for m in messages)
        completion_tokens = tokens(TOOL_ARGUMENTS if tool else text) * choices
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        finish = finish or ("tool_calls" if tool else "stop")
        answer = _Answer(number, body["model"], text, tool, finish, usage, choices)
        answer.truncate = "truncate" in directives
        if body.get("stream") is True:
            options = body.get("stream_options")
            with_usage = isinstance(options, dict) and options.get("include_usage") is True
            chunks = answer.stream(with_usage, slow="slow" in directives)
            return StreamingResponse(chunks, media_type="text/event-stream")
        if "slow" in directives:
            await asyncio.sleep(2)
        payload = json.dumps(answer.completion()).encode()
        if answer.truncate:
            # Promise the whole body, send half of it, then drop the connection.
            return StreamingResponse(
                _broken(payload[: len(payload) // 2]),
                media_type="application/json",
                headers={"content-length": str(len(payload))},
            )
        return Response(payload, media_type="application/json")

    async def embeddings(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return invalid("'model' (a string) is required.")
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts

        def is_tokens(value: Any) -> bool:
            return isinstance(value, list) and bool(value) and all(type(t) is int for t in value)

        if is_tokens(texts):
            texts = [texts]  # one tokenized text
        if not (
            isinstance(texts, list)
            and texts
            and (all(isinstance(t, str) for t in texts) or all(is_tokens(t) for t in texts))
        ):
            return invalid(
                "'input' must be a string, a non-empty list of strings, a token array or a "
                "non-empty list of token arrays."
            )
        # A token array embeds as a text of its token numbers, and counts one token each.
        words = [t if isinstance(t, str) else " ".join(f"t{n}" for n in t) for t in texts]
        directives = {name for text in words for name, _ in _DIRECTIVE.findall(text)}
        if "error500" in directives:
            return error(500, "simulated server error", "server_error")
        if "error429" in directives:
            return error(429, "simulated rate limit exceeded", "requests", "rate_limit_exceeded")
        dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
        if not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
            return invalid("'dimensions' must be an integer from 1 to 4096.")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return invalid("'encoding_format' must be 'float' or 'base64'.")
        data: list[dict[str, Any]] = []
        for index, text in enumerate(words):
            vector: Any = embed(text, dimensions)
            if encoding == "base64":
                # The openai SDK asks for base64 (little-endian float32) unless told otherwise.
                vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        count = sum(tokens(t) if isinstance(t, str) else len(t) for t in texts)
        usage = {"prompt_tokens": count, "total_tokens": count}
        return JSONResponse(
            {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )

    async def models(self, request: Request, body: Any) -> Response:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "kallm-simulator"}
            for m in MODELS
        ]
        return JSONResponse({"object": "list", "data": data})

    async def not_found(self, request: Request, body: Any) -> Response:
        message = f"Unknown request URL: {request.method} {request.url.path}."
        return error(404, message, "invalid_request_error", "unknown_url")

    async def list_requests(self, request: Request) -> Response:
        return JSONResponse(self.requests)

    async def clear_requests(self, request: Request) -> Response:
        self.requests.clear()
        return Response(status_code=204)


@dataclass
class Canned:
    """One canned answer, as every stand-in renders it in its own format: the `number`-th
    answer, from `model`, of `text` or a tool call, ending with `finish`."""

    number: int
    model: str
    text: str
    tool: bool
    finish: str
    usage: dict[str, int]


@dataclass
class _Answer(Canned):
    """One chat answer (`n` choices), rendered either as a completion or as a stream of
    chunks."""

    n: int = 1
    truncate: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    def _tool_call(self, arguments: str) -> dict[str, Any]:
        function = {"name": TOOL_NAME, "arguments": arguments}
        return {"id": f"call_sim{self.number}", "type": "function", "function": function}

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-sim{self.number}",
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_sim",
        }

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text, "refusal": None}
        if self.tool:
            message.update(content=None, tool_calls=[self._tool_call(TOOL_ARGUMENTS)])
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": self.finish}
            for i in range(self.n)
        ]
        return self._envelope("chat.completion") | {"choices": choices, "usage": self.usage}

    async def stream(self, include_usage: bool, slow: bool) -> AsyncIterator[bytes]:
        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            payload = self._envelope("chat.completion.chunk") | {"choices": [choice]}
            if include_usage:
                payload["usage"] = None  # as OpenAI does: only the final chunk carries usage
            return _sse(payload)

        for index in range(self.n):
            fragments: list[dict[str, Any]]
            if self.tool:
                # OpenAI's shape: the first delta names the call, later ones add arguments.
                first = {"index": 0, **self._tool_call("")}
                yield chunk(index, {"role": "assistant", "content": None, "tool_calls": [first]})
                fragments = [
                    {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                    for piece in pieces(TOOL_ARGUMENTS, 3)
                ]
            else:
                yield chunk(index, {"role": "assistant", "content": ""})
                count = 6 if slow else max(3, math.ceil(len(self.text.split()) / 4))
                fragments = [{"content": piece} for piece in pieces(self.text, count)]
            for position, delta in enumerate(fragments):
                if self.truncate and position == 2:
                    raise SimulatedDisconnect("simulated truncated stream")
                if slow and position:
                    await asyncio.sleep(0.4)
                yield chunk(index, delta)
            yield chunk(index, {}, self.finish)
        if include_usage:
            yield _sse(
                self._envelope("chat.completion.chunk") | {"choices": [], "usage": self.usage}
            )
        yield b"data: [DONE]\n\n"


async def _broken(partial: bytes) -> AsyncIterator[bytes]:
    yield partial
    raise SimulatedDisconnect("simulated truncated response")
