"""What the verifier adds to a semantic HIT: the time to score one candidate (guards and the
pair model), against the time to embed the prompt (which every semantic lookup pays anyway),
in one process.

    .venv/bin/python bench/verifier_bench.py
"""

from __future__ import annotations

import statistics
import time

from kallm.embedders.local import LocalEmbedder
from kallm.match.features import analyse
from kallm.match.verifier import Verifier

PAIRS = [
    ("How do I reverse a list in Python?", "How can I reverse a list in Python?"),
    ("What is the tallest mountain in the world?", "Which mountain is the tallest in the world?"),
    ("Convert 100 USD to EUR", "Convert 100 EUR to USD"),
    ("How far is 5 km in miles?", "How far is 50 km in miles?"),
    ("Explain the difference between TCP and UDP for a network engineering interview, "
     "with examples of protocols that use each.",
     "For a network engineering interview, explain how TCP differs from UDP, with examples "
     "of protocols built on each."),
]  # fmt: skip


def median_ms(action, repeats: int = 300) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> None:
    embedder, verifier = LocalEmbedder(), Verifier.load()
    print(f"{'pair':<48} {'embed ms':>9} {'verify ms':>10} {'ratio':>6}")
    for cached, asked in PAIRS:
        embed = median_ms(lambda asked=asked: embedder.embed_sync(asked), 100)

        def verify_once(c: str = cached, a: str = asked) -> None:
            analyse.cache_clear()  # a new prompt is analysed afresh
            verifier.probability_sync(c, a)

        verify = median_ms(verify_once)
        print(f"{asked[:48]:<48} {embed:>9.2f} {verify:>10.3f} {verify / embed:>6.2f}")


if __name__ == "__main__":
    main()
