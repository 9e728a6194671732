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
    with pytest.raises(ValueError):
        parse_policy(specs["team-b"])  # the invalid example


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
        # "first ..." and any other prompt have cosine 0.9: the threshold decides.
        if text.startswith("first"):
            return np.array([1, 0, 0, 0], dtype=np.float32)
        return np.array([0.9, np.sqrt(1 - 0.81), 0, 0], dtype=np.float32)

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
def client():
    def upstream(request):
        message = {"role": "assistant", "content": "ok"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        completion = {"id": "x", "object": "chat.completion", "created": 1, "choices": [choice]}
        return httpx.Response(200, json={**completion, "model": "gpt-4o-mini"})

    book = PolicyBook()
    book.set("off", Policy(enabled=False))
    book.set("loose", Policy(similarity_threshold=0.85))
    book.set("picky", Policy(bypass_models=frozenset({"o3"})))
    book.set("short", Policy(ttl=0.001))
    settings = load_settings(
        openai_base_url="http://upstream.test/v1", openai_api_key="sk-test", verifier=False
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
