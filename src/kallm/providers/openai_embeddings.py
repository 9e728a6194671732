"""OpenAI Embeddings wire format, cached per input item: parse a request into its items, key
each item, read an upstream answer back into items, and assemble a response in the caller's
order from cached and fresh items.

Reference: https://platform.openai.com/docs/api-reference/embeddings (`input` is a string,
an array of strings, an array of tokens or an array of token arrays; the answer is a `list`
of `embedding` objects, each with the `index` of its input).

Embeddings are matched exactly, never by meaning: two texts that mean the same have
different embeddings, and a caller asking for one wants that one.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from kallm import keys
from kallm.providers.base import (
    InvalidRequest,
    json_bytes,
    json_object,
    parse_object,
    token_count,
)

ROUTE = "embeddings"

# Fields that never change a vector, so they stay out of the key. Every other field (model,
# dimensions, encoding_format and any field this list does not know) is part of the key.
NOT_IN_KEY = frozenset({"input", "user"})

# One input item: a text, or a text already tokenized.
Item = str | list[int]

INVALID_INPUT = (
    "'input' must be a string, a non-empty array of strings, a non-empty array of tokens "
    "or a non-empty array of non-empty token arrays."
)


@dataclass(frozen=True)
class EmbeddingsRequest:
    body: dict[str, Any]  # as sent, so a request with nothing cached goes upstream unchanged
    model: str
    items: list[Item]


@dataclass(frozen=True)
class Answer:
    """An upstream answer read back into items: `items[i]` answers the i-th input sent, as
    an `embedding` object without its `index`."""

    items: list[dict[str, Any]]
    model: str
    usage: dict[str, Any]


def _is_token(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_token(t) for t in value)


def input_items(value: Any) -> list[Item]:
    """The items of an `input`, in order; raises InvalidRequest for any other shape."""
    if isinstance(value, str):
        return [value]
    if _is_tokens(value):
        # A flat array of integers is one tokenized text, not many.
        return [list(value)]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return list(value)
        if all(_is_tokens(item) for item in value):
            return [list(item) for item in value]
    raise InvalidRequest(INVALID_INPUT, "input")


def parse_request(body: bytes) -> EmbeddingsRequest:
    request = parse_object(body)
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string.", "model")
    if "input" not in request:
        raise InvalidRequest("'input' is required.", "input")
    return EmbeddingsRequest(request, model, input_items(request["input"]))


def encoding_format(body: dict[str, Any]) -> str:
    """The encoding asked for; OpenAI answers floats when none is named."""
    value = body.get("encoding_format")
    return value if isinstance(value, str) else "float"


def key_context(body: dict[str, Any]) -> dict[str, Any]:
    """What every item of the request shares in its key. The encoding is part of it: a float
    answer and a base64 one are stored apart, so each is served exactly as upstream wrote it
    (converting would change the digits a float answer shows)."""
    context = {name: value for name, value in body.items() if name not in NOT_IN_KEY}
    context["encoding_format"] = encoding_format(body)
    return context


def item_keys(namespace: str, request: EmbeddingsRequest) -> list[keys.CacheKey]:
    """One exact-only key per item, in the request's order (equal items, equal keys)."""
    context = key_context(request.body)
    return [keys.cache_key(namespace, ROUTE, context, item, None) for item in request.items]


def forwarded_body(request: EmbeddingsRequest, items: Sequence[Item]) -> bytes:
    """The request with only `items` left to embed; every other field as sent."""
    return json_bytes({**request.body, "input": list(items)})


def is_vector(value: Any) -> bool:
    """An embedding as kallm stores and serves it: a non-empty list of finite numbers (an
    `encoding_format: float` answer) or a string (base64)."""
    if isinstance(value, str):
        return True
    return isinstance(value, list) and bool(value) and all(map(_finite_number, value))


def _finite_number(value: Any) -> bool:
    """A JSON number a float can hold (an integer past 1e308 makes `isfinite` raise)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return abs(value) <= sys.float_info.max


def read_answer(body: bytes, count: int) -> Answer | None:
    """The items of an upstream answer to `count` inputs, by their `index`; None when the body
    is not such an answer (then it cannot be split into items or cached): every item an object
    with an integer index and an embedding kallm can serve again (see `is_vector`)."""
    answer = json_object(body)
    if answer is None or not isinstance(answer.get("data"), list):
        return None
    by_index: dict[int, dict[str, Any]] = {}
    for item in answer["data"]:
        if not isinstance(item, dict) or not is_vector(item.get("embedding")):
            return None
        index = item.get("index")
        if not _is_token(index) or not 0 <= index < count or index in by_index:
            return None
        by_index[index] = {name: value for name, value in item.items() if name != "index"}
    if len(by_index) != count:
        return None
    usage, model = answer.get("usage"), answer.get("model")
    return Answer(
        items=[by_index[index] for index in range(count)],
        model=model if isinstance(model, str) else "",
        usage=usage if isinstance(usage, dict) else {},
    )


def _weight(item: Item) -> int:
    # Token arrays have their exact count; texts are weighed by length (~4 characters a token).
    return len(item) if isinstance(item, list) else max(1, len(item))


def usage_shares(items: Sequence[Item], prompt_tokens: int) -> list[int]:
    """Split a batch's token count over its items, in proportion to their size, so that the
    shares add up to the batch's count (the largest remainders get the spare tokens)."""
    if not items:
        return []
    weights = [_weight(item) for item in items]
    total = sum(weights)
    exact = [prompt_tokens * weight / total for weight in weights]
    shares = [int(value) for value in exact]
    spare = prompt_tokens - sum(shares)
    by_remainder = sorted(range(len(items)), key=lambda i: exact[i] - shares[i], reverse=True)
    for index in by_remainder[:spare]:
        shares[index] += 1
    return shares


def prompt_tokens(usage: dict[str, Any]) -> int:
    """The batch's prompt count, or 0 when it is not a count (a string, a negative or an
    absurd number such as 10**400, which no share of a batch could be computed from)."""
    return token_count(usage.get("prompt_tokens")) or 0


def assemble(items: Sequence[dict[str, Any]], model: str, usage: dict[str, Any]) -> bytes:
    """A response in OpenAI's shape: `items` in the caller's order, indexed again."""
    data = [{**item, "index": index} for index, item in enumerate(items)]
    return json_bytes({"object": "list", "data": data, "model": model, "usage": usage})


def no_usage() -> dict[str, int]:
    """The usage of an answer served entirely from the cache: no tokens went upstream."""
    return {"prompt_tokens": 0, "total_tokens": 0}
