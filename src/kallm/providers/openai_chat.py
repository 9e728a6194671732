"""OpenAI Chat Completions wire format: parse a request, split it into key parts, record a
streamed answer, and replay a cached answer as JSON or as a stream of chunks.

Reference: https://platform.openai.com/docs/api-reference/chat (objects `chat.completion`
and `chat.completion.chunk`; streams end with `data: [DONE]`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kallm.providers.base import (
    InvalidRequest,
    KeyParts,
    OddEvent,
    is_int,
    optional_str,
    parse_object,
    split_text,
    text_content,
)
from kallm.providers.openai import (
    BodyFunctions,
    ChoiceReplays,
    ChoicesEndpoint,
    ChoicesRecorder,
    choices_usage,
    renewed,
    whole_completion,
)
from kallm.sse import event

# Fields that never change the answer, so they stay out of the cache key. Everything else
# (including fields this list does not know yet) splits the partition: a new sampling
# parameter can cost hits, never correctness.
NOT_IN_KEY = frozenset(
    {
        "messages",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
    }
)

# A cached answer must be a whole answer; `content_filter` is the provider withholding one.
CACHEABLE_FINISH = frozenset({"stop", "length", "tool_calls", "function_call"})


def parse_request(body: bytes) -> dict[str, Any]:
    request = parse_object(body)
    if not isinstance(request.get("model"), str) or not request["model"]:
        raise InvalidRequest("'model' is required and must be a string.", "model")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages[{index}] must be an object with a 'role'.", f"messages[{index}]"
            )
    return request


def _plain_text(message: dict[str, Any]) -> str | None:
    """The text of a user message made only of text, else None."""
    if message.get("role") != "user" or set(message) - {"role", "content"}:
        return None
    return text_content(message.get("content"), "text")


def key_parts(request: dict[str, Any]) -> KeyParts:
    messages = request["messages"]
    context = {name: value for name, value in request.items() if name not in NOT_IN_KEY}
    context["messages"] = messages[:-1]
    return KeyParts(
        model=request["model"], context=context, final=messages[-1], text=_plain_text(messages[-1])
    )


def keyed_request(request: dict[str, Any]) -> dict[str, Any]:
    """The request without the fields that never change the answer (messages stay)."""
    return {k: v for k, v in request.items() if k not in NOT_IN_KEY or k == "messages"}


# The counts `usage` reads; other usage fields (details, timings) are kept as sent.
USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _tool_call(call: Any) -> bool:
    """A function tool call as replay_stream sends it (custom tool calls are not replayed)."""
    if not isinstance(call, dict):
        return False
    function = call.get("function")
    return (
        optional_str(call.get("id"))
        and optional_str(call.get("type"))
        and isinstance(function, dict)
        and isinstance(function.get("name"), str)
        and isinstance(function.get("arguments"), str)
    )


def _whole_choice(choice: Any) -> bool:
    """A finished choice whose every part replay_json and replay_stream read has its type."""
    if not isinstance(choice, dict) or not is_int(choice.get("index")):
        return False
    message, finish = choice.get("message"), choice.get("finish_reason")
    if not isinstance(message, dict) or not isinstance(finish, str):
        return False
    calls = message.get("tool_calls")
    return (
        finish in CACHEABLE_FINISH
        and optional_str(message.get("role"))
        and optional_str(message.get("content"))
        and (calls is None or (isinstance(calls, list) and all(_tool_call(c) for c in calls)))
        and (choice.get("logprobs") is None or isinstance(choice["logprobs"], dict))
    )


def is_cacheable(completion: dict[str, Any]) -> bool:
    """A whole `chat.completion` of the shape kallm replays: any other answer (cut short,
    filtered, or with parts of other types) is relayed unchanged and never stored."""
    return whole_completion(completion, "chat.completion", _whole_choice, USAGE_COUNTS)


ID_PREFIX = "chatcmpl-kallm-"


def replay_json(completion: dict[str, Any]) -> dict[str, Any]:
    return renewed(completion, ID_PREFIX)


def _choice_deltas(choice: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The deltas that rebuild one cached choice's message, in the order OpenAI sends them."""
    message = choice.get("message") or {}
    extras = {k: v for k, v in message.items() if k not in {"role", "content", "tool_calls"}}
    content = message.get("content")
    # OpenAI opens with an empty string for text answers and null for tool calls.
    opening = "" if isinstance(content, str) else None
    yield {"role": message.get("role", "assistant"), "content": opening, **extras}
    if isinstance(content, str) and content:
        for part in split_text(content):
            yield {"content": part}
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function", {})
        yield {
            "tool_calls": [
                {
                    "index": index,
                    "id": call.get("id"),
                    "type": call.get("type", "function"),
                    "function": {"name": function.get("name"), "arguments": ""},
                }
            ]
        }
        for part in split_text(function.get("arguments", ""), pieces=4):
            yield {"tool_calls": [{"index": index, "function": {"arguments": part}}]}


def replay_stream(completion: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """The cached completion as a real chunk stream: several deltas per choice, a final chunk
    with the finish reason, a usage chunk when asked for, then `[DONE]`."""
    head = {"object": "chat.completion.chunk", "model": completion.get("model")}
    base = renewed(head, ID_PREFIX)
    for name in ("system_fingerprint", "service_tier"):
        if name in completion:
            base[name] = completion[name]
    if include_usage:
        # OpenAI sends "usage": null on every chunk but the last when usage is requested.
        base["usage"] = None

    def chunk(index: int, delta: dict[str, Any], finish: str | None, logprobs: Any = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return event(json.dumps({**base, "choices": [choice]}, separators=(",", ":")))

    for choice in completion["choices"]:
        index = choice.get("index", 0)
        for delta in _choice_deltas(choice):
            yield chunk(index, delta, None)
        yield chunk(index, {}, choice.get("finish_reason"), choice.get("logprobs"))
    if include_usage:
        yield event(
            json.dumps(
                {**base, "choices": [], "usage": completion.get("usage")}, separators=(",", ":")
            )
        )
    yield event("[DONE]")


def _joined(built: dict[str, Any], delta: Any) -> dict[str, Any]:
    """`built` with the string pieces of `delta` appended field by field (a function call's
    name and arguments stream this way)."""
    if not isinstance(delta, dict):
        raise OddEvent("a function delta that is not an object")
    for name, part in delta.items():
        if part is None:
            continue
        if not isinstance(part, str) or not isinstance(built.get(name, ""), str):
            raise OddEvent(f"function.{name} is not text")
        built[name] = built.get(name, "") + part
    return built


@dataclass
class _ChoiceBuilder:
    message: dict[str, Any] = field(default_factory=lambda: {"role": "assistant", "content": None})
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: dict[str, list[Any]] | None = None
    finish_reason: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        """Apply one chunk's choice; raises OddEvent for parts of other types."""
        delta = choice.get("delta")
        if delta is not None and not isinstance(delta, dict):
            raise OddEvent("a delta that is not an object")
        for name, value in (delta or {}).items():
            if value is None:
                continue
            if name == "content" or name == "refusal":
                if not isinstance(value, str):
                    raise OddEvent(f"delta.{name} is not text")
                self.message[name] = (self.message.get(name) or "") + value
            elif name == "tool_calls":
                if not isinstance(value, list):
                    raise OddEvent("delta.tool_calls is not a list")
                for call in value:
                    self._add_tool_call(call)
            elif name == "function_call":
                # The legacy single call streams its arguments in pieces, as tool calls do.
                self.message[name] = _joined(self.message.get(name) or {}, value)
            else:
                self.message[name] = value
        logprobs = choice.get("logprobs")
        if logprobs is not None and not isinstance(logprobs, dict):
            raise OddEvent("logprobs is not an object")
        if logprobs:
            self.logprobs = self.logprobs or {}
            for name, items in logprobs.items():
                if items is not None and not isinstance(items, list):
                    raise OddEvent(f"logprobs.{name} is not a list")
                self.logprobs.setdefault(name, []).extend(items or [])
        finish = choice.get("finish_reason")
        if finish is not None and not isinstance(finish, str):
            raise OddEvent("finish_reason is not a string")
        if finish:
            self.finish_reason = finish

    def _add_tool_call(self, call: Any) -> None:
        if not isinstance(call, dict) or not is_int(index := call.get("index", 0)):
            raise OddEvent("a tool call without an integer index")
        built = self.tool_calls.setdefault(index, {"id": None, "type": "function", "function": {}})
        for name in ("id", "type"):
            if not optional_str(call.get(name)):
                raise OddEvent(f"tool_calls.{name} is not a string")
            if call.get(name):
                built[name] = call[name]
        if call.get("function") is not None:
            built["function"] = _joined(built["function"], call["function"])

    def build(self, index: int) -> dict[str, Any]:
        message = dict(self.message)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return {
            "index": index,
            "message": message,
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
        }


def recorder() -> ChoicesRecorder:
    """Rebuilds a `chat.completion` from the chunks of a stream as they pass through."""
    head = ("id", "created", "model", "system_fingerprint", "service_tier")
    return ChoicesRecorder("chat.completion", head, _ChoiceBuilder, is_cacheable)


def usage(request: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    return choices_usage(completion, request.get("messages", []), "message")


class OpenAIChat(ChoicesEndpoint):
    """`POST /v1/chat/completions`, upstream at OPENAI_BASE_URL (which ends in /v1)."""

    path = "/chat/completions"
    route = "chat.completions"
    body = BodyFunctions(parse_request, key_parts, keyed_request, usage)
    replays = ChoiceReplays(replay_json, replay_stream)
    is_cacheable = staticmethod(is_cacheable)
    recorder = staticmethod(recorder)
