import pytest

from kallm import keys
from kallm.providers import openai_chat as chat

BASE = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0.2,
}


def key_of(request, namespace="default"):
    parts = chat.key_parts(request)
    return keys.cache_key(namespace, "chat", parts.context, parts.final, parts.text)


def test_same_request_same_key_whatever_the_field_order():
    reordered = dict(reversed(list(BASE.items())))
    assert key_of(BASE) == key_of(reordered)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"temperature": 0.9},
        {"max_tokens": 5},
        {"seed": 1},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "none"},
        {"response_format": {"type": "json_object"}},
        {"some_future_parameter": True},
    ],
)
def test_anything_that_changes_the_answer_changes_the_partition(change):
    assert key_of({**BASE, **change}).partition != key_of(BASE).partition


def test_earlier_turns_and_system_prompt_are_in_the_partition():
    other_system = {
        **BASE,
        "messages": [{"role": "system", "content": "Be verbose."}, *BASE["messages"][1:]],
    }
    other_turn = {
        **BASE,
        "messages": [
            *BASE["messages"][:2],
            {"role": "assistant", "content": "Hey."},
            BASE["messages"][3],
        ],
    }
    assert key_of(other_system).partition != key_of(BASE).partition
    assert key_of(other_turn).partition != key_of(BASE).partition


@pytest.mark.parametrize(
    "change",
    [
        {"user": "u1"},
        {"metadata": {"a": "b"}},
        {"stream": True},
        {"stream_options": {"include_usage": True}},
    ],
)
def test_fields_that_do_not_change_the_answer_stay_out(change):
    assert key_of({**BASE, **change}) == key_of(BASE)


def test_only_the_final_user_turn_is_compared_by_meaning():
    key = key_of(BASE)
    assert key.text == "What is the capital of France"  # canonical: see test_canonical.py
    spaced = {
        **BASE,
        "messages": [
            *BASE["messages"][:3],
            {"role": "user", "content": " What is  the capital of France?\n"},
        ],
    }
    assert key_of(spaced).exact == key.exact  # whitespace never changes an answer


@pytest.mark.parametrize(
    "final",
    [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:..."}}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "input_audio", "input_audio": {}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C"},
        {"role": "assistant", "content": "Prefill"},
        {"role": "user", "name": "alice", "content": "Hi"},
    ],
)
def test_final_turns_that_are_not_plain_user_text_match_exactly_only(final):
    assert key_of({**BASE, "messages": [final]}).text is None


def test_text_parts_are_plain_text():
    request = {
        **BASE,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ],
    }
    assert chat.key_parts(request).text == "a\nb"


def test_namespaces_and_client_keys_separate_entries():
    assert key_of(BASE, "team-a").exact != key_of(BASE, "team-b").exact
    with_key_a = keys.namespace("team-a", "Bearer sk-a")
    with_key_b = keys.namespace("team-a", "Bearer sk-b")
    assert with_key_a != with_key_b
    assert "sk-a" not in with_key_a
    assert keys.namespace(None, None) == "default"


@pytest.mark.parametrize("bad", ["", " ", "a" * 129, "-leading", "sp ace", "ünïcode"])
def test_invalid_namespaces_are_refused(bad):
    with pytest.raises(keys.InvalidNamespace):
        keys.namespace(bad, None)


def test_a_tenant_from_the_cluster_encloses_the_header():
    assert keys.namespace("team-b", None, tenant="team-a") == "tenant:team-a/team-b"
    assert keys.namespace(None, None, tenant="team-a") == "tenant:team-a/default"
    enclosed = keys.namespace("tenant:team-b/default", None, tenant="team-a")
    assert enclosed.startswith("tenant:team-a/")


def test_the_scope_of_a_namespace_is_its_tenant():
    assert keys.scope("team-a") == "team-a"
    assert keys.scope(keys.namespace("team-a", "sk-1")) == "team-a"
    assert keys.scope(keys.namespace("sub/x", "sk-1", tenant="team-a")) == "team-a"
    assert keys.scope(keys.namespace(None, None, tenant="team-a")) == "team-a"


def test_a_peer_namespace_keeps_the_sub_namespace_and_the_key():
    mine = keys.namespace("sub", "sk-1", tenant="team-a")
    assert keys.peer(mine, "team-b") == keys.namespace("sub", "sk-1", tenant="team-b")
    assert keys.peer(keys.namespace("team-a", "sk-1"), "team-b") == keys.namespace("team-b", "sk-1")
    assert keys.peer("team-a", "team-b") == "team-b"
