"""OpenAI Responses wire format (`POST /v1/responses`): parse a request, split it into key
parts, rebuild a streamed answer, and replay a cached one as JSON or as the typed event stream
(response.created ... response.completed, each event numbered by `sequence_number`).

Reference: https://platform.openai.com/docs/api-reference/responses and
https://platform.openai.com/docs/api-reference/responses-streaming.

A replayed response keeps the id it had upstream: clients continue a conversation by sending
that id as `previous_response_id`, and only the upstream's own id resolves there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kallm.providers.base import (
    EventRecorder,
    InvalidRequest,
    KeyParts,
    OddEvent,
    Parsed,
    counted_usage,
    is_int,
    json_bytes,
    named_event,
    optional_str,
    parse_object,
    split_text,
    text_content,
    valid_counts,
)
from kallm.providers.openai import BodyFunctions, OpenAIEndpoint

# Fields that never change the answer, so they stay out of the cache key. Everything else,
# `previous_response_id`, `conversation`, `background` and fields this list does not know yet
# included, splits the partition. `store` is keyed on its own (see `key_parts`).
NOT_IN_KEY = frozenset(
    {
        "input",
        "store",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
    }
)

# Fields a response echoes from its request that are not in the key: a replay shows the
# caller's own values, not those of whoever asked first.
ECHOED = ("metadata", "user", "safety_identifier", "prompt_cache_key")

# Stream events after which the stream holds no whole answer.
FAILED_EVENTS = frozenset({"error", "response.failed", "response.incomplete"})


def parse_request(body: bytes) -> dict[str, Any]:
    request = parse_object(body)
    model = request.get("model")
    if model is None and isinstance(request.get("prompt"), dict):
        # A stored prompt may name the model itself; "" keeps `model` a string for kallm.
        request = {**request, "model": ""}
    elif not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string.", "model")
    items = request.get("input")
    if items is not None and not isinstance(items, (str, list)):
        raise InvalidRequest("'input' must be a string or an array of input items.", "input")
    for index, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{index}] must be an object.", f"input[{index}]")
    for name in ("previous_response_id", "instructions"):
        if request.get(name) is not None and not isinstance(request[name], str):
            raise InvalidRequest(f"'{name}' must be a string.", name)
    return request


def _input_items(request: dict[str, Any]) -> list[Any]:
    """The input as a list: a string is one user message, as the API reads it."""
    items = request.get("input")
    if items is None:
        return []
    return [items] if isinstance(items, str) else list(items)


def _plain_text(item: Any) -> str | None:
    """The text of a final input item that is only user text, else None."""
    if isinstance(item, str):
        return item
    if (
        not isinstance(item, dict)
        or item.get("role") != "user"
        or item.get("type", "message") != "message"
        or set(item) - {"role", "content", "type"}
    ):
        return None
    return text_content(item.get("content"), "input_text")


def key_parts(request: dict[str, Any]) -> KeyParts:
    items = _input_items(request)
    final = items[-1] if items else None
    context = {name: value for name, value in request.items() if name not in NOT_IN_KEY}
    context["input"] = items[:-1]
    # A replayed id resolves upstream only if the first request was stored there: an answer
    # to `store: false` must never reach a caller who expects to continue from its id.
    context["store"] = request.get("store") is not False
    return KeyParts(model=request["model"], context=context, final=final, text=_plain_text(final))


def keyed_request(request: dict[str, Any]) -> dict[str, Any]:
    """The request without the fields that never change the answer (input and store stay)."""
    kept = {"input", "store"}
    return {k: v for k, v in request.items() if k not in NOT_IN_KEY or k in kept}


# The counts `usage` reads; the details objects are kept as sent.
USAGE_COUNTS = ("input_tokens", "output_tokens", "total_tokens")


def _whole_part(part: Any) -> bool:
    """A message's content part as replay_stream reads it; a refusal is not a whole answer."""
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str):
        return False
    if kind == "output_text":
        return isinstance(part.get("text"), str)
    return kind != "refusal"


def _whole_summary(summary: Any) -> bool:
    return summary is None or (
        isinstance(summary, list)
        and all(isinstance(p, dict) and optional_str(p.get("text")) for p in summary)
    )


def _whole_item(item: Any) -> bool:
    """An output item that finished, is not a refusal, and has the parts replays read."""
    if not isinstance(item, dict) or item.get("status", "completed") != "completed":
        return False
    kind = item.get("type")
    if not isinstance(kind, str) or not optional_str(item.get("id")):
        return False
    if kind == "message":
        content = item.get("content")
        return isinstance(content, list) and all(_whole_part(part) for part in content)
    if kind == "function_call":
        return isinstance(item.get("name"), str) and isinstance(item.get("arguments"), str)
    if kind == "reasoning":
        return _whole_summary(item.get("summary"))
    return True


def is_cacheable(response: dict[str, Any]) -> bool:
    """A completed response, not an error, a refusal or a cut-short one, of the shape kallm
    replays. Responses in a `conversation` are never kept: the conversation grows with each
    turn upstream, so the same request later means something else, and a replay would leave
    the turn out of it. Background responses are polled by id upstream and are not kept
    either."""
    output = response.get("output")
    return (
        response.get("object") == "response"
        and response.get("status") == "completed"
        and not response.get("error")
        and not response.get("incomplete_details")
        and not response.get("conversation")
        and response.get("background") is not True
        and isinstance(output, list)
        and bool(output)
        and all(_whole_item(item) for item in output)
        and optional_str(response.get("id"))
        and optional_str(response.get("model"))
        and valid_counts(response.get("usage"), USAGE_COUNTS)
    )


def replay_response(request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The cached response as the answer to `request`: same id (see the module docstring),
    with the caller's own metadata and user fields."""
    echoed = {name: request.get(name) for name in ECHOED}
    echoed["metadata"] = request.get("metadata") or {}
    return {**response, **echoed}


def _numbered(events: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for number, payload in enumerate(events):
        yield named_event(payload["type"], {**payload, "sequence_number": number})


def _text_events(
    item_id: str, output: int, index: int, part: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """One output_text part: added empty, its text in several deltas, then done."""
    where = {"item_id": item_id, "output_index": output, "content_index": index}
    yield {
        "type": "response.content_part.added",
        **where,
        "part": {**part, "text": "", "annotations": [], "logprobs": []},
    }
    text = part.get("text") or ""
    for piece in split_text(text) if text else []:
        yield {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
    logprobs = part.get("logprobs") or []
    yield {"type": "response.output_text.done", **where, "text": text, "logprobs": logprobs}
    yield {"type": "response.content_part.done", **where, "part": part}


def _message_events(output: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    item_id = item.get("id") or ""
    opening = {**item, "status": "in_progress", "content": []}
    yield {"type": "response.output_item.added", "output_index": output, "item": opening}
    for index, part in enumerate(item.get("content") or []):
        if isinstance(part, dict) and part.get("type") == "output_text":
            yield from _text_events(item_id, output, index, part)
        else:
            where = {"item_id": item_id, "output_index": output, "content_index": index}
            yield {"type": "response.content_part.added", **where, "part": part}
            yield {"type": "response.content_part.done", **where, "part": part}


def _function_call_events(output: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    where = {"item_id": item.get("id") or "", "output_index": output}
    arguments = item.get("arguments") or ""
    opening = {**item, "arguments": "", "status": "in_progress"}
    yield {"type": "response.output_item.added", "output_index": output, "item": opening}
    for piece in split_text(arguments, pieces=4) if arguments else []:
        yield {"type": "response.function_call_arguments.delta", **where, "delta": piece}
    yield {"type": "response.function_call_arguments.done", **where, "arguments": arguments}


def _reasoning_events(output: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    opening = {**item, "summary": [], "status": "in_progress"}
    yield {"type": "response.output_item.added", "output_index": output, "item": opening}
    for index, part in enumerate(item.get("summary") or []):
        where = {"item_id": item.get("id") or "", "output_index": output, "summary_index": index}
        text = part.get("text") or "" if isinstance(part, dict) else ""
        empty = {"type": "summary_text", "text": ""}
        yield {"type": "response.reasoning_summary_part.added", **where, "part": empty}
        for piece in split_text(text) if text else []:
            yield {"type": "response.reasoning_summary_text.delta", **where, "delta": piece}
        yield {"type": "response.reasoning_summary_text.done", **where, "text": text}
        yield {"type": "response.reasoning_summary_part.done", **where, "part": part}


def _item_events(output: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One output item as OpenAI streams it: added, its pieces, done with the whole item."""
    kind = item.get("type")
    if kind == "message":
        yield from _message_events(output, item)
    elif kind == "function_call":
        yield from _function_call_events(output, item)
    elif kind == "reasoning":
        yield from _reasoning_events(output, item)
    else:
        # Other items (tool calls run by OpenAI) arrive whole: added, then done.
        opening = {**item, "status": "in_progress"} if "status" in item else item
        yield {"type": "response.output_item.added", "output_index": output, "item": opening}
    yield {"type": "response.output_item.done", "output_index": output, "item": item}


def replay_events(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The cached response as the events that stream it, without sequence numbers."""
    running = {**response, "status": "in_progress", "output": [], "usage": None}
    if "completed_at" in response:
        running["completed_at"] = None
    yield {"type": "response.created", "response": running}
    yield {"type": "response.in_progress", "response": running}
    for output, item in enumerate(response.get("output") or []):
        yield from _item_events(output, item)
    yield {"type": "response.completed", "response": response}


def replay_stream(request: dict[str, Any], response: dict[str, Any]) -> Iterator[bytes]:
    return _numbered(replay_events(replay_response(request, response)))


class StreamRecorder(EventRecorder):
    """Keeps the response a stream completes with. `response.completed` carries the whole
    response; the stream counts only if nothing failed and its events came in order. It
    never raises: an event it cannot read spoils the recording, never the relay."""

    def __init__(self) -> None:
        self._response: dict[str, Any] | None = None
        self._items: dict[int, Any] = {}
        self._last = -1

    def apply(self, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(kind := payload.get("type"), str):
            raise OddEvent("an event without a type")
        number = payload.get("sequence_number")
        if number is not None:
            # A repeated or reordered event means pieces may be missing or doubled.
            if not is_int(number) or number <= self._last:
                raise OddEvent("an event out of order")
            self._last = number
        if kind in FAILED_EVENTS:
            self.broken = True
        elif kind == "response.output_item.done" and is_int(payload.get("output_index")):
            self._items[payload["output_index"]] = payload.get("item")
        elif kind == "response.completed":
            response = payload.get("response")
            if not isinstance(response, dict):
                raise OddEvent("response.completed without a response")
            self._response = response

    def answer(self) -> dict[str, Any] | None:
        """The completed response, or None unless the stream completed cleanly with one
        kallm caches."""
        if self.broken or self._response is None:
            return None
        response = self._response
        output = response.get("output")
        if not output and self._items:
            # Some gateways leave the completed response's output out; the items were done.
            response = {**response, "output": [self._items[i] for i in sorted(self._items)]}
        elif self._items and (not isinstance(output, list) or len(output) != len(self._items)):
            return None  # the stream and its summary disagree: keep neither
        return response if is_cacheable(response) else None


def usage(request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The answer's input and output counts (see `counted_usage`)."""
    return counted_usage(
        response.get("usage"),
        ["input_tokens"],
        ["output_tokens"],
        {"input_tokens", "output_tokens"},
        [request.get("instructions") or "", request.get("input") or ""],
        [response.get("output") or []],
    )


class OpenAIResponses(OpenAIEndpoint):
    """`POST /v1/responses`, upstream at OPENAI_BASE_URL (which ends in /v1)."""

    path = "/responses"
    route = "responses"
    body = BodyFunctions(parse_request, key_parts, keyed_request, usage)
    is_cacheable = staticmethod(is_cacheable)
    recorder = StreamRecorder

    def replay_json(self, request: Parsed, answer: dict[str, Any]) -> bytes:
        return json_bytes(replay_response(request.body, answer))

    def replay_stream(self, request: Parsed, answer: dict[str, Any]) -> Iterator[bytes]:
        return replay_stream(request.body, answer)
