import pytest
from hypothesis import given
from hypothesis import strategies as st

from kallm import keys
from kallm.match.canonical import canonical, exact_form


def exact_key(text: str) -> str:
    return keys.cache_key("default", "chat.completions", {}, None, text).exact


@pytest.mark.parametrize(
    ("typed", "plain"),
    [
        ("What is the capital of France?", "What is the capital of France"),
        ("What is the capital of France", "What is the capital of France"),
        ("  What is\tthe capital\n of France ?! ", "What is the capital of France"),
        ("Which houseplants aren\u2019t safe for cats?", "Which houseplants aren't safe for cats"),
        ("\u201cHello\u201d in French", '"Hello" in French'),
        ("Solve 3x \u2212 7 = 22.", "Solve 3x - 7 = 22"),
        ("pages 10\u201320 please...", "pages 10-20 please"),
        ("what\u00a0is\u200b a\u2009monad\u2026", "what is a monad"),
        ("\uff37\uff48\uff41\uff54 is 2\uff0b2\uff1f", "What is 2+2"),
        ("Cafe\u0301 near me", "Caf\u00e9 near me"),  # one way to write an accent
    ],
)
def test_typing_variants_have_one_form(typed, plain):
    assert canonical(typed) == plain


@pytest.mark.parametrize(
    "kept",
    [
        "What is 5!",  # a factorial, not an exclamation
        "?",  # nothing but punctuation: left alone
        "Explain x\u00b2",  # superscripts are not folded to digits
        "Is 3.5 > 3",
    ],
)
def test_what_may_change_an_answer_is_kept(kept):
    assert canonical(kept) == kept


def test_case_folds_for_prose_only():
    assert exact_key("What is the capital of France?") == exact_key("what is the capital of france")
    assert exact_key("WHAT IS THE CAPITAL OF FRANCE") == exact_key("what is the capital of France")
    # In code, identifiers and markup case is meaning.
    assert exact_key("What does `List` do?") != exact_key("What does `list` do?")
    assert exact_key("Explain getElementById") != exact_key("explain getelementbyid")
    assert exact_key("Explain my_Var = 1") != exact_key("explain my_var = 1")
    # Other differences stay differences.
    assert exact_key("Is 91 prime?") != exact_key("Is 97 prime?")
    assert exact_key("Are cats safe?") != exact_key("Aren\u2019t cats safe?")


def test_the_key_carries_the_canonical_text():
    key = keys.cache_key("default", "chat.completions", {}, None, "Who taught Aristotle?\u2019 ")
    assert key.text == "Who taught Aristotle?'"


@given(st.text())
def test_canonical_is_idempotent(text):
    once = canonical(text)
    assert canonical(once) == once
    assert exact_form(exact_form(once)) == exact_form(once)
