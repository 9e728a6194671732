"""The verifier: the probability that a cached prompt's answer is right for a new prompt.

The pair model (pair_model.py) reads both prompts together and decides. Before it, the
guards that measurably add precision on held-out data (features.py: a different number,
swapped roles...) veto outright; which ones is part of the trained artifact
(`data/pair_model.json`), chosen by `training/calibrate.py`, as are the defaults.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kallm.match.features import GUARDS, guards
from kallm.match.pair_model import PairModel


@dataclass(frozen=True)
class Calibration:
    """Defaults found by calibration for the embedding model the verifier was trained with."""

    embedding_model: str
    similarity_threshold: float
    min_probability: float


class Verifier:
    def __init__(self, model: PairModel) -> None:
        spec = model.spec
        unknown = set(spec["guards"]) - set(GUARDS)
        if unknown:
            raise ValueError(f"the pair model names guards this kallm lacks: {sorted(unknown)}")
        self._model = model
        # One thread: the pair model keeps a core busy for about 1.5 ms a pair, and the
        # embedder's threads and the event loop need the rest of a small machine.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kallm-verify")
        self._guards = tuple(spec["guards"])
        defaults = spec["defaults"]
        self.calibration = Calibration(
            spec["embedding_model"], defaults["similarity_threshold"], defaults["min_probability"]
        )

    @classmethod
    def load(cls, folder: Path | None = None) -> Verifier:
        return cls(PairModel.load(folder))

    def vetoed(self, cached: str, asked: str) -> bool:
        """Whether a guard rules the pair out before the model reads it."""
        return bool(self._guards) and bool(guards(cached, asked, self._guards))

    def probability_sync(self, cached: str, asked: str) -> float:
        if self.vetoed(cached, asked):
            return 0.0
        return self._model.probability(cached, asked)

    async def probability(self, cached: str, asked: str) -> float:
        """As `probability_sync`, in the verifier's thread: guards and model both do work
        that grows with the prompts."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.probability_sync, cached, asked)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
