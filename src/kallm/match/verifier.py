"""The verifier: the probability that a cached prompt's answer is right for a new prompt.

A small network over pair features (features.py) and the two embeddings, trained by
`eval/train_verifier.py` on Quora and MRPC pairs plus hand-written near-misses; the weights
ship in `data/verifier.json`. Scoring one pair costs well under a millisecond in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kallm.match.features import NAMES, features
from kallm.packaged import load_json
from kallm.storage.base import Vector

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Calibration:
    """Defaults found by calibration for the embedding model the verifier was trained with."""

    embedding_model: str
    similarity_threshold: float
    min_probability: float


class Verifier:
    def __init__(self, spec: dict[str, Any]) -> None:
        if list(spec["features"]) != list(NAMES):
            raise ValueError("verifier weights were trained on other features; retrain")
        self._mean = np.asarray(spec["mean"], dtype=np.float64)
        self._scale = np.asarray(spec["scale"], dtype=np.float64)
        self._interactions = bool(spec["embedding_interactions"])
        self._layers = [
            (np.asarray(layer["weights"], dtype=np.float64), np.asarray(layer["bias"]))
            for layer in spec["layers"]
        ]
        self._guards = [NAMES.index(name) for name in spec["guards"]]
        defaults = spec["defaults"]
        self.calibration = Calibration(
            spec["embedding_model"], defaults["similarity_threshold"], defaults["min_probability"]
        )

    @classmethod
    def load(cls, path: Path | None = None) -> Verifier:
        return cls(load_json("verifier.json", path))

    def inputs(
        self, cached: str, asked: str, cached_vector: Vector, asked_vector: Vector
    ) -> Matrix:
        """The network's input row for one pair (exposed for training and tests)."""
        cosine = float(cached_vector @ asked_vector)
        row = np.asarray(features(cached, asked, cosine), dtype=np.float64)
        if self._interactions:
            row = np.concatenate(
                [row, cached_vector * asked_vector, np.abs(cached_vector - asked_vector)]
            )
        return row

    def probability(
        self, cached: str, asked: str, cached_vector: Vector, asked_vector: Vector
    ) -> float:
        return float(self.forward(self.inputs(cached, asked, cached_vector, asked_vector))[0])

    def forward(self, rows: Matrix) -> Matrix:
        """Probabilities for input rows. A guard (a different number, a negation, an antonym,
        swapped roles, another format or language) vetoes outright; otherwise the network
        decides: standardise, ReLU hidden layers, sigmoid output."""
        rows = np.atleast_2d(rows)
        vetoed = (rows[:, self._guards] > 0).any(axis=1)
        values = (rows - self._mean) / self._scale
        for index, (weights, bias) in enumerate(self._layers):
            values = values @ weights + bias
            if index < len(self._layers) - 1:
                values = np.maximum(values, 0.0)
        probabilities: Matrix = 1.0 / (1.0 + np.exp(-values[:, 0]))
        return np.where(vetoed, 0.0, probabilities)
