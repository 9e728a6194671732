"""OpenAI Chat Completions wire format: parse a request, split it into key parts, record a
streamed answer, and replay a cached answer as JSON or as a stream of chunks.

Reference: https://platform.openai.com/docs/api-reference/chat (objects `chat.completion`
and `chat.completion.chunk`; streams end with `data: [DONE]`).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kallm.providers.base import (
    Call,
    InvalidRequest,
    KeyParts,
    dumps,
    estimate_tokens,
    parse_object,
    split_text,
    text_content,
)
from kallm.providers.openai import OpenAIEndpoint
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


def wants_stream(request: dict[str, Any]) -> bool:
    return request.get("stream") is True


def wants_usage(request: dict[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def is_cacheable(completion: dict[str, Any]) -> bool:
    choices = completion.get("choices")
    return (
        completion.get("object") == "chat.completion"
        and isinstance(choices, list)
        and bool(choices)
        and all(choice.get("finish_reason") in CACHEABLE_FINISH for choice in choices)
    )


def _fresh_id() -> str:
    return "chatcmpl-kallm-" + secrets.token_hex(12)


def replay_json(completion: dict[str, Any]) -> dict[str, Any]:
    """The cached completion with a fresh id and creation time: it is a new response."""
    return {**completion, "id": _fresh_id(), "created": int(time.time())}


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
    base: dict[str, Any] = {
        "id": _fresh_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": completion.get("model"),
    }
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


@dataclass
class _ChoiceBuilder:
    message: dict[str, Any] = field(default_factory=lambda: {"role": "assistant", "content": None})
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: dict[str, list[Any]] | None = None
    finish_reason: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        for name, value in delta.items():
            if name == "content" or name == "refusal":
                if value is not None:
                    self.message[name] = (self.message.get(name) or "") + value
            elif name == "tool_calls":
                for call in value or []:
                    self._add_tool_call(call)
            elif value is not None:
                self.message[name] = value
        if choice.get("logprobs"):
            self.logprobs = self.logprobs or {}
            for name, items in choice["logprobs"].items():
                self.logprobs.setdefault(name, []).extend(items or [])
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    def _add_tool_call(self, call: dict[str, Any]) -> None:
        built = self.tool_calls.setdefault(
            call.get("index", 0), {"id": None, "type": "function", "function": {}}
        )
        for name in ("id", "type"):
            if call.get(name):
                built[name] = call[name]
        function = built["function"]
        for name, part in (call.get("function") or {}).items():
            if part is not None:
                function[name] = function.get(name, "") + part

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


class StreamRecorder:
    """Rebuilds a `chat.completion` from the chunks of a stream as they pass through."""

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceBuilder] = {}
        self._head: dict[str, Any] = {}
        self._usage: dict[str, Any] | None = None
        self.done = False
        self.broken = False

    def add(self, data: str) -> None:
        if data == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(data)
            for name in ("id", "created", "model", "system_fingerprint", "service_tier"):
                if chunk.get(name) is not None:
                    self._head[name] = chunk[name]
            if chunk.get("usage"):
                self._usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                self._choices.setdefault(choice.get("index", 0), _ChoiceBuilder()).add(choice)
        except (json.JSONDecodeError, AttributeError, TypeError):
            # An event we cannot read (an error event, say) makes the answer untrustworthy.
            self.broken = True

    def answer(self) -> dict[str, Any] | None:
        """The whole answer, or None unless the stream ended normally."""
        if not self.done or self.broken or not self._choices:
            return None
        completion: dict[str, Any] = {
            **self._head,
            "object": "chat.completion",
            "choices": [self._choices[i].build(i) for i in sorted(self._choices)],
        }
        if self._usage is not None:
            completion["usage"] = self._usage
        return completion


def estimate_usage(request: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """Token counts for an answer that came without usage (a stream without include_usage),
    so saved-cost figures are not silently zero."""
    answer = sum(estimate_tokens(choice.get("message", {})) for choice in completion["choices"])
    return {
        "prompt_tokens": estimate_tokens(request.get("messages", [])),
        "completion_tokens": answer,
        "estimated": True,
    }


class OpenAIChat(OpenAIEndpoint):
    """`POST /v1/chat/completions`, upstream at OPENAI_BASE_URL (which ends in /v1)."""

    path = "/chat/completions"
    route = "chat.completions"
    key_parts = staticmethod(key_parts)
    keyed_request = staticmethod(keyed_request)
    wants_stream = staticmethod(wants_stream)
    is_cacheable = staticmethod(is_cacheable)
    recorder = StreamRecorder

    def parse(self, call: Call) -> dict[str, Any]:
        return parse_request(call.body)

    def usage(self, request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        return answer.get("usage") or estimate_usage(request, answer)

    def replay_json(self, request: dict[str, Any], answer: dict[str, Any]) -> bytes:
        return dumps(replay_json(answer))

    def replay_stream(self, request: dict[str, Any], answer: dict[str, Any]) -> Iterator[bytes]:
        return replay_stream(answer, wants_usage(request))
