"""The pair model: reads a cached prompt and a new one together and gives the probability
that the cached answer is right for the new prompt.

A cross-encoder: the first layers of the embedder's own MiniLM, fine-tuned on pairs by
`training/train.py` and shipped as int8 ONNX (`data/pair_model.onnx`, with its settings and
calibrated defaults in `data/pair_model.json`). It reads "[CLS] cached [SEP] asked [SEP]"
with the embedder's WordPiece vocabulary, so a changed word is seen as the word it is, not as
a nudge to a vector. One pair costs about 1.5 ms of CPU (the verifier runs it in a worker
thread).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from kallm.embedders.local import one_thread_session, wordpiece
from kallm.match.pair_text import WINDOW, pair_input
from kallm.packaged import load_json


class PairModel:
    def __init__(self, model: bytes, spec: dict[str, Any]) -> None:
        if spec["window"] != WINDOW:
            raise ValueError("the pair model was trained with another input window; retrain")
        self._tokenizer = wordpiece()
        self._tokenizer.no_truncation()  # pair_input decides what fits
        self._session = one_thread_session(model)
        self.spec = spec

    @classmethod
    def load(cls, folder: Path | None = None) -> PairModel:
        """The model shipped in the package, or the one in `folder` (a retrained one)."""
        if folder is not None:
            model = (folder / "pair_model.onnx").read_bytes()
            return cls(model, load_json("pair_model.json", folder / "pair_model.json"))
        model = resources.files("kallm").joinpath("data", "pair_model.onnx").read_bytes()
        return cls(model, load_json("pair_model.json"))

    def probability(self, cached: str, asked: str) -> float:
        """P(the answer to `cached` is right for `asked`); 0 when the two do not fit the
        model's window together, so a difference it cannot read is never served."""
        pair = pair_input(cached, asked)
        if pair is None:
            return 0.0
        encoding = self._tokenizer.encode(*pair)
        if len(encoding.ids) > WINDOW:
            return 0.0
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64),
        }
        (logits,) = self._session.run(["logits"], feeds)
        return float(1.0 / (1.0 + np.exp(-float(logits[0]))))
