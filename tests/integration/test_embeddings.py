"""POST /v1/embeddings through kallm with the official openai SDK: cached exactly and per
input item, against the simulator's /v1/embeddings (which records what reached it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse
from processes import SERVER_KEY

from kallm.simulator.openai import embed as simulated_vector

MODEL = "text-embedding-3-small"
PATH = "/v1/embeddings"


@dataclass
class Reply:
    result: CreateEmbeddingResponse
    headers: httpx.Headers

    @property
    def cache(self) -> str | None:
        return self.headers.get("x-kallm-cache")

    @property
    def hits(self) -> str | None:
        return self.headers.get("x-kallm-cache-hits")

    @property
    def vectors(self) -> list[Any]:
        assert [item.index for item in self.result.data] == list(range(len(self.result.data)))
        return [item.embedding for item in self.result.data]


def create(client: openai.OpenAI, input: Any, **params: Any) -> Reply:
    params.setdefault("model", MODEL)
    raw = client.embeddings.with_raw_response.create(input=input, **params)
    return Reply(raw.parse(), raw.headers)


def sent_inputs(upstream: Any) -> list[Any]:
    return [request["body"]["input"] for request in upstream.requests(PATH)]


@pytest.mark.parametrize("encoding", [None, "float", "base64"], ids=["sdk-default", "float", "b64"])
def test_a_repeated_batch_is_a_hit_without_an_upstream_call(caller, upstream, encoding):
    params: dict[str, Any] = {"dimensions": 32}
    if encoding is not None:
        params["encoding_format"] = encoding
    texts = ["The cat sat on the mat.", "A dog barked."]

    first = create(caller.client, texts, **params)
    second = create(caller.client, texts, **params)

    assert (first.cache, first.hits) == ("MISS", "0/2")
    assert (second.cache, second.hits) == ("HIT", "2/2")
    assert second.vectors == first.vectors
    assert second.result.model == first.result.model == MODEL
    assert second.result.usage.prompt_tokens == 0
    (request,) = upstream.requests(PATH)
    # The SDK asks for base64 unless told otherwise, and decodes it to floats.
    assert request["body"].get("encoding_format") == (encoding or "base64")
    if encoding == "base64":
        assert all(isinstance(vector, str) for vector in first.vectors)
    else:
        for vector, text in zip(first.vectors, texts, strict=True):
            assert vector == pytest.approx(simulated_vector(text, 32), abs=1e-6)


def test_a_partial_batch_sends_only_the_missing_items(caller, simulator, upstream):
    create(caller.client, ["alpha", "bravo"], dimensions=16)
    upstream.clear()

    mixed = create(caller.client, ["charlie", "alpha", "delta", "bravo"], dimensions=16)

    assert (mixed.cache, mixed.hits) == ("PARTIAL", "2/4")
    assert sent_inputs(upstream) == [["charlie", "delta"]]
    assert mixed.result.usage.prompt_tokens > 0  # what went upstream: two items
    # The same vectors, in the same order, as the upstream gives for the whole batch.
    with openai.OpenAI(base_url=simulator.base_url, api_key="sk-direct", max_retries=0) as direct:
        whole = direct.embeddings.create(
            model=MODEL, input=["charlie", "alpha", "delta", "bravo"], dimensions=16
        )
    assert mixed.vectors == [item.embedding for item in whole.data]

    again = create(caller.client, ["delta", "charlie", "bravo"], dimensions=16)
    assert (again.cache, again.hits) == ("HIT", "3/3")
    assert len(upstream.requests(PATH)) == 2  # the partial batch and the direct call


def test_token_arrays_are_cached_per_array(caller, upstream):
    create(caller.client, [[101, 102], [103]], encoding_format="float")
    single = create(caller.client, [103], encoding_format="float")
    mixed = create(caller.client, [[104], [101, 102]], encoding_format="float")

    assert single.cache == "HIT"
    assert mixed.cache == "PARTIAL"
    assert sent_inputs(upstream) == [[[101, 102], [103]], [[104]]]
    assert mixed.vectors[0] == pytest.approx(simulated_vector("t104", 256))
    assert mixed.vectors[1] == pytest.approx(simulated_vector("t101 t102", 256))


@pytest.mark.parametrize(
    "change",
    [{"model": "text-embedding-3-large"}, {"dimensions": 8}, {"encoding_format": "float"}],
    ids=["model", "dimensions", "encoding"],
)
def test_model_dimensions_and_encoding_do_not_share(caller, upstream, change):
    create(caller.client, "Share nothing.", dimensions=16)
    other = create(caller.client, "Share nothing.", **({"dimensions": 16} | change))
    repeat = create(caller.client, "Share nothing.", **({"dimensions": 16} | change))

    assert other.cache == "MISS"
    assert repeat.cache == "HIT"
    assert len(upstream.requests(PATH)) == 2


@pytest.mark.parametrize(
    ("directive", "error", "status"),
    [
        ("[sim:error500]", openai.InternalServerError, 500),
        ("[sim:error429]", openai.RateLimitError, 429),
    ],
)
def test_upstream_errors_pass_through_and_are_not_cached(
    caller, kallm, upstream, directive, error, status
):
    errors_before = kallm.stats()["upstream_errors"]
    for _ in range(2):
        with pytest.raises(error) as raised:
            create(caller.client, [f"{directive} Fail, please."])
        assert raised.value.status_code == status
        assert raised.value.response.headers.get("x-kallm-cache") == "MISS"

    simulated = "simulated server error" if status == 500 else "simulated rate limit exceeded"
    assert isinstance(raised.value.body, dict) and raised.value.body["message"] == simulated
    assert len(upstream.requests(PATH)) == 2
    assert kallm.stats()["upstream_errors"] >= errors_before + 2


def test_an_upstream_error_on_the_missing_items_fails_the_batch(caller, upstream):
    create(caller.client, ["cached"])
    with pytest.raises(openai.InternalServerError) as raised:
        create(caller.client, ["cached", "[sim:error500] not cached"])

    assert raised.value.response.headers.get("x-kallm-cache") == "PARTIAL"
    assert sent_inputs(upstream) == [["cached"], ["[sim:error500] not cached"]]
    assert create(caller.client, ["cached"]).cache == "HIT"


def test_namespaces_do_not_share(make_caller, kallm, upstream, namespace):
    team_a = make_caller(kallm, f"{namespace}-a")
    team_b = make_caller(kallm, f"{namespace}-b")

    create(team_a.client, "Kept apart.")
    assert create(team_b.client, "Kept apart.").cache == "MISS"
    assert create(team_a.client, "Kept apart.").cache == "HIT"
    assert len(upstream.requests(PATH)) == 2


def test_forwarded_client_keys_isolate_the_cache(make_caller, kallm_forwarding, upstream):
    one = make_caller(kallm_forwarding, api_key="sk-client-one-aaaaaaaa")
    two = make_caller(kallm_forwarding, api_key="sk-client-two-bbbbbbbb")

    create(one.client, "Whose vector?")
    assert create(two.client, "Whose vector?").cache == "MISS"
    assert create(one.client, "Whose vector?").cache == "HIT"
    sent = [request["headers"]["authorization"] for request in upstream.requests(PATH)]
    assert sent == ["Bearer sk-client-one-aaaaaaaa", "Bearer sk-client-two-bbbbbbbb"]


def test_kallms_own_key_is_used_upstream(caller, upstream):
    create(caller.client, "Whose key?")
    (request,) = upstream.requests(PATH)
    assert request["headers"]["authorization"] == f"Bearer {SERVER_KEY}"
    assert not any(name.startswith("x-kallm-") for name in request["headers"])


@pytest.mark.parametrize(
    "input",
    [[], [1, "mixed"], [[]]],
    ids=["empty", "mixed", "empty-token-array"],
)
def test_an_invalid_input_is_a_400_that_goes_nowhere(caller, upstream, input):
    with pytest.raises(openai.BadRequestError) as raised:
        create(caller.client, input)

    assert isinstance(raised.value.body, dict) and raised.value.body["param"] == "input"
    assert upstream.requests(PATH) == []


def test_an_unreadable_body_is_a_400_that_goes_nowhere(caller, http, upstream, error_of):
    response = http.post(
        PATH, content=b"{not json", headers={**caller.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error_of(response)
    assert upstream.requests(PATH) == []


def test_a_body_over_the_size_limit_is_a_413(caller, http, upstream, error_of):
    huge = "x" * (10 * 1024 * 1024 + 1)  # the default KALLM_MAX_BODY_SIZE is 10 MiB
    response = http.post(PATH, json={"model": MODEL, "input": huge}, headers=caller.headers)

    assert response.status_code == 413
    error_of(response)
    assert upstream.requests(PATH) == []


def test_no_cache_and_no_store(caller, upstream):
    fresh = caller.client.embeddings.with_raw_response.create(
        model=MODEL, input="Controlled.", extra_headers={"Cache-Control": "no-store"}
    )
    assert fresh.headers["x-kallm-cache"] == "MISS"
    assert create(caller.client, "Controlled.").cache == "MISS"  # nothing was stored
    bypass = caller.client.embeddings.with_raw_response.create(
        model=MODEL, input="Controlled.", extra_headers={"Cache-Control": "no-cache"}
    )
    assert bypass.headers["x-kallm-cache"] == "BYPASS"
    assert len(upstream.requests(PATH)) == 3
