"""Who may call kallm and what they can reach (issue 10, items 1-8 and 17), against real kallm
processes driven by the vendors' SDKs."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from processes import (
    MODEL,
    SERVER_KEY,
    Kallm,
    Simulator,
    clean_env,
    free_port,
    start_kallm,
    unique_namespace,
)

TEAM_A, TEAM_B = "sk-kallm-team-a-111", "sk-kallm-team-b-222"
LIMITED = "sk-kallm-limited-333"  # may only use gpt-4o* models on chat completions
ADMIN = "admin-token-for-security"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def kallm_keys(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Kallm]:
    """Every provider key of its own, and client keys: two tenants from the environment,
    one limited client from a file."""
    file = tmp_path_factory.mktemp("clients") / "clients.json"
    limited = {"tenant": "team-c", "key": LIMITED, "models": ["gpt-4o*"]}
    file.write_text(json.dumps({"clients": [limited | {"routes": ["chat.completions"]}]}))
    proxy = start_kallm(
        tmp_path_factory,
        simulator,
        "kallm-client-keys",
        OPENAI_API_KEY=SERVER_KEY,
        ANTHROPIC_API_KEY="sk-ant-server",
        GEMINI_API_KEY="gemini-server",
        KALLM_CLIENT_KEYS=f"team-a:{TEAM_A},team-b:{TEAM_B}",
        KALLM_CLIENT_KEYS_FILE=str(file),
        KALLM_ADMIN_TOKEN=ADMIN,
        KALLM_MAX_TTL="1h",
    )
    yield proxy
    proxy.process.stop()


def chat_client(proxy: Kallm, key: str, namespace: str) -> openai.OpenAI:
    headers = {"X-Kallm-Namespace": namespace}
    return openai.OpenAI(
        base_url=proxy.base_url, api_key=key, max_retries=0, timeout=30, default_headers=headers
    )


def ask(client: openai.OpenAI, prompt: str, **params: object) -> tuple[str, str | None]:
    raw = client.chat.completions.with_raw_response.create(
        messages=[{"role": "user", "content": prompt}], **{"model": MODEL, **params}
    )
    return raw.parse().choices[0].message.content or "", raw.headers.get("x-kallm-cache")


def test_a_wrong_or_missing_client_key_is_a_401_in_each_providers_format(
    kallm_keys, upstream, request
):
    namespace = unique_namespace(request)
    with pytest.raises(openai.AuthenticationError):
        ask(chat_client(kallm_keys, "sk-not-a-client", namespace), "Who may call?")
    with pytest.raises(openai.AuthenticationError):
        chat_client(kallm_keys, "sk-not-a-client", namespace).embeddings.create(
            model="text-embedding-3-small", input="x"
        )
    with pytest.raises(openai.AuthenticationError):
        chat_client(kallm_keys, "sk-not-a-client", namespace).models.list()
    claude = anthropic.Anthropic(base_url=kallm_keys.root, api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "Who may call?"}],
        )
    gemini = genai.Client(api_key="nope", http_options=types.HttpOptions(base_url=kallm_keys.root))
    with pytest.raises(genai_errors.ClientError) as error:
        gemini.models.generate_content(model="gemini-2.5-flash", contents="Who may call?")
    assert error.value.code == 401
    # No key at all, raw.
    bare = httpx.post(f"{kallm_keys.base_url}/chat/completions", json={"model": MODEL})
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "authentication_error"
    assert upstream.requests() == []


def test_tenants_never_see_each_others_answers(kallm_keys, upstream, request):
    namespace = unique_namespace(request)
    team_a = chat_client(kallm_keys, TEAM_A, namespace)
    team_b = chat_client(kallm_keys, TEAM_B, namespace)
    prompt = "What is the tallest mountain in Europe?"
    first, cache = ask(team_a, prompt)
    assert cache == "MISS"
    assert ask(team_a, prompt) == (first, "HIT")
    # Team B names the same namespace, and even team A's full namespace: never A's answer.
    assert ask(team_b, prompt)[1] == "MISS"
    sneaky = chat_client(kallm_keys, TEAM_B, f"tenant:team-a/{namespace}")
    assert ask(sneaky, prompt)[1] == "MISS"
    # Upstream only ever saw kallm's own key.
    keys = {call["headers"].get("authorization") for call in upstream.chat_calls()}
    assert keys == {f"Bearer {SERVER_KEY}"}


def test_a_client_key_can_be_sent_beside_any_sdks_key(kallm_keys, upstream, request):
    namespace = unique_namespace(request)
    headers = {"X-Kallm-Key": TEAM_A, "X-Kallm-Namespace": namespace}
    client = openai.OpenAI(
        base_url=kallm_keys.base_url, api_key="sk-anything", default_headers=headers
    )
    assert ask(client, "Name a prime number above 100.")[1] == "MISS"
    assert ask(chat_client(kallm_keys, TEAM_A, namespace), "Name a prime number above 100.")[1] == (
        "HIT"
    )


def test_a_limited_client_gets_403_outside_its_models_and_routes(kallm_keys, upstream, request):
    client = chat_client(kallm_keys, LIMITED, unique_namespace(request))
    assert ask(client, "Hello there, limited client")[1] == "MISS"
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="o3", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.PermissionDeniedError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.PermissionDeniedError):
        client.models.list()
    assert len(upstream.requests()) == 1


def test_kallm_refuses_to_be_an_open_relay(simulator):
    def serve(host: str, **settings: str) -> subprocess.Popen[str]:
        args = [sys.executable, "-m", "kallm", "serve", "--host", host, "--port", str(free_port())]
        env = clean_env(OPENAI_BASE_URL=simulator.base_url, **settings)
        return subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    refused = serve("0.0.0.0", OPENAI_API_KEY=SERVER_KEY)
    output, _ = refused.communicate(timeout=60)
    assert refused.returncode == 1
    assert "KALLM_CLIENT_KEYS" in output and "KALLM_INSECURE_OPEN_RELAY" in output
    assert SERVER_KEY not in output
    # Saying so explicitly, or having no key to spend, starts it.
    for settings in ({"OPENAI_API_KEY": SERVER_KEY, "KALLM_INSECURE_OPEN_RELAY": "true"}, {}):
        started = serve("0.0.0.0", **settings)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                started.wait(timeout=8)
        finally:
            started.kill()
            started.communicate()


def test_a_blank_admin_token_means_no_admin_api(tmp_path_factory, simulator):
    proxy = start_kallm(
        tmp_path_factory, simulator, "kallm-blank-admin", OPENAI_API_KEY=SERVER_KEY,
        KALLM_ADMIN_TOKEN="",
    )  # fmt: skip
    try:
        for headers in ({"Authorization": "Bearer "}, {"Authorization": "Bearer"}, {}):
            for method, path in (("DELETE", "/admin/cache"), ("GET", "/admin/export")):
                # http.client sends a trailing space as given (httpx refuses to).
                port = int(proxy.root.rsplit(":", 1)[1])
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request(method, path, headers=headers)
                assert connection.getresponse().status == 404
                connection.close()
    finally:
        proxy.process.stop()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/..%2F..%2Finternal%2Fadmin",
        "/v1/%2e%2e/%2e%2e/internal/admin",
        "/v1/messages/..%2F..%2F..%2Fopenai%2Fv1%2Fmodels",
        "/v1beta/..%2F..%2Finternal",
        "/v1beta/models/..%2F..%2Fx:generateContent",
    ],
)
def test_paths_leaving_the_base_url_are_refused_and_no_key_travels(kallm, upstream, path):
    # httpx would resolve the dots itself: send the path exactly as written.
    with httpx.Client() as client:
        sent = client.send(client.build_request("GET", kallm.root + path))
        posted = client.send(client.build_request("POST", kallm.root + path, json={}))
    assert sent.status_code == posted.status_code == 400
    assert upstream.requests() == []


def test_every_forwarded_credential_isolates(kallm_forwarding, upstream, request):
    namespace = unique_namespace(request)
    url = f"{kallm_forwarding.base_url}/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Which credential?"}]}
    ways = [
        ({"Proxy-Authorization": "Basic dXNlcjpwdw=="}, {}),
        ({"Cookie": "session=abc123"}, {}),
        ({"Ocp-Apim-Subscription-Key": "sub-1"}, {}),
        ({"X-Gateway-Token": "tok-1"}, {}),
        ({}, {"access_token": "oauth-1"}),
        ({"Authorization": "Bearer sk-1", "Cookie": "session=abc123"}, {}),
    ]
    for extra, params in ways:
        headers = {"X-Kallm-Namespace": namespace, **extra}
        assert httpx.post(url, json=body, headers=headers, params=params).headers[
            "x-kallm-cache"
        ] == ("MISS")
        # The same credentials hit; none, or other ones, do not.
        again = httpx.post(url, json=body, headers=headers, params=params)
        assert again.headers["x-kallm-cache"] == "HIT"
    # No credential, or other ones: never an answer fetched with those above.
    for headers in ({}, {"Cookie": "session=other"}, {"Authorization": "Bearer sk-1"}):
        answer = httpx.post(url, json=body, headers={"X-Kallm-Namespace": namespace, **headers})
        assert answer.headers["x-kallm-cache"] == "MISS"


def test_duplicate_credentials_are_refused(kallm_forwarding, upstream, request):
    headers = [
        ("X-Kallm-Namespace", unique_namespace(request)),
        ("Authorization", "Bearer sk-key-a"),
        ("Authorization", "Bearer sk-key-b"),
    ]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Whose answer?"}]}
    answer = httpx.post(f"{kallm_forwarding.base_url}/chat/completions", json=body, headers=headers)
    assert answer.status_code == 400 and "more than once" in answer.json()["error"]["message"]
    assert upstream.requests() == []


def test_credentials_in_base_urls_never_reach_the_log(tmp_path_factory, simulator):
    base = simulator.base_url.replace("http://", "http://user:hunter2-secret@")
    proxy = start_kallm(
        tmp_path_factory, simulator, "kallm-userinfo", OPENAI_API_KEY=SERVER_KEY,
        OPENAI_BASE_URL=base, ANTHROPIC_BASE_URL=f"http://u:pw-anthropic@127.0.0.1:{free_port()}",
    )  # fmt: skip
    try:
        body = {"model": MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": "Hi"}]}
        unreachable = httpx.post(f"{proxy.root}/v1/messages", json=body)
        assert unreachable.status_code == 502
        assert "127.0.0.1" in unreachable.text and "pw-anthropic" not in unreachable.text
        log = proxy.process.log()
        assert "hunter2-secret" not in log and "pw-anthropic" not in log
        assert "***@127.0.0.1" in log
    finally:
        proxy.process.stop()


def test_request_ttls_are_capped_and_non_finite_ones_refused(kallm_keys, upstream, request):
    namespace = unique_namespace(request)
    client = chat_client(kallm_keys, TEAM_A, namespace)
    for value in ("99999999999999", "1e308"):
        prompt = f"How long may this answer live ({value})?"
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            extra_headers={"X-Kallm-TTL": value},
        )
        assert raw.headers["x-kallm-cache"] == "MISS"
    for value in ("inf", "nan", "1e309"):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Forever?"}],
                extra_headers={"X-Kallm-TTL": value},
            )
    listed = httpx.get(
        f"{kallm_keys.root}/admin/entries",
        params={"namespace": f"tenant:team-a/{namespace}"},
        headers=ADMIN_HEADERS,
    ).json()["entries"]
    assert len(listed) == 2
    assert all(entry["expires"] - entry["created"] <= 3600 + 1 for entry in listed)


def test_warm_reports_bad_lines_and_caps_ttls(kallm_keys, upstream, request):
    namespace = unique_namespace(request)
    answer = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Warm."},
                     "finish_reason": "stop"}],
    }  # fmt: skip
    good = {"request": {"model": MODEL, "messages": [{"role": "user", "content": "Warm?"}]}}
    lines = [
        json.dumps(good | {"response": answer, "ttl": 10**12}),
        '{"request": {}, "response": {}, "ttl": 1e309}',
        "[1, 2, 3]",
        '"just a string"',
        json.dumps(good | {"response": answer, "ttl": -5}),
    ]
    warmed = httpx.post(
        f"{kallm_keys.root}/admin/warm",
        params={"tenant": "team-a", "namespace": namespace},
        content="\n".join(lines),
        headers=ADMIN_HEADERS,
    )
    assert warmed.status_code == 200
    result = warmed.json()
    assert result["stored"] == 1 and len(result["errors"]) == 4
    assert result["namespaces"] == {f"tenant:team-a/{namespace}": 1}
    listed = httpx.get(f"{kallm_keys.root}/admin/entries", headers=ADMIN_HEADERS)
    assert listed.status_code == 200
    entry = next(e for e in listed.json()["entries"] if e["namespace"].endswith(namespace))
    assert entry["expires"] - entry["created"] <= 3600 + 1
    # The tenant it was warmed for is served from it.
    assert ask(chat_client(kallm_keys, TEAM_A, namespace), "Warm?") == ("Warm.", "HIT")
    assert ask(chat_client(kallm_keys, TEAM_B, namespace), "Warm?")[1] == "MISS"


def test_warming_for_a_forwarded_key_serves_that_key(tmp_path_factory, simulator, tmp_path):
    proxy = start_kallm(
        tmp_path_factory, simulator, "kallm-warm-forwarding", KALLM_ADMIN_TOKEN=ADMIN
    )
    try:
        answer = {
            "id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "For you."},
                         "finish_reason": "stop"}],
        }  # fmt: skip
        request = {"model": MODEL, "messages": [{"role": "user", "content": "Mine?"}]}
        file = tmp_path / "warm.jsonl"
        file.write_text(json.dumps({"request": request, "response": answer}) + "\n")
        env = clean_env(KALLM_URL=proxy.root, KALLM_ADMIN_TOKEN=ADMIN, MY_KEY="sk-user-key-9")
        cli = [sys.executable, "-m", "kallm", "warm", str(file)]
        unkeyed = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
        assert unkeyed.returncode == 0
        assert "into namespace default" in unkeyed.stdout
        assert "forwards client keys" in unkeyed.stderr
        keyed = subprocess.run(
            [*cli, "--key-env", "MY_KEY", "--namespace", "team"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert keyed.returncode == 0, keyed.stderr
        assert "into namespace team (for one client key)" in keyed.stdout
        assert "sk-user-key-9" not in keyed.stdout + keyed.stderr
        mine = openai.OpenAI(
            base_url=proxy.base_url, api_key="sk-user-key-9",
            default_headers={"X-Kallm-Namespace": "team"},
        )  # fmt: skip
        assert ask(mine, "Mine?") == ("For you.", "HIT")
        other = openai.OpenAI(
            base_url=proxy.base_url, api_key="sk-other-key",
            default_headers={"X-Kallm-Namespace": "team"},
        )  # fmt: skip
        assert ask(other, "Mine?")[1] == "MISS"
    finally:
        proxy.process.stop()


def test_stats_show_tenant_detail_only_to_the_operator(kallm_keys, upstream, request):
    client = chat_client(kallm_keys, TEAM_A, unique_namespace(request))
    ask(client, "An unpriced question", model="team-a-private-model")
    ask(client, "An unpriced question", model="team-a-private-model")
    public = httpx.get(f"{kallm_keys.root}/stats").json()
    assert public["pricing"]["unpriced_models"] is None
    operator = httpx.get(f"{kallm_keys.root}/stats", headers=ADMIN_HEADERS).json()
    assert "team-a-private-model" in operator["pricing"]["unpriced_models"]


def test_a_proxied_answer_has_one_date_header(kallm, upstream, request):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What day is it?"}]}
    headers = {"X-Kallm-Namespace": unique_namespace(request)}
    for _ in range(2):  # a MISS (relayed) and a HIT (kallm's own)
        answer = httpx.post(f"{kallm.base_url}/chat/completions", json=body, headers=headers)
        assert len(answer.headers.get_list("date")) == 1
    models = httpx.get(f"{kallm.base_url}/models")
    assert len(models.headers.get_list("date")) == 1


def test_no_key_is_logged(kallm_keys):
    log = kallm_keys.process.log()
    for secret in (TEAM_A, TEAM_B, LIMITED, SERVER_KEY, ADMIN, "sk-ant-server"):
        assert secret not in log
    assert os.path.basename(__file__)  # the log was read after the tests above ran
