"""kallm against a hostile upstream: every malformed, broken, slow or huge answer a provider
could send, from a stand-in (tests/integration/hostile_upstream.py) that sends exactly the
bytes each test scripts.

What must hold, per README ("Cache headers and replays", "Errors"):
- an odd 200 answer kallm does not understand reaches the client byte for byte and is never
  cached (the same request again is a MISS and reaches the upstream again);
- a stream the upstream finished reaches the client whole; one it broke off breaks the
  client's stream too; neither is cached unless it is a whole, valid answer;
- an upstream reset is a 502 and a hang past KALLM_UPSTREAM_TIMEOUT a 504, in the
  provider's own error shape; upstream errors pass through with status and body unchanged;
- kallm never logs a traceback, and a huge or slow answer in flight does not stall others.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile_upstream import iter_body
from processes import SERVER_KEY, Kallm, Process, Simulator, clean_env, free_port, start_kallm

HERE = Path(__file__).parent
# One client for every call the tests make (a fresh one per call costs ~20 ms of TLS setup).
HTTP = httpx.Client(timeout=30)
ANTHROPIC_KEY = "sk-ant-kallm-server-key-0123456789"
GEMINI_KEY = "gemini-kallm-server-key-0123456789"


# --- the stand-in and the kallm processes ------------------------------------------------


class HostileUpstream:
    def __init__(self, process: Process, port: int) -> None:
        self.process = process
        self.root = f"http://127.0.0.1:{port}"

    def script(self, name: str, answer: dict[str, Any]) -> None:
        response = HTTP.post(
            f"{self.root}/_hostile/script", json={"name": name, "answer": answer}, timeout=10
        )
        response.raise_for_status()

    def _counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = HTTP.get(
            f"{self.root}/_hostile/calls", timeout=10
        ).json()
        return counts

    def calls(self, name: str) -> int:
        return self._counts()["calls"].get(name, 0)

    def active(self, name: str) -> int:
        return self._counts()["active"].get(name, 0)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileUpstream]:
    port = free_port()
    args = [sys.executable, str(HERE / "hostile_upstream.py"), "--port", str(port)]
    log_path = tmp_path_factory.mktemp("logs") / "hostile.log"
    process = Process("hostile upstream", args, clean_env(), log_path)
    upstream = HostileUpstream(process, port)
    process.wait_until(f"{upstream.root}/_hostile/health")
    yield upstream
    process.stop()
    HTTP.close()


def _start(
    tmp_path_factory: pytest.TempPathFactory,
    simulator: Simulator,
    hostile: HostileUpstream,
    name: str,
    timeout: str,
) -> Kallm:
    return start_kallm(
        tmp_path_factory,
        simulator,
        name,
        OPENAI_BASE_URL=f"{hostile.root}/v1",
        ANTHROPIC_BASE_URL=hostile.root,
        GEMINI_BASE_URL=hostile.root,
        OPENAI_API_KEY=SERVER_KEY,
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        GEMINI_API_KEY=GEMINI_KEY,
        KALLM_UPSTREAM_TIMEOUT=timeout,
        KALLM_INSECURE_OPEN_RELAY="true",
        KALLM_LOG_JSON="true",
    )


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, hostile: HostileUpstream
) -> Iterator[Kallm]:
    """kallm in front of the hostile stand-in, with a generous upstream timeout."""
    kallm = _start(tmp_path_factory, simulator, hostile, "kallm-hostile", "60")
    yield kallm
    kallm.process.stop()


@pytest.fixture(scope="module")
def impatient(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, hostile: HostileUpstream
) -> Iterator[Kallm]:
    """The same, giving up on the upstream after 2 seconds (KALLM_UPSTREAM_TIMEOUT=2)."""
    kallm = _start(tmp_path_factory, simulator, hostile, "kallm-hostile-impatient", "2")
    yield kallm
    kallm.process.stop()


@pytest.fixture
def no_traceback(proxy: Kallm, impatient: Kallm) -> Iterator[None]:
    """Whatever the upstream does, kallm logs no traceback (checked after each test)."""
    offsets = [(kallm, kallm.log_size()) for kallm in (proxy, impatient)]
    yield
    for kallm, offset in offsets:
        with kallm.process.log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        assert "Traceback" not in text, f"{kallm.process.name} logged a traceback:\n{text}"


# --- the wire formats: requests, valid answers, error shapes -----------------------------


def _sse(payload: Any, name: str | None = None) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return (f"event: {name}\n" if name else "") + f"data: {data}\n\n"


@dataclass(frozen=True)
class Api:
    """One cached route: how to call it, a valid answer to script, and its error shape."""

    route: str
    shape: str  # openai | anthropic | gemini
    usage_field: tuple[str, str]  # where a token count sits in a non-streamed answer

    def path(self, model: str, stream: bool) -> str:
        if self.route == "gemini":
            method = "streamGenerateContent?alt=sse" if stream else "generateContent"
            return f"/v1beta/models/{model}:{method}"
        return {
            "chat": "/v1/chat/completions",
            "completions": "/v1/completions",
            "responses": "/v1/responses",
            "messages": "/v1/messages",
        }[self.route]

    def body(self, model: str, text: str, stream: bool) -> dict[str, Any]:
        if self.route == "gemini":
            return {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        body: dict[str, Any] = {"model": model}
        if self.route == "chat":
            body["messages"] = [{"role": "user", "content": text}]
        elif self.route == "completions":
            body["prompt"] = text
        elif self.route == "responses":
            body["input"] = text
        else:
            body.update(max_tokens=64, messages=[{"role": "user", "content": text}])
        if stream:
            body["stream"] = True
        return body

    def answer(self, model: str) -> dict[str, Any]:
        """A small, whole, valid non-streamed answer kallm caches."""
        text = "Hello there."
        if self.route == "chat":
            message = {"role": "assistant", "content": text}
            return {
                "id": "chatcmpl-hostile",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        if self.route == "completions":
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            return {
                "id": "cmpl-hostile",
                "object": "text_completion",
                "created": 1,
                "model": model,
                "choices": [choice],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        if self.route == "responses":
            part = {"type": "output_text", "text": text, "annotations": []}
            item = {
                "type": "message",
                "id": "msg_hostile",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
            return {
                "id": f"resp_{uuid.uuid4().hex}",
                "object": "response",
                "created_at": 1,
                "status": "completed",
                "error": None,
                "incomplete_details": None,
                "model": model,
                "output": [item],
                "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
            }
        if self.route == "messages":
            return {
                "id": "msg_hostile",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 3, "output_tokens": 2},
            }
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": text}], "role": "model"},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 3,
                "candidatesTokenCount": 2,
                "totalTokenCount": 5,
            },
            "modelVersion": model,
            "responseId": "hostile-1",
        }

    def events(self, model: str) -> list[str]:
        """A small, whole, valid stream kallm caches, one SSE event per item."""
        if self.route == "chat":
            base = {"id": "chatcmpl-h", "object": "chat.completion.chunk", "created": 1}
            base["model"] = model
            deltas = [
                ({"role": "assistant", "content": ""}, None),
                ({"content": "Hello "}, None),
                ({"content": "there."}, None),
                ({}, "stop"),
            ]
            chunks = [
                {**base, "choices": [{"index": 0, "delta": d, "finish_reason": f}]}
                for d, f in deltas
            ]
            return [*map(_sse, chunks), _sse("[DONE]")]
        if self.route == "completions":
            base = {"id": "cmpl-h", "object": "text_completion", "created": 1, "model": model}
            pieces = [("Hello ", None), ("there.", None), ("", "stop")]
            chunks = [
                {**base, "choices": [{"index": 0, "text": t, "finish_reason": f, "logprobs": None}]}
                for t, f in pieces
            ]
            return [*map(_sse, chunks), _sse("[DONE]")]
        if self.route == "responses":
            done = self.answer(model)
            item = done["output"][0]
            running = {**done, "status": "in_progress", "output": [], "usage": None}
            part = item["content"][0]
            events: list[dict[str, Any]] = [
                {"type": "response.created", "response": running},
                {"type": "response.in_progress", "response": running},
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": {**item, "status": "in_progress", "content": []},
                },
                {
                    "type": "response.content_part.added",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "part": {**part, "text": ""},
                },
                {
                    "type": "response.output_text.delta",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "delta": part["text"],
                },
                {
                    "type": "response.output_text.done",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "text": part["text"],
                },
                {
                    "type": "response.content_part.done",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "part": part,
                },
                {"type": "response.output_item.done", "output_index": 0, "item": item},
                {"type": "response.completed", "response": done},
            ]
            return [_sse(e | {"sequence_number": n}, e["type"]) for n, e in enumerate(events)]
        if self.route == "messages":
            start = {**self.answer(model), "content": [], "stop_reason": None}
            start["usage"] = {"input_tokens": 3, "output_tokens": 1}
            events = [
                {"type": "message_start", "message": start},
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Hello "},
                },
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "there."},
                },
                {"type": "content_block_stop", "index": 0},
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 2},
                },
                {"type": "message_stop"},
            ]
            return [_sse(e, e["type"]) for e in events]
        first = self.answer(model)
        first["candidates"][0]["content"]["parts"][0]["text"] = "Hello "
        del first["candidates"][0]["finishReason"]
        first["usageMetadata"] = {"promptTokenCount": 3}
        last = self.answer(model)
        last["candidates"][0]["content"]["parts"][0]["text"] = "there."
        return [_sse(first), _sse(last)]

    def check_error(self, response: httpx.Response) -> dict[str, Any]:
        """kallm's own error, in this provider's shape; its error object."""
        assert response.headers.get("content-type", "").startswith("application/json"), (
            response.headers,
            response.text[:500],
        )
        body = json.loads(response.text)
        assert isinstance(body, dict), response.text
        error = body.get("error")
        assert isinstance(error, dict), response.text
        assert isinstance(error.get("message"), str) and error["message"], response.text
        if self.shape == "anthropic":
            assert body.get("type") == "error", response.text
            assert isinstance(error.get("type"), str), response.text
        elif self.shape == "gemini":
            assert error.get("code") == response.status_code, response.text
            assert isinstance(error.get("status"), str) and error["status"], response.text
        else:
            assert isinstance(error.get("type"), str), response.text
        return error


APIS = {
    "chat": Api("chat", "openai", ("usage", "prompt_tokens")),
    "completions": Api("completions", "openai", ("usage", "prompt_tokens")),
    "responses": Api("responses", "openai", ("usage", "input_tokens")),
    "messages": Api("messages", "anthropic", ("usage", "input_tokens")),
    "gemini": Api("gemini", "gemini", ("usageMetadata", "promptTokenCount")),
}


# --- calling kallm --------------------------------------------------------------------------


@dataclass
class Call:
    """One scenario's identity: its own model name (which picks its script) and namespace."""

    api: Api
    stream: bool
    model: str = field(default_factory=lambda: f"h-{uuid.uuid4().hex[:12]}")
    namespace: str = field(default_factory=lambda: f"hostile-{uuid.uuid4().hex[:12]}")
    text: str = "What does the hostile upstream say?"

    def send(self, kallm: Kallm, timeout: float = 30) -> httpx.Response:
        return HTTP.post(
            kallm.root + self.api.path(self.model, self.stream),
            json=self.api.body(self.model, self.text, self.stream),
            headers={"x-kallm-namespace": self.namespace},
            timeout=timeout,
        )


def _raw(value: Any, **raw: str) -> str:
    """JSON text of `value` where each string "__NAME__" is replaced by raw[NAME] verbatim
    (for numbers Python cannot write: 1e999, NaN, 5,000 digits)."""
    text = json.dumps(value)
    for name, literal in raw.items():
        text = text.replace(json.dumps(f"__{name}__"), literal)
    return text


def _with(answer: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(answer)
    target: Any = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return changed


def _assert_stats_ok(kallm: Kallm) -> None:
    """/stats still answers with strict JSON (no NaN or Infinity from a hostile usage)."""
    response = HTTP.get(f"{kallm.root}/stats", timeout=10)
    assert response.status_code == 200, response.text

    def refuse(constant: str) -> Any:
        raise AssertionError(f"/stats holds {constant}: {response.text}")

    json.loads(response.text, parse_constant=refuse)


def _valid_answer(call: Call) -> dict[str, Any]:
    if call.stream:
        events = call.api.events(call.model)
        return {"headers": [["content-type", "text/event-stream"]], "parts": events}
    return {"parts": [json.dumps(call.api.answer(call.model))]}


def _assert_not_cached(kallm: Kallm, hostile: HostileUpstream, call: Call, first: int) -> None:
    """Nothing of the first answer was cached: once the upstream answers properly, the same
    request again is a MISS that reaches it and gets its new answer."""
    fixed = _valid_answer(call)
    hostile.script(call.model, fixed)
    again = call.send(kallm)
    assert again.headers.get("x-kallm-cache") != "HIT", (
        "the broken answer was cached and replayed",
        again.status_code,
        again.text[:500],
    )
    assert hostile.calls(call.model) == first + 1, "the repeat did not reach the upstream"
    assert again.status_code == 200, (again.status_code, again.text[:500])
    assert again.content == b"".join(iter_body(fixed["parts"]))
    assert again.headers.get("x-kallm-cache") == "MISS"


# --- odd 200 answers: relayed byte for byte, never cached ----------------------------------


def _odd_json_cases() -> list[tuple[str, str, Callable[[Api, str], str]]]:
    """(route, case, body builder): 200 answers with content-type application/json that are
    not whole, valid answers of the route's format."""

    def usage_case(literal: str) -> Callable[[Api, str], str]:
        def build(api: Api, model: str) -> str:
            return _raw(_with(api.answer(model), api.usage_field, "__N__"), N=literal)

        return build

    def shape(path: tuple[Any, ...], value: Any) -> Callable[[Api, str], str]:
        return lambda api, model: json.dumps(_with(api.answer(model), path, value))

    generic: dict[str, Callable[[Api, str], str]] = {
        "json-array": lambda api, model: json.dumps([api.answer(model)]),
        "not-json": lambda api, model: json.dumps(api.answer(model))[:-7] + " not json",
        "empty-body": lambda api, model: "",
        "json-string": lambda api, model: json.dumps("a string, not an object"),
        "json-null": lambda api, model: "null",
        "trailing-garbage": lambda api, model: json.dumps(api.answer(model)) + "}{",
        "tokens-string": usage_case('"abc"'),
        "tokens-negative": usage_case("-5"),
        "tokens-float": usage_case("2.5"),
        "tokens-10e400": usage_case("1" + "0" * 400),
        "tokens-5000-digits": usage_case("9" * 5000),
        "tokens-1e999": usage_case("1e999"),
        "tokens-nan": usage_case("NaN"),
        "tokens-infinity": usage_case("-Infinity"),
        "usage-list": lambda api, model: json.dumps(
            _with(api.answer(model), api.usage_field[:1], [1, 2])
        ),
        "nested-50000-deep": lambda api, model: (
            json.dumps(api.answer(model))[:-1] + ', "x": ' + "[" * 50_000 + "]" * 50_000 + "}"
        ),
        "invalid-utf8": lambda api, model: json.dumps(api.answer(model)).replace(
            "Hello", "Hel\udcffo"
        ),
    }
    specific: dict[str, dict[str, Callable[[Api, str], str]]] = {
        "chat": {
            "choices-not-objects": shape(("choices",), [1, "x", None]),
            "choices-object": shape(("choices",), {"0": {}}),
            "choices-empty": shape(("choices",), []),
            "finish-reason-list": shape(("choices", 0, "finish_reason"), ["stop"]),
            "finish-reason-missing": shape(("choices", 0, "finish_reason"), None),
            "message-string": shape(("choices", 0, "message"), "Hello there."),
            "message-list": shape(("choices", 0, "message"), [{"content": "x"}]),
            "content-number": shape(("choices", 0, "message", "content"), 5),
            "content-object": shape(("choices", 0, "message", "content"), {"text": "x"}),
            "tool-calls-string": shape(("choices", 0, "message", "tool_calls"), "x"),
            "tool-calls-not-objects": shape(("choices", 0, "message", "tool_calls"), [1]),
            "index-string": shape(("choices", 0, "index"), "0"),
            "index-bool": shape(("choices", 0, "index"), True),
            "index-mixed": lambda api, model: json.dumps(
                _with(
                    api.answer(model),
                    ("choices",),
                    [
                        api.answer(model)["choices"][0],
                        {**api.answer(model)["choices"][0], "index": "1"},
                    ],
                )
            ),
            "object-missing": shape(("object",), None),
            "model-number": shape(("model",), 42),
        },
        "completions": {
            "choices-not-objects": shape(("choices",), [1, "x", None]),
            "finish-reason-list": shape(("choices", 0, "finish_reason"), ["stop"]),
            "text-number": shape(("choices", 0, "text"), 5),
            "text-list": shape(("choices", 0, "text"), ["Hello"]),
            "index-string": shape(("choices", 0, "index"), "0"),
            "logprobs-string": shape(("choices", 0, "logprobs"), "x"),
        },
        "responses": {
            "output-not-objects": shape(("output",), [1, "x", None]),
            "output-string": shape(("output",), "Hello there."),
            "output-empty": shape(("output",), []),
            "status-list": shape(("status",), ["completed"]),
            "item-content-string": shape(("output", 0, "content"), "Hello there."),
            "item-content-not-objects": shape(("output", 0, "content"), [1, None]),
            "part-text-number": shape(("output", 0, "content", 0, "text"), 5),
            "item-status-list": shape(("output", 0, "status"), ["completed"]),
            "id-number": shape(("id",), 7),
        },
        "messages": {
            "content-string": shape(("content",), "Hello there."),
            "content-not-objects": shape(("content",), [1, "x", None]),
            "block-text-number": shape(("content", 0, "text"), 5),
            "block-type-list": shape(("content", 0, "type"), ["text"]),
            "stop-reason-list": shape(("stop_reason",), ["end_turn"]),
            "type-list": shape(("type",), ["message"]),
            "role-number": shape(("role",), 1),
        },
        "gemini": {
            "candidates-not-objects": shape(("candidates",), [1, "x", None]),
            "candidates-string": shape(("candidates",), "Hello there."),
            "finish-reason-list": shape(("candidates", 0, "finishReason"), ["STOP"]),
            "content-string": shape(("candidates", 0, "content"), "Hello there."),
            "parts-not-objects": shape(("candidates", 0, "content", "parts"), [1, None]),
            "parts-string": shape(("candidates", 0, "content", "parts"), "Hello"),
            "part-text-number": shape(("candidates", 0, "content", "parts", 0, "text"), 5),
            "usage-metadata-string": shape(("usageMetadata",), "lots"),
        },
    }
    cases = []
    for route in APIS:
        for name, build in {**generic, **specific[route]}.items():
            cases.append((route, name, build))
    return cases


ODD_JSON = _odd_json_cases()


@pytest.mark.parametrize(
    ("route", "case", "build"), ODD_JSON, ids=[f"{r}-{c}" for r, c, _ in ODD_JSON]
)
def test_odd_200_answer_is_relayed_unchanged_and_not_cached(
    proxy: Kallm,
    hostile: HostileUpstream,
    no_traceback: None,
    route: str,
    case: str,
    build: Callable[[Api, str], str],
) -> None:
    call = Call(APIS[route], stream=False)
    text = build(call.api, call.model)
    # Lone surrogates stand for bytes that are not UTF-8 (see "invalid-utf8").
    body = text.encode("utf-8", errors="surrogateescape")
    hostile.script(call.model, {"parts": [{"b64": _b64(body)}]})

    first = call.send(proxy)

    assert first.status_code == 200, (first.status_code, first.text[:500])
    assert first.content == body, "the client did not get the upstream's body unchanged"
    assert first.headers.get("x-kallm-cache") == "MISS"
    assert hostile.calls(call.model) == 1
    _assert_not_cached(proxy, hostile, call, 1)
    _assert_stats_ok(proxy)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_valid_answers_through_the_stand_in_are_cached(
    proxy: Kallm, hostile: HostileUpstream, no_traceback: None
) -> None:
    """The harness itself: a whole, valid answer from the stand-in is cached by every route
    (so a MISS after a hostile answer means kallm refused it, not that nothing caches)."""
    problems = []
    for api in APIS.values():
        for stream in (False, True):
            call = Call(api, stream)
            answer = _valid_answer(call)
            hostile.script(call.model, answer)
            first = call.send(proxy)
            assert first.status_code == 200, (api.route, stream, first.text[:500])
            assert first.content == b"".join(iter_body(answer["parts"]))
            second = call.send(proxy)
            if second.headers.get("x-kallm-cache") != "HIT" or hostile.calls(call.model) != 1:
                problems.append((api.route, stream, second.headers.get("x-kallm-cache")))
    assert not problems, f"valid answers not cached: {problems}"


# --- odd streams: relayed whole, never cached ------------------------------------------------


def _odd_stream_cases() -> list[tuple[str, str, Callable[[Api, str], list[str]]]]:
    """(route, case, events builder): streams the upstream finishes cleanly (the connection
    ends normally) but that are not whole, valid answers."""

    def drop(predicate: Callable[[str], bool]) -> Callable[[Api, str], list[str]]:
        return lambda api, model: [e for e in api.events(model) if not predicate(e)]

    def insert(event: str, at: int = 1) -> Callable[[Api, str], list[str]]:
        def build(api: Api, model: str) -> list[str]:
            events = api.events(model)
            return [*events[:at], event, *events[at:]]

        return build

    def edit(old: str, new: str) -> Callable[[Api, str], list[str]]:
        def build(api: Api, model: str) -> list[str]:
            events = api.events(model)
            changed = [e.replace(old, new) for e in events]
            assert changed != events, f"{old!r} is not in the stream"
            return changed

        return build

    generic: dict[str, Callable[[Api, str], list[str]]] = {
        "data-not-json": insert("data: {not json\n\n"),
        "data-array": insert("data: [1, 2, 3]\n\n"),
        "data-string": insert('data: "x"\n\n'),
        "data-nested-50000-deep": insert("data: " + "[" * 50_000 + "]" * 50_000 + "\n\n"),
        "data-5000-digits": insert('data: {"n": ' + "9" * 5000 + "}\n\n"),
        "data-1e999": insert('data: {"n": 1e999, "m": NaN}\n\n'),
        # Bytes that are not UTF-8 inside the answer's text: a replay could only differ.
        "text-invalid-utf8": edit("Hello", "Hel\udcff\udcfelo"),
        "cut-after-first-event": lambda api, model: api.events(model)[:1],
        "only-done": lambda api, model: ["data: [DONE]\n\n"],
        "comments-only": lambda api, model: [": ping\n\n"] * 3,
        "empty-stream": lambda api, model: [],
    }
    specific: dict[str, dict[str, Callable[[Api, str], list[str]]]] = {
        "chat": {
            "no-done": drop(lambda e: "[DONE]" in e),
            "no-finish": drop(lambda e: '"stop"' in e),
            "finish-reason-list": edit('"finish_reason": "stop"', '"finish_reason": ["stop"]'),
            "index-mixed": edit(
                '"index": 0, "delta": {"content": "there."}',
                '"index": "0", "delta": {"content": "there."}',
            ),
            "choices-not-objects": insert(
                'data: {"object": "chat.completion.chunk", "choices": [1, null, "x"]}\n\n'
            ),
            "delta-string": edit('"delta": {"content": "Hello "}', '"delta": "Hello "'),
            "usage-1e999": insert(
                'data: {"object": "chat.completion.chunk", "choices": [], '
                '"usage": {"prompt_tokens": 1e999, "completion_tokens": -3}}\n\n',
                at=4,
            ),
        },
        "completions": {
            "no-done": drop(lambda e: "[DONE]" in e),
            "finish-reason-list": edit('"finish_reason": "stop"', '"finish_reason": ["stop"]'),
            "index-mixed": edit(
                '"text": "there.", "finish_reason": null',
                '"text": "there.", "finish_reason": null, "index": "0"',
            ),
            "text-number": edit('"text": "there."', '"text": 5'),
        },
        "responses": {
            "no-completed": drop(lambda e: "response.completed" in e),
            "sequence-backwards": edit('"sequence_number": 4', '"sequence_number": 1'),
            "sequence-string": edit('"sequence_number": 4', '"sequence_number": "4"'),
            "completed-output-string": lambda api, model: [
                *api.events(model)[:-1],
                _sse(
                    {
                        "type": "response.completed",
                        "response": {**api.answer(model), "output": "Hello there."},
                        "sequence_number": 8,
                    },
                    "response.completed",
                ),
            ],
        },
        "messages": {
            "no-message-stop": drop(lambda e: "message_stop" in e),
            "index-mixed": edit(
                '"index": 0, "delta": {"type": "text_delta", "text": "there."}',
                '"index": "0", "delta": {"type": "text_delta", "text": "there."}',
            ),
            "delta-text-number": edit('"text": "there."', '"text": 5'),
            "stop-reason-list": edit('"stop_reason": "end_turn"', '"stop_reason": ["end_turn"]'),
        },
        "gemini": {
            "no-finish": drop(lambda e: '"STOP"' in e),
            "finish-reason-list": edit('"finishReason": "STOP"', '"finishReason": ["STOP"]'),
            "candidates-not-objects": insert('data: {"candidates": [1, null, "x"]}\n\n'),
            "parts-string": edit('"parts": [{"text": "there."}]', '"parts": "there."'),
        },
    }
    cases = []
    for route in APIS:
        for name, build in {**generic, **specific[route]}.items():
            cases.append((route, name, build))
    return cases


ODD_STREAMS = _odd_stream_cases()


@pytest.mark.parametrize(
    ("route", "case", "build"), ODD_STREAMS, ids=[f"{r}-{c}" for r, c, _ in ODD_STREAMS]
)
def test_odd_finished_stream_is_relayed_whole_and_not_cached(
    proxy: Kallm,
    hostile: HostileUpstream,
    no_traceback: None,
    route: str,
    case: str,
    build: Callable[[Api, str], list[str]],
) -> None:
    call = Call(APIS[route], stream=True)
    events = build(call.api, call.model)
    body = "".join(events).encode("utf-8", errors="surrogateescape")
    answer = {"headers": [["content-type", "text/event-stream"]], "parts": [{"b64": _b64(body)}]}
    hostile.script(call.model, answer)

    first = call.send(proxy)

    assert first.status_code == 200, (first.status_code, first.text[:500])
    assert first.content == body, "the client did not get the upstream's stream whole"
    assert first.headers.get("x-kallm-cache") == "MISS"
    _assert_not_cached(proxy, hostile, call, 1)
    _assert_stats_ok(proxy)


# --- compressed answers kallm did not ask for -------------------------------------------


@pytest.mark.parametrize("route", list(APIS))
def test_gzip_answer_though_identity_was_asked_is_read_and_cached(
    proxy: Kallm, hostile: HostileUpstream, no_traceback: None, route: str
) -> None:
    """kallm asks for `accept-encoding: identity`; an upstream that compresses anyway sends
    a valid answer all the same: the client gets it (decoded, or as sent with its
    Content-Encoding) and it is cached."""
    call = Call(APIS[route], stream=False)
    answer = json.dumps(call.api.answer(call.model)).encode()
    packed = gzip.compress(answer)
    hostile.script(
        call.model, {"headers": [["content-encoding", "gzip"]], "parts": [_b64s(packed)]}
    )

    first = call.send(proxy)  # httpx decodes a Content-Encoding it is given

    assert first.status_code == 200, (first.status_code, first.text[:500])
    assert json.loads(first.content) == json.loads(answer)
    second = call.send(proxy)
    assert second.headers.get("x-kallm-cache") == "HIT", "a whole, valid answer was not cached"
    assert hostile.calls(call.model) == 1


@pytest.mark.parametrize("route", list(APIS))
def test_broken_gzip_answer_is_not_cached(
    proxy: Kallm, hostile: HostileUpstream, no_traceback: None, route: str
) -> None:
    """A body that says gzip and is not: kallm cannot read it. It relays it as sent or
    answers 502 in the provider's shape, and caches nothing."""
    call = Call(APIS[route], stream=False)
    garbage = b"\x1f\x8b\x08\x00 this is no gzip stream"
    hostile.script(
        call.model, {"headers": [["content-encoding", "gzip"]], "parts": [_b64s(garbage)]}
    )

    with httpx.Client(timeout=30) as client:  # read the bytes as they come, undecoded
        request = client.build_request(
            "POST",
            proxy.root + call.api.path(call.model, False),
            json=call.api.body(call.model, call.text, False),
            headers={"x-kallm-namespace": call.namespace, "accept-encoding": "identity"},
        )
        first = client.send(request, stream=True)
        raw = b"".join(first.iter_raw())
        first.close()

    assert first.status_code in (200, 502), (first.status_code, raw[:500])
    if first.status_code == 200:
        assert raw == garbage and first.headers.get("content-encoding") == "gzip"
    else:
        call.api.check_error(httpx.Response(502, headers=first.headers, content=raw))
    _assert_not_cached(proxy, hostile, call, 1)


# --- upstream errors: passed through unchanged, never cached -------------------------------


def _provider_error(api: Api, status: int) -> dict[str, Any]:
    if api.shape == "anthropic":
        kind = "rate_limit_error" if status == 429 else "api_error"
        return {"type": "error", "error": {"type": kind, "message": "hostile says no"}}
    if api.shape == "gemini":
        name = "RESOURCE_EXHAUSTED" if status == 429 else "INTERNAL"
        return {"error": {"code": status, "message": "hostile says no", "status": name}}
    kind = "requests" if status == 429 else "server_error"
    return {"error": {"message": "hostile says no", "type": kind, "param": None, "code": None}}


ERRORS = [
    (route, status, stream, body)
    for route in APIS
    for stream in (False, True)
    for status, body in [
        (429, "provider"),
        (500, "provider"),
        (503, "provider"),
        (400, "provider"),
        (500, "html"),
        (502, "empty"),
    ]
]


@pytest.mark.parametrize(
    ("route", "status", "stream", "kind"),
    ERRORS,
    ids=[f"{r}-{s}-{k}-{'stream' if st else 'json'}" for r, s, st, k in ERRORS],
)
def test_upstream_error_is_passed_through_unchanged_and_not_cached(
    proxy: Kallm,
    hostile: HostileUpstream,
    no_traceback: None,
    route: str,
    status: int,
    stream: bool,
    kind: str,
) -> None:
    call = Call(APIS[route], stream)
    headers = [["retry-after", "7"], ["x-request-id", "req-hostile"]]
    if kind == "provider":
        body = json.dumps(_provider_error(call.api, status)).encode()
    elif kind == "html":
        body = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
        headers.append(["content-type", "text/html"])
    else:
        body = b""
    hostile.script(call.model, {"status": status, "headers": headers, "parts": [_b64s(body)]})

    first = call.send(proxy)

    assert first.status_code == status, (first.status_code, first.text[:500])
    assert first.content == body
    assert first.headers.get("retry-after") == "7"
    assert first.headers.get("x-request-id") == "req-hostile"
    _assert_not_cached(proxy, hostile, call, 1)


def _b64s(data: bytes) -> dict[str, str]:
    return {"b64": _b64(data)}


# --- resets and hangs: 502 and 504 in the provider's shape, or a broken stream --------------


RESETS = [
    (r, w)
    for r in APIS
    for w in ("before-body", "mid-body", "short-length", "bad-chunk", "two-lengths")
]


@pytest.mark.parametrize(("route", "where"), RESETS, ids=[f"{r}-{w}" for r, w in RESETS])
def test_upstream_reset_of_an_answer_is_a_502(
    proxy: Kallm, hostile: HostileUpstream, no_traceback: None, route: str, where: str
) -> None:
    # A framing error may go unnoticed by chance (a race with the connection's end): ask a
    # few times, so that a kallm that sometimes misses it fails every run.
    for _ in range(20 if where in ("bad-chunk", "two-lengths") else 1):
        call = Call(APIS[route], stream=False)
        body = json.dumps(call.api.answer(call.model))
        if where == "before-body":
            answer: dict[str, Any] = {"length": len(body), "parts": [], "end": "reset"}
        elif where == "mid-body":
            answer = {"length": len(body), "parts": [body[: len(body) // 2]], "end": "reset"}
        elif where == "short-length":  # promise more than is sent, then close cleanly
            length = ["content-length", str(len(body) + 100)]
            answer = {"headers": [length], "parts": [body], "framing": "close"}
        elif where == "bad-chunk":  # chunked framing with a chunk size that is no number
            chunked = ["transfer-encoding", "chunked"]
            answer = {"headers": [chunked], "parts": [f"zz\r\n{body}\r\n0\r\n\r\n"]}
            answer["framing"] = "close"
        else:  # two Content-Length headers that disagree (RFC 9112 section 6.3)
            lengths = [["content-length", str(len(body))], ["content-length", str(len(body) + 1)]]
            answer = {"headers": lengths, "parts": [body], "framing": "close"}
        hostile.script(call.model, answer)

        started = time.monotonic()
        try:
            first = call.send(proxy, timeout=5)
        except httpx.ReadTimeout:
            pytest.fail(
                f"no answer after {time.monotonic() - started:.0f}s: the upstream sent a "
                f"broken answer ({where}) and closed the connection at once"
            )

        assert first.status_code == 502, (first.status_code, first.text[:500])
        call.api.check_error(first)
    _assert_not_cached(proxy, hostile, call, 1)


STREAM_BREAKS = [(r, w) for r in APIS for w in ("reset", "chunked-cut")]


@pytest.mark.parametrize(
    ("route", "how"), STREAM_BREAKS, ids=[f"{r}-{w}" for r, w in STREAM_BREAKS]
)
def test_upstream_reset_of_a_stream_breaks_the_clients_stream(
    proxy: Kallm, hostile: HostileUpstream, no_traceback: None, route: str, how: str
) -> None:
    call = Call(APIS[route], stream=True)
    events = call.api.events(call.model)
    answer: dict[str, Any] = {
        "headers": [["content-type", "text/event-stream"]],
        "parts": events[:-1],  # all but the stream's last event
        "framing": "chunked",
        "end": "reset",
    }
    if how == "chunked-cut":  # a chunk promised, half sent, then the connection closes
        answer = {
            "headers": [["content-type", "text/event-stream"], ["transfer-encoding", "chunked"]],
            "parts": [f"{len(events[0]) * 2:x}\r\n{events[0]}"],
            "framing": "close",
        }
    hostile.script(call.model, answer)

    status, received, error = _read_stream(proxy, call)
    assert status == 200
    assert isinstance(error, httpx.TransportError), (
        "the client's stream ended cleanly although the upstream broke it off",
        received[-300:],
    )
    assert events[0].encode() in received or how == "chunked-cut"
    _assert_not_cached(proxy, hostile, call, 1)


# Each hang costs the 2 s timeout: every provider's error shape once, the rest on a few.
def _read_stream(kallm: Kallm, call: Call) -> tuple[int, bytes, Exception | None]:
    """Status, the bytes received and the error that ended the read, if any."""
    received = b""
    with HTTP.stream(
        "POST",
        kallm.root + call.api.path(call.model, True),
        json=call.api.body(call.model, call.text, True),
        headers={"x-kallm-namespace": call.namespace},
        timeout=30,
    ) as response:
        try:
            for piece in response.iter_raw():
                received += piece
        except httpx.TransportError as error:
            return response.status_code, received, error
        return response.status_code, received, None


HANGS = [(r, "before-headers") for r in APIS] + [("chat", "mid-body"), ("chat", "after-headers")]


@pytest.mark.parametrize(("route", "where"), HANGS, ids=[f"{r}-{w}" for r, w in HANGS])
def test_upstream_hang_is_a_504(
    impatient: Kallm, hostile: HostileUpstream, no_traceback: None, route: str, where: str
) -> None:
    """KALLM_UPSTREAM_TIMEOUT=2: an upstream that goes silent is given up on, with a 504."""
    call = Call(APIS[route], stream=False)
    body = json.dumps(call.api.answer(call.model))
    answer: dict[str, Any] = {"length": len(body), "end": "hang"}
    if where == "before-headers":
        answer = {"silent": True}
    elif where == "mid-body":
        answer["parts"] = [body[:10]]
    hostile.script(call.model, answer)

    started = time.monotonic()
    first = call.send(impatient)
    elapsed = time.monotonic() - started

    assert first.status_code == 504, (first.status_code, first.text[:500])
    call.api.check_error(first)
    assert 1.5 < elapsed < 10, f"gave up after {elapsed:.1f}s with KALLM_UPSTREAM_TIMEOUT=2"
    _assert_not_cached(impatient, hostile, call, 1)


@pytest.mark.parametrize("route", ["chat", "messages", "gemini"])  # each costs 2 s
def test_upstream_hang_mid_stream_breaks_the_clients_stream(
    impatient: Kallm, hostile: HostileUpstream, no_traceback: None, route: str
) -> None:
    call = Call(APIS[route], stream=True)
    events = call.api.events(call.model)
    answer = {
        "headers": [["content-type", "text/event-stream"]],
        "parts": events[:-1],  # all but the stream's last event
        "framing": "chunked",
        "end": "hang",
    }
    hostile.script(call.model, answer)

    started = time.monotonic()
    status, received, error = _read_stream(impatient, call)
    assert status == 200
    assert isinstance(error, httpx.TransportError), (
        "the client's stream ended cleanly although the upstream broke it off",
        received[-300:],
    )
    elapsed = time.monotonic() - started
    assert "".join(events[:-1]).encode() == received, "the events sent were not all relayed"
    assert elapsed < 10, f"the stream broke after {elapsed:.1f}s with KALLM_UPSTREAM_TIMEOUT=2"
    _assert_not_cached(impatient, hostile, call, 1)


# --- huge and slow answers: delivered whole, and nobody else waits behind them --------------


PROBES = 20


class Probe:
    """Exact HITs on the same kallm, to see whether one request in flight stalls others."""

    def __init__(self, kallm: Kallm) -> None:
        self.kallm = kallm
        self.client = httpx.Client(base_url=kallm.root, timeout=30)
        self.body = {
            "model": "probe-unscripted",
            "messages": [{"role": "user", "content": f"probe {uuid.uuid4().hex}"}],
        }
        self.headers = {"x-kallm-namespace": f"probe-{uuid.uuid4().hex[:12]}"}
        first = self.client.post("/v1/chat/completions", json=self.body, headers=self.headers)
        assert first.status_code == 200, first.text

    def once(self) -> float:
        started = time.perf_counter()
        response = self.client.post("/v1/chat/completions", json=self.body, headers=self.headers)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.text
        assert response.headers.get("x-kallm-cache") == "HIT"
        return elapsed

    def p50(self, count: int = PROBES) -> float:
        return statistics.median(self.once() for _ in range(count))

    def p50_while(self, busy: threading.Thread, at_least: int = PROBES) -> float:
        """The median of probes taken while `busy` runs (at least `at_least` of them)."""
        times = []
        deadline = time.monotonic() + 60
        while busy.is_alive() and time.monotonic() < deadline:
            times.append(self.once())
            busy.join(0.005)  # leave the CPUs to the request in flight between probes
        assert len(times) >= at_least, (
            f"the slow request finished after only {len(times)} probes: the test's answer is "
            "too fast to measure anything"
        )
        return statistics.median(times)

    def close(self) -> None:
        self.client.close()


@dataclass
class Download:
    """A request read in a thread: its status, and the size and digest of its body."""

    status: int | None = None
    size: int = 0
    digest: str = ""
    error: BaseException | None = None


def _download(kallm: Kallm, call: Call, into: Download) -> threading.Thread:
    def run() -> None:
        sha = hashlib.sha256()
        try:
            with httpx.stream(
                "POST",
                kallm.root + call.api.path(call.model, call.stream),
                json=call.api.body(call.model, call.text, call.stream),
                headers={"x-kallm-namespace": call.namespace},
                timeout=60,
            ) as response:
                into.status = response.status_code
                for piece in response.iter_raw():
                    sha.update(piece)
                    into.size += len(piece)
        except BaseException as error:  # reported by the test
            into.error = error
        finally:
            into.digest = sha.hexdigest()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _expected(parts: list[Any]) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    for piece in iter_body(parts):
        sha.update(piece)
        size += len(piece)
    return size, sha.hexdigest()


def _run_slow_case(
    kallm: Kallm, hostile: HostileUpstream, call: Call, answer: dict[str, Any]
) -> Download:
    """Baseline HIT latency, then the slow request with probes alongside it; checks that the
    client got the upstream's body whole and the probes were not held up."""
    probe = Probe(kallm)
    try:
        probe.p50()  # warm up
        baseline = probe.p50()
        hostile.script(call.model, answer)
        result = Download()
        thread = _download(kallm, call, result)
        deadline = time.monotonic() + 30
        while not hostile.active(call.model) and thread.is_alive():
            assert time.monotonic() < deadline, "the slow answer never started upstream"
            thread.join(0.01)
        during = probe.p50_while(thread)
        thread.join(90)
        assert not thread.is_alive(), "the slow answer never finished"
    finally:
        probe.close()
    assert result.error is None, f"reading the answer failed: {result.error!r}"
    assert result.status == 200
    size, digest = _expected(answer["parts"])
    assert (result.size, result.digest) == (size, digest), "the answer did not arrive whole"
    bound = 5 * baseline + 0.05
    assert during < bound, (
        f"exact HITs took {during * 1000:.1f} ms (p50) while the answer was in flight, "
        f"against {baseline * 1000:.1f} ms before (bound {bound * 1000:.1f} ms)"
    )
    return result


def test_huge_sse_event_is_relayed_whole_without_stalling_others(
    proxy: Kallm, hostile: HostileUpstream, no_traceback: None
) -> None:
    """One 16 MiB SSE event (a single content delta), sent over about three seconds."""
    call = Call(APIS["chat"], stream=True)
    events = call.api.events(call.model)
    head, tail = events[1].split('"Hello "')
    parts: list[Any] = [
        events[0],
        head + '"',
        {"repeat": "abcdefghijklmnop", "times": 1024 * 1024},
        '"' + tail,
        *events[2:],
    ]
    answer = {"headers": [["content-type", "text/event-stream"]], "parts": parts, "pace": 0.012}
    _run_slow_case(proxy, hostile, call, answer)
    assert hostile.calls(call.model) == 1


def test_huge_json_answer_is_relayed_whole_without_stalling_others(
    proxy: Kallm, hostile: HostileUpstream, no_traceback: None
) -> None:
    """A 64 MiB non-streamed chat completion, sent over about three seconds."""
    call = Call(APIS["chat"], stream=False)
    text = json.dumps(call.api.answer(call.model))
    head, tail = text.split('"Hello there."')
    parts: list[Any] = [head + '"', {"repeat": "abcdefghijklmnop", "times": 4 * 1024 * 1024}]
    parts.append('"' + tail)
    answer = {"parts": parts, "pace": 0.003}
    _run_slow_case(proxy, hostile, call, answer)


def test_slow_drip_stream_arrives_whole_without_stalling_others_and_is_cached(
    proxy: Kallm, hostile: HostileUpstream, no_traceback: None
) -> None:
    """A valid stream whose last 60 bytes come one every 50 ms."""
    call = Call(APIS["chat"], stream=True)
    body = "".join(call.api.events(call.model))
    parts: list[Any] = [body[:-60], {"drip": body[-60:], "every": 0.05}]
    answer = {"headers": [["content-type", "text/event-stream"]], "parts": parts}
    _run_slow_case(proxy, hostile, call, answer)
    again = call.send(proxy)
    assert again.headers.get("x-kallm-cache") == "HIT", "a whole, valid stream was not cached"
    assert hostile.calls(call.model) == 1


def test_slow_drip_json_arrives_whole_without_stalling_others_and_is_cached(
    proxy: Kallm, hostile: HostileUpstream, no_traceback: None
) -> None:
    """A valid answer whose last 60 bytes come one every 50 ms."""
    call = Call(APIS["chat"], stream=False)
    body = json.dumps(call.api.answer(call.model))
    parts: list[Any] = [body[:-60], {"drip": body[-60:], "every": 0.05}]
    _run_slow_case(proxy, hostile, call, {"parts": parts})
    again = call.send(proxy)
    assert again.status_code == 200
    assert again.headers.get("x-kallm-cache") == "HIT", "a whole, valid answer was not cached"
    assert hostile.calls(call.model) == 1
