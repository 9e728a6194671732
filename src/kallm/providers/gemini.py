"""Gemini API wire format (`models/{model}:generateContent` and `:streamGenerateContent`):
parse a request, split it into key parts, record a streamed answer, and replay a cached
answer as JSON or as a server-sent event stream.

Reference: https://ai.google.dev/api/generate-content (GenerateContentRequest and
GenerateContentResponse). The model and the method are in the URL path, not the body. With
`?alt=sse` a stream is `data: {GenerateContentResponse}` events and ends when the connection
does (there is no `[DONE]`); without it the stream is one JSON array of responses.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
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
    distinct_indexes,
    dumps,
    is_int,
    json_bytes,
    json_object,
    json_text,
    optional_str,
    parse_object,
    split_text,
    valid_counts,
)
from kallm.sse import event

STREAM_METHOD = "streamGenerateContent"
METHODS = frozenset({"generateContent", STREAM_METHOD})

# Fields that never change the answer, so they stay out of the cache key. `contents` is
# keyed separately (earlier turns in the context, the final one compared). Everything else,
# including fields this list does not know yet, splits the partition.
NOT_IN_KEY = frozenset({"contents", "labels"})

# A cached answer must be whole: SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII,
# MALFORMED_FUNCTION_CALL, OTHER... are the model withholding or botching one.
CACHEABLE_FINISH = frozenset({"STOP", "MAX_TOKENS"})

# google.rpc.Code names for the HTTP statuses kallm answers with itself.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def model_and_method(target: str) -> tuple[str, str]:
    """`gemini-2.5-flash:generateContent` (or `models/...:...`) as (model, method)."""
    model, _, method = target.rpartition(":")
    model = model.removeprefix("models/")
    if not model or method not in METHODS:
        raise InvalidRequest(f"'{target}' is not a model and a generateContent method.")
    return model, method


def checked_contents(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's turns; raises InvalidRequest unless they are a non-empty list of
    objects with parts (a warmed-in export is checked here too)."""
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest("'contents' must be a non-empty array.", "contents")
    for index, content in enumerate(contents):
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
            raise InvalidRequest(
                f"contents[{index}] must be an object with 'parts'.", f"contents[{index}]"
            )
    return contents


def parse_request(call: Call) -> Parsed:
    """The request: its body, the model and method its path names, and `alt=sse`. How the
    answer is wanted (a stream, as events or as one JSON array) never changes what it says,
    so it stays out of the body and the key."""
    model, method = model_and_method(call.params.get("target", ""))
    request = parse_object(call.body)
    checked_contents(request)
    # The path names the model; a `model` in the body would not be the one answering.
    request["model"] = model
    streamed, sse = method == STREAM_METHOD, call.query.get("alt") == "sse"
    return Parsed(model, streamed and sse, request, json_array=streamed and not sse)


def parse_keyed(request: Any) -> Parsed:
    """An exported request (keyed_request's form, which names its model), to warm."""
    if not isinstance(request, dict) or not isinstance(request.get("model"), str):
        raise InvalidRequest("The request must be an object with a model.", "model")
    checked_contents(request)
    return Parsed(request["model"], False, request)


def _plain_text(content: dict[str, Any]) -> str | None:
    """The text of a user turn made only of text parts, else None."""
    if content.get("role", "user") != "user" or set(content) - {"role", "parts"}:
        return None
    parts = content["parts"]
    if parts and all(
        isinstance(p, dict) and set(p) == {"text"} and isinstance(p["text"], str) for p in parts
    ):
        return "\n".join(part["text"] for part in parts)
    return None


def key_parts(request: dict[str, Any]) -> KeyParts:
    contents = checked_contents(request)
    context = {name: value for name, value in request.items() if name not in NOT_IN_KEY}
    context["contents"] = contents[:-1]
    return KeyParts(
        model=request["model"], context=context, final=contents[-1], text=_plain_text(contents[-1])
    )


def keyed_request(request: dict[str, Any]) -> dict[str, Any]:
    """The request without the fields that never change the answer (contents stay)."""
    return {k: v for k, v in request.items() if k not in NOT_IN_KEY or k == "contents"}


# The counts in usageMetadata (`usage` reads the first three); the details lists are kept
# as sent.
USAGE_COUNTS = (
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "totalTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
)


def _whole_content(content: Any) -> bool:
    """A candidate's content as replays and the recorder read it: parts are objects, and a
    text part's text is text."""
    if content is None:
        return True
    if not isinstance(content, dict) or not optional_str(content.get("role")):
        return False
    parts = content.get("parts")
    return parts is None or (
        isinstance(parts, list)
        and all(isinstance(p, dict) and optional_str(p.get("text")) for p in parts)
    )


def _whole_candidate(candidate: Any) -> bool:
    if not isinstance(candidate, dict):
        return False
    finish = candidate.get("finishReason")
    return (
        isinstance(finish, str)
        and finish in CACHEABLE_FINISH
        and is_int(candidate.get("index", 0))
        and _whole_content(candidate.get("content"))
    )


def is_cacheable(response: dict[str, Any]) -> bool:
    """A whole answer of the shape kallm replays: a blocked prompt, an error, a withheld
    candidate or parts of other types are relayed unchanged and never stored."""
    candidates = response.get("candidates")
    feedback = response.get("promptFeedback")
    blocked = isinstance(feedback, dict) and feedback.get("blockReason") is not None
    return (
        not blocked
        and "error" not in response
        and isinstance(candidates, list)
        and bool(candidates)
        and all(_whole_candidate(c) for c in candidates)
        # Gemini leaves out an index of 0, as proto3 JSON leaves out every zero.
        and distinct_indexes([c.get("index", 0) for c in candidates])
        and optional_str(response.get("modelVersion"))
        and valid_counts(response.get("usageMetadata"), USAGE_COUNTS)
    )


def error_body(status: int, message: str) -> bytes:
    """An error in Google's shape, so the SDK raises ClientError or ServerError with it."""
    name = STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return dumps({"error": {"code": status, "message": message, "status": name}})


def _fresh_id() -> str:
    return secrets.token_urlsafe(16)


def replay_json(response: dict[str, Any]) -> dict[str, Any]:
    """The cached response with a fresh responseId: it is a new response."""
    return {**response, "responseId": _fresh_id()}


def _part_pieces(part: dict[str, Any]) -> list[dict[str, Any]]:
    """A text part split so it streams; any other part (a function call) goes whole."""
    text = part.get("text")
    if not isinstance(text, str) or not text:
        return [part]
    return [{**part, "text": piece} for piece in split_text(text)]


def _candidate_chunks(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    """One cached candidate as the candidate objects of successive chunks: a part each, the
    last with the finish reason and the candidate's other fields (safety ratings...)."""
    content = candidate.get("content")
    if not isinstance(content, dict):
        content = None
    parts = content.get("parts") if content is not None else None
    index = candidate.get("index", 0)
    chunks: list[dict[str, Any]] = [
        {"content": {**(content or {}), "parts": [piece]}, "index": index}
        for part in (parts or [])
        for piece in _part_pieces(part)
    ]
    rest = {k: v for k, v in candidate.items() if k != "content"}
    if not chunks:
        # A candidate without content (MAX_TOKENS before any text) still ends in a chunk.
        return [{**rest, **({"content": content} if content is not None else {})}]
    chunks[-1].update(rest)
    return chunks


def replay_chunks(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The cached response as the GenerateContentResponse chunks Gemini would stream: the
    candidates advance together, the last chunk carries usageMetadata."""
    per_candidate = [_candidate_chunks(c) for c in response.get("candidates") or []]
    head = {k: response[k] for k in ("modelVersion",) if k in response}
    head["responseId"] = _fresh_id()
    steps = max((len(chunks) for chunks in per_candidate), default=0)
    out = [
        {"candidates": [chunks[step] for chunks in per_candidate if step < len(chunks)], **head}
        for step in range(steps)
    ]
    # Everything else (usageMetadata, promptFeedback...) describes the whole answer.
    tail = {k: v for k, v in response.items() if k not in {"candidates", *head}}
    if out:
        out[-1].update(tail)
    return out


def replay_stream(response: dict[str, Any]) -> Iterator[bytes]:
    for chunk in replay_chunks(response):
        yield event(json_text(chunk))


def _mergeable(part: dict[str, Any]) -> bool:
    """Text deltas join into one part; parts with more than text (signatures, calls) don't."""
    return isinstance(part.get("text"), str) and set(part) <= {"text", "thought"}


@dataclass
class _CandidateBuilder:
    content: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def add(self, candidate: dict[str, Any]) -> None:
        """Apply one chunk's candidate; raises OddEvent for parts of other types."""
        if not optional_str(candidate.get("finishReason")):
            raise OddEvent("finishReason is not a string")
        for name, value in candidate.items():
            if name == "content" and isinstance(value, dict):
                self._add_content(value)
            elif name != "index":
                self.fields[name] = value

    def _add_content(self, delta: dict[str, Any]) -> None:
        if self.content is None:
            self.content = {k: v for k, v in delta.items() if k != "parts"}
            self.content["parts"] = []
        else:
            self.content.update({k: v for k, v in delta.items() if k != "parts"})
        new = delta.get("parts")
        if new is not None and not isinstance(new, list):
            raise OddEvent("parts is not a list")
        parts: list[dict[str, Any]] = self.content["parts"]
        for part in new or []:
            if not isinstance(part, dict) or not optional_str(part.get("text")):
                raise OddEvent("a part that is not an object with text")
            last = parts[-1] if parts else None
            if (
                last is not None
                and _mergeable(last)
                and _mergeable(part)
                and last.get("thought") == part.get("thought")
            ):
                parts[-1] = {**last, "text": last["text"] + part["text"]}
            else:
                parts.append(dict(part))

    @property
    def finished(self) -> bool:
        return self.fields.get("finishReason") is not None

    def build(self, index: int) -> dict[str, Any]:
        candidate: dict[str, Any] = {}
        if self.content is not None:
            candidate["content"] = self.content
        return {**candidate, **self.fields, "index": index}


class StreamRecorder(EventRecorder):
    """Rebuilds one GenerateContentResponse from the `alt=sse` chunks as they pass through.

    Gemini's stream has no end marker: the answer is whole once every candidate has a
    finishReason (it comes on the last chunk, with the final usageMetadata). It never
    raises: a chunk it cannot read spoils the recording, never the relay."""

    def __init__(self) -> None:
        self._candidates: dict[int, _CandidateBuilder] = {}
        self._head: dict[str, Any] = {}

    def apply(self, chunk: Any) -> None:
        if not isinstance(chunk, dict) or "error" in chunk:
            # An error mid-stream: whatever came before is not a whole answer.
            raise OddEvent("an error, or not an object")
        for name, value in chunk.items():
            if name != "candidates":
                self._head[name] = value
        candidates = chunk.get("candidates")
        if candidates is not None and not isinstance(candidates, list):
            raise OddEvent("candidates is not a list")
        for candidate in candidates or []:
            if not isinstance(candidate, dict) or not is_int(index := candidate.get("index", 0)):
                raise OddEvent("a candidate without an integer index")
            self._candidates.setdefault(index, _CandidateBuilder()).add(candidate)

    def answer(self) -> dict[str, Any] | None:
        """The whole answer, or None until every candidate has finished (and None for one
        kallm does not cache)."""
        builders = self._candidates
        if self.broken or not builders or not all(b.finished for b in builders.values()):
            return None
        response = {"candidates": [builders[i].build(i) for i in sorted(builders)], **self._head}
        return response if is_cacheable(response) else None


def usage(request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """usageMetadata as prompt and completion tokens (thinking is billed as output); an
    estimate without it, or with counts that are not counts."""
    candidates = response.get("candidates")
    answers = (
        [c.get("content") or {} for c in candidates if isinstance(c, dict)]
        if isinstance(candidates, list)
        else []
    )
    return counted_usage(
        response.get("usageMetadata"),
        ["promptTokenCount"],
        ["candidatesTokenCount", "thoughtsTokenCount"],
        {"promptTokenCount"},
        request.get("contents", []),
        answers,
    )


def client_key(call: Call) -> str | None:
    """The client's key: Gemini reads x-goog-api-key or ?key=; OAuth callers send a bearer."""
    return (
        call.headers.get("x-goog-api-key")
        or call.query.get("key")
        or call.headers.get("authorization")
    )


class Gemini:
    """`POST /v1beta/models/{model}:{method}` (and /v1/), upstream at GEMINI_BASE_URL."""

    route = "gemini"
    paths = ("/v1beta/models/{target}", "/v1/models/{target}")
    vendor = "gemini"
    parse_keyed = staticmethod(parse_keyed)
    is_cacheable = staticmethod(is_cacheable)
    recorder = StreamRecorder

    def caches(self, params: Mapping[str, str]) -> bool:
        # Only generating content is cached; countTokens, embedContent and the rest pass.
        return params.get("target", "").rpartition(":")[2] in METHODS

    def parse(self, call: Call) -> Parsed:
        return parse_request(call)

    def key_parts(self, request: Parsed) -> KeyParts:
        return key_parts(request.body)

    def keyed_request(self, request: Parsed) -> dict[str, Any]:
        return keyed_request(request.body)

    def usage(self, request: Parsed, answer: dict[str, Any]) -> dict[str, Any]:
        return usage(request.body, answer)

    def auth(self, api_key: str | None) -> dict[str, str] | None:
        return None if api_key is None else {"x-goog-api-key": api_key}

    def client_key(self, call: Call) -> str | None:
        return client_key(call)

    def upstream_request(
        self, client: httpx.AsyncClient, call: Call, target: Upstream, request: Parsed
    ) -> httpx.Request:
        url = upstream.target_url(target.base_url, call.path)
        # alt=sse stays; Starlette's QueryParams prints every pair as sent.
        query = upstream.query(str(call.query), own_key=target.api_key is not None)
        auth = self.auth(target.api_key)
        return upstream.post(client, url, call.headers, auth, call.body, query)

    def parse_answer(self, body: bytes) -> dict[str, Any] | None:
        # A stream without alt=sse is a JSON array: not an object, so it is only relayed.
        return json_object(body)

    def replay_json(self, request: Parsed, answer: dict[str, Any]) -> bytes:
        if request.json_array:
            return json_bytes(replay_chunks(answer))
        return json_bytes(replay_json(answer))

    def replay_stream(self, request: Parsed, answer: dict[str, Any]) -> Iterator[bytes]:
        return replay_stream(answer)

    def error_body(self, status: int, message: str, kind: str) -> bytes:
        return error_body(status, message)
