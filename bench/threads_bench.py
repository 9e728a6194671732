"""What numpy's BLAS threads cost next to the embedding threads on this box.

kallm searches a partition's vectors (a matrix times a vector, storage.vectors) in a worker
thread while two threads embed prompts. This runs that mix for a few seconds, with BLAS at
its default thread count and limited to one thread (what `kallm serve` sets), in one
process, and reports searches and embeddings per second and the search's p50 / p99:

    .venv/bin/python bench/threads_bench.py [--rows 10000] [--seconds 4]
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from kallm.embedders import LocalEmbedder

TEXT = "How do I reset my router password when I no longer remember the old one?"


def mix(matrix: np.ndarray, embedder: LocalEmbedder, seconds: float) -> tuple[float, ...]:
    """Searches/s, embeddings/s, search p50 and p99 (ms) with one searching thread and two
    embedding threads running together."""
    vector = matrix[0].copy()
    stop = threading.Event()
    searches: list[float] = []
    embeds = [0, 0]

    def search() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            _ = matrix @ vector
            searches.append((time.perf_counter() - started) * 1000)

    def embed(slot: int) -> None:
        while not stop.is_set():
            embedder.embed_sync(TEXT)
            embeds[slot] += 1

    threads = [threading.Thread(target=search)]
    threads += [threading.Thread(target=embed, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    searches.sort()
    p50, p99 = searches[len(searches) // 2], searches[int(len(searches) * 0.99)]
    return len(searches) / seconds, sum(embeds) / seconds, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    matrix = np.random.default_rng(0).standard_normal((args.rows, 384)).astype(np.float32)
    embedder = LocalEmbedder()
    embedder.embed_sync(TEXT)  # warm
    blas = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    print(f"BLAS threads by default: {blas}; {args.rows} rows")
    print("| BLAS threads | searches/s | embeddings/s | search p50 / p99 ms |")
    print("|---|---|---|---|")
    for limit in (None, 1, None, 1):  # twice each, alternating, against drift on the box
        with threadpool_limits(limits=limit, user_api="blas"):
            rate, embeds, p50, p99 = mix(matrix, embedder, args.seconds)
        shown = "default" if limit is None else str(limit)
        print(f"| {shown} | {rate:.0f} | {embeds:.0f} | {p50:.2f} / {p99:.2f} |")


if __name__ == "__main__":
    main()
