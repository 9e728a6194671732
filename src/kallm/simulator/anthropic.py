"""The stand-in Anthropic Messages API (a test double, its answers are canned).

It speaks the wire format closely enough for the official `anthropic` SDK to parse it:
`POST /v1/messages` answers a Message, or with `"stream": true` the named event stream
(message_start, ping, content_block_start/delta/stop, message_delta, message_stop), and
`POST /v1/messages/count_tokens` answers {"input_tokens": n}. Directives in the final user
turn provoke upstream behaviours:

    [sim:error500] [sim:error429] [sim:error529]   that HTTP error, in Anthropic's shape
    [sim:tool]        a get_weather tool_use block, stop_reason tool_use
    [sim:refusal]     stop_reason refusal (an answer kallm must not cache)
    [sim:stream_error]  (stream) an `error` event after some text, no message_stop
    [sim:truncate]    (stream) drop the connection mid-answer
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kallm.simulator.openai import SimulatedDisconnect, Simulator

TOOL_NAME = "get_weather"
TOOL_INPUT = {"city": "Paris", "units": "celsius"}

# Directive -> (status, Anthropic error type, message).
_ERRORS = {
    "error500": (500, "api_error", "simulated server error"),
    "error429": (429, "rate_limit_error", "simulated rate limit exceeded"),
    "error529": (529, "overloaded_error", "Overloaded"),
}


def _error(status: int, kind: str, message: str) -> JSONResponse:
    body = {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": f"req_sim{int(time.time() * 1000)}",
    }
    return JSONResponse(body, status_code=status)


def _text(content: Any) -> str:
    """The text of a string content or of the text blocks of a block list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""


def _count(text: str) -> int:
    return math.ceil(len(text.split()) * 4 / 3)


def _input_tokens(body: dict[str, Any]) -> int:
    texts = [_text(body.get("system"))] + [
        _text(m.get("content")) for m in body["messages"] if isinstance(m, dict)
    ]
    return sum(_count(t) for t in texts)


def _invalid(body: Any) -> str | None:
    """Why a /v1/messages body is not one, as Anthropic words it; None when it is."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return "messages: Field required"
    return None


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class AnthropicStandIn:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def messages(self, request: Request, body: Any) -> Response:
        problem = _invalid(body)
        if problem is not None:
            return _error(400, "invalid_request_error", problem)
        user = next(
            (
                _text(m.get("content"))
                for m in reversed(body["messages"])
                if m.get("role") == "user"
            ),
            "",
        )
        directives, number = await self.sim.begin(user)
        for name, (status, kind, reason) in _ERRORS.items():
            if name in directives:
                return _error(status, kind, reason)
        tool = "tool" in directives
        content: list[dict[str, Any]] = [
            {"type": "text", "text": f"Simulated answer #{number}: {user}"}
        ]
        if tool:
            content = [
                {"type": "text", "text": "Let me look that up."},
                {
                    "type": "tool_use",
                    "id": f"toolu_sim{number}",
                    "name": TOOL_NAME,
                    "input": TOOL_INPUT,
                },
            ]
        stop = "refusal" if "refusal" in directives else ("tool_use" if tool else "end_turn")
        output = sum(_count(json.dumps(b)) for b in content)
        message: dict[str, Any] = {
            "id": f"msg_sim{number}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": _input_tokens(body),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": output,
            },
        }
        headers = {"request-id": f"req_sim{number}"}
        if body.get("stream") is True:
            events = self._stream(message, "stream_error" in directives, "truncate" in directives)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        return JSONResponse(message, headers=headers)

    async def _stream(
        self, message: dict[str, Any], error: bool, truncate: bool
    ) -> AsyncIterator[bytes]:
        start = dict(message, content=[], stop_reason=None)
        start["usage"] = dict(message["usage"], output_tokens=1)
        yield _sse("message_start", {"type": "message_start", "message": start})
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                opening: dict[str, Any] = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": c} for c in _chunks(block["text"], 12)]
            else:
                opening = dict(block, input={})
                raw = json.dumps(block["input"])
                deltas = [{"type": "input_json_delta", "partial_json": c} for c in _chunks(raw, 7)]
            yield _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
            if index == 0:
                yield _sse("ping", {"type": "ping"})
            for position, delta in enumerate(deltas):
                if position == 2 and truncate:
                    raise SimulatedDisconnect("simulated truncated stream")
                if position == 2 and error:
                    failure = {"type": "overloaded_error", "message": "Overloaded"}
                    yield _sse("error", {"type": "error", "error": failure})
                    return
                yield _sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        closing = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        usage = {"output_tokens": message["usage"]["output_tokens"]}
        yield _sse("message_delta", {"type": "message_delta", "delta": closing, "usage": usage})
        yield _sse("message_stop", {"type": "message_stop"})

    async def count_tokens(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "invalid_request_error", "messages: Field required")
        return JSONResponse({"input_tokens": _input_tokens(body)})


def routes(sim: Simulator) -> list[Route]:
    stand_in = AnthropicStandIn(sim)
    return [
        Route("/v1/messages", sim.recorded(stand_in.messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", sim.recorded(stand_in.count_tokens), methods=["POST"]),
    ]
