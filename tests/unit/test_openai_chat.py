import json
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kallm.providers import openai_chat as chat
from kallm.providers.base import Parsed
from kallm.sse import SSEParser

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Paris is the capital of France, and has been for centuries.",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "lookup",
                            "arguments": '{"city": "Paris", "units": "metric"}',
                        },
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        },
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22},
}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": ["hi"]}', "messages[0]"),
        (b"\xff\xfe", None),
    ],
)
def test_invalid_requests(body, param):
    with pytest.raises(chat.InvalidRequest) as caught:
        chat.parse_request(body)
    assert caught.value.param == param


def events(chunks):
    parser = SSEParser()
    return [data for chunk in chunks for data in parser.feed(chunk)]


def test_a_replayed_stream_rebuilds_the_cached_answer():
    chunks = list(chat.replay_stream(COMPLETION, include_usage=True))
    data = events(chunks)
    assert data[-1] == "[DONE]"
    parsed = [json.loads(d) for d in data[:-1]]
    assert len(parsed) >= 6  # a real stream, not one blob
    assert all(p["object"] == "chat.completion.chunk" for p in parsed)
    assert all(p["id"] == parsed[0]["id"] != COMPLETION["id"] for p in parsed)
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"] == COMPLETION["usage"]
    assert all(p["usage"] is None for p in parsed[:-1])

    recorder = chat.recorder()
    for d in data:
        recorder.add(d)
    rebuilt = recorder.answer()
    assert rebuilt is not None
    assert [c["message"].get("content") for c in rebuilt["choices"]] == [
        c["message"]["content"] for c in COMPLETION["choices"]
    ]
    assert (
        rebuilt["choices"][1]["message"]["tool_calls"]
        == COMPLETION["choices"][1]["message"]["tool_calls"]
    )
    assert [c["finish_reason"] for c in rebuilt["choices"]] == ["stop", "tool_calls"]
    assert rebuilt["usage"] == COMPLETION["usage"]


def test_replay_without_usage_has_no_usage_chunk():
    parsed = [
        json.loads(d) for d in events(chat.replay_stream(COMPLETION, include_usage=False))[:-1]
    ]
    assert all("usage" not in p for p in parsed)
    assert all(p["choices"] for p in parsed)


def test_a_stream_without_done_is_not_an_answer():
    data = events(chat.replay_stream(COMPLETION, include_usage=False))[:-1]
    recorder = chat.recorder()
    for d in data:
        recorder.add(d)
    assert recorder.answer() is None


def test_an_unreadable_event_spoils_the_stream():
    recorder = chat.recorder()
    for d in [*events(chat.replay_stream(COMPLETION, include_usage=False))[:2], "{oops", "[DONE]"]:
        recorder.add(d)
    assert recorder.answer() is None


def test_json_replay_has_a_fresh_id_and_the_same_answer():
    replayed = chat.replay_json(COMPLETION)
    assert (
        replayed["id"].startswith("chatcmpl-kallm-")
        and replayed["created"] >= COMPLETION["created"]
    )
    assert replayed["choices"] == COMPLETION["choices"]


@pytest.mark.parametrize(
    ("finish", "cacheable"),
    [
        ("stop", True),
        ("length", True),
        ("tool_calls", True),
        ("content_filter", False),
        (None, False),
    ],
)
def test_what_is_cacheable(finish, cacheable):
    completion = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "finish_reason": finish}]}
    assert chat.is_cacheable(completion) is cacheable


def test_sse_parser_handles_split_events_and_crlf():
    chunks = [b'data: {"a"', b": 1}\r\n\r", b"\n: comment\n\ndata: [DONE]\n", b"\n"]
    assert events(chunks) == ['{"a": 1}', "[DONE]"]


# Hostile answers. The helpers below are shared with the other providers' format tests: an
# answer kallm does not fully understand is relayed and never cached, a cached answer always
# replays, and no stream event can make a recorder raise.

WORDS = st.sampled_from(
    [
        "",
        "[DONE]",
        *"stop length tool_calls STOP MAX_TOKENS end_turn tool_use completed message".split(),
        *"text output_text function_call function index content type abc".split(),
    ]
)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 10**12, 2**63, -1, 1.5])
    | st.floats()  # NaN and the infinities included: json.loads reads NaN and 1e999
    | st.text(max_size=6)
    | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)  # lone surrogates
    | WORDS
)
JSON = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(WORDS | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)
OBJECTS = st.dictionaries(WORDS | st.text(max_size=4), JSON, max_size=4)
HOSTILE = settings(max_examples=200, deadline=None)
DELETE = object()


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value, the value itself first."""
    found = [prefix]
    if isinstance(value, dict):
        for name, item in value.items():
            found += paths(item, (*prefix, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of `value` with the place at `path` holding `new` (DELETE: removed)."""
    if not path:
        return new
    copy = copy_of(value)
    if len(path) == 1 and new is DELETE:
        del copy[path[0]]
    else:
        copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def copy_of(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value)


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> Any:
    """`valid` with one place (not the whole) replaced by a random JSON value or removed."""
    path = draw(st.sampled_from(paths(valid)[1:]))
    return replaced(valid, path, draw(JSON | st.just(DELETE)))


def answers(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Answers to try: mostly a valid one with one field spoiled, sometimes any object."""
    return mutated(valid) | mutated(valid) | mutated(valid) | OBJECTS


@st.composite
def spoiled_events(draw: st.DrawFn, events: list[str]) -> list[str]:
    """A stream's event data with one or two events spoiled: a field replaced or removed, the
    event replaced by random JSON or text, or a random event put in."""
    events = list(events)
    for _ in range(draw(st.integers(1, 2))):
        where = draw(st.integers(0, len(events) - 1))
        try:
            parsed = json.loads(events[where])
        except ValueError:
            parsed = None
        how = draw(st.sampled_from(["field", "field", "event", "insert"]))
        if how == "field" and isinstance(parsed, dict | list) and parsed:
            events[where] = json.dumps(draw(mutated(parsed)))
        elif how == "insert":
            events.insert(where, json.dumps(draw(JSON)))
        else:
            events[where] = draw(st.text(max_size=8) | JSON.map(json.dumps))
    return events


def stream_data(chunks: Iterable[bytes]) -> list[str]:
    parser = SSEParser()
    return [data for chunk in chunks for data in parser.feed(chunk)]


def assert_counts(counts: dict[str, Any]) -> None:
    assert set(counts) <= {"prompt_tokens", "completion_tokens", "estimated"}
    for name in ("prompt_tokens", "completion_tokens"):
        assert type(counts[name]) is int and 0 <= counts[name] < 10**13


def assert_survives(provider: Any, requests: list[Any], answer: dict[str, Any]) -> None:
    """is_cacheable and usage never raise; a cacheable answer replays whole for every kind of
    request (JSON, stream, with or without usage)."""
    cacheable = provider.is_cacheable(answer)
    assert isinstance(cacheable, bool)
    for asked in requests:
        request = asked if isinstance(asked, Parsed) else provider.parse_keyed(asked)
        assert_counts(provider.usage(request, answer))
        if cacheable:
            json.loads(provider.replay_json(request, answer))
            for data in stream_data(provider.replay_stream(request, answer)):
                assert data == "[DONE]" or json.loads(data) is not None


def assert_records_safely(
    provider: Any, requests: list[Any], events: list[str]
) -> dict[str, Any] | None:
    """Feed `events` to a recorder as the relay does (asking for the answer after each); it
    never raises, and gives only an answer kallm caches and can replay."""
    recorder = provider.recorder()
    for data in events:
        recorder.add(data)
        recorder.answer()
    answer = recorder.answer()
    if answer is not None:
        assert provider.is_cacheable(answer)
        assert_survives(provider, requests, answer)
    return answer


PROVIDER = chat.OpenAIChat()
REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of France?"}]}
REQUESTS = [
    REQUEST,
    {**REQUEST, "stream": True},
    {**REQUEST, "stream": True, "stream_options": {"include_usage": True}},
]
CHOICE = COMPLETION["choices"][0]
MESSAGE = CHOICE["message"]
CALL = COMPLETION["choices"][1]["message"]["tool_calls"][0]


def with_choice(**fields: Any) -> dict[str, Any]:
    return {**COMPLETION, "choices": [{**CHOICE, **fields}]}


def with_call(**fields: Any) -> dict[str, Any]:
    return with_choice(message={**MESSAGE, "tool_calls": [{**CALL, **fields}]})


MALFORMED = {
    "choices not objects": {**COMPLETION, "choices": ["stop", 1, None]},
    "choices an object": {**COMPLETION, "choices": {"0": CHOICE}},
    "a list finish_reason": with_choice(finish_reason=["stop"]),
    "an object finish_reason": with_choice(finish_reason={"stop": 1}),
    "a string message": with_choice(message="Paris."),
    "a message without an object": with_choice(message=None),
    "a number content": with_choice(message={**MESSAGE, "content": 5}),
    "a list of content parts": with_choice(message={**MESSAGE, "content": [{"text": "x"}]}),
    "a string index": with_choice(index="0"),
    "a bool index": with_choice(index=True),
    "no index": {**COMPLETION, "choices": [{k: v for k, v in CHOICE.items() if k != "index"}]},
    "mixed index types": {
        **COMPLETION,
        "choices": [CHOICE, {**COMPLETION["choices"][1], "index": "1"}],
    },
    "a repeated index": {**COMPLETION, "choices": [CHOICE, CHOICE]},
    "tool_calls an object": with_choice(message={**MESSAGE, "tool_calls": {"0": CALL}}),
    "a tool call not an object": with_choice(message={**MESSAGE, "tool_calls": ["call"]}),
    "a tool call without a function": with_call(function=None),
    "a custom tool call": with_call(type="custom", function=None, custom={"name": "x"}),
    "arguments not a string": with_call(function={"name": "f", "arguments": {"a": 1}}),
    "a number name": with_call(function={"name": 5, "arguments": "{}"}),
    "logprobs a list": with_choice(logprobs=[1]),
    "a model object": {**COMPLETION, "model": {"name": "x"}},
    "usage a list": {**COMPLETION, "usage": [10, 12]},
    "a huge prompt_tokens": {**COMPLETION, "usage": {"prompt_tokens": 10**400}},
    "a string prompt_tokens": {**COMPLETION, "usage": {"prompt_tokens": "abc"}},
    "a negative completion_tokens": {**COMPLETION, "usage": {"completion_tokens": -5}},
    "an infinite total_tokens": {**COMPLETION, "usage": {"total_tokens": float("inf")}},
    "a float prompt_tokens": {**COMPLETION, "usage": {"prompt_tokens": 1.5}},
    "a bool prompt_tokens": {**COMPLETION, "usage": {"prompt_tokens": True}},
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_answer_kallm_does_not_fully_understand_is_not_cached(answer):
    assert chat.is_cacheable(answer) is False
    assert_survives(PROVIDER, REQUESTS, answer)


@pytest.mark.parametrize("counts", [{"prompt_tokens": 10**400, "completion_tokens": 3}, "x"])
def test_counts_that_are_not_counts_are_estimated(counts):
    assert chat.usage(REQUEST, {**COMPLETION, "usage": counts})["estimated"] is True


def test_usage_is_the_two_counts():
    assert chat.usage(REQUEST, COMPLETION) == {"prompt_tokens": 10, "completion_tokens": 12}


def test_a_cached_answer_replays_with_odd_but_valid_values():
    answer = with_choice(message={**MESSAGE, "content": "caf\ud800 \u00e9"}, logprobs={})
    assert chat.is_cacheable(answer)
    assert_survives(PROVIDER, REQUESTS, answer)
    replayed = json.loads(PROVIDER.replay_json(PROVIDER.parse_keyed(REQUEST), answer))
    assert "\ud800" in replayed["choices"][0]["message"]["content"]


def chunk(*choices: Any, **fields: Any) -> str:
    return json.dumps(
        {"id": "c", "object": "chat.completion.chunk", "choices": list(choices)} | fields
    )


def delta(index: Any = 0, finish: Any = None, **fields: Any) -> dict[str, Any]:
    return {"index": index, "delta": fields, "finish_reason": finish}


GOOD = [chunk(delta(role="assistant", content="Paris")), chunk(delta(finish="stop"))]
ODD_STREAMS = {
    "a list finish_reason": [GOOD[0], chunk(delta(finish=["stop"]))],
    "an unhashable index": [chunk(delta([0], content="x")), GOOD[1]],
    "mixed index types": [*GOOD, chunk(delta("1", content="y")), chunk(delta("1", finish="stop"))],
    "a string index alone": [chunk(delta("0", content="x")), chunk(delta("0", finish="stop"))],
    "a chunk that is a list": [GOOD[0], "[1, 2]", GOOD[1]],
    "a chunk that is a number": [GOOD[0], "5", GOOD[1]],
    "a chunk that is a string": [GOOD[0], '"x"', GOOD[1]],
    "choices an object": [GOOD[0], json.dumps({"choices": {"index": 0}}), GOOD[1]],
    "a choice that is a string": [GOOD[0], chunk("stop"), GOOD[1]],
    "a delta that is a string": [GOOD[0], chunk({"index": 0, "delta": "x"}), GOOD[1]],
    "number content": [GOOD[0], chunk(delta(content=5)), GOOD[1]],
    "list content": [GOOD[0], chunk(delta(content=["x"])), GOOD[1]],
    "tool_calls an object": [chunk(delta(tool_calls={"index": 0})), GOOD[1]],
    "a tool call with a list index": [chunk(delta(tool_calls=[{"index": [0]}])), GOOD[1]],
    "a tool call that is a string": [chunk(delta(tool_calls=["x"])), GOOD[1]],
    "arguments not text": [
        chunk(delta(tool_calls=[{"index": 0, "id": "c", "function": {"arguments": 5}}])),
        GOOD[1],
    ],
    "logprobs a list": [GOOD[0], chunk({**delta(), "logprobs": [1]}), GOOD[1]],
    "logprobs content not a list": [GOOD[0], chunk({**delta(), "logprobs": {"content": 1}})],
    "usage a list": [*GOOD, chunk(usage=[1])],
    "a huge usage": [*GOOD, json.dumps({"choices": [], "usage": {"prompt_tokens": 10**400}})],
    "a string usage": [*GOOD, json.dumps({"choices": [], "usage": {"completion_tokens": "9"}})],
    "a model object": [chunk(delta(content="x"), model={"a": 1}), GOOD[1]],
    "an error event": [GOOD[0], json.dumps({"error": {"message": "overloaded"}})],
    "too deep to parse": [GOOD[0], "[" * 100_000 + "]" * 100_000, GOOD[1]],
    "deeper than answers may be": [GOOD[0], '{"x": ' + "[" * 200 + "]" * 200 + "}", GOOD[1]],
    "NaN and 1e999": [GOOD[0], '{"n": 1e999, "m": NaN}', GOOD[1]],
    "a 5000-digit number": [GOOD[0], '{"n": ' + "9" * 5000 + "}", GOOD[1]],
    "a lone surrogate": [chunk(delta(content="\ud800")), GOOD[1]],
    # The SSE parser writes bytes that are not UTF-8 as U+FFFD.
    "bytes that were not UTF-8": [GOOD[0].replace("Paris", "Par\ufffds"), GOOD[1]],
    "no finish_reason": [GOOD[0]],
}


@pytest.mark.parametrize("events", ODD_STREAMS.values(), ids=ODD_STREAMS.keys())
def test_an_odd_stream_never_raises_and_records_nothing(events):
    assert assert_records_safely(PROVIDER, REQUESTS, [*events, "[DONE]"]) is None


def test_a_plain_stream_still_records():
    answer = assert_records_safely(PROVIDER, REQUESTS, [*GOOD, "[DONE]"])
    assert answer is not None and answer["choices"][0]["message"]["content"] == "Paris"


def test_a_legacy_function_call_streams_its_arguments_in_pieces():
    events = [
        chunk(delta(role="assistant", function_call={"name": "lookup", "arguments": ""})),
        chunk(delta(function_call={"arguments": '{"city": '})),
        chunk(delta(function_call={"arguments": '"Paris"}'})),
        chunk(delta(finish="function_call")),
        "[DONE]",
    ]
    answer = assert_records_safely(PROVIDER, REQUESTS, events)
    assert answer is not None
    call = answer["choices"][0]["message"]["function_call"]
    assert call == {"name": "lookup", "arguments": '{"city": "Paris"}'}


@HOSTILE
@given(answers(COMPLETION))
def test_no_answer_makes_kallm_raise(answer):
    assert_survives(PROVIDER, REQUESTS, answer)


@HOSTILE
@given(spoiled_events(stream_data(chat.replay_stream(COMPLETION, include_usage=True))))
def test_no_stream_makes_the_recorder_raise(events):
    assert_records_safely(PROVIDER, REQUESTS, events)
