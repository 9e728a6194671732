"""Several kallm processes on one shared store (real Redis, real PostgreSQL+pgvector)."""

import concurrent.futures
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from processes import MODEL, SERVER_KEY, clean_env, start_kallm

sys.path.insert(0, str(Path(__file__).parents[1] / "storage"))
from postgres_server import postgres_server
from redis_server import RedisServer

TOKEN = "replica-admin-token"


def eventually(check, seconds):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), durable=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module", params=["redis", "postgres"])
def backend_url(request):
    server = request.getfixturevalue(request.param)
    return server.url if request.param == "redis" else server.get_uri()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, simulator, backend_url):
    settings = {
        "OPENAI_API_KEY": SERVER_KEY,
        "KALLM_BACKEND": backend_url,
        "KALLM_ADMIN_TOKEN": TOKEN,
    }
    pair = [start_kallm(tmp_path_factory, simulator, f"replica-{i}", **settings) for i in range(2)]
    yield pair, settings
    for proxy in pair:
        proxy.process.stop()


def test_a_miss_on_one_replica_is_a_hit_on_the_other(replicas, make_caller, upstream):
    (a, b), _ = replicas
    one, other = make_caller(a), make_caller(b)
    first = one.chat("What is the boiling point of ethanol?")
    assert first.cache == "MISS"
    probe = {"Cache-Control": "no-store"}  # a miss on the other must not store its own answer
    replies = []
    found = eventually(
        lambda: (
            replies.append(other.chat("What is the boiling point of ethanol?", headers=probe))
            or replies[-1].cache == "HIT"
        ),
        1.0,
    )
    assert found, "the other replica did not see the entry within 1 s"
    assert replies[-1].content == first.content
    assert other.chat("What's the boiling point of ethanol?").cache == "HIT"  # its index has it


def test_a_clear_on_one_replica_takes_effect_on_the_other(replicas, make_caller):
    (a, b), _ = replicas
    one, other = make_caller(a), make_caller(b)
    one.chat("Name the largest moon of Saturn.")
    probe = {"Cache-Control": "no-store"}
    assert eventually(
        lambda: other.chat("Name the largest moon of Saturn.", headers=probe).cache == "HIT", 1.0
    )
    cleared = httpx.delete(f"{a.root}/admin/cache", params={"namespace": one.namespace},
                           headers={"authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert cleared.json()["deleted"] == 1
    assert other.chat("Name the largest moon of Saturn.").cache == "MISS"


def test_a_wrong_hit_reported_on_one_replica_is_never_served_on_the_other(
    replicas, make_caller, tmp_path
):
    (a, b), _ = replicas
    one, other = make_caller(a), make_caller(b)
    one.chat("How do I enable dark mode on my phone?")
    probe = {"Cache-Control": "no-store"}  # misses must not store answers of their own
    asked = "How do I enable dark mode on my phone, please?"
    replies = []
    assert eventually(
        lambda: replies.append(other.chat(asked, headers=probe)) or replies[-1].cache == "HIT",
        1.0,
    )
    entry = replies[-1].headers["x-kallm-entry"]
    request = tmp_path / "request.json"
    # The request as the SDK sent it: what a user who got the wrong answer has at hand.
    request.write_text(
        json.dumps({"model": MODEL, "messages": [{"role": "user", "content": asked}]})
    )
    cli = [sys.executable, "-m", "kallm"]
    env = clean_env(KALLM_ADMIN_TOKEN=TOKEN)
    reported = subprocess.run(
        [*cli, "report-wrong", entry, str(request), "--url", a.root],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert reported.returncode == 0, reported.stderr
    assert "reported wrong" in reported.stdout
    # At once, on both replicas: no waiting for the other to hear of it.
    for caller in (other, one):
        reply = caller.chat(asked, headers=probe)
        assert reply.cache == "MISS" and "x-kallm-entry" not in reply.headers
    assert one.chat("How do I enable dark mode on my phone?").cache == "HIT"  # its own request
    exported = subprocess.run(
        [*cli, "export", "--reports", "--namespace", one.namespace, "--url", b.root],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    (line,) = exported.stdout.splitlines()
    assert json.loads(line)["right"] is False and json.loads(line)["namespace"] == one.namespace
    proposed = subprocess.run(
        [*cli, "calibrate", "--from-reports", "--url", b.root],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proposed.returncode == 0, proposed.stdout + proposed.stderr
    lines = proposed.stdout.strip().splitlines()
    assert lines[0].startswith("KALLM_SIMILARITY_THRESHOLD=")
    assert lines[1].startswith("KALLM_VERIFIER_THRESHOLD=")
    assert lines[2].startswith("# refuses all ") and "reported wrong hits" in lines[2]


def test_ttl_expiry_holds_across_replicas(replicas, make_caller):
    (a, b), _ = replicas
    one, other = make_caller(a), make_caller(b)
    one.chat("What is the atomic number of neon?", headers={"X-Kallm-TTL": "1.5"})
    probe = {"Cache-Control": "no-store"}
    assert eventually(
        lambda: other.chat("What is the atomic number of neon?", headers=probe).cache == "HIT", 1.0
    )
    time.sleep(1.6)
    assert other.chat("What is the atomic number of neon?", headers=probe).cache == "MISS"


def test_entries_survive_a_kallm_restart(replicas, make_caller, tmp_path_factory, simulator):
    (a, _), settings = replicas
    make_caller(a).chat("Who painted The Night Watch?")
    namespace = make_caller(a).namespace
    fresh = start_kallm(tmp_path_factory, simulator, "replica-restarted", **settings)
    try:
        assert (
            make_caller(fresh, namespace=namespace).chat("Who painted The Night Watch?").cache
            == "HIT"
        )
    finally:
        fresh.process.stop()


def test_kallm_answers_while_redis_is_down_and_caches_again_when_it_returns(
    tmp_path_factory, simulator, make_caller
):
    server = RedisServer(tmp_path_factory.mktemp("redis-late"))
    proxy = start_kallm(tmp_path_factory, simulator, "kallm-redis-late",
                        OPENAI_API_KEY=SERVER_KEY, KALLM_BACKEND=server.url)  # fmt: skip
    try:
        caller = make_caller(proxy)
        down = [caller.chat("How many bones are in the human hand?") for _ in range(3)]
        assert [r.cache for r in down] == ["MISS"] * 3  # answered upstream, never a 5xx
        assert httpx.get(f"{proxy.root}/health").status_code == 200
        assert httpx.get(f"{proxy.root}/stats").json()["store"]["status"] == "degraded"
        server.start()
        started = time.monotonic()
        assert eventually(
            lambda: caller.chat("How many bones are in the human hand?").cache == "HIT", 10
        )
        assert time.monotonic() - started < 10
    finally:
        proxy.process.stop()
        server.stop()


def test_stopping_redis_under_load_never_fails_a_request(tmp_path_factory, simulator, make_caller):
    server = RedisServer(tmp_path_factory.mktemp("redis-load"))
    server.start()
    proxy = start_kallm(tmp_path_factory, simulator, "kallm-redis-load",
                        OPENAI_API_KEY=SERVER_KEY, KALLM_BACKEND=server.url)  # fmt: skip
    try:
        caller = make_caller(proxy)
        prompts = [f"Give me tip number {i % 7} for learning chess." for i in range(60)]

        def ask(prompt):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
            headers = {"X-Kallm-Namespace": caller.namespace}
            url = f"{proxy.base_url}/chat/completions"
            return httpx.post(url, json=body, headers=headers, timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(ask, p) for p in prompts[:30]]
            time.sleep(0.2)
            server.stop()
            futures += [pool.submit(ask, p) for p in prompts[30:]]
            statuses = [f.result() for f in futures]
        assert statuses == [200] * len(prompts)
    finally:
        proxy.process.stop()
        server.stop()
