import asyncio

import numpy as np

from kallm.embedders import LocalEmbedder
from kallm.pricing import PriceTable


def test_local_model_loads_offline_and_embeds_meaning():
    embedder = LocalEmbedder()
    try:
        a, b, c = (
            embedder.embed_sync(t)
            for t in (
                "What is the capital of France?",
                "what's the capital city of France?",
                "How do I bake bread?",
            )
        )
        assert a.shape == (384,) and a.dtype == np.float32
        assert abs(float(np.linalg.norm(a)) - 1) < 1e-5
        assert float(a @ b) > 0.9 > 0.3 > float(a @ c)
        assert np.allclose(
            asyncio.run(embedder.embed("What is the capital of France?")), a, atol=1e-6
        )
    finally:
        asyncio.run(embedder.close())


def test_prices_match_dated_snapshots_and_unknown_models_cost_nothing():
    prices = PriceTable.load()
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}
    assert prices.cost("gpt-4o-mini", usage) == prices.cost("gpt-4o-mini-2024-07-18", usage) == 0.75
    assert prices.cost("gpt-4o-2024-08-06", usage) == 12.5
    assert prices.cost("my-local-llama", usage) is None
