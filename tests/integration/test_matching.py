"""How kallm decides a semantic hit, seen from a client: verifier verdicts in headers and
metrics, and long prompts matched exactly only."""

import httpx

INSTRUCTIONS = "Summarise the following report for an executive audience. " + " ".join(
    f"Section {i} describes quarterly revenue, costs, hiring and risks in detail."
    for i in range(40)
)


def test_a_paraphrase_hit_says_the_verifier_accepted(caller):
    caller.chat("How many legs does a spider have?")
    reply = caller.chat("How many legs do spiders have?")

    assert reply.cache == "HIT"
    assert reply.headers["x-kallm-verifier"] == "accepted"
    assert float(reply.headers["x-kallm-verifier-score"]) >= 0.5
    assert float(reply.similarity) < 1


def test_a_near_miss_is_a_miss_that_says_the_verifier_rejected(caller, upstream):
    caller.chat("Convert 100 USD to EUR")
    reply = caller.chat("Convert 100 EUR to USD", headers={"X-Kallm-Threshold": "0.9"})

    assert reply.cache == "MISS"
    assert reply.headers["x-kallm-verifier"] == "rejected"
    assert float(reply.headers["x-kallm-verifier-score"]) == 0.0
    assert float(reply.similarity) > 0.9  # cosine alone would have served it
    assert "EUR to USD" in (reply.content or "")
    assert len(upstream.chat_calls()) == 2


def test_exact_hits_skip_the_verifier(caller):
    caller.chat("Name three primary colours.")
    reply = caller.chat("Name three primary colours.")
    assert (reply.cache, reply.similarity) == ("HIT", "1.0000")
    assert "x-kallm-verifier" not in reply.headers


def test_metrics_show_the_nearest_similarity_of_every_lookup(caller, kallm):
    def counts() -> dict[str, float]:
        text = httpx.get(f"{kallm.root}/metrics").text
        found = {}
        for decision in ("hit", "rejected", "below"):
            start = f'kallm_candidate_similarity_count{{decision="{decision}"}}'
            line = next((ln for ln in text.splitlines() if ln.startswith(start)), f"{start} 0")
            found[decision] = float(line.split()[-1])
        return found

    before = counts()
    caller.chat("How do I enable dark mode on my phone?")  # an empty namespace: no neighbour
    caller.chat("How do I enable dark mode on my phone, please?")
    caller.chat("How do I disable dark mode on my phone?", headers={"X-Kallm-Threshold": "0.8"})
    unrelated = caller.chat("What is the tallest mountain in Africa?")
    after = counts()
    assert after == {
        "hit": before["hit"] + 1,
        "rejected": before["rejected"] + 1,
        "below": before["below"] + 1,
    }
    # A MISS says how near the nearest entry was, even under the threshold; the verifier
    # judged nothing.
    assert unrelated.cache == "MISS" and float(unrelated.similarity) < 0.9
    assert "x-kallm-verifier" not in unrelated.headers


def test_prompts_longer_than_the_model_reads_match_exactly_only(caller, upstream):
    first = INSTRUCTIONS + " Appendix: the Berlin office closed in March."
    second = INSTRUCTIONS + " Appendix: the Lisbon office opened in June."

    assert caller.chat(first).cache == "MISS"
    other = caller.chat(second, headers={"X-Kallm-Threshold": "0"})
    assert other.cache == "MISS"  # the same first 256 word pieces, another document
    assert "x-kallm-similarity" not in other.headers
    assert caller.chat(first).cache == "HIT"  # an exact repeat still hits
    assert len(upstream.chat_calls()) == 2


def test_typing_variants_are_exact_hits(caller, upstream):
    caller.chat("Which houseplants aren't safe for cats?")
    for variant in (
        "which houseplants aren't safe for cats",  # case and the final question mark
        "Which houseplants aren\u2019t safe for cats?",  # a phone's apostrophe
        "  Which houseplants   aren't safe\nfor cats ?",  # spaces and a line break
        "Which houseplants\u00a0aren't safe for cats?!",  # a no-break space
    ):
        reply = caller.chat(variant)
        assert (reply.cache, reply.similarity) == ("HIT", "1.0000"), variant
    assert len(upstream.chat_calls()) == 1


def test_a_typographic_apostrophe_still_negates(caller, upstream):
    caller.chat("Which houseplants are safe for cats?")
    reply = caller.chat("Which houseplants aren\u2019t safe for cats?")
    assert reply.cache == "MISS"
    assert len(upstream.chat_calls()) == 2


def test_a_near_miss_of_a_kind_never_trained_on_is_a_miss(caller, upstream):
    # Tone is one of the near-miss kinds training/pairgen.py never generates.
    caller.chat("Write a formal email to my landlord about the broken heater")
    reply = caller.chat("Write a casual email to my landlord about the broken heater")
    assert reply.cache == "MISS"
    assert reply.headers["x-kallm-verifier"] == "rejected"
    assert float(reply.similarity) >= 0.9  # similar enough to be judged
    assert len(upstream.chat_calls()) == 2
