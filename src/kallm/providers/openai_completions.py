"""OpenAI legacy Completions wire format (`POST /v1/completions`): the prompt is the text
compared by meaning, every other field must match; streams are `text_completion` chunks
ending with `data: [DONE]`.

Reference: https://platform.openai.com/docs/api-reference/completions
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
from kallm.providers.openai_chat import USAGE_COUNTS
from kallm.sse import event

# Fields that never change the answer. Everything else (suffix, echo, logprobs, best_of and
# fields this list does not know yet) splits the partition.
NOT_IN_KEY = frozenset({"prompt", "stream", "stream_options", "user"})

# `length` is cacheable: max_tokens is in the key, so the same request is cut the same way.
CACHEABLE_FINISH = frozenset({"stop", "length"})

# The per-token lists of a legacy `logprobs` object, which a stream sends piece by piece.
LOGPROB_LISTS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


def _is_prompt(prompt: Any) -> bool:
    """A string, a list of strings, a token array or a list of token arrays."""

    def tokens(value: Any) -> bool:
        return (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
        )

    return (
        isinstance(prompt, str)
        or tokens(prompt)
        or (
            isinstance(prompt, list)
            and bool(prompt)
            and all(isinstance(p, str) or tokens(p) for p in prompt)
        )
    )


def parse_request(body: bytes) -> dict[str, Any]:
    request = parse_object(body)
    if not isinstance(request.get("model"), str) or not request["model"]:
        raise InvalidRequest("'model' is required and must be a string.", "model")
    if "prompt" in request and not _is_prompt(request["prompt"]):
        raise InvalidRequest(
            "'prompt' must be a string, an array of strings, or an array of token arrays.",
            "prompt",
        )
    return request


def prompt_text(request: dict[str, Any]) -> str | None:
    """The prompt as text to compare by meaning, or None when only an exact match is safe:
    token arrays and batches of prompts, and `echo`, whose answer repeats the prompt word for
    word (a paraphrase would be served someone else's prompt)."""
    prompt = request.get("prompt")
    if request.get("echo") is True:
        return None
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return str(prompt[0])
    return prompt if isinstance(prompt, str) else None


def key_parts(request: dict[str, Any]) -> KeyParts:
    context = {name: value for name, value in request.items() if name not in NOT_IN_KEY}
    return KeyParts(
        model=request["model"],
        context=context,
        final=request.get("prompt"),
        text=prompt_text(request),
    )


def keyed_request(request: dict[str, Any]) -> dict[str, Any]:
    """The request without the fields that never change the answer (the prompt stays)."""
    return {k: v for k, v in request.items() if k not in NOT_IN_KEY or k == "prompt"}


def _whole_choice(choice: Any) -> bool:
    """A finished choice whose every part replay_json and replay_stream read has its type."""
    if not isinstance(choice, dict):
        return False
    finish, logprobs = choice.get("finish_reason"), choice.get("logprobs")
    return (
        is_int(choice.get("index"))
        and isinstance(choice.get("text"), str)
        and isinstance(finish, str)
        and finish in CACHEABLE_FINISH
        and (logprobs is None or isinstance(logprobs, dict))
    )


def is_cacheable(completion: dict[str, Any]) -> bool:
    """A whole `text_completion` of the shape kallm replays: any other answer is relayed
    unchanged and never stored."""
    return whole_completion(completion, "text_completion", _whole_choice, USAGE_COUNTS)


ID_PREFIX = "cmpl-kallm-"


def replay_json(completion: dict[str, Any]) -> dict[str, Any]:
    return renewed(completion, ID_PREFIX)


def _per_token(text: str, logprobs: Any) -> list[tuple[str, Any]] | None:
    """(token, its logprobs) pairs when the logprobs cover the text token by token."""
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("tokens"), list):
        return None
    tokens = logprobs["tokens"]
    lists = {n: logprobs[n] for n in LOGPROB_LISTS if isinstance(logprobs.get(n), list)}
    if "".join(map(str, tokens)) != text or any(len(v) != len(tokens) for v in lists.values()):
        return None
    return [(t, {n: [v[i]] for n, v in lists.items()}) for i, t in enumerate(tokens)]


def _text_pieces(choice: dict[str, Any]) -> list[tuple[str, Any]]:
    """The choice's text in several pieces, with the logprobs each piece carries: one token a
    piece when the logprobs allow it, else the logprobs come whole on the last piece."""
    text, logprobs = choice.get("text") or "", choice.get("logprobs")
    tokens = _per_token(text, logprobs)
    if tokens is not None:
        return tokens
    pieces = split_text(text) if text else [""]
    return [(piece, None) for piece in pieces[:-1]] + [(pieces[-1], logprobs)]


def replay_stream(completion: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """The cached completion as chunks: several text pieces per choice, a chunk with the
    finish reason, a usage chunk when asked for, then `[DONE]`."""
    base = renewed({"object": "text_completion", "model": completion.get("model")}, ID_PREFIX)
    if "system_fingerprint" in completion:
        base["system_fingerprint"] = completion["system_fingerprint"]

    def chunk(index: int, text: str, logprobs: Any, finish: str | None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}
        return event(json.dumps({**base, "choices": [choice]}, separators=(",", ":")))

    for choice in completion["choices"]:
        index = choice.get("index", 0)
        for text, logprobs in _text_pieces(choice):
            yield chunk(index, text, logprobs, None)
        yield chunk(index, "", None, choice.get("finish_reason"))
    if include_usage:
        usage = {**base, "choices": [], "usage": completion.get("usage")}
        yield event(json.dumps(usage, separators=(",", ":")))
    yield event("[DONE]")


@dataclass
class _ChoiceBuilder:
    text: str = ""
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    pieces: list[str] = field(default_factory=list)

    def add(self, choice: dict[str, Any]) -> None:
        """Apply one chunk's choice; raises OddEvent for parts of other types."""
        text, logprobs, finish = (choice.get(n) for n in ("text", "logprobs", "finish_reason"))
        if not optional_str(text) or not optional_str(finish):
            raise OddEvent("text or finish_reason is not a string")
        if logprobs is not None and not isinstance(logprobs, dict):
            raise OddEvent("logprobs is not an object")
        if text is not None:
            self.pieces.append(text)
        if logprobs is not None:
            self.logprobs = self.logprobs or {}
            for name, value in logprobs.items():
                # The per-token lists grow chunk by chunk; other fields keep their last value.
                kept = self.logprobs.get(name)
                if isinstance(kept, list) and isinstance(value, list):
                    kept.extend(value)
                elif isinstance(value, list):
                    self.logprobs[name] = list(value)
                elif value is not None or name not in self.logprobs:
                    self.logprobs[name] = value
        if finish:
            self.finish_reason = finish

    def build(self, index: int) -> dict[str, Any]:
        return {
            "text": "".join(self.pieces),
            "index": index,
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
        }


def recorder() -> ChoicesRecorder:
    """Rebuilds a `text_completion` from the chunks of a stream as they pass through."""
    head = ("id", "created", "model", "system_fingerprint")
    return ChoicesRecorder("text_completion", head, _ChoiceBuilder, is_cacheable)


def usage(request: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    return choices_usage(completion, request.get("prompt") or "", "text")


class OpenAICompletions(ChoicesEndpoint):
    """`POST /v1/completions`, upstream at OPENAI_BASE_URL (which ends in /v1)."""

    path = "/completions"
    route = "completions"
    body = BodyFunctions(parse_request, key_parts, keyed_request, usage)
    replays = ChoiceReplays(replay_json, replay_stream)
    is_cacheable = staticmethod(is_cacheable)
    recorder = staticmethod(recorder)
