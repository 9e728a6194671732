"""Who may share an answer: namespaces, and the client keys kallm forwards."""

from __future__ import annotations

CLIENT_A = "sk-client-a-1111111111111111"
CLIENT_B = "sk-client-b-2222222222222222"


def test_namespaces_do_not_share_answers(make_caller, kallm, namespace, upstream):
    alpha = make_caller(kallm, namespace=f"{namespace}-alpha")
    beta = make_caller(kallm, namespace=f"{namespace}-beta")

    first = alpha.chat("What is the largest desert?")
    other = beta.chat("What is the largest desert?")
    again = alpha.chat("What is the largest desert?")

    assert (first.cache, other.cache, again.cache) == ("MISS", "MISS", "HIT")
    assert other.content != first.content
    assert again.content == first.content
    assert len(upstream.chat_calls()) == 2


def test_requests_without_a_namespace_share_the_default_one(make_caller, kallm, namespace):
    unnamed = make_caller(kallm, namespace=None)
    named_default = make_caller(kallm, namespace="default")
    prompt = f"Which namespace am I in? ({namespace})"  # unique, as the default is shared

    first = unnamed.chat(prompt)
    second = named_default.chat(prompt)

    assert (first.cache, second.cache) == ("MISS", "HIT")


def test_kallm_uses_its_own_key_upstream(make_caller, kallm, upstream):
    caller = make_caller(kallm, api_key=CLIENT_A)
    caller.chat("Who wrote Hamlet?")
    caller.client.models.list()

    recorded = upstream.requests()
    assert len(recorded) == 2
    for request in recorded:
        assert request["headers"]["authorization"] == f"Bearer {kallm.upstream_key}"
        assert CLIENT_A not in str(request["headers"])


def test_kallm_strips_its_own_headers_upstream(caller, upstream):
    caller.chat("Who painted the Mona Lisa?", headers={"X-Kallm-Threshold": "0.9"})

    (request,) = upstream.chat_calls()
    assert not [name for name in request["headers"] if name.startswith("x-kallm-")]


def test_forwarded_client_keys_do_not_share_answers(
    make_caller, kallm_forwarding, namespace, upstream
):
    alice = make_caller(kallm_forwarding, api_key=CLIENT_A)
    bob = make_caller(kallm_forwarding, api_key=CLIENT_B)

    first = alice.chat("What is my account balance?")
    other = bob.chat("What is my account balance?")
    again = alice.chat("What is my account balance?")

    assert (first.cache, other.cache, again.cache) == ("MISS", "MISS", "HIT")
    assert other.content != first.content
    assert again.content == first.content
    keys = [r["headers"]["authorization"] for r in upstream.chat_calls()]
    assert keys == [f"Bearer {CLIENT_A}", f"Bearer {CLIENT_B}"]


def test_forwarded_client_keys_reach_passthrough_routes(make_caller, kallm_forwarding, upstream):
    make_caller(kallm_forwarding, api_key=CLIENT_B).client.models.list()

    (request,) = upstream.requests("/v1/models")
    assert request["headers"]["authorization"] == f"Bearer {CLIENT_B}"


def test_api_keys_never_reach_the_logs(make_caller, kallm, kallm_forwarding):
    for proxy in (kallm, kallm_forwarding):
        caller = make_caller(proxy, api_key=CLIENT_A)
        caller.chat("Is my key safe?")
        caller.chat("Is my key safe?")
        caller.client.models.list()

    for proxy in (kallm, kallm_forwarding):
        log = proxy.process.log()
        assert log.strip(), f"{proxy.process.name} wrote no log"
        for secret in (CLIENT_A, CLIENT_A.removeprefix("sk-"), kallm.upstream_key):
            assert secret not in log, f"{proxy.process.name} logged a key"
