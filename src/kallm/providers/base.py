"""What every provider module gives the cache core: one wire format, parsed, keyed, recorded
and replayed. Adding a provider is one module that implements `Provider` and one line in
`providers/__init__.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from kallm.sse import event


class InvalidRequest(ValueError):
    """The body is not a request of this wire format; the message says why."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class KeyParts:
    """What identifies a request: `context` must match exactly, `text` is compared by meaning.

    `final` is the final turn as sent; `text` is None when the final turn is not plain user
    text (images, audio, tool results), so the request can only match exactly.
    """

    model: str
    context: dict[str, Any]
    final: Any
    text: str | None


@dataclass(frozen=True)
class Call:
    """One incoming request as a provider module sees it. `params` holds the route's path
    parameters (Gemini names the model and the method there)."""

    body: bytes
    path: str  # the URL path as received, e.g. /v1beta/models/gemini-2.5-flash:generateContent
    params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]  # case-insensitive (Starlette's Headers)


@dataclass(frozen=True)
class Upstream:
    """Where a provider's requests go and the key kallm uses there (None: forward the
    client's own key, and isolate cached answers by it)."""

    base_url: str
    api_key: str | None


class Recorder(Protocol):
    """Rebuilds the whole answer from a stream's SSE `data` fields as they pass through."""

    def add(self, data: str) -> None: ...

    def answer(self) -> dict[str, Any] | None:
        """The whole answer, or None unless the stream ended normally."""
        ...


class Provider(Protocol):
    """A wire format. Its decisions are the module's pure functions; a provider class binds
    them (`key_parts = staticmethod(key_parts)`) and adds what needs the call or the target."""

    # The endpoint name policies use to bypass it ("chat.completions", "messages", ...).
    route: str

    def parse(self, call: Call) -> dict[str, Any]:
        """The request as a dict with at least a string `model`; raises InvalidRequest."""
        ...

    def key_parts(self, request: dict[str, Any]) -> KeyParts: ...

    def keyed_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request without fields that never change the answer, for export and warm."""
        ...

    def wants_stream(self, request: dict[str, Any]) -> bool: ...

    def auth(self, api_key: str | None) -> dict[str, str] | None:
        """kallm's own key in the header this provider reads it from (None: no key)."""
        ...

    def client_key(self, call: Call) -> str | None:
        """The client's API key, as sent, if any."""
        ...

    def upstream_request(
        self, client: httpx.AsyncClient, call: Call, target: Upstream, request: dict[str, Any]
    ) -> httpx.Request:
        """The request to send upstream: kallm's key replaces the client's when it has one,
        kallm's own headers stay behind, and the answer is asked for unencoded."""
        ...

    def recorder(self) -> Recorder: ...

    def parse_answer(self, body: bytes) -> dict[str, Any] | None:
        """A non-streamed upstream answer as a dict, or None when it is not a JSON object."""
        ...

    def is_cacheable(self, answer: dict[str, Any]) -> bool:
        """Whether the answer is whole (not cut short by a filter, not an error)."""
        ...

    def usage(self, request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        """Token counts as {"prompt_tokens", "completion_tokens"} (estimated when the answer
        has none, with "estimated": True), for saved-cost figures."""
        ...

    def replay_json(self, request: dict[str, Any], answer: dict[str, Any]) -> bytes:
        """The cached answer as a fresh response body (new id, new time)."""
        ...

    def replay_stream(self, request: dict[str, Any], answer: dict[str, Any]) -> Iterator[bytes]:
        """The cached answer as this provider's own event stream, in several pieces."""
        ...

    def error_body(self, status: int, message: str, kind: str) -> bytes:
        """kallm's own error (kind: invalid_request_error, request_too_large, upstream_error,
        authentication_error) in this provider's error shape, so its SDK raises as usual."""
        ...


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_object(body: bytes) -> dict[str, Any] | None:
    """A body as a JSON object, or None when it is not one."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def parse_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; raises InvalidRequest."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequest(f"The request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return value


def text_content(content: Any, part_type: str) -> str | None:
    """A message's content as plain text: a string, or a non-empty list of parts that are
    each only `{"type": part_type, "text": str}` (joined by newlines); else None."""
    if isinstance(content, str):
        return content
    if (
        isinstance(content, list)
        and content
        and all(
            isinstance(part, dict)
            and part.get("type") == part_type
            and set(part) == {"type", "text"}
            and isinstance(part["text"], str)
            for part in content
        )
    ):
        return "\n".join(part["text"] for part in content)
    return None


def split_text(text: str, pieces: int = 8) -> list[str]:
    """Split text into about `pieces` parts on word boundaries, so a replay streams."""
    words = text.split(" ")
    size = max(1, -(-len(words) // pieces))
    parts = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [part + " " for part in parts[:-1]] + parts[-1:]


def estimate_tokens(value: Any) -> int:
    """About four characters a token, for answers that come without token counts."""
    return len(value if isinstance(value, str) else json.dumps(value)) // 4


def named_event(name: str, data: Any) -> bytes:
    """An SSE event with an `event:` line, as Anthropic and the Responses API send them."""
    return f"event: {name}\n".encode() + event(json.dumps(data, separators=(",", ":")))
