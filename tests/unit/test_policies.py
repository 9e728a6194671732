"""Namespace policies (SemanticCachePolicy specs) and what they change for a request."""

from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from starlette.testclient import TestClient

from kallm.app import Parts, create_app
from kallm.policies import Policy, PolicyBook, parse_policy
from kallm.settings import load_settings

EXAMPLES = Path(__file__).parents[2] / "deploy" / "examples"


def test_the_example_policies_parse():
    specs = {}
    for path in EXAMPLES.glob("*.yaml"):
        resource = yaml.safe_load(path.read_text())
        specs[resource["metadata"]["namespace"]] = resource["spec"]
    support = parse_policy(specs["support"])
    assert support.ttl == 5400 and support.bypass_models == {"o3", "o4-mini"}
    assert support.bypass_header == ("x-no-cache", "1")
    team_a = parse_policy(specs["team-a"])
    assert (team_a.similarity_threshold, team_a.verifier_threshold, team_a.ttl) == (
        0.96,
        0.7,
        43200,
    )
    assert team_a.max_entries == 50000 and not team_a.share
    assert support.share and support.max_entries == 10000
    with pytest.raises(ValueError):
        parse_policy(specs["team-b"])  # the invalid example
    for wrong in (0, 2.5, True, "10"):
        with pytest.raises(ValueError):
            parse_policy({"maxEntries": wrong})


def test_the_book_lists_the_namespaces_that_share():
    book = PolicyBook()
    book.set("b", Policy(share=True))
    book.set("a", Policy(share=True))
    book.set("c", Policy())
    assert book.sharing() == ["a", "b"]


def test_bypass_rules():
    policy = Policy(bypass_models=frozenset({"o3"}), bypass_header=("x-no-cache", "1"))
    assert policy.bypasses("chat.completions", "o3", {})
    assert policy.bypasses("chat.completions", "gpt-4o", {"x-no-cache": "1"})
    assert not policy.bypasses("chat.completions", "gpt-4o", {"x-no-cache": "0"})
    assert Policy(enabled=False).bypasses("chat.completions", "gpt-4o", {})
    assert Policy(bypass_routes=frozenset({"chat.completions"})).bypasses(
        "chat.completions", "m", {}
    )


class Embedder:
    name = "fake"

    async def embed(self, text):
        # "first ..." and any other prompt have cosine 0.9: the threshold decides. "item N"
        # prompts are unrelated to everything else.
        vector = np.zeros(8, dtype=np.float32)
        if text.startswith("item "):
            vector[2 + int(text.split()[1])] = 1
        elif text.startswith("first"):
            vector[0] = 1
        else:
            vector[:2] = [0.9, np.sqrt(1 - 0.81)]
        return vector

    async def close(self):
        pass


def ask(client, namespace, prompt, model="gpt-4o-mini", headers=None):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    return client.post(
        "/v1/chat/completions",
        json=body,
        headers={"x-kallm-namespace": namespace, **(headers or {})},
    )


@pytest.fixture
def book():
    book = PolicyBook()
    book.set("off", Policy(enabled=False))
    book.set("loose", Policy(similarity_threshold=0.85))
    book.set("picky", Policy(bypass_models=frozenset({"o3"})))
    book.set("short", Policy(ttl=0.001))
    book.set("share-a", Policy(share=True))
    book.set("share-b", Policy(share=True))
    book.set("small", Policy(max_entries=2))
    return book


@pytest.fixture
def client(book):
    def upstream(request):
        message = {"role": "assistant", "content": "ok"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        completion = {"id": "x", "object": "chat.completion", "created": 1, "choices": [choice]}
        return httpx.Response(200, json={**completion, "model": "gpt-4o-mini"})

    settings = load_settings(
        openai_base_url="http://upstream.test/v1",
        openai_api_key="sk-test",
        verifier=False,
        host="127.0.0.1",
    )
    parts = Parts(embedder=Embedder(), transport=httpx.MockTransport(upstream), policies=book)
    with TestClient(create_app(settings, parts)) as test_client:
        yield test_client


def test_a_namespace_without_a_policy_keeps_the_settings(client):
    ask(client, "free", "first question")
    assert ask(client, "free", "first question").headers["x-kallm-cache"] == "HIT"
    assert ask(client, "free", "another question").headers["x-kallm-cache"] == "MISS"  # 0.9 < 0.95


def test_a_disabled_namespace_bypasses_the_cache(client):
    ask(client, "off", "first question")
    assert ask(client, "off", "first question").headers["x-kallm-cache"] == "BYPASS"


def test_a_policy_threshold_applies_to_its_namespace(client):
    ask(client, "loose", "first question")
    reply = ask(client, "loose", "another question")
    assert (
        reply.headers["x-kallm-cache"] == "HIT" and reply.headers["x-kallm-similarity"] == "0.9000"
    )


def test_bypass_models_and_ttl(client):
    ask(client, "picky", "first question", model="o3")
    assert ask(client, "picky", "first question", model="o3").headers["x-kallm-cache"] == "BYPASS"
    ask(client, "short", "first question")
    assert ask(client, "short", "first question").headers["x-kallm-cache"] == "MISS"  # expired


def test_namespaces_that_share_serve_each_other_and_no_one_else(client):
    ask(client, "share-a", "first question")
    assert ask(client, "share-b", "first question").headers["x-kallm-cache"] == "HIT"
    assert ask(client, "free", "first question").headers["x-kallm-cache"] == "MISS"
    # A namespace that does not share neither reads nor is read by those that do.
    ask(client, "free", "item 1")
    assert ask(client, "share-a", "item 1").headers["x-kallm-cache"] == "MISS"
    ask(client, "share-b", "item 2")
    assert ask(client, "free", "item 2").headers["x-kallm-cache"] == "MISS"
    assert ask(client, "share-a", "item 2").headers["x-kallm-cache"] == "HIT"


def test_sharing_stops_as_soon_as_a_policy_turns_it_off(client, book):
    ask(client, "share-a", "item 3")
    assert ask(client, "share-b", "item 3").headers["x-kallm-cache"] == "HIT"
    book.set("share-a", Policy(share=False))
    assert ask(client, "share-b", "item 3").headers["x-kallm-cache"] == "MISS"
    assert ask(client, "share-a", "item 3").headers["x-kallm-cache"] == "HIT"  # its own


def test_max_entries_bounds_a_namespace_share_of_the_cache(client):
    for i in range(3):
        assert ask(client, "small", f"item {i}").headers["x-kallm-cache"] == "MISS"
    assert ask(client, "small", "item 2").headers["x-kallm-cache"] == "HIT"
    # The least recently used entry went when the third came in; other namespaces keep theirs.
    assert ask(client, "small", "item 0").headers["x-kallm-cache"] == "MISS"
    for i in range(3):
        ask(client, "free", f"item {i}")
    assert all(ask(client, "free", f"item {i}").headers["x-kallm-cache"] == "HIT" for i in range(3))
