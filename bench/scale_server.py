"""kallm with an in-memory store that bench/scale.py can fill in bulk.

The same app as `kallm serve` (settings from the environment, one BLAS thread), with one
route of the benchmark's own: POST /_bench/fill?count=N&start=S puts N entries into the
partition of the entries already cached (the benchmark caches its questions first, through
the proxy), with vectors from rows S.. of --vectors and prompts from --texts. Not a part of
kallm: a way to reach a million entries in minutes rather than the hours a million misses
would take.

    python bench/scale_server.py --port P --vectors V.npy --texts T.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import time
import uuid
from collections.abc import Iterator

import numpy as np
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from threadpoolctl import threadpool_limits

from kallm.app import Parts, create_app
from kallm.settings import load_settings
from kallm.storage.base import Entry, EntryQuery, Meta
from kallm.storage.memory import MemoryStore

BATCH = 20_000  # entries built and loaded at once: a bound on the fill's own garbage


def filler(first: Entry, vectors: np.ndarray, texts: list[str], start: int) -> Iterator[Entry]:
    """Entries like a chat completion's, in `first`'s namespace and partition."""
    now = time.time()
    for row in range(len(vectors)):
        i = start + row
        prompt = texts[i] if i < len(texts) else f"synthetic question number {i} for the scale run"
        answer = f"An answer of a typical length to the question: {prompt} " * 2
        yield Entry(
            id=uuid.uuid4().hex, namespace=first.namespace, partition=first.partition,
            exact=hashlib.sha256(f"scale-{i}".encode()).hexdigest(), text=prompt.lower(),
            vector=np.asarray(vectors[row], dtype=np.float32),
            embedding_model=first.embedding_model, model=first.model,
            response={
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
                "created": int(now), "model": first.model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 40, "total_tokens": 60},
            },
            created=now, expires=now + 30 * 86400,
            meta=Meta("chat.completions", {"prompt_tokens": 20, "completion_tokens": 40},
                      {"model": first.model, "messages": [{"role": "user", "content": prompt}]}),
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--vectors", required=True)
    parser.add_argument("--texts", required=True)
    args = parser.parse_args()
    threadpool_limits(limits=1, user_api="blas")  # as `kallm serve`
    settings = load_settings(host="127.0.0.1", port=args.port)
    store = MemoryStore(settings.max_cache_size)
    app = create_app(settings, Parts(store=store))
    vectors = np.load(args.vectors, mmap_mode="r")
    with open(args.texts) as file:
        texts: list[str] = json.load(file)

    async def fill(request: Request) -> JSONResponse:
        count, start = int(request.query_params["count"]), int(request.query_params["start"])
        (first,) = await store.entries(EntryQuery(limit=1), time.time())
        started = time.perf_counter()
        for at in range(start, start + count, BATCH):
            rows = vectors[at : min(at + BATCH, start + count)]
            batch = list(filler(first, rows, texts, at))
            await asyncio.to_thread(store.load, batch)
        seconds = time.perf_counter() - started
        gc.collect()
        return JSONResponse({"seconds": seconds, "entries": await store.count(time.time())})

    async def routed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/fill":
            await (await fill(Request(scope, receive)))(scope, receive, send)
        else:
            await app(scope, receive, send)

    uvicorn.run(
        routed, host="127.0.0.1", port=args.port, http="httptools", ws="none",
        log_config=None, access_log=False,
    )  # fmt: skip


if __name__ == "__main__":
    main()
