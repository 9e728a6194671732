"""The shipped verifier (guards and pair model) on a small hand-written set, through the
default decision."""

import pytest

from kallm.embedders.local import LocalEmbedder
from kallm.match.canonical import canonical
from kallm.match.decision import accept
from kallm.match.pair_model import PairModel
from kallm.match.verifier import Verifier

NEAR_MISSES = [
    ("How far is 5 km in miles?", "How far is 50 km in miles?"),
    (
        "How do I enable two-factor authentication on GitHub?",
        "How do I disable two-factor authentication on GitHub?",
    ),
    ("Convert 100 USD to EUR", "Convert 100 EUR to USD"),
    ("Explain photosynthesis in one sentence", "Explain photosynthesis in detail"),
    ("What is the capital of France?", "What is the capital of Germany?"),
    ("What is the capital of France?", "¿Cuál es la capital de Francia?"),
    ("Is coffee good for your health?", "Is coffee not good for your health?"),
    ("Write a haiku about the sea", "Write a limerick about the sea"),
    (
        "Translate 'good morning' from English to Italian",
        "Translate 'good morning' from Italian to English",
    ),
    ("Give me three reasons to learn Rust", "Give me ten reasons to learn Rust"),
]
PARAPHRASES = [
    ("How do I reverse a list in Python?", "How can I reverse a list in Python?"),
    ("How do I make a cup of green tea?", "How do you make a cup of green tea?"),
    ("Can you recommend a good book about space?", "Could you recommend a good book about space?"),
    ("What is the tallest mountain in the world?", "Which mountain is the tallest in the world?"),
    ("How many legs does a spider have?", "How many legs do spiders have?"),
    (
        "What's the best way to learn guitar as an adult?",
        "What is the best way to learn the guitar as an adult?",
    ),
]


@pytest.fixture(scope="module")
def verifier():
    verifier = Verifier.load()
    yield verifier
    verifier.close()


@pytest.fixture(scope="module")
def judge(verifier):
    embedder = LocalEmbedder()
    calibration = verifier.calibration

    def decide(cached, asked):
        cached, asked = canonical(cached), canonical(asked)
        a, b = embedder.embed_sync(cached), embedder.embed_sync(asked)
        probability = verifier.probability_sync(cached, asked)
        return accept(
            float(a @ b), probability, calibration.similarity_threshold, calibration.min_probability
        )

    return decide


def test_the_calibrated_defaults_are_sane(verifier):
    calibration = verifier.calibration
    assert calibration.embedding_model == LocalEmbedder.name
    assert 0.5 <= calibration.similarity_threshold < 1 and 0 < calibration.min_probability < 1


@pytest.mark.parametrize(("cached", "asked"), NEAR_MISSES)
def test_near_misses_are_never_served(judge, cached, asked):
    assert not judge(cached, asked)
    assert not judge(asked, cached)


@pytest.mark.parametrize(("cached", "asked"), PARAPHRASES)
def test_close_paraphrases_are_served(judge, cached, asked):
    assert judge(cached, asked)


def test_a_guard_vetoes_whatever_the_model_says(verifier):
    model = PairModel.load()
    model.spec = {**model.spec, "guards": ["numbers_differ"]}
    guarded = Verifier(model)
    assert guarded.probability_sync("Is 91 prime", "Is 97 prime") == 0.0
    assert verifier.probability_sync("Is 91 prime", "Is 91 prime") > 0.0
    guarded.close()


@pytest.mark.asyncio
async def test_the_verifier_scores_off_the_event_loop(verifier):
    cached, asked = "How do I reverse a list in Python", "How can I reverse a list in Python"
    assert await verifier.probability(cached, asked) == verifier.probability_sync(cached, asked)


def test_pairs_too_long_to_read_whole_are_never_served():
    model = PairModel.load()
    long = " ".join(f"word{i}" for i in range(2000))
    assert model.probability(long, long + " more") == 0.0
    assert model.probability("Is 91 prime", "Is 91 prime") > 0.0
