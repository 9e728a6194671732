"""Anthropic Messages wire format: parse a request, split it into key parts, rebuild a
streamed Message from its events, and replay a cached Message as JSON or as an event stream.

Reference: https://docs.anthropic.com/en/api/messages and .../messages-streaming (a stream
is message_start, then per content block content_block_start, content_block_delta...,
content_block_stop, then message_delta and message_stop; `ping` may come at any time and an
`error` event ends a broken stream). Errors: https://docs.anthropic.com/en/api/errors.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from kallm import upstream
from kallm.providers.base import (
    Call,
    EventRecorder,
    InvalidRequest,
    KeyParts,
    OddEvent,
    Parsed,
    Upstream,
    counted_usage,
    dumps,
    is_int,
    json_bytes,
    json_object,
    loads,
    named_event,
    optional_str,
    parse_object,
    split_text,
    text_content,
    valid_counts,
)

# Fields that never change the answer. Everything else, including fields this list does not
# know yet, splits the partition: a new parameter can cost hits, never correctness.
NOT_IN_KEY = frozenset({"messages", "stream", "metadata", "service_tier"})

# The beta features a request turns on (output formats, interleaved thinking, longer
# outputs...) can change the answer, so the header is keyed. It is kept in the parsed request
# under a name no body field can have (the API's fields are snake_case), so exports carry it.
BETA = "anthropic-beta"

# Only whole answers are cached: `refusal` is a classifier stepping in mid-answer and
# `pause_turn` a turn the client is meant to continue.
CACHEABLE_STOP = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use"})

# Blocks whose input arrives as JSON text in input_json_delta events.
TOOL_INPUT_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})

# The counts a message_delta repeats as running totals (the rest of usage stays as
# message_start gave it).
CUMULATIVE_USAGE = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "server_tool_use",
    }
)

# kallm's error kinds in Anthropic's names (its SDK picks the exception from the status).
ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "request_too_large": "request_too_large",
    "authentication_error": "authentication_error",
}


def parse_request(body: bytes) -> dict[str, Any]:
    """The request body, checked as far as kallm needs it."""
    request = parse_object(body)
    if BETA in request:
        raise InvalidRequest(f"{BETA}: Extra inputs are not permitted", BETA)
    if not isinstance(request.get("model"), str) or not request["model"]:
        raise InvalidRequest("model: Field required (a non-empty string)", "model")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: must be a non-empty list", "messages")
    for index, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and message.get("role") in ("user", "assistant")
            and isinstance(message.get("content"), str | list)
        ):
            raise InvalidRequest(
                f"messages.{index}: must be an object with a role (user or assistant) "
                "and a content (a string or a list of blocks)",
                f"messages.{index}",
            )
    return request


def beta_features(header: str | None) -> tuple[str, ...]:
    """The anthropic-beta header's features: the same ones in any order and spacing are the
    same request."""
    return tuple(sorted({name.strip() for name in (header or "").split(",") if name.strip()}))


def _unmarked(value: Any) -> Any:
    """A list of blocks (content, system or tools) without cache_control: a prompt-caching
    marker changes what Anthropic bills, never the answer, and clients move it to the latest
    turn on every request. Anything but a list (a string content) is returned as it is."""
    if not isinstance(value, list):
        return value
    blocks: list[Any] = []
    for item in value:
        if isinstance(item, dict):
            item = {name: part for name, part in item.items() if name != "cache_control"}
            if isinstance(item.get("content"), list):  # tool_result blocks nest blocks
                item["content"] = _unmarked(item["content"])
        blocks.append(item)
    return blocks


def _unmarked_message(message: dict[str, Any]) -> dict[str, Any]:
    return {**message, "content": _unmarked(message["content"])}


def plain_text(message: dict[str, Any]) -> str | None:
    """The text of a user turn made only of text, else None (exact match only)."""
    if message.get("role") != "user" or set(message) - {"role", "content"}:
        return None
    return text_content(_unmarked(message["content"]), "text")


def key_parts(request: dict[str, Any], features: tuple[str, ...] = ()) -> KeyParts:
    """`features`: the anthropic-beta header's, which change the answer."""
    messages = request["messages"]
    context = {name: value for name, value in request.items() if name not in NOT_IN_KEY}
    if features:
        context[BETA] = list(features)
    for name in ("system", "tools"):
        if name in context:
            context[name] = _unmarked(context[name])
    context["messages"] = [_unmarked_message(message) for message in messages[:-1]]
    final = _unmarked_message(messages[-1])
    return KeyParts(
        model=request["model"], context=context, final=final, text=plain_text(messages[-1])
    )


def keyed_request(request: dict[str, Any], features: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request without the fields that never change the answer (messages stay), and
    its beta features under the header's name, as an export writes it."""
    keyed = {k: v for k, v in request.items() if k not in NOT_IN_KEY or k == "messages"}
    return keyed | {BETA: list(features)} if features else keyed


# The counts `usage` reads (the prompt is all three input counts).
INPUT_COUNTS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
USAGE_COUNTS = (*INPUT_COUNTS, "output_tokens")


def _whole_block(block: Any) -> bool:
    """A content block with the parts replay_stream reads, each of the type it expects."""
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str):
        return False
    if kind == "text":
        citations = block.get("citations")
        return isinstance(block.get("text"), str) and (
            citations is None or isinstance(citations, list)
        )
    if kind == "thinking":
        return isinstance(block.get("thinking"), str) and optional_str(block.get("signature"))
    if kind in TOOL_INPUT_BLOCKS:
        return isinstance(block.get("input"), dict)
    return True


def is_cacheable(message: dict[str, Any]) -> bool:
    """A whole Message of the shape kallm replays: any other answer (refused, paused, or
    with parts of other types) is relayed unchanged and never stored."""
    content, stop = message.get("content"), message.get("stop_reason")
    return (
        message.get("type") == "message"
        and isinstance(content, list)
        and all(_whole_block(block) for block in content)
        and isinstance(stop, str)
        and stop in CACHEABLE_STOP
        and optional_str(message.get("stop_sequence"))
        and optional_str(message.get("role"))
        and optional_str(message.get("model"))
        and valid_counts(message.get("usage"), USAGE_COUNTS)
    )


def error_type(status: int, kind: str) -> str:
    if kind in ERROR_TYPES:
        return ERROR_TYPES[kind]
    return "timeout_error" if status == 504 else "api_error"


def error_body(status: int, message: str, kind: str) -> bytes:
    """An error in Anthropic's shape, so its SDK raises its usual exception types."""
    return dumps({"type": "error", "error": {"type": error_type(status, kind), "message": message}})


def usage(request: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Token counts for saved-cost figures. Tokens read from or written to Anthropic's prompt
    cache are prompt tokens too; an answer without usage, or with counts that are not counts,
    gets an estimate."""
    return counted_usage(
        message.get("usage"),
        INPUT_COUNTS,
        ["output_tokens"],
        {"output_tokens"},
        [request.get("system"), request.get("messages")],
        [message.get("content", [])],
    )


def _fresh_id() -> str:
    return "msg_kallm_" + secrets.token_hex(12)


def replay_json(message: dict[str, Any]) -> dict[str, Any]:
    """The cached Message with a fresh id: it is a new response."""
    return {**message, "id": _fresh_id()}


def _block_events(index: int, block: dict[str, Any]) -> Iterator[bytes]:
    """One content block as Anthropic streams it: an empty block, its deltas, its stop."""
    kind = block.get("type")
    deltas: list[dict[str, Any]] = []
    if kind == "text":
        start = {k: v for k, v in block.items() if k != "citations"} | {"text": ""}
        deltas += [{"type": "text_delta", "text": part} for part in _parts(block.get("text", ""))]
        deltas += [
            {"type": "citations_delta", "citation": citation}
            for citation in block.get("citations") or []
        ]
    elif kind == "thinking":
        start = block | {"thinking": "", "signature": ""}
        deltas += [
            {"type": "thinking_delta", "thinking": part}
            for part in _parts(block.get("thinking", ""))
        ]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind in TOOL_INPUT_BLOCKS:
        start = block | {"input": {}}
        arguments = json.dumps(block.get("input", {}), ensure_ascii=False)
        deltas += [
            {"type": "input_json_delta", "partial_json": part}
            for part in split_text(arguments, pieces=4)
        ]
    else:
        # Blocks Anthropic sends whole (redacted_thinking, server tool results).
        start = block
    yield named_event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": start},
    )
    for delta in deltas:
        yield named_event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )
    yield named_event("content_block_stop", {"type": "content_block_stop", "index": index})


def _parts(text: str) -> list[str]:
    return split_text(text) if text else []


def replay_stream(message: dict[str, Any]) -> Iterator[bytes]:
    """The cached Message as a real event stream: message_start with an empty content list,
    each block in several deltas, message_delta with the stop reason and usage, message_stop."""
    counts = message.get("usage") or {}
    # message_delta carries the stop reason and the other fields the SDK takes from it.
    closing = {"stop_reason", "stop_sequence", "stop_details", "container"}
    head = {k: v for k, v in message.items() if k not in closing | {"content", "usage"}}
    head |= {"id": _fresh_id(), "content": [], "stop_reason": None, "stop_sequence": None}
    # Output tokens are counted as they are generated: the start reports none yet.
    head["usage"] = {**counts, "output_tokens": 0}
    yield named_event("message_start", {"type": "message_start", "message": head})
    yield named_event("ping", {"type": "ping"})
    for index, block in enumerate(message["content"]):
        yield from _block_events(index, block)
    delta = {
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
    }
    delta |= {k: message[k] for k in ("stop_details", "container") if k in message}
    totals = {k: v for k, v in counts.items() if k in CUMULATIVE_USAGE and v is not None}
    yield named_event(
        "message_delta",
        {"type": "message_delta", "delta": delta, "usage": {"output_tokens": 0, **totals}},
    )
    yield named_event("message_stop", {"type": "message_stop"})


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OddEvent(f"{what} is not an object")
    return value


def _index(event: dict[str, Any]) -> int:
    index = event.get("index")
    if not is_int(index):
        raise OddEvent("a block event without an integer index")
    return index


class StreamRecorder(EventRecorder):
    """Rebuilds a Message from the events of a stream as they pass through (each event's
    `data` names its own type, so the `event:` lines are not needed). It never raises: an
    event it cannot read or apply spoils the recording, never the relay, and `answer` gives
    only a Message `is_cacheable` accepts."""

    def __init__(self) -> None:
        self._message: dict[str, Any] | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, str] = {}
        self._open: set[int] = set()
        self.done = False

    def apply(self, event: Any) -> None:
        event = _object(event, "an event")
        kind = event.get("type")
        if kind == "message_start":
            self._message = dict(_object(event.get("message"), "message"))
        elif kind == "content_block_start":
            index = _index(event)
            self._blocks[index] = dict(_object(event.get("content_block"), "content_block"))
            self._open.add(index)
        elif kind == "content_block_delta":
            index = _index(event)
            if index not in self._open:
                raise OddEvent("a delta for a block that is not open")
            self._add_delta(self._blocks[index], index, _object(event.get("delta"), "delta"))
        elif kind == "content_block_stop":
            self._close(_index(event))
        elif kind == "message_delta":
            self._end(event)
        elif kind == "message_stop":
            self.done = True
        elif kind == "error" or not isinstance(kind, str):
            raise OddEvent("an error event, or an event without a type")
        # `ping` and event types added later carry no part of the Message.

    def _add_delta(self, block: dict[str, Any], index: int, delta: dict[str, Any]) -> None:
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = _text(block.get("text", "")) + _text(delta.get("text"))
        elif kind == "thinking_delta":
            block["thinking"] = _text(block.get("thinking", "")) + _text(delta.get("thinking"))
        elif kind == "signature_delta":
            block["signature"] = _text(delta.get("signature"))
        elif kind == "input_json_delta":
            self._json[index] = self._json.get(index, "") + _text(delta.get("partial_json"))
        elif kind == "citations_delta":
            citations = block.get("citations") or []
            if not isinstance(citations, list):
                raise OddEvent("citations is not a list")
            block["citations"] = [*citations, delta.get("citation")]
        else:
            # A delta kallm cannot apply would leave a block it cannot rebuild faithfully.
            raise OddEvent(f"a delta of type {kind!r}")

    def _close(self, index: int) -> None:
        if index not in self._open:
            raise OddEvent("a stop for a block that is not open")
        self._open.discard(index)
        if self._json.get(index):
            # By the same rules as the events that carried it (no NaN, no deep nesting...).
            self._blocks[index]["input"] = loads(self._json.pop(index).encode())

    def _end(self, event: dict[str, Any]) -> None:
        if self._message is None:
            raise OddEvent("message_delta before message_start")
        self._message.update(_object(event.get("delta") or {}, "delta"))
        usage = _object(event.get("usage") or {}, "usage")
        counts = {k: v for k, v in usage.items() if v is not None}
        # Usage on message_delta is cumulative: it overwrites what message_start said.
        before = self._message.get("usage") or {}
        self._message["usage"] = {**_object(before, "usage"), **counts}

    def answer(self) -> dict[str, Any] | None:
        """The whole Message, or None unless the stream ended normally with one kallm
        caches."""
        if not self.done or self.broken or self._message is None or self._open:
            return None
        if sorted(self._blocks) != list(range(len(self._blocks))):
            return None
        message = {**self._message, "content": [self._blocks[i] for i in sorted(self._blocks)]}
        return message if is_cacheable(message) else None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise OddEvent("a text delta that is not text")
    return value


class AnthropicMessages:
    """`POST /v1/messages`, upstream at ANTHROPIC_BASE_URL (without /v1)."""

    route = "messages"
    paths = ("/v1/messages",)
    vendor = "anthropic"
    is_cacheable = staticmethod(is_cacheable)
    recorder = StreamRecorder
    parse_answer = staticmethod(json_object)
    error_body = staticmethod(error_body)

    def caches(self, params: Mapping[str, str]) -> bool:
        return True

    def parse(self, call: Call) -> Parsed:
        return _parsed(parse_request(call.body), beta_features(call.headers.get(BETA)))

    def parse_keyed(self, request: Any) -> Parsed:
        if not isinstance(request, dict):
            raise InvalidRequest("The request must be a JSON object.")
        features = request.get(BETA) or []
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise InvalidRequest(f"{BETA} must be a list of strings.", BETA)
        body = {name: value for name, value in request.items() if name != BETA}
        return _parsed(parse_request(json_bytes(body)), beta_features(",".join(features)))

    def key_parts(self, request: Parsed) -> KeyParts:
        return key_parts(request.body, request.features)

    def keyed_request(self, request: Parsed) -> dict[str, Any]:
        return keyed_request(request.body, request.features)

    def usage(self, request: Parsed, answer: dict[str, Any]) -> dict[str, Any]:
        return usage(request.body, answer)

    def auth(self, api_key: str | None) -> dict[str, str] | None:
        return None if api_key is None else {"x-api-key": api_key}

    def client_key(self, call: Call) -> str | None:
        # Anthropic takes a key as x-api-key or as a bearer token (the SDK sends the latter):
        # the same key isolates the same answers whichever header carries it.
        key = call.headers.get("x-api-key")
        if key:
            return key
        bearer = call.headers.get("authorization")
        return bearer.removeprefix("Bearer ").strip() if bearer else None

    def upstream_request(
        self, client: httpx.AsyncClient, call: Call, target: Upstream, request: Parsed
    ) -> httpx.Request:
        url = f"{target.base_url}/v1/messages"
        auth = self.auth(target.api_key)
        return upstream.post(client, url, call.headers, auth, call.body, call.query)

    def replay_json(self, request: Parsed, answer: dict[str, Any]) -> bytes:
        return json_bytes(replay_json(answer))

    def replay_stream(self, request: Parsed, answer: dict[str, Any]) -> Iterator[bytes]:
        return replay_stream(answer)


def _parsed(body: dict[str, Any], features: tuple[str, ...]) -> Parsed:
    return Parsed(body["model"], body.get("stream") is True, body, features=features)
