import pytest

from kallm.match.features import GUARDS, analyse, guards


def named(a, b):
    fired = guards(a, b)
    return {name: float(name in fired) for name in GUARDS}


@pytest.mark.parametrize(
    ("a", "b", "signal"),
    [
        ("How far is 5 km in miles?", "How far is 50 km in miles?", "numbers_differ"),
        ("Plan a trip for three people", "Plan a trip for 4 people", "numbers_differ"),
        ("How do I enable dark mode?", "How do I disable dark mode?", "antonyms"),
        ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?", "negation_differs"),
        ("Convert 100 USD to EUR", "Convert 100 EUR to USD", "exchanged"),
        ("Explain recursion in one sentence", "Explain recursion in detail", "formats_differ"),
        ("Summarise this in English", "Summarise this in German", "languages_differ"),
        (
            "What is the capital of France?",
            "¿Cuál es la capital de Francia?",
            "written_language_differs",
        ),
        ("What is the capital of France?", "Какая столица Франции?", "written_language_differs"),
    ],
)
def test_near_misses_raise_their_signal(a, b, signal):
    assert named(a, b)[signal] > 0
    assert named(a, a)[signal] == 0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reverse a list in Python?", "What's the way to reverse a list in Python?"),
        ("What is the capital of France?", "what is the capital of France"),
        ("Give me five tips for better sleep", "Give me 5 tips for better sleep"),
        ("Why can't I sleep at night?", "Why cannot I sleep at night?"),
    ],
)
def test_paraphrases_raise_no_hard_signal(a, b):
    values = named(a, b)
    for signal in (
        "numbers_differ",
        "negation_differs",
        "antonyms",
        "exchanged",
        "written_language_differs",
    ):
        assert values[signal] == 0, signal


def test_analysis_normalises_number_words():
    text = analyse("Book two tickets from Paris to Rome for 2025")
    assert text.numbers == {"2", "2025"}
    assert text.language == "en"


@pytest.mark.parametrize(
    ("a", "b", "quiet"),
    [
        ("Who was Aristotle's teacher?", "Aristotle's teacher was who?", "exchanged"),
        ("Read document A5-0323/2000", "Read document A5-0323 / 2000", "numbers_differ"),
    ],
)
def test_guards_stay_quiet_on_these_paraphrases(a, b, quiet):
    assert named(a, b)[quiet] == 0.0
