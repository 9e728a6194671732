"""Client keys, credentials and the admission gate (issue 10, items 1, 3, 4 and 5)."""

from __future__ import annotations

import hashlib
import json

import pytest
from starlette.requests import Request

from kallm import upstream
from kallm.proxy.admission import Gate
from kallm.proxy.auth import (
    ClientKeys,
    ClientKeysError,
    Presented,
    Refused,
    authenticate,
    check_unambiguous,
    credentials,
)


def request(
    headers: list[tuple[str, str]] | None = None,
    query: str = "",
    path: str = "/v1/chat/completions",
    client: str = "10.0.0.7",
) -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers or []]
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": raw,
        "client": (client, 5000),
    }
    return Request(scope)


def test_pairs_name_tenants_and_keys_are_kept_as_digests():
    clients = ClientKeys.load("team-a:sk-a1, team-a:sk-a2\nteam-b:sk-b", None)
    assert clients is not None and len(clients) == 3
    assert clients.find("sk-a2").tenant == "team-a"
    assert clients.find("sk-b").tenant == "team-b"
    assert clients.find("sk-c") is None
    assert "sk-a1" not in repr(vars(clients))


@pytest.mark.parametrize(
    "pairs", ["sk-no-tenant", "team-a:", ":sk-x", "bad tenant!:sk", "a:k1,b:k1"]
)
def test_invalid_pairs_are_refused(pairs):
    with pytest.raises(ClientKeysError):
        ClientKeys.load(pairs, None)


def test_a_file_limits_models_and_routes(tmp_path):
    file = tmp_path / "clients.json"
    digest = hashlib.sha256(b"sk-hashed").hexdigest()
    file.write_text(
        json.dumps(
            {
                "clients": [
                    {"tenant": "team-a", "key": "sk-a", "models": ["gpt-4o*"]},
                    {"tenant": "team-b", "key_sha256": digest, "routes": ["embeddings"]},
                ]
            }
        )
    )
    clients = ClientKeys.load(None, file)
    assert clients is not None
    team_a, team_b = clients.find("sk-a"), clients.find("sk-hashed")
    team_a.check_model("gpt-4o-mini")
    with pytest.raises(Refused) as refused:
        team_a.check_model("o3")
    assert refused.value.status == 403
    team_b.check_route("embeddings")
    with pytest.raises(Refused):
        team_b.check_route("chat.completions")


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        {"clients": {}},
        {"clients": [{"tenant": "a"}]},
        {"clients": [{"tenant": "a", "key": "k", "key_sha256": "0" * 64}]},
        {"clients": [{"tenant": "a", "key": "k", "routes": ["admin"]}]},
        {"clients": [{"tenant": "a", "key": "k", "colour": "red"}]},
        {"clients": []},
    ],
)
def test_invalid_files_are_refused(tmp_path, document):
    file = tmp_path / "clients.json"
    file.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(ClientKeysError, match="KALLM_CLIENT_KEYS"):
        ClientKeys.load(None, file)


def test_the_key_is_found_where_the_sdks_send_it_and_never_forwarded():
    clients = ClientKeys.load("team-a:sk-kallm", None)
    assert clients is not None
    for header in ("authorization", "x-api-key", "api-key", "x-goog-api-key"):
        value = "Bearer sk-kallm" if header == "authorization" else "sk-kallm"
        client, rest = authenticate(clients, Presented([(header, value)], []))
        assert client.tenant == "team-a"
        assert rest.headers == []
    client, rest = authenticate(clients, Presented([], [("key", "sk-kallm"), ("alt", "sse")]))
    assert client.tenant == "team-a" and rest.query == [("alt", "sse")]
    # In X-Kallm-Key, the provider key beside it stays: it is the caller's own upstream key.
    presented = Presented([("x-kallm-key", "sk-kallm"), ("authorization", "Bearer sk-up")], [])
    client, rest = authenticate(clients, presented)
    assert ("authorization", "Bearer sk-up") in rest.headers


@pytest.mark.parametrize(
    "headers",
    [[], [("authorization", "Bearer sk-wrong")], [("x-kallm-key", "sk-wrong")]],
)
def test_a_wrong_or_missing_key_is_a_401(headers):
    clients = ClientKeys.load("team-a:sk-kallm", None)
    with pytest.raises(Refused) as refused:
        authenticate(clients, Presented(headers, []))
    assert refused.value.status == 401 and refused.value.kind == "authentication_error"


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ([("authorization", "Bearer a"), ("authorization", "Bearer b")], []),
        ([("x-api-key", "a"), ("x-api-key", "b")], []),
        ([("cookie", "a=1"), ("cookie", "b=2")], []),
        ([("x-kallm-namespace", "a"), ("x-kallm-namespace", "b")], []),
        ([], [("key", "a"), ("key", "b")]),
        ([], [("access_token", "a"), ("access_token", "b")]),
    ],
)
def test_ambiguous_credentials_are_refused(headers, query):
    with pytest.raises(Refused) as refused:
        check_unambiguous(Presented(headers, query))
    assert refused.value.status == 400


def test_every_credential_divides_and_nothing_else_does():
    def of(headers, query=()):
        return credentials(Presented(headers, list(query)))

    assert of([("content-type", "application/json"), ("idempotency-key", "x")]) is None
    seen = {
        of([("authorization", "Bearer k")]),
        of([("proxy-authorization", "Basic abc")]),
        of([("cookie", "session=1")]),
        of([("ocp-apim-subscription-key", "s")]),
        of([("x-gateway-token", "t")]),
        of([], [("access_token", "t2")]),
        of([], [("sig", "s2")]),
        of([("authorization", "Bearer k"), ("cookie", "session=1")]),
    }
    assert None not in seen and len(seen) == 8
    # No value passes for two.
    assert of([], [("access_token", "a\nb")]) != of([("cookie", "a")], [("access_token", "b")])
    # One key, wherever it is sent, is one credential.
    assert of([("authorization", "Bearer k")]) == of([("x-api-key", "k")]) == of([], [("key", "k")])


@pytest.mark.parametrize(
    "path",
    [
        "/v1/..%2F..%2Finternal%2Fadmin",
        "/v1/../internal",
        "/v1/%2e%2e/internal",
        "/v1/%252e%252e/internal",
        "/v1/messages/..%2F..%2F..%2Fopenai%2Fv1%2Fmodels",
        "/v1/files/a%5c..%5cb",
        "/v1/./models",
    ],
)
def test_paths_that_could_leave_the_base_url_are_refused(path):
    with pytest.raises(upstream.UnsafePath):
        upstream.target_url("https://api.example.com/v1", path.removeprefix("/v1"))
    with pytest.raises(Refused) as refused:
        Gate().admit(request(path=path), "passthrough", own_key=True, cached=False)
    assert refused.value.status == 400


def test_ordinary_paths_stay_under_the_base_url():
    url = upstream.target_url("https://api.example.com/v1", "/files/file-abc%20x/content")
    assert str(url) == "https://api.example.com/v1/files/file-abc%20x/content"
    with pytest.raises(upstream.UnsafePath):
        upstream.target_url("https://api.example.com/v1", "@evil.example/x")


def test_the_gate_encloses_a_client_in_its_tenant():
    gate = Gate(ClientKeys.load("team-a:sk-a,team-b:sk-b", None))
    a = gate.admit(request([("authorization", "Bearer sk-a")]), "chat.completions", True)
    b = gate.admit(
        request([("authorization", "Bearer sk-b"), ("x-kallm-namespace", "tenant:team-a/default")]),
        "chat.completions",
        True,
    )
    assert a.namespace == "tenant:team-a/default"
    assert b.namespace.startswith("tenant:team-b/")
    assert "authorization" not in a.headers


def test_the_gate_keys_forwarded_credentials_only_when_they_go_upstream():
    gate = Gate()
    asked = request([("authorization", "Bearer sk-1")])
    assert gate.admit(asked, "chat.completions", own_key=True).namespace == "default"
    forwarded = gate.admit(asked, "chat.completions", own_key=False).namespace
    assert forwarded is not None and forwarded.startswith("default@")


def test_the_gate_places_pods_by_address():
    gate = Gate(pod_namespace={"10.0.0.7": "team-x"}.get)
    assert gate.admit(request(), "messages", True).namespace == "tenant:team-x/default"
    stranger = gate.admit(request(client="10.9.9.9"), "messages", True).namespace
    assert stranger == "tenant:unknown-pod-10.9.9.9/default"


def test_own_key_requests_drop_every_client_credential():
    sent = upstream.request_headers(
        {"cookie": "a=1", "x-gateway-token": "t", "x-api-key": "k", "accept": "*/*"},
        {"authorization": "Bearer own"},
        decoded=True,
    )
    assert sent == [
        (b"accept", b"*/*"),
        (b"authorization", b"Bearer own"),
        (b"accept-encoding", b"identity"),
    ]
    assert str(upstream.query("key=k&access_token=t&alt=sse", own_key=True)) == "alt=sse"
