"""What a cached answer would have cost upstream, from a per-model price table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kallm.packaged import load_json
from kallm.providers.base import token_count


@dataclass(frozen=True)
class Price:
    input: float  # USD per million tokens
    output: float


class PriceTable:
    def __init__(self, prices: dict[str, Price], as_of: str) -> None:
        self._prices = prices
        self.as_of = as_of

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        data = load_json("prices.json", path)
        prices = {name: Price(p["input"], p["output"]) for name, p in data["models"].items()}
        return cls(prices, str(data.get("as_of", "unknown")))

    def price(self, model: str) -> Price | None:
        """The model's own price, else the longest listed prefix (dated snapshots)."""
        if model in self._prices:
            return self._prices[model]
        prefixes = [name for name in self._prices if model.startswith(name + "-")]
        return self._prices[max(prefixes, key=len)] if prefixes else None

    def cost(self, model: str, usage: Any) -> float | None:
        price = self.price(model)
        if price is None:
            return None
        prompt, completion = token_counts(usage)
        return (prompt * price.input + completion * price.output) / 1_000_000


def token_counts(usage: Any) -> tuple[int, int]:
    """(prompt, completion) tokens of a stored usage; a count that is not a sane integer
    (a string, a negative or astronomical number: whatever an upstream sent) counts 0."""
    if not isinstance(usage, dict):
        return 0, 0

    def count(*names: str) -> int:
        for name in names:
            if (value := token_count(usage.get(name))) is not None:
                return value
        return 0

    return count("prompt_tokens", "input_tokens"), count("completion_tokens", "output_tokens")
