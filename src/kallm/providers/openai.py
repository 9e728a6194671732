"""What OpenAI's endpoints share: the key as a bearer token, OPENAI_BASE_URL (which ends in
/v1) plus the endpoint's path, JSON answers, and OpenAI's error shape."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx

from kallm import upstream
from kallm.providers.base import (
    Call,
    EventRecorder,
    KeyParts,
    OddEvent,
    Parsed,
    Upstream,
    counted_usage,
    distinct_indexes,
    is_int,
    json_bytes,
    json_object,
    optional_str,
    valid_counts,
)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> bytes:
    """An error in OpenAI's shape, so SDKs raise their usual exception types."""
    error = {"message": message, "type": kind, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


@dataclass(frozen=True)
class BodyFunctions:
    """An OpenAI endpoint module's functions of the request body (a JSON object, with at
    least a string `model`): check it (raises InvalidRequest), key it, write it for export,
    and count an answer's tokens."""

    parse: Callable[[bytes], dict[str, Any]]
    key_parts: Callable[[dict[str, Any]], KeyParts]
    keyed_request: Callable[[dict[str, Any]], dict[str, Any]]
    usage: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


class OpenAIEndpoint:
    """The parts of `Provider` every OpenAI endpoint has in common; `path` names it, `body`
    holds its module's functions. An OpenAI request is its body: `stream: true` asks for
    an event stream."""

    path: str
    body: ClassVar[BodyFunctions]
    vendor = "openai"

    def parse(self, call: Call) -> Parsed:
        return self._parsed(call.body)

    def parse_keyed(self, request: Any) -> Parsed:
        return self._parsed(json_bytes(request))

    def _parsed(self, body: bytes) -> Parsed:
        request = self.body.parse(body)
        return Parsed(request["model"], request.get("stream") is True, request)

    def key_parts(self, request: Parsed) -> KeyParts:
        return self.body.key_parts(request.body)

    def keyed_request(self, request: Parsed) -> dict[str, Any]:
        return self.body.keyed_request(request.body)

    def usage(self, request: Parsed, answer: dict[str, Any]) -> dict[str, Any]:
        return self.body.usage(request.body, answer)

    @property
    def paths(self) -> tuple[str, ...]:
        return (f"/v1{self.path}",)

    def caches(self, params: Mapping[str, str]) -> bool:
        return True

    def auth(self, api_key: str | None) -> dict[str, str] | None:
        return upstream.bearer(api_key)

    def client_key(self, call: Call) -> str | None:
        # Where the openai SDKs (and Azure's) send the key.
        return call.headers.get("authorization") or call.headers.get("api-key")

    def upstream_request(
        self, client: httpx.AsyncClient, call: Call, target: Upstream, request: Parsed
    ) -> httpx.Request:
        url = f"{target.base_url}{self.path}"
        return upstream.post(client, url, call.headers, self.auth(target.api_key), call.body)

    def parse_answer(self, body: bytes) -> dict[str, Any] | None:
        return json_object(body)

    def error_body(self, status: int, message: str, kind: str) -> bytes:
        return error_body(message, kind)


def whole_completion(
    completion: dict[str, Any],
    kind: str,
    whole_choice: Callable[[Any], bool],
    counts: tuple[str, ...],
) -> bool:
    """A whole completion of `kind` (`chat.completion`, `text_completion`) of the shape kallm
    replays: choices each `whole_choice`, under distinct indexes, a string model and usage
    of token counts. Any other answer (cut short, filtered, with parts of other types) is
    relayed unchanged and never stored."""
    choices = completion.get("choices")
    return (
        completion.get("object") == kind
        and isinstance(choices, list)
        and bool(choices)
        and all(whole_choice(choice) for choice in choices)
        and distinct_indexes([choice["index"] for choice in choices])
        and optional_str(completion.get("model"))
        and valid_counts(completion.get("usage"), counts)
    )


def renewed(value: dict[str, Any], id_prefix: str) -> dict[str, Any]:
    """`value` (a cached completion, or a replayed stream's chunk head) as a new response: a
    fresh id and creation time."""
    return {**value, "id": id_prefix + secrets.token_hex(12), "created": int(time.time())}


@dataclass(frozen=True)
class ChoiceReplays:
    """How a chat or legacy completions module replays a cached answer: as JSON, and as an
    event stream (with a usage chunk when the request asked for one)."""

    json: Callable[[dict[str, Any]], dict[str, Any]]
    stream: Callable[[dict[str, Any], bool], Iterator[bytes]]


class ChoicesEndpoint(OpenAIEndpoint):
    """An endpoint whose answer is a list of choices: chat and legacy completions."""

    replays: ClassVar[ChoiceReplays]

    def replay_json(self, request: Parsed, answer: dict[str, Any]) -> bytes:
        return json_bytes(self.replays.json(answer))

    def replay_stream(self, request: Parsed, answer: dict[str, Any]) -> Iterator[bytes]:
        return self.replays.stream(answer, wants_usage(request.body))


def wants_usage(request: dict[str, Any]) -> bool:
    """Whether a streamed answer should end with a usage chunk."""
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def choices_usage(completion: dict[str, Any], asked: Any, part: str) -> dict[str, Any]:
    """A completion's own prompt and completion counts, or an estimate from what was
    `asked` and each choice's `part` (its message, or its text); see `counted_usage`."""
    choices = completion.get("choices")
    parts = (
        [c.get(part) or "" for c in choices if isinstance(c, dict)]
        if isinstance(choices, list)
        else []
    )
    counts = ["prompt_tokens"], ["completion_tokens"], {"prompt_tokens", "completion_tokens"}
    return counted_usage(completion.get("usage"), *counts, asked, parts)


def read_chunk(
    chunk: Any, head_names: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any] | None, list[tuple[int, dict[str, Any]]]]:
    """One chunk of a chat or completions stream: its head fields (id, model...), its usage
    (or None) and its choices by index. Raises OddEvent for a chunk of other types (an error
    event, a non-object usage or choice, an index that is not an integer)."""
    if not isinstance(chunk, dict) or chunk.get("error") is not None:
        raise OddEvent("an error event, or not an object")
    head = {name: chunk[name] for name in head_names if chunk.get(name) is not None}
    counts = chunk.get("usage")
    if counts is not None and not isinstance(counts, dict):
        raise OddEvent("usage is not an object")
    choices = chunk.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise OddEvent("choices is not a list")
    indexed = []
    for choice in choices or []:
        if not isinstance(choice, dict) or not is_int(index := choice.get("index", 0)):
            raise OddEvent("a choice without an integer index")
        indexed.append((index, choice))
    return head, counts or None, indexed


class ChoiceBuilder(Protocol):
    """One choice of an answer, rebuilt from its stream chunks."""

    def add(self, choice: dict[str, Any]) -> None:
        """Apply one chunk's choice; raises OddEvent for parts of other types."""
        ...

    def build(self, index: int) -> dict[str, Any]: ...


class ChoicesRecorder(EventRecorder):
    """Rebuilds a chat or text completion (`kind`) from the chunks of a stream as they pass
    through, one `builder` a choice; `head_names` are the chunk fields the answer keeps.

    A chunk it cannot read (an error event, a field of another type) spoils the recording,
    and `answer` gives only an answer `cacheable` accepts."""

    def __init__(
        self,
        kind: str,
        head_names: tuple[str, ...],
        builder: Callable[[], ChoiceBuilder],
        cacheable: Callable[[dict[str, Any]], bool],
    ) -> None:
        self._kind = kind
        self._head_names = head_names
        self._builder = builder
        self._cacheable = cacheable
        self._choices: dict[int, ChoiceBuilder] = {}
        self._head: dict[str, Any] = {}
        self._usage: dict[str, Any] | None = None
        self.done = False

    def add(self, data: str) -> None:
        if data == "[DONE]":
            self.done = True
        else:
            super().add(data)

    def apply(self, chunk: Any) -> None:
        head, counts, choices = read_chunk(chunk, self._head_names)
        self._head.update(head)
        if counts:
            self._usage = counts
        for index, choice in choices:
            if index not in self._choices:
                self._choices[index] = self._builder()
            self._choices[index].add(choice)

    def answer(self) -> dict[str, Any] | None:
        """The whole answer, or None unless the stream ended normally with one kallm caches."""
        if not self.done or self.broken or not self._choices:
            return None
        completion: dict[str, Any] = {
            **self._head,
            "object": self._kind,
            "choices": [self._choices[i].build(i) for i in sorted(self._choices)],
        }
        if self._usage is not None:
            completion["usage"] = self._usage
        return completion if self._cacheable(completion) else None
