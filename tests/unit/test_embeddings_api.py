"""The embeddings cache: the pure wire-format helpers, then the endpoint in-process against a
recording upstream (httpx.MockTransport), with a memory store or one that fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient
from test_openai_chat import HOSTILE, JSON, mutated

from kallm.app import Parts, create_app
from kallm.policies import Policy, PolicyBook
from kallm.providers import openai_embeddings as wire
from kallm.providers.base import InvalidRequest
from kallm.proxy.embeddings import cache_header, plan_forward
from kallm.settings import load_settings
from kallm.storage import Entry, MemoryStore

MODEL = "text-embedding-3-small"


def request_of(**body: Any) -> wire.EmbeddingsRequest:
    return wire.parse_request(json.dumps({"model": MODEL, **body}).encode())


# --- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "items"),
    [
        ("one text", ["one text"]),
        (["a", "b", "a"], ["a", "b", "a"]),
        ([1, 2, 3], [[1, 2, 3]]),  # a flat token array is one item
        ([[1, 2], [3]], [[1, 2], [3]]),
        ("", [""]),  # upstream decides whether an empty text is valid
    ],
)
def test_input_items_accepts_every_openai_shape(given, items):
    assert wire.input_items(given) == items


@pytest.mark.parametrize(
    "given",
    [[], [[]], [1, "a"], ["a", [1]], [True], [[1, True]], [[1], []], {"text": "a"}, 3, None],
    ids=str,
)
def test_input_items_refuses_other_shapes(given):
    with pytest.raises(InvalidRequest) as raised:
        wire.input_items(given)
    assert raised.value.param == "input"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"[1]", None),
        (b"{bad", None),
        (json.dumps({"input": "a"}).encode(), "model"),
        (json.dumps({"model": "", "input": "a"}).encode(), "model"),
        (json.dumps({"model": MODEL}).encode(), "input"),
    ],
)
def test_parse_request_refuses_what_is_not_an_embeddings_request(body, param):
    with pytest.raises(InvalidRequest) as raised:
        wire.parse_request(body)
    assert raised.value.param == param


# --- keys --------------------------------------------------------------------------------


def exact_keys(namespace: str = "ns", **body: Any) -> list[str]:
    return [key.exact for key in wire.item_keys(namespace, request_of(**body))]


def test_equal_items_have_equal_keys_and_the_user_field_is_not_in_them():
    first, second, again = exact_keys(input=["a", "b", "a"])
    assert first == again != second
    assert exact_keys(input="a", user="alice") == exact_keys(input="a", user="bob") == [first]
    # A text and the same text in a batch are the same item.
    assert exact_keys(input=["z", "a"])[1] == first


def test_keys_are_exact_only():
    assert all(key.text is None for key in wire.item_keys("ns", request_of(input=["a b"])))
    # Whitespace is not normalised away: it changes a vector.
    assert exact_keys(input="a b") != exact_keys(input="a  b")


def test_float_is_the_default_encoding_and_base64_is_apart():
    plain = exact_keys(input="a")
    assert exact_keys(input="a", encoding_format="float") == plain
    assert exact_keys(input="a", encoding_format=None) == plain
    assert exact_keys(input="a", encoding_format="base64") != plain


@pytest.mark.parametrize(
    "change",
    [
        {"model": "text-embedding-3-large"},
        {"dimensions": 256},
        {"encoding_format": "base64"},
        {"some_new_field": 1},  # unknown fields split the key: a lost hit, never a wrong one
    ],
    ids=lambda change: next(iter(change)),
)
def test_what_changes_a_vector_changes_the_key(change):
    assert exact_keys(input="a") != exact_keys(**{"input": "a", **change})


def test_namespaces_and_tokenized_texts_have_keys_of_their_own():
    assert exact_keys("ns", input="a") != exact_keys("other", input="a")
    assert exact_keys(input=[1, 2]) == exact_keys(input=[[1, 2]])
    assert exact_keys(input=[1, 2]) != exact_keys(input="1 2")


# --- planning, reading and assembling ----------------------------------------------------


def entry_for(key_exact: str) -> Entry:
    return Entry(key_exact, "ns", "p", key_exact, None, None, "fake", MODEL, {}, 0.0, 1.0)


def test_with_nothing_cached_the_request_goes_byte_for_byte():
    body = b'{"model": "text-embedding-3-small", "input": ["a", "a"]}'
    asked = wire.parse_request(body)
    forward = plan_forward(asked, wire.item_keys("ns", asked), {}, body)
    assert forward.whole and forward.body == body and forward.items == ["a", "a"]


def test_with_some_cached_only_the_distinct_missing_items_go_in_order():
    asked = request_of(input=["c", "a", "d", "c", "b"], dimensions=8, user="u")
    item_keys = wire.item_keys("ns", asked)
    cached = {item_keys[1].exact: entry_for("a"), item_keys[4].exact: entry_for("b")}
    forward = plan_forward(asked, item_keys, cached, b"unused")

    assert not forward.whole
    assert forward.items == ["c", "d"]
    assert [k.exact for k in forward.keys] == [item_keys[0].exact, item_keys[2].exact]
    assert json.loads(forward.body) == {
        "model": MODEL,
        "input": ["c", "d"],
        "dimensions": 8,
        "user": "u",
    }


def answer_bytes(indexes: list[int], **extra: Any) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": [float(i)]} for i in indexes]
    usage = {"prompt_tokens": 7, "total_tokens": 7}
    answer = {"object": "list", "data": data, "model": "m-1", "usage": usage} | extra
    return json.dumps(answer).encode()


def test_read_answer_puts_items_by_their_index():
    answer = wire.read_answer(answer_bytes([1, 0, 2]), 3)
    assert answer is not None
    assert [item["embedding"] for item in answer.items] == [[0.0], [1.0], [2.0]]
    assert all("index" not in item for item in answer.items)
    assert (answer.model, answer.usage["prompt_tokens"]) == ("m-1", 7)


@pytest.mark.parametrize(
    "body",
    [
        answer_bytes([0, 1]),  # one item short
        answer_bytes([0, 0, 1]),  # an index twice
        answer_bytes([0, 1, 3]),  # an index out of range
        answer_bytes([0, 1, 2], data="nope"),
        b'{"data": [{"index": 0}, {"index": 1}, {"index": 2}]}',  # no embeddings
        b"not json",
    ],
)
def test_read_answer_refuses_what_cannot_be_split_into_the_items_sent(body):
    assert wire.read_answer(body, 3) is None


@pytest.mark.parametrize(
    "item",
    [
        {"index": 0, "embedding": [float("nan")]},
        {"index": 0, "embedding": [float("inf"), 0.5]},
        {"index": 0, "embedding": ["0.5"]},
        {"index": 0, "embedding": [True]},
        {"index": 0, "embedding": [[0.5]]},
        {"index": 0, "embedding": []},
        {"index": 0, "embedding": {"0": 0.5}},
        {"index": 0, "embedding": None},
        {"index": "0", "embedding": [0.5]},
        {"index": True, "embedding": [0.5]},
        {"index": 0.0, "embedding": [0.5]},
        "an item that is a string",
    ],
)
def test_read_answer_refuses_items_it_could_not_serve_again(item):
    body = json.dumps({"object": "list", "data": [item], "model": "m"}).encode()
    assert wire.read_answer(body, 1) is None


def test_read_answer_takes_floats_ints_and_base64():
    for embedding in ([0.5, -1, 0], "AAAAPw=="):
        body = json.dumps({"data": [{"index": 0, "embedding": embedding}]}).encode()
        answer = wire.read_answer(body, 1)
        assert answer is not None and answer.items[0]["embedding"] == embedding


@pytest.mark.parametrize("count", [10**400, 10**12, "abc", "7", -3, 2.5, True, None, [7]])
def test_counts_that_are_not_counts_count_as_none(count):
    answer = wire.read_answer(answer_bytes([0, 1], usage={"prompt_tokens": count}), 2)
    assert answer is not None
    assert wire.prompt_tokens(answer.usage) == 0
    assert wire.usage_shares(["a", "b"], wire.prompt_tokens(answer.usage)) == [0, 0]


@pytest.mark.parametrize("model", [None, 5, {"name": "m"}, ["m"]])
def test_a_model_that_is_not_a_string_is_left_out(model):
    answer = wire.read_answer(answer_bytes([0], model=model), 1)
    assert answer is not None and answer.model == ""


def test_a_lone_surrogate_assembles():
    body = wire.assemble([{"embedding": [0.5], "object": "\ud800"}], "m", {})
    assert json.loads(body)["data"][0]["object"] == "\ud800"


VALID_ANSWER = json.loads(answer_bytes([0, 1, 2]))


@HOSTILE
@given(st.one_of(mutated(VALID_ANSWER), mutated(VALID_ANSWER), JSON))
def test_no_answer_makes_the_embeddings_helpers_raise(answer):
    fresh = wire.read_answer(json.dumps(answer).encode(), 3)
    if fresh is None:
        return
    assert all(wire.is_vector(item["embedding"]) for item in fresh.items)
    shares = wire.usage_shares(["a", "bb", [1, 2, 3]], wire.prompt_tokens(fresh.usage))
    assert all(type(share) is int and share >= 0 for share in shares)
    json.loads(wire.assemble(fresh.items, fresh.model or MODEL, fresh.usage))


def test_usage_shares_add_up_and_follow_the_items_sizes():
    assert wire.usage_shares(["aaaa", "aaaaaaaaaaaa"], 8) == [2, 6]
    assert sum(wire.usage_shares(["a", "bb", "ccc"], 10)) == 10
    assert wire.usage_shares([[1, 2, 3], [4]], 4) == [3, 1]
    assert wire.usage_shares(["a", "b"], 0) == [0, 0]
    assert wire.usage_shares([], 5) == []


def test_assemble_indexes_the_items_again():
    body = json.loads(wire.assemble([{"embedding": "x"}, {"embedding": "y"}], "m", {"a": 1}))
    assert body == {
        "object": "list",
        "data": [{"embedding": "x", "index": 0}, {"embedding": "y", "index": 1}],
        "model": "m",
        "usage": {"a": 1},
    }


@pytest.mark.parametrize(
    ("cached", "total", "looked_up", "header"),
    [(2, 2, True, "HIT"), (1, 2, True, "PARTIAL"), (0, 2, True, "MISS"), (0, 2, False, "BYPASS")],
)
def test_cache_header(cached, total, looked_up, header):
    assert cache_header(cached, total, looked_up) == header


# --- the endpoint, in process ------------------------------------------------------------


def vector_of(text: Any, dimensions: int) -> list[float]:
    """Deterministic and distinct per item, so a test can tell which item a vector answers."""
    seed = sum(map(ord, json.dumps(text)))
    return [float((seed * (i + 1)) % 97) for i in range(dimensions)]


class Upstream:
    """A recording /v1/embeddings upstream; `status` and `raw` make it misbehave."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []
        self.status = 200
        self.raw: bytes | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(body)
        self.headers.append(request.headers)
        if self.status != 200:
            error = {"message": "upstream says no", "type": "server_error"}
            return httpx.Response(self.status, json={"error": error})
        if self.raw is not None:
            return httpx.Response(200, content=self.raw)
        items = wire.input_items(body["input"])
        dims = body.get("dimensions", 4)
        data = [
            {"object": "embedding", "index": i, "embedding": vector_of(item, dims)}
            for i, item in enumerate(items)
        ]
        tokens = 10 * len(items)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return httpx.Response(
            200,
            json={"object": "list", "data": data, "model": body["model"] + "-v1", "usage": usage},
        )

    @property
    def inputs(self) -> list[Any]:
        return [call["input"] for call in self.calls]


class FakeEmbedder:
    name = "fake"

    async def embed(self, text: str) -> Any:
        return np.ones(4, dtype=np.float32) / 2

    async def close(self) -> None:
        pass


class BrokenStore:
    async def get_exact(self, *args: Any) -> None:
        raise ConnectionError("store down")

    search = put = record_hit = count = get_exact

    async def embedding_models(self, now: float) -> set[str]:
        return set()

    async def ping(self) -> bool:
        return False

    async def close(self) -> None:
        pass


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


def client_for(
    upstream: Callable[[httpx.Request], httpx.Response],
    store: Any = None,
    policies: PolicyBook | None = None,
    **settings: Any,
) -> TestClient:
    parts = Parts(
        store=store or MemoryStore(1000),
        embedder=FakeEmbedder(),
        transport=httpx.MockTransport(upstream),
        policies=policies or PolicyBook(),
    )
    settings.setdefault("openai_api_key", "sk-kallm")
    config = load_settings(openai_base_url="http://upstream.test/v1", host="127.0.0.1", **settings)
    return TestClient(create_app(config, parts))


@pytest.fixture
def client(upstream: Upstream):
    with client_for(upstream) as client:
        yield client


def embed(
    client: TestClient, input: Any, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    return client.post(
        "/v1/embeddings", json={"model": MODEL, "input": input, **body}, headers=headers or {}
    )


def vectors(response: httpx.Response) -> list[Any]:
    data = response.json()["data"]
    assert [item["index"] for item in data] == list(range(len(data)))
    return [item["embedding"] for item in data]


def test_a_repeated_request_is_a_hit_without_an_upstream_call(client, upstream):
    first = embed(client, ["a", "b"])
    second = embed(client, ["a", "b"])

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-kallm-cache"] == "MISS"
    assert first.headers["x-kallm-cache-hits"] == "0/2"
    assert second.headers["x-kallm-cache"] == "HIT"
    assert second.headers["x-kallm-cache-hits"] == "2/2"
    assert vectors(second) == vectors(first) == [vector_of("a", 4), vector_of("b", 4)]
    assert second.json()["model"] == first.json()["model"] == MODEL + "-v1"
    assert second.json()["usage"] == {"prompt_tokens": 0, "total_tokens": 0}
    assert upstream.inputs == [["a", "b"]]


def test_a_miss_is_the_upstream_answer_unchanged(client, upstream):
    upstream.raw = answer_bytes([0], extra_field="kept")
    response = embed(client, "a")
    assert response.content == upstream.raw


def test_a_partial_batch_sends_only_the_missing_items(client, upstream):
    embed(client, ["a", "b"])
    mixed = embed(client, ["c", "a", "d", "b", "c"])

    assert mixed.headers["x-kallm-cache"] == "PARTIAL"
    assert mixed.headers["x-kallm-cache-hits"] == "2/5"
    assert upstream.inputs == [["a", "b"], ["c", "d"]]
    assert vectors(mixed) == [vector_of(t, 4) for t in ["c", "a", "d", "b", "c"]]
    # Usage is what went upstream: the two items sent.
    assert mixed.json()["usage"] == {"prompt_tokens": 20, "total_tokens": 20}
    # Now all five are cached.
    again = embed(client, ["d", "c", "b", "a"])
    assert again.headers["x-kallm-cache"] == "HIT"
    assert len(upstream.calls) == 2


def test_token_arrays_are_cached_per_array(client, upstream):
    embed(client, [[1, 2], [3]])
    single = embed(client, [3])  # one token array, asked alone
    mixed = embed(client, [[4], [1, 2]])

    assert single.headers["x-kallm-cache"] == "HIT"
    assert vectors(single) == [vector_of([3], 4)]
    assert mixed.headers["x-kallm-cache"] == "PARTIAL"
    assert upstream.inputs == [[[1, 2], [3]], [[4]]]
    assert vectors(mixed) == [vector_of([4], 4), vector_of([1, 2], 4)]


def test_model_dimensions_and_encoding_do_not_share(client, upstream):
    embed(client, "a")
    assert embed(client, "a", dimensions=2).headers["x-kallm-cache"] == "MISS"
    assert embed(client, "a", encoding_format="base64").headers["x-kallm-cache"] == "MISS"
    assert embed(client, "a", model="other").headers["x-kallm-cache"] == "MISS"
    assert embed(client, "a", dimensions=2).headers["x-kallm-cache"] == "HIT"
    assert len(upstream.calls) == 4


def test_namespaces_do_not_share(client, upstream):
    embed(client, "a", headers={"x-kallm-namespace": "team-a"})
    other = embed(client, "a", headers={"x-kallm-namespace": "team-b"})
    assert other.headers["x-kallm-cache"] == "MISS"
    assert len(upstream.calls) == 2


def test_forwarded_client_keys_isolate_the_cache(upstream, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with client_for(upstream, openai_api_key=None) as client:
        embed(client, "a", headers={"authorization": "Bearer sk-one"})
        other = embed(client, "a", headers={"authorization": "Bearer sk-two"})
        same = embed(client, "a", headers={"authorization": "Bearer sk-one"})
    assert (other.headers["x-kallm-cache"], same.headers["x-kallm-cache"]) == ("MISS", "HIT")
    assert [h["authorization"] for h in upstream.headers] == ["Bearer sk-one", "Bearer sk-two"]


def test_kallms_own_key_replaces_the_clients_upstream(client, upstream):
    embed(client, "a", headers={"authorization": "Bearer sk-client", "x-kallm-namespace": "n"})
    (sent,) = upstream.headers
    assert sent["authorization"] == "Bearer sk-kallm"
    assert "x-kallm-namespace" not in sent


def test_an_upstream_error_passes_through_and_nothing_is_cached(client, upstream):
    embed(client, ["a"])
    upstream.status = 500
    for _ in range(2):
        failed = embed(client, ["a", "b"])
        assert failed.status_code == 500
        assert failed.json()["error"]["message"] == "upstream says no"
        assert failed.headers["x-kallm-cache"] == "PARTIAL"
    upstream.status = 200
    assert embed(client, "b").headers["x-kallm-cache"] == "MISS"
    assert upstream.inputs == [["a"], ["b"], ["b"], "b"]
    assert client.get("/stats").json()["upstream_errors"] == 2


def test_an_unreadable_upstream_answer_is_passed_on_whole_and_not_cached(client, upstream):
    upstream.raw = b'{"object": "list", "data": "surprise"}'
    assert embed(client, "a").content == upstream.raw
    upstream.raw = None
    assert embed(client, "a").headers["x-kallm-cache"] == "MISS"


def test_an_unreadable_upstream_answer_to_a_partial_batch_is_a_502(client, upstream):
    embed(client, "a")
    upstream.raw = answer_bytes([0, 1])  # two items for the one sent
    response = embed(client, ["a", "b"])
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"


def test_an_unreachable_upstream_is_a_502():
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with client_for(unreachable) as client:
        response = embed(client, "a")
    assert response.status_code == 502
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL},
        {"input": "a"},
        {"model": MODEL, "input": []},
        {"model": MODEL, "input": [1, "a"]},
    ],
    ids=["no-input", "no-model", "empty", "mixed"],
)
def test_an_invalid_request_is_a_400_and_goes_nowhere(client, upstream, body):
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert upstream.calls == []


def test_invalid_kallm_headers_are_a_400(client, upstream):
    assert embed(client, "a", headers={"x-kallm-namespace": "!"}).status_code == 400
    assert embed(client, "a", headers={"x-kallm-ttl": "-1"}).status_code == 400
    assert upstream.calls == []


def test_a_body_over_the_limit_is_a_413(upstream):
    with client_for(upstream, max_body_size=100) as client:
        response = embed(client, "x" * 200)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert upstream.calls == []


def test_no_cache_skips_the_lookup_but_stores(client, upstream):
    embed(client, "a")
    fresh = embed(client, "a", headers={"cache-control": "no-cache"})
    assert fresh.headers["x-kallm-cache"] == "BYPASS"
    assert embed(client, "a").headers["x-kallm-cache"] == "HIT"
    assert len(upstream.calls) == 2
    assert "cache-control" not in upstream.headers[1]


def test_no_store_stores_nothing(client, upstream):
    embed(client, "a", headers={"cache-control": "no-store"})
    assert embed(client, "a").headers["x-kallm-cache"] == "MISS"


def test_a_policy_bypass_forwards_and_stores_nothing(upstream):
    book = PolicyBook()
    book.set("quiet", Policy(bypass_routes=frozenset({"embeddings"})))
    with client_for(upstream, policies=book) as client:
        headers = {"x-kallm-namespace": "quiet"}
        replies = [embed(client, "a", headers=headers) for _ in range(2)]
    assert [r.headers["x-kallm-cache"] for r in replies] == ["BYPASS", "BYPASS"]
    assert len(upstream.calls) == 2


def test_a_policys_size_share_applies(upstream):
    book = PolicyBook()
    book.set("small", Policy(max_entries=2))
    with client_for(upstream, policies=book) as client:
        headers = {"x-kallm-namespace": "small"}
        embed(client, ["a", "b", "c"], headers=headers)
        again = embed(client, ["a", "b", "c"], headers=headers)
    # Only two of the three fit the namespace's share.
    assert again.headers["x-kallm-cache"] == "PARTIAL"
    assert again.headers["x-kallm-cache-hits"] == "2/3"


def test_a_failing_store_forwards_everything(upstream):
    with client_for(upstream, store=BrokenStore()) as client:
        replies = [embed(client, ["a", "b"]) for _ in range(2)]
        stats = client.get("/stats").json()
    assert [r.status_code for r in replies] == [200, 200]
    assert [r.headers["x-kallm-cache"] for r in replies] == ["MISS", "MISS"]
    assert vectors(replies[1]) == [vector_of("a", 4), vector_of("b", 4)]
    assert len(upstream.calls) == 2
    assert stats["store_errors"] >= 4  # a lookup and a store per request


def test_stats_count_items(client, upstream):
    embed(client, ["a", "b"])
    embed(client, ["a", "c"])
    stats = client.get("/stats").json()
    assert (stats["total_hits"], stats["exact_hits"], stats["total_misses"]) == (1, 1, 3)
    # The hit saved the tokens of its share of the first batch (20 tokens over "a" and "b").
    assert stats["saved_tokens"]["prompt"] == 10
    metrics = client.get("/metrics").text
    assert 'kallm_requests_total{outcome="miss",route="embeddings"} 2.0' in metrics


def test_namespaces_whose_policies_share_serve_each_other(upstream):
    book = PolicyBook()
    for name in ("team-a", "team-b"):
        book.set(name, Policy(share=True))
    with client_for(upstream, policies=book) as client:
        embed(client, ["a"], headers={"x-kallm-namespace": "team-a"})
        shared = embed(client, ["a", "b"], headers={"x-kallm-namespace": "team-b"})
        private = embed(client, ["a"], headers={"x-kallm-namespace": "team-c"})
    assert shared.headers["x-kallm-cache"] == "PARTIAL"
    assert private.headers["x-kallm-cache"] == "MISS"
    assert upstream.inputs == [["a"], ["b"], ["a"]]


@pytest.mark.parametrize(
    ("value", "servable"),
    [([0.5, -1, 2], True), ("AAAA", True), ([], False), ([True], False), ([10**400], False)],
)
def test_an_embedding_is_stored_only_when_it_can_be_served_again(value, servable):
    assert wire.is_vector(value) is servable
