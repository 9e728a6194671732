"""The stand-in Gemini API: `models/{model}:generateContent`, `:streamGenerateContent` (as
`alt=sse` events, or one JSON array without it) and `:countTokens`, under /v1beta and /v1.

Like the OpenAI stand-in it answers "Simulated answer #N: <user text>" and obeys directives
in the final user turn: [sim:error500], [sim:error429] (errors in Google's shape),
[sim:tool] (a get_weather functionCall), [sim:safety] (finishReason SAFETY) and
[sim:truncate] (a stream dropped after two chunks). A request without an API key is refused
with 403, as Google does, so tests see which key arrived.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kallm.simulator.openai import (
    TOOL_NAME,
    Canned,
    SimulatedDisconnect,
    Simulator,
    pieces,
    tokens,
)

TOOL_ARGS = {"city": "Paris"}


def _error(status: int, message: str, name: str) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message, "status": name}}, status)


def _texts(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    texts = [p.get("text") for p in parts or [] if isinstance(p, dict)]
    return " ".join(t for t in texts if isinstance(t, str))


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\r\n\r\n".encode()  # Google ends lines with CRLF


class _Answer(Canned):
    def _head(self) -> dict[str, Any]:
        return {"modelVersion": self.model, "responseId": f"sim-{self.number}"}

    def _candidate(self, parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        return candidate

    def _parts(self) -> list[dict[str, Any]]:
        if self.tool:
            return [{"functionCall": {"name": TOOL_NAME, "args": TOOL_ARGS}}]
        return [{"text": self.text}]

    def response(self) -> dict[str, Any]:
        candidate = self._candidate(self._parts(), self.finish)
        return {"candidates": [candidate], "usageMetadata": self.usage, **self._head()}

    def chunks(self) -> list[dict[str, Any]]:
        """The answer as Gemini streams it: text deltas, the last with finishReason and the
        final usageMetadata (earlier chunks carry the prompt count only)."""
        deltas = [self._parts()] if self.tool else [[{"text": p}] for p in pieces(self.text, 4)]
        prompt = {"promptTokenCount": self.usage["promptTokenCount"]}
        out = [
            {"candidates": [self._candidate(parts, None)], "usageMetadata": prompt, **self._head()}
            for parts in deltas
        ]
        last = out[-1]
        last["candidates"][0]["finishReason"] = self.finish
        last["usageMetadata"] = self.usage
        return out


async def _events(chunks: list[dict[str, Any]], truncate: bool) -> AsyncIterator[bytes]:
    for position, chunk in enumerate(chunks):
        if truncate and position == 2:
            raise SimulatedDisconnect("simulated truncated stream")
        yield _sse(chunk)
        await asyncio.sleep(0)


def _api_key(request: Request) -> str | None:
    return request.headers.get("x-goog-api-key") or request.query_params.get("key")


class GeminiStandIn:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def model_call(self, request: Request, body: Any) -> Response:
        model, _, method = request.path_params["target"].rpartition(":")
        model = model.removeprefix("models/")
        if _api_key(request) is None:
            message = "Method doesn't allow unregistered callers. Please use an API key."
            return _error(403, message, "PERMISSION_DENIED")
        if not isinstance(body, dict) or not isinstance(body.get("contents"), list):
            message = "* GenerateContentRequest.contents: contents is not specified"
            return _error(400, message, "INVALID_ARGUMENT")
        if method == "countTokens":
            total = sum(tokens(_texts(c)) for c in body["contents"])
            return JSONResponse({"totalTokens": total})
        if method not in {"generateContent", "streamGenerateContent"}:
            return _error(404, f"Method {method} is not found.", "NOT_FOUND")
        return await self._generate(request, model, method, body)

    async def _generate(
        self, request: Request, model: str, method: str, body: dict[str, Any]
    ) -> Response:
        contents = [c for c in body["contents"] if isinstance(c, dict)]
        user = next((_texts(c) for c in reversed(contents) if c.get("role", "user") == "user"), "")
        directives, number = await self.sim.begin(user)
        if "error500" in directives:
            return _error(500, "simulated internal error", "INTERNAL")
        if "error429" in directives:
            return _error(429, "simulated quota exceeded", "RESOURCE_EXHAUSTED")
        tool = "tool" in directives
        text = f"Simulated answer #{number}: {user}"
        prompt = sum(tokens(_texts(c)) for c in contents)
        answer_tokens = tokens(json.dumps(TOOL_ARGS) if tool else text)
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": answer_tokens,
            "totalTokenCount": prompt + answer_tokens,
        }
        finish = "SAFETY" if "safety" in directives else "STOP"
        answer = _Answer(number, model, text, tool, finish, usage)
        if method == "generateContent":
            return JSONResponse(answer.response())
        if request.query_params.get("alt") == "sse":
            events = _events(answer.chunks(), "truncate" in directives)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(answer.chunks())


def routes(sim: Simulator) -> list[Route]:
    stand_in = GeminiStandIn(sim)
    endpoint = sim.recorded(stand_in.model_call)
    return [
        Route("/v1beta/models/{target}", endpoint, methods=["POST"]),
        Route("/v1/models/{target}", endpoint, methods=["POST"]),
    ]
