"""The management API and CLI, and the SQLite backend across a restart."""

import json
import subprocess
import sys
import uuid

import httpx
import pytest
from processes import SERVER_KEY, clean_env, start_kallm

TOKEN = "admin-token-for-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def sqlite_kallm(tmp_path_factory, simulator):
    db = tmp_path_factory.mktemp("db") / "kallm.db"
    settings = {
        "OPENAI_API_KEY": SERVER_KEY,
        "KALLM_BACKEND": f"sqlite:///{db}",
        "KALLM_ADMIN_TOKEN": TOKEN,
    }

    def start():
        return start_kallm(tmp_path_factory, simulator, "kallm-sqlite", **settings)

    started = [start()]
    yield started, start
    started[-1].process.stop()


def admin(kallm, method, path, **kwargs):
    return httpx.request(method, f"{kallm.root}{path}", timeout=30, **kwargs)


def test_the_management_api_needs_the_token(sqlite_kallm, kallm):
    proxy = sqlite_kallm[0][0]
    assert admin(proxy, "GET", "/admin/entries").status_code == 401
    assert (
        admin(proxy, "GET", "/admin/entries", headers={"authorization": "Bearer wrong"}).status_code
        == 401
    )
    assert admin(proxy, "GET", "/admin/entries", headers=AUTH).status_code == 200
    assert admin(kallm, "GET", "/admin/entries", headers=AUTH).status_code == 404  # no token set


def test_entries_can_be_listed_deleted_and_cleared(sqlite_kallm, make_caller, upstream):
    proxy = sqlite_kallm[0][0]
    caller = make_caller(proxy)
    caller.chat("What is the speed of light?")
    caller.chat("How tall is Mount Everest?")

    listed = admin(
        proxy, "GET", "/admin/entries", headers=AUTH, params={"namespace": caller.namespace}
    ).json()
    prompts = {e["prompt"]: e for e in listed["entries"]}
    # Listed as kallm compares them: in canonical form, without the final punctuation.
    assert set(prompts) == {"What is the speed of light", "How tall is Mount Everest"}
    assert {"id", "namespace", "model", "created", "last_hit", "hits", "expires"} <= prompts[
        "How tall is Mount Everest"
    ].keys()
    found = admin(proxy, "GET", "/admin/entries", headers=AUTH, params={"q": "everest"}).json()
    assert [e["prompt"] for e in found["entries"]] == ["How tall is Mount Everest"]

    bad = prompts["How tall is Mount Everest"]["id"]
    assert admin(proxy, "DELETE", f"/admin/entries/{bad}", headers=AUTH).json() == {"deleted": True}
    assert admin(proxy, "DELETE", f"/admin/entries/{bad}", headers=AUTH).status_code == 404
    assert caller.chat("How tall is Mount Everest?").cache == "MISS"
    assert caller.chat("What is the speed of light?").cache == "HIT"

    cleared = admin(
        proxy, "DELETE", "/admin/cache", headers=AUTH, params={"namespace": caller.namespace}
    )
    assert cleared.json() == {"deleted": 2}
    assert caller.chat("What is the speed of light?").cache == "MISS"


def test_sqlite_entries_survive_a_restart(sqlite_kallm, make_caller, upstream):
    started, start = sqlite_kallm
    caller = make_caller(started[0])
    first = caller.chat("Which river is the longest in Europe?")
    started[0].process.stop()
    started.append(start())

    again = make_caller(started[-1], namespace=caller.namespace)
    reply = again.chat("Which river is the longest in Europe?")
    paraphrase = again.chat(
        "What is the longest river in Europe?", headers={"Cache-Control": "no-store"}
    )
    assert reply.cache == "HIT" and reply.content == first.content
    assert paraphrase.cache == "HIT"  # the vector index was loaded back too
    assert len(upstream.chat_calls()) == 1


def test_export_and_warm_round_trip_through_the_cli(
    sqlite_kallm, make_caller, upstream, tmp_path, tmp_path_factory, simulator
):
    source = sqlite_kallm[0][0]
    caller = make_caller(source)
    prompts = [f"Give me fun fact number {n} about octopuses." for n in range(5)]
    answers = [caller.chat(p).content for p in prompts]

    cli = [sys.executable, "-m", "kallm"]
    env = clean_env(KALLM_ADMIN_TOKEN=TOKEN)
    exported = subprocess.run(
        [*cli, "export", "--url", source.root, "--namespace", caller.namespace],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    dump = tmp_path / "export.jsonl"
    dump.write_text(exported.stdout)
    assert len(exported.stdout.splitlines()) == 5

    target = start_kallm(
        tmp_path_factory,
        simulator,
        "kallm-warmed",
        OPENAI_API_KEY=SERVER_KEY,
        KALLM_ADMIN_TOKEN=TOKEN,
    )
    try:
        warmed = subprocess.run(
            [*cli, "warm", str(dump), "--url", target.root],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert "warming [" in warmed.stderr and "5/5" in warmed.stderr and "/s" in warmed.stderr
        assert "stored 5" in warmed.stdout
        upstream.clear()
        replay = make_caller(target, namespace=caller.namespace)
        replies = [replay.chat(p) for p in prompts]
        assert [r.cache for r in replies] == ["HIT"] * 5
        assert [r.content for r in replies] == answers
        assert upstream.chat_calls() == []

        listing = subprocess.run(
            [*cli, "entries", "--url", target.root, "--search", "octopuses"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert listing.stdout.count("octopuses") == 5
        cleared = subprocess.run(
            [*cli, "clear", "--url", target.root],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "deleted 5 entries" in cleared.stdout
    finally:
        target.process.stop()


QUESTION = "Which bird lays the largest egg?"
ASKED = [{"role": "user", "content": QUESTION}]
EVERY_API = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "messages": ASKED},
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": QUESTION},
    "/v1/responses": {"model": "gpt-4o-mini", "input": QUESTION},
    "/v1/messages": {
        "model": "claude-haiku-4-5", "max_tokens": 64, "messages": ASKED,
    },
    "/v1beta/models/gemini-2.5-flash:generateContent": {
        "contents": [{"role": "user", "parts": [{"text": QUESTION}]}]
    },
}  # fmt: skip


NOT_WHOLE = "cut short, filtered or an error"


def test_warm_names_the_file_line_of_each_entry_it_did_not_store_and_fails(sqlite_kallm, tmp_path):
    def line(prompt, finish="stop"):
        answer = {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Warm."},
                         "finish_reason": finish}],
        }  # fmt: skip
        request = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
        return json.dumps({"request": request, "response": answer})

    # Past the first batch the CLI sends (200 lines), with a blank line before the bad ones.
    good = [line(f"warm question {n} {uuid.uuid4().hex}") for n in range(201)]
    file = tmp_path / "warm.jsonl"
    file.write_text("\n".join([*good, "", "[1, 2, 3]", line("filtered", "content_filter")]) + "\n")
    warmed = subprocess.run(
        [sys.executable, "-m", "kallm", "warm", str(file), "--url", sqlite_kallm[0][0].root],
        env=clean_env(KALLM_ADMIN_TOKEN=TOKEN),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert warmed.returncode == 1
    assert "stored 201, skipped 1, errors 1" in warmed.stdout
    # Universal newlines read the bar's "\r" as a line break: each redraw is a line here.
    # The bar is drawn to its end before the problems are told, each on a line of its own.
    *bar, first, second = [text for text in warmed.stderr.splitlines() if text]
    assert all(text.startswith("warming [") for text in bar) and " 204/204 " in bar[-1]
    assert first.startswith(f"kallm warm: {file}: line 203: ")
    assert second == f"kallm warm: {file}: line 204: the answer is not whole: {NOT_WHOLE}"


def test_export_and_warm_carry_every_api(sqlite_kallm, upstream, tmp_path_factory, simulator):
    source = sqlite_kallm[0][0]
    # Anthropic's and Gemini's keys are the clients' here, so their entries carry a key hash.
    headers = {
        "x-kallm-namespace": "warm-every-api",
        "x-api-key": "sk-ant-client",
        "x-goog-api-key": "gm-client",
        "anthropic-version": "2023-06-01",
    }

    def ask(kallm):
        return {
            path: httpx.post(f"{kallm.root}{path}", json=body, headers=headers, timeout=30)
            for path, body in EVERY_API.items()
        }

    first = ask(source)
    assert {r.headers["x-kallm-cache"] for r in first.values()} == {"MISS"}
    exported = admin(source, "GET", "/admin/export", headers=AUTH)
    assert len(exported.text.splitlines()) == len(EVERY_API)

    target = start_kallm(
        tmp_path_factory, simulator, "kallm-warm-apis", OPENAI_API_KEY=SERVER_KEY,
        KALLM_ADMIN_TOKEN=TOKEN,
    )  # fmt: skip
    try:
        warmed = admin(target, "POST", "/admin/warm", headers=AUTH, content=exported.content)
        result = warmed.json()
        assert (result["stored"], result["skipped"], result["errors"]) == (len(EVERY_API), 0, [])
        assert sum(result["namespaces"].values()) == len(EVERY_API)
        upstream.clear()
        again = ask(target)
        assert {path: r.headers["x-kallm-cache"] for path, r in again.items()} == {
            path: "HIT" for path in EVERY_API
        }
        assert upstream.requests() == []
    finally:
        target.process.stop()


def test_the_cli_says_when_the_token_is_missing_or_wrong(sqlite_kallm):
    proxy = sqlite_kallm[0][0]
    cli = [sys.executable, "-m", "kallm", "entries", "--url", proxy.root]
    missing = subprocess.run(cli, env=clean_env(), capture_output=True, text=True, timeout=60)
    wrong = subprocess.run(
        [*cli, "--token", "nope"], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert missing.returncode != 0 and "admin token" in missing.stderr
    assert wrong.returncode != 0 and "401" in wrong.stderr
