"""Conversation histories: acknowledgements dropped with their replies, turns aligned in
order, plain text judged, everything else equal exactly, and a bound on judged turns."""

from __future__ import annotations

import asyncio

import pytest

from kallm.match.conversation import Turn, aligned, essential, is_acknowledgement, same_history


def user(text: str) -> Turn:
    return Turn("user", text, text)


def bot(text: str) -> Turn:
    return Turn("assistant", text, text)


def tool(payload: str) -> Turn:
    return Turn("tool", None, payload)


async def judge(cached: str, asked: str) -> bool:
    """A stand-in decision: texts of the same words in any order mean the same."""
    return sorted(cached.lower().split()) == sorted(asked.lower().split())


def same(a: list[Turn], b: list[Turn], limit: int = 12) -> bool:
    return asyncio.run(same_history(a, b, judge, limit))


@pytest.mark.parametrize("text", ["thanks!", "Ok great.", "ok, thanks", "Perfect", "hmmm"])
def test_acknowledgements(text: str) -> None:
    assert is_acknowledgement(text)


@pytest.mark.parametrize(
    "text", ["yes", "no", "No thanks, cancel it", "the second one", "ok do it"]
)
def test_answers_are_never_acknowledgements(text: str) -> None:
    assert not is_acknowledgement(text)


def test_an_acknowledgement_goes_with_the_reply_to_it() -> None:
    history = [user("my plan is gold"), bot("noted"), user("thanks!"), bot("you're welcome")]
    assert essential(history) == history[:2]


def test_reworded_turns_in_order_are_the_same_history() -> None:
    a = [user("my plan is gold"), bot("gold costs 20 dollars")]
    b = [user("gold is my plan"), bot("20 dollars gold costs"), user("ok great"), bot("sure")]
    assert same(a, b)


def test_a_changed_turn_or_order_or_count_is_another_history() -> None:
    a = [user("my plan is gold"), bot("gold costs 20")]
    assert not same(a, [user("my plan is silver"), bot("gold costs 20")])
    assert not same(a, [bot("gold costs 20"), user("my plan is gold")])
    assert not same(a, [*a, user("and the family plan"), bot("30")])


def test_a_yes_is_compared_not_skipped() -> None:
    a = [bot("shall I cancel?"), user("yes")]
    assert not same(a, [bot("shall I cancel?"), user("no")])


def test_non_text_turns_must_be_equal_exactly() -> None:
    a = [user("weather in paris"), tool('{"temp": 21}')]
    assert same(a, [user("paris weather in"), tool('{"temp": 21}')])
    assert not same(a, [user("weather in paris"), tool('{"temp": 22}')])
    assert aligned([tool("x")], [user("x")]) is None


def test_past_the_limit_only_equal_turns_count() -> None:
    a = [user("a b"), bot("c d")]
    assert same(a, [user("b a"), bot("c d")], limit=2)
    assert not same(a, [user("b a"), bot("c d")], limit=1)
    assert same(a, list(a), limit=0)
