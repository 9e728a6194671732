"""Isolation as a property (issue 10): for random pairs of callers, an answer stored by one is
served to the other exactly when the README's sharing rule says so.

The rule: two callers share answers when they name the same X-Kallm-Namespace and
- with client keys, belong to the same tenant, or to two tenants whose policies share;
- when kallm forwards callers' credentials, present the same credentials (every key, token,
  cookie and signature, wherever sent); with kallm's own key, credentials do not divide;
- with pod-IP identity, run in the same Kubernetes namespace.
"""

from __future__ import annotations

import itertools

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from test_auth import request

from kallm.app import Parts, create_app
from kallm.policies import Policy, PolicyBook
from kallm.proxy.admission import Gate
from kallm.proxy.auth import bare_key
from kallm.settings import load_settings

KEYS = {"sk-a1": "team-a", "sk-a2": "team-a", "sk-b": "team-b", "sk-c": "team-c"}
SHARING = {"team-a", "team-b"}
HEADERS = [None, "n1", "n2", "tenant:team-a/n1", "tenant:team-b/n1"]
# Where a forwarded credential can travel, and values it can have.
CREDENTIALS = {
    "authorization": ["Bearer sk-1", "Bearer sk-2"],
    "x-api-key": ["sk-1", "sk-3"],
    "cookie": ["session=a", "session=b"],
    "proxy-authorization": ["Basic dTpw"],
    "ocp-apim-subscription-key": ["sub-1"],
}
PARAMS = {"access_token": ["tok-1", "tok-2"], "key": ["sk-1"]}
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def answer(request: httpx.Request) -> httpx.Response:
    message = {"role": "assistant", "content": f"answer {next(COUNTER)}"}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    completion = {"id": "x", "object": "chat.completion", "created": 1, "choices": [choice]}
    return httpx.Response(200, json={**completion, "model": "gpt-4o-mini"})


class ExactOnly:
    """No prompt is compared by meaning: every HIT here is the same prompt's own answer."""

    name = "exact-only"

    async def embed(self, text):
        return None

    async def close(self):
        pass


COUNTER = itertools.count()
PROMPTS = itertools.count()


def app(**settings: str) -> TestClient:
    book = PolicyBook()
    for tenant in SHARING:
        book.set(tenant, Policy(share=True))
    config = load_settings(
        openai_base_url="http://upstream.test/v1", host="127.0.0.1", verifier=False, **settings
    )
    parts = Parts(embedder=ExactOnly(), transport=httpx.MockTransport(answer), policies=book)
    return TestClient(create_app(config, parts))


@pytest.fixture(scope="module")
def keyed():
    pairs = ",".join(f"{tenant}:{key}" for key, tenant in KEYS.items())
    with app(openai_api_key="sk-own", client_keys=pairs) as client:
        yield client


@pytest.fixture(scope="module")
def forwarding():
    with app() as client:
        yield client


def send(client: TestClient, prompt: str, headers: list[tuple[str, str]], params: list) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
    response = client.post("/v1/chat/completions", json=body, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.headers["x-kallm-cache"]


def namespace_header(header: str | None) -> list[tuple[str, str]]:
    return [] if header is None else [("x-kallm-namespace", header)]


keyed_callers = st.tuples(st.sampled_from(sorted(KEYS)), st.sampled_from(HEADERS))


@FAST
@given(keyed_callers, keyed_callers)
def test_client_key_tenants_share_only_by_rule(keyed, first, second):
    prompt = f"keyed prompt {next(PROMPTS)}"
    (key_a, header_a), (key_b, header_b) = first, second
    send(keyed, prompt, [("authorization", f"Bearer {key_a}"), *namespace_header(header_a)], [])
    got = send(keyed, prompt, [("x-api-key", key_b), *namespace_header(header_b)], [])
    tenant_a, tenant_b = KEYS[key_a], KEYS[key_b]
    same_tenant = tenant_a == tenant_b or {tenant_a, tenant_b} <= SHARING
    assert got == ("HIT" if header_a == header_b and same_tenant else "MISS")


credential_sets = st.tuples(
    st.dictionaries(st.sampled_from(sorted(CREDENTIALS)), st.integers(0, 1), max_size=3),
    st.dictionaries(st.sampled_from(sorted(PARAMS)), st.integers(0, 1), max_size=2),
    st.sampled_from(HEADERS[:3]),
)


def presented(choice):
    headers, params, header = choice
    sent = [(name, CREDENTIALS[name][i % len(CREDENTIALS[name])]) for name, i in headers.items()]
    query = [(name, PARAMS[name][i % len(PARAMS[name])]) for name, i in params.items()]
    values = {bare_key(value) for _, value in sent} | {value for _, value in query}
    return sent + namespace_header(header), query, (header, frozenset(values))


@FAST
@given(credential_sets, credential_sets)
def test_forwarded_credentials_share_only_when_identical(forwarding, first, second):
    prompt = f"forwarded prompt {next(PROMPTS)}"
    headers_a, query_a, identity_a = presented(first)
    headers_b, query_b, identity_b = presented(second)
    send(forwarding, prompt, headers_a, query_a)
    got = send(forwarding, prompt, headers_b, query_b)
    assert got == ("HIT" if identity_a == identity_b else "MISS")


@FAST
@given(credential_sets, credential_sets)
def test_with_kallms_own_key_credentials_do_not_divide(keyed, first, second):
    # Every caller here also presents a client key of team-a; only the namespace decides.
    prompt = f"own-key prompt {next(PROMPTS)}"
    headers_a, query_a, (header_a, _) = presented(first)
    headers_b, query_b, (header_b, _) = presented(second)
    auth = [("x-kallm-key", "sk-a1")]
    send(keyed, prompt, auth + headers_a, query_a)
    got = send(keyed, prompt, auth + headers_b, query_b)
    assert got == ("HIT" if header_a == header_b else "MISS")


PODS = {"10.0.0.1": "team-x", "10.0.0.2": "team-x", "10.0.0.3": "team-y"}
pod_callers = st.tuples(
    st.sampled_from([*sorted(PODS), "10.9.9.9", "10.9.9.8"]),
    st.sampled_from([None, "n1", "tenant:team-y/n1"]),
)


@settings(max_examples=200, deadline=None)
@given(pod_callers, pod_callers)
def test_pods_share_only_within_their_kubernetes_namespace(first, second):
    gate = Gate(pod_namespace=PODS.get)

    def namespace(caller):
        address, header = caller
        asked = request(namespace_header(header), client=address)
        return gate.admit(asked, "chat.completions", own_key=True).namespace

    # A caller kallm cannot place is a tenant of its own address.
    tenant_a = PODS.get(first[0], first[0])
    tenant_b = PODS.get(second[0], second[0])
    same = tenant_a == tenant_b and first[1] == second[1]
    assert (namespace(first) == namespace(second)) == same
