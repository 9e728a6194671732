"""The stand-in for OpenAI's Responses API (`POST /v1/responses`, `GET` and `DELETE
/v1/responses/{id}`) and its legacy Completions API (`POST /v1/completions`).

Directives in the final user text (the prompt, for completions) work as in `kallm.simulator.openai`:
[sim:error500], [sim:error429], [sim:tool] (a function_call output item), [sim:length]
(an incomplete response / finish_reason "length"), [sim:sleep=N], [sim:truncate] (drop the
connection mid-stream), and for Responses streams [sim:fail] (end with response.failed).

Stored responses (every response unless `store` is false) can be retrieved and deleted, and
`previous_response_id` must name one of them, as upstream: so a test can tell whether an id
kallm replayed still continues the conversation there.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kallm.simulator.openai import (
    TOOL_ARGUMENTS,
    TOOL_NAME,
    SimulatedDisconnect,
    Simulator,
    error,
    invalid,
    openai_error,
    pieces,
    text_of,
    tokens,
)


def _final_user_text(items: Any) -> str:
    """The text of the last user message of a Responses `input`."""
    if isinstance(items, str):
        return items
    users = [i for i in items if isinstance(i, dict) and i.get("role") == "user"]
    return text_of(users[-1].get("content")) if users else ""


def _named(kind: str, payload: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()


class ResponsesStandIn:
    """The Responses endpoints, with the responses they stored."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.stored: dict[str, dict[str, Any]] = {}

    async def create(self, request: Request, body: Any) -> Response:
        if not (
            isinstance(body, dict)
            and isinstance(body.get("model"), str)
            and isinstance(body.get("input"), (str, list))
        ):
            return invalid("'model' (a string) and 'input' (a string or a list) are required.")
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored:
            return error(
                404,
                f"Previous response with id '{previous}' not found.",
                "invalid_request_error",
                "previous_response_not_found",
            )
        user = _final_user_text(body["input"])
        directives, number = await self.sim.begin(user)
        if (failure := openai_error(directives)) is not None:
            return failure

        response = self._response(number, body, user, directives)
        if body.get("store") is not False:
            self.stored[response["id"]] = response
        if body.get("stream") is True:
            events = _stream(response, "truncate" in directives, "fail" in directives)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(response)

    def _response(
        self, number: int, body: dict[str, Any], user: str, directives: dict[str, str]
    ) -> dict[str, Any]:
        tool = "tool" in directives
        text = f"Simulated response #{number}: {user}"
        item: dict[str, Any]
        if tool:
            item = {
                "type": "function_call",
                "id": f"fc_sim{number}",
                "call_id": f"call_sim{number}",
                "name": TOOL_NAME,
                "arguments": TOOL_ARGUMENTS,
                "status": "completed",
            }
        else:
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item = {
                "type": "message",
                "id": f"msg_sim{number}",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        asked = tokens(json.dumps(body["input"])) + tokens(body.get("instructions") or "")
        answered = tokens(TOOL_ARGUMENTS if tool else text)
        cut = "length" in directives
        conversation = body.get("conversation")
        return {
            "id": f"resp_sim{number}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "incomplete" if cut else "completed",
            "background": body.get("background", False),
            "conversation": {"id": conversation} if isinstance(conversation, str) else conversation,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "model": body["model"],
            "output": [item],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": {
                "input_tokens": asked,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": answered,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": asked + answered,
            },
            "user": body.get("user"),
        }

    async def retrieve(self, request: Request, body: Any) -> Response:
        found = self.stored.get(request.path_params["response_id"])
        if found is None:
            return self._missing(request)
        return JSONResponse(found)

    async def delete(self, request: Request, body: Any) -> Response:
        name = request.path_params["response_id"]
        if self.stored.pop(name, None) is None:
            return self._missing(request)
        return JSONResponse({"id": name, "object": "response", "deleted": True})

    def _missing(self, request: Request) -> Response:
        name = request.path_params["response_id"]
        message = f"Response with id '{name}' not found."
        return error(404, message, "invalid_request_error", "not_found")


def _item_events(index: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """How the API streams one output item (the simulator's own rendering, independent of
    kallm's replay, so tests compare two implementations of the format)."""
    item_id = item["id"]
    if item["type"] == "function_call":
        yield {
            "type": "response.output_item.added",
            "output_index": index,
            "item": item | {"arguments": "", "status": "in_progress"},
        }
        for piece in pieces(item["arguments"], 3):
            yield {
                "type": "response.function_call_arguments.delta",
                "item_id": item_id,
                "output_index": index,
                "delta": piece,
            }
        yield {
            "type": "response.function_call_arguments.done",
            "item_id": item_id,
            "output_index": index,
            "arguments": item["arguments"],
        }
    else:
        part = item["content"][0]
        at = {"item_id": item_id, "output_index": index, "content_index": 0}
        empty = part | {"text": ""}
        yield {
            "type": "response.output_item.added",
            "output_index": index,
            "item": item | {"status": "in_progress", "content": []},
        }
        yield {"type": "response.content_part.added", **at, "part": empty}
        for piece in pieces(part["text"], max(3, len(part["text"].split()) // 4)):
            yield {"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
        yield {"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []}
        yield {"type": "response.content_part.done", **at, "part": part}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


async def _stream(response: dict[str, Any], truncate: bool, fail: bool) -> AsyncIterator[bytes]:
    running = response | {"status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": running},
        {"type": "response.in_progress", "response": running},
    ]
    for index, item in enumerate(response["output"]):
        events.extend(_item_events(index, item))
    if fail:
        failed = response | {
            "status": "failed",
            "error": {"code": "server_error", "message": "simulated failure"},
        }
        events.append({"type": "response.failed", "response": failed})
    else:
        last = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        events.append({"type": last, "response": response})
    for number, payload in enumerate(events):
        if truncate and number == 4:
            raise SimulatedDisconnect("simulated truncated stream")
        yield _named(payload["type"], payload | {"sequence_number": number})


async def completions(sim: Simulator, body: Any) -> Response:
    """A legacy `text_completion`: one choice per prompt and `n`, echo and stream supported."""
    prompts = body.get("prompt") if isinstance(body, dict) else None
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if not (
        isinstance(body, dict)
        and isinstance(body.get("model"), str)
        and isinstance(prompts, list)
        and prompts
        and all(isinstance(p, str) for p in prompts)
    ):
        return invalid("'model' (a string) and 'prompt' (a string or strings) are required.")
    n = body.get("n") or 1
    if not isinstance(n, int) or not 1 <= n <= 16:
        return invalid("'n' must be an integer from 1 to 16.")
    directives, number = await sim.begin(" ".join(prompts))
    if (failure := openai_error(directives)) is not None:
        return failure
    finish = "length" if "length" in directives else "stop"
    echo = body.get("echo") is True
    texts = [
        (prompt if echo else "") + f"Simulated completion #{number}: {prompt}"
        for prompt in prompts
        for _ in range(n)
    ]
    asked = sum(tokens(p) for p in prompts)
    answered = sum(tokens(t) for t in texts)
    head = {
        "id": f"cmpl-sim{number}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_sim",
    }
    usage = {
        "prompt_tokens": asked,
        "completion_tokens": answered,
        "total_tokens": asked + answered,
    }
    if body.get("stream") is True:
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        chunks = _completion_chunks(head, texts, finish, usage if with_usage else None)
        return StreamingResponse(chunks, media_type="text/event-stream")
    choices = [
        {"text": text, "index": i, "logprobs": None, "finish_reason": finish}
        for i, text in enumerate(texts)
    ]
    return JSONResponse(head | {"choices": choices, "usage": usage})


async def _completion_chunks(
    head: dict[str, Any], texts: list[str], finish: str, usage: dict[str, int] | None
) -> AsyncIterator[bytes]:
    def chunk(index: int, text: str, reason: str | None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": reason}
        return f"data: {json.dumps(head | {'choices': [choice]})}\n\n".encode()

    for index, text in enumerate(texts):
        for piece in pieces(text, max(3, len(text.split()) // 4)):
            yield chunk(index, piece, None)
        yield chunk(index, "", finish)
    if usage is not None:
        yield f"data: {json.dumps(head | {'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


def routes(sim: Simulator) -> list[Route]:
    responses = ResponsesStandIn(sim)

    async def legacy(request: Request, body: Any) -> Response:
        return await completions(sim, body)

    return [
        Route("/v1/responses", sim.recorded(responses.create), methods=["POST"]),
        Route("/v1/responses/{response_id}", sim.recorded(responses.retrieve), methods=["GET"]),
        Route("/v1/responses/{response_id}", sim.recorded(responses.delete), methods=["DELETE"]),
        Route("/v1/completions", sim.recorded(legacy), methods=["POST"]),
    ]
