"""What every provider module gives the cache core: one wire format, parsed, keyed, recorded
and replayed, and the paths it is served on. Adding a provider is one module that implements
`Provider` and one line in `providers/__init__.py`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

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
class Parsed:
    """A request as its provider module read it: what the core needs (`model`, and whether
    the answer is wanted as an event `stream`), and for the module's own functions the JSON
    `body` (as sent; Gemini's adds the model its path names) with what the call adds to it.
    """

    model: str
    stream: bool
    body: dict[str, Any]
    # Gemini's streamGenerateContent without alt=sse: the stream comes as one JSON array.
    json_array: bool = False
    # Values of a header that changes the answer, so they are part of the key (Anthropic's
    # anthropic-beta features), in one order.
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class Call:
    """One incoming request as a provider module sees it. `params` holds the route's path
    parameters (Gemini names the model and the method there)."""

    body: bytes
    # The URL path as received, still percent-encoded: /v1beta/models/gemini-2.5-flash:...
    path: str
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

    @property
    def paths(self) -> tuple[str, ...]:
        """The paths kallm serves it on (POST), as Starlette route patterns."""
        ...

    # Where it goes: the name of a `Vendor` in the registry ("openai", "anthropic", "gemini").
    vendor: str

    def caches(self, params: Mapping[str, str]) -> bool:
        """Whether a request to one of `paths` with these path parameters is cached; the
        others pass through to the vendor unchanged."""
        ...

    def parse(self, call: Call) -> Parsed:
        """The request; raises InvalidRequest."""
        ...

    def key_parts(self, request: Parsed) -> KeyParts: ...

    def keyed_request(self, request: Parsed) -> dict[str, Any]:
        """The request without fields that never change the answer, for export and warm."""
        ...

    def parse_keyed(self, request: Any) -> Parsed:
        """A request as `keyed_request` wrote it (an export line's, to warm), checked as
        `parse` checks a body; raises InvalidRequest."""
        ...

    def auth(self, api_key: str | None) -> dict[str, str] | None:
        """kallm's own key in the header this provider reads it from (None: no key)."""
        ...

    def client_key(self, call: Call) -> str | None:
        """The client's API key, as sent, if any."""
        ...

    def upstream_request(
        self, client: httpx.AsyncClient, call: Call, target: Upstream, request: Parsed
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

    def usage(self, request: Parsed, answer: dict[str, Any]) -> dict[str, Any]:
        """Token counts as {"prompt_tokens", "completion_tokens"} (estimated when the answer
        has none, with "estimated": True), for saved-cost figures."""
        ...

    def replay_json(self, request: Parsed, answer: dict[str, Any]) -> bytes:
        """The cached answer as a fresh response body (new id, new time)."""
        ...

    def replay_stream(self, request: Parsed, answer: dict[str, Any]) -> Iterator[bytes]:
        """The cached answer as this provider's own event stream, in several pieces."""
        ...

    def error_body(self, status: int, message: str, kind: str) -> bytes:
        """kallm's own error (kind: invalid_request_error, request_too_large, upstream_error,
        authentication_error) in this provider's error shape, so its SDK raises as usual."""
        ...


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# Deeper than any real request or answer (tool schemas included), and far below where
# Python's recursion limit would turn a hostile body into a crash.
MAX_DEPTH = 128
# JSON escapes of UTF-16 surrogates: the only way a lone surrogate, which no UTF-8 text can
# hold, gets into a parsed string.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class NotJSON(ValueError):
    """The body is not JSON kallm can safely hold: the message says why."""


def loads(body: bytes) -> Any:
    """A JSON body as Python values; raises NotJSON for invalid JSON, numbers Python will
    not convert (integers of over 4,300 digits), nesting over MAX_DEPTH and lone surrogates
    (text that cannot be written back as UTF-8). Costs one pass: for large bodies call it
    off the event loop."""
    try:
        # JSON is UTF-8 (RFC 8259 section 8.1): not UTF-16 or 32, which json.loads would take
        # from bytes, nor UTF-8-encoded surrogates, which Python's strict codec refuses.
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise NotJSON(f"it nests deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise NotJSON(str(error)) from None
    check_value(value, strings=_SURROGATE_ESCAPE.search(body) is not None)
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is too large a number")
    return value


def check_value(value: Any, strings: bool = True) -> None:
    """Raise NotJSON when `value` nests deeper than MAX_DEPTH or (with `strings`) holds a
    string that is not valid Unicode text."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = [*item.keys(), *item.values()] if strings else item.values()
        elif isinstance(item, list):
            children = item
        else:
            if strings and isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise NotJSON("it holds a lone UTF-16 surrogate") from None
            continue
        if depth > MAX_DEPTH:
            raise NotJSON(f"it nests deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def json_object(body: bytes) -> dict[str, Any] | None:
    """A body as a JSON object, or None when it is not one kallm can safely hold."""
    try:
        value = loads(body)
    except NotJSON:
        return None
    return value if isinstance(value, dict) else None


def parse_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; raises InvalidRequest."""
    try:
        value = loads(body)
    except NotJSON as error:
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


# What kallm trusts in an upstream answer it caches. An answer is cached only when every part
# kallm reads back later (replays, usage, the stored fields) has the type the code expects:
# anything else is relayed unchanged and never stored, so no stored answer can break a hit.

# Token counts above this are not counts (10**400 parses as an int): saved-cost figures and
# the share of an embeddings batch must stay plain, bounded arithmetic.
MAX_TOKEN_COUNT = 10**12


def token_count(value: Any) -> int | None:
    """`value` as a token count: an int (not a bool) with 0 <= value < 10**12, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_TOKEN_COUNT:
        return value
    return None


def valid_counts(usage: Any, names: Iterable[str]) -> bool:
    """Whether `usage` is absent (None) or an object whose `names`, where present and not
    null, are token counts. Other fields (details objects, timings) are kept as sent."""
    if usage is None:
        return True
    return isinstance(usage, dict) and all(
        usage.get(name) is None or token_count(usage[name]) is not None for name in names
    )


def counted_usage(
    counts: Any,
    prompt: Sequence[str],
    completion: Sequence[str],
    required: Collection[str],
    asked: Any,
    answered: Iterable[Any],
) -> dict[str, Any]:
    """Token counts as {"prompt_tokens", "completion_tokens"}, for saved-cost figures: the
    sums of an answer's own `counts` under the `prompt` and `completion` names, where every
    name present is a count and the `required` ones are there; else (no counts, or counts
    that are not counts: a string, a negative or absurd number) an estimate from what was
    `asked` and the parts `answered`, marked "estimated"."""
    if isinstance(counts, dict):
        values = {name: counts.get(name) for name in (*prompt, *completion)}
        if all(
            (value is not None or name not in required)
            and (value is None or token_count(value) is not None)
            for name, value in values.items()
        ):
            return {
                "prompt_tokens": sum(values[name] or 0 for name in prompt),
                "completion_tokens": sum(values[name] or 0 for name in completion),
            }
    return {
        "prompt_tokens": estimate_tokens(asked),
        "completion_tokens": sum(estimate_tokens(part) for part in answered),
        "estimated": True,
    }


def is_int(value: Any) -> TypeGuard[int]:
    """An int that is not a bool (JSON's true is not an index)."""
    return isinstance(value, int) and not isinstance(value, bool)


def optional_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


def distinct_indexes(indexes: list[Any]) -> bool:
    """Whether every index is an int and none repeats (a replay streams each one once)."""
    return all(is_int(index) for index in indexes) and len(set(indexes)) == len(indexes)


def json_text(value: Any) -> str:
    """Compact JSON that always encodes as UTF-8. A JSON string may hold a lone surrogate as
    an escape (`"\\ud800"`), which json.loads keeps and UTF-8 cannot encode; it is written
    back as that same escape, so a replay never fails on what the upstream sent."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="backslashreplace").decode()
    return text


def json_bytes(value: Any) -> bytes:
    """`dumps` for anything json.loads can return (see `json_text`)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(
        errors="backslashreplace"
    )


def stream_event(data: str) -> Any:
    """A stream event's `data` as JSON, read by the rules of `loads` (no NaN, no 1e999, no
    5,000-digit numbers, no deep nesting, no lone surrogates); raises NotJSON. The SSE parser
    writes bytes that are not UTF-8 as U+FFFD, so an event holding one is refused too: an
    answer recorded from it could only differ from what the upstream sent."""
    if "\ufffd" in data:
        raise NotJSON("it holds bytes that are not UTF-8")
    try:
        body = data.encode()
    except UnicodeEncodeError:
        raise NotJSON("it holds bytes that are not UTF-8") from None
    return loads(body)


class OddEvent(ValueError):
    """A stream event of a shape a recorder does not rebuild: the recording is spoiled (the
    relay goes on; nothing is stored)."""


class EventRecorder:
    """A `Recorder` that never raises: the relay forwards every byte whatever the events
    hold. Whatever `apply` raises on an event (bad JSON, odd types, too deep to parse, an
    event out of place) spoils the recording instead, and nothing is stored."""

    broken = False

    def add(self, data: str) -> None:
        if self.broken:
            return
        try:
            self.apply(stream_event(data))
        except Exception:
            self.broken = True

    def apply(self, event: Any) -> None:
        """Apply one event's parsed `data`; raises for one the recorder cannot rebuild."""
        raise NotImplementedError
