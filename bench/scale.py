"""kallm with 10,000, 100,000 and 1,000,000 entries in one partition, in one run.

For each size, three phases:
- index: kallm's `VectorIndex` alone, in this process: build time, search p50/p99 (with the
  worker-thread hop kallm makes), recall@1 against brute force in float32, how far its
  scores are from float32's, and the memory it added to this process;
- proxy: kallm (bench/scale_server.py: `kallm serve`'s app over the in-memory store) with
  proxy_bench's questions cached through it, then filled to the size in bulk; semantic and
  exact HIT p50/p99 through the proxy, sequential, one keep-alive connection; kallm's RSS;
- sqlite: a SQLite file of that many entries, then `kallm serve` started on it: seconds to
  answer /health, and until /ready says the index is loaded; kallm's RSS then.

Vectors are real MiniLM embeddings of the questions in --corpus (embedded once, then cached
in bench/results/, a few minutes), with synthetic rows beyond them: a real vector plus half
another and a little noise, renormalised, so they lie where text embeddings lie. Queries
are real embeddings held out of every index. The first run embeds the corpus (~10 min).

    .venv/bin/python bench/scale.py [--sizes 10000 100000 1000000] [--phases index proxy sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np
import psutil

from kallm.storage.base import Entry, Meta
from kallm.storage.sqlite import _COLUMNS, SqliteStore, _row
from kallm.storage.vectors import VectorIndex
from proxy_bench import (
    HOST,
    Client,
    chat_request,
    exact_hit,
    free_port,
    semantic_hit,
    start,
    stop,
    summary,
    timed,
    verified_pairs,
    wait_ready,
)
from scale_server import filler

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CORPUS = ROOT.parent / "shared" / "data" / "qqp_dev.jsonl"
QUERIES = 500  # real vectors held out of every index
KEY = ("bench", "p", "m")


def corpus(path: Path) -> tuple[list[str], np.ndarray]:
    """The unique questions of a pairs file and their embeddings, cached by file digest."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    texts_at, vectors_at = RESULTS / f"corpus-{digest}.json", RESULTS / f"corpus-{digest}.npy"
    if vectors_at.exists():
        return json.loads(texts_at.read_text()), np.load(vectors_at)
    from kallm.embedders.local import LocalEmbedder

    seen: dict[str, None] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        seen.update(dict.fromkeys(t for t in (row.get("a"), row.get("b")) if isinstance(t, str)))
    texts = list(seen)
    embedders = [LocalEmbedder(), LocalEmbedder()]  # one model call per core
    chunks = [texts[i : i + 32] for i in range(0, len(texts), 32)]
    print(f"embedding {len(texts)} texts once (cached in {RESULTS})", flush=True)
    with ThreadPoolExecutor(2) as pool:
        done = pool.map(
            lambda a: a[0].embed_many(a[1]), [(embedders[i % 2], c) for i, c in enumerate(chunks)]
        )
        pairs = [
            (t, v)
            for chunk, vs in zip(chunks, done, strict=True)
            for t, v in zip(chunk, vs, strict=True)
            if v is not None
        ]
    texts, vectors = [t for t, _ in pairs], np.stack([v for _, v in pairs]).astype(np.float32)
    RESULTS.mkdir(exist_ok=True)
    texts_at.write_text(json.dumps(texts))
    np.save(vectors_at, vectors)
    return texts, vectors


def synthetic(real: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Rows made from real ones: a real vector plus half another and a little noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for at in range(0, count, 100_000):
        n = min(100_000, count - at)
        a, b = real[rng.integers(0, len(real), n)], real[rng.integers(0, len(real), n)]
        rows = a + 0.5 * b + rng.standard_normal(a.shape).astype(np.float32) * (0.3 / 384**0.5)
        parts.append(rows / np.linalg.norm(rows, axis=1, keepdims=True))
    return np.concatenate(parts).astype(np.float32)


def dataset(real: np.ndarray, size: int) -> np.ndarray:
    """`size` rows: the real vectors first, then synthetic ones."""
    if size <= len(real):
        return real[:size]
    return np.concatenate([real, synthetic(real, size - len(real), seed=0)])


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def index_phase(vectors: np.ndarray, queries: np.ndarray, real: np.ndarray) -> dict[str, Any]:
    before = rss()
    index = VectorIndex()
    ids = [str(i) for i in range(len(vectors))]
    started = time.perf_counter()
    for at in range(0, len(vectors), 50_000):
        index.add_many(KEY, ids[at : at + 50_000], vectors[at : at + 50_000], threads=0)
    build = time.perf_counter() - started
    memory = rss() - before
    figures = {"build_s": build, "build_per_s": len(vectors) / build, "memory_mb": memory / 1e6}
    figures |= searched(index, ids, vectors, queries)
    # Churn: a tenth of the entries go (as expiry and eviction take them) and as many new
    # ones come, taking the freed rows. The recall must hold.
    gone = set(range(0, len(vectors), 10))
    for row in gone:
        index.remove(ids[row], KEY)
    fresh = synthetic(real, len(gone), seed=1)
    new_ids = [f"new{i}" for i in range(len(fresh))]
    index.add_many(KEY, new_ids, fresh, threads=0)
    kept = [row for row in range(len(vectors)) if row not in gone]
    after = searched(
        index, [ids[r] for r in kept] + new_ids, np.concatenate([vectors[kept], fresh]), queries
    )
    figures["churned_recall_at_1"] = after["recall_at_1"]
    figures["churned_recall_at_1_close"] = after["recall_at_1_close"]
    return figures


def searched(
    index: VectorIndex, ids: list[str], live: np.ndarray, queries: np.ndarray
) -> dict[str, Any]:
    """Search p50/p99 and recall@1 of `index`, which holds `live` under `ids`."""

    async def searches() -> tuple[list[float], list[list[tuple[str, float]]]]:
        await index.nearest(KEY, queries[0], 4)  # warm up the worker thread
        samples, found = [], []
        for query in queries:
            at = time.perf_counter()
            found.append(await index.nearest(KEY, query, 4))
            samples.append(time.perf_counter() - at)
        return samples, found

    samples, found = asyncio.run(searches())
    best = np.full(len(queries), -2.0, dtype=np.float32)
    for at in range(0, len(live), 100_000):
        best = np.maximum(best, (live[at : at + 100_000] @ queries.T).max(axis=0))
    rows = {entry_id: row for row, entry_id in enumerate(ids)}
    true = np.array(
        [float(live[rows[hits[0][0]]] @ q) for hits, q in zip(found, queries, strict=True)]
    )
    right = true >= best - 1e-4  # ties count as found
    close = best >= 0.8  # queries near enough an entry for a decision to matter
    error = max(abs(hits[0][1] - t) for hits, t in zip(found, true, strict=True))
    return {
        "search": summary(samples), "recall_at_1": float(right.mean()),
        "recall_at_1_close": float(right[close].mean()), "close_queries": int(close.sum()),
        "max_score_error": float(error),
    }  # fmt: skip


async def proxy_phase(
    size: int, vectors_at: Path, texts_at: Path, log: IO[bytes], hits: int
) -> dict[str, Any]:
    sim_port, port = free_port(), free_port()
    simulator = [sys.executable, "-m", "kallm.simulator", "--host", HOST, "--port", str(sim_port)]
    sim = start([*simulator, "--latency", "0"], log)
    env = {
        "OPENAI_BASE_URL": f"http://{HOST}:{sim_port}/v1", "OPENAI_API_KEY": "sk-bench",
        "KALLM_MAX_CACHE_SIZE": str(size + 1000),
    }  # fmt: skip
    server = [
        sys.executable,
        str(ROOT / "bench" / "scale_server.py"),
        "--port",
        str(port),
        "--vectors",
        str(vectors_at),
        "--texts",
        str(texts_at),
    ]
    kallm = start(server, log, env)
    try:
        await wait_ready(sim_port, "/v1/models", sim)
        await wait_ready(port, "/ready", kallm)
        client = await Client.open(port)
        pairs = await verified_pairs(client, port)
        fill = f"POST /_bench/fill?count={size - len(pairs)}&start=0 HTTP/1.1\r\nHost: {HOST}"
        filled = await Client.open(port)
        sent = filled.send(f"{fill}\r\nContent-Length: 0\r\n\r\n".encode())
        answer = json.loads((await asyncio.wait_for(sent, 3600)).body)
        client.close()  # idle through the fill, past the server's keep-alive timeout
        client = await Client.open(port)
        paraphrases = [chat_request(port, p) for _, p in pairs]
        repeats = [chat_request(port, q) for q, _ in pairs]
        await served(client, paraphrases, len(paraphrases))  # warm-up
        semantic, asked = await served(client, paraphrases, hits)
        exact = await timed(client, repeats, hits, exact_hit)
        return {
            "entries": answer["entries"], "fill_s": answer["seconds"], "pairs": len(pairs),
            "semantic_hit": summary(semantic), "served": len(semantic) / asked,
            "exact_hit": summary(exact),
            "rss_mb": psutil.Process(kallm.pid).memory_info().rss / 1e6,
        }  # fmt: skip
    finally:
        stop(kallm)
        stop(sim)


async def served(client: Client, requests: list[bytes], count: int) -> tuple[list[float], int]:
    """Latencies of the semantic HITs among `count` requests cycling through `requests`, and
    how many were sent. A paraphrase that a HIT at a smaller size answered may miss at a
    larger one (the graph did not find its question, or a closer entry was refused): the
    share served says how often."""
    samples = []
    for i in range(count):
        started = time.perf_counter()
        reply = await client.send(requests[i % len(requests)])
        if semantic_hit(reply):
            samples.append(time.perf_counter() - started)
    return samples, count


def sqlite_file(path: Path, vectors: np.ndarray, texts: list[str]) -> float:
    """A SQLite store of these vectors, written in bulk; seconds it took."""
    asyncio.run(_created(path))
    first = Entry(
        "", "bench", "p", "", None, None, "all-MiniLM-L6-v2", "sim-small", {}, 0, 0, meta=Meta()
    )
    started = time.perf_counter()
    with sqlite3.connect(path) as db:
        marks = ",".join("?" * len(_COLUMNS.split(",")))
        for at in range(0, len(vectors), 20_000):
            rows = [_row(e) for e in filler(first, vectors[at : at + 20_000], texts, at)]
            db.executemany(f"INSERT INTO entries ({_COLUMNS}) VALUES ({marks})", rows)
    db.close()
    return time.perf_counter() - started


async def _created(path: Path) -> None:
    store = SqliteStore(path, 1)
    await store.start()
    await store.close()


async def sqlite_phase(path: Path, size: int, log: IO[bytes]) -> dict[str, Any]:
    """`kallm serve` on the file twice: first building the index from the rows, then, after
    a clean stop saved it, from the saved index."""
    env = {
        "KALLM_BACKEND": f"sqlite:///{path}",
        "KALLM_MAX_CACHE_SIZE": str(size + 1000),
        "OPENAI_API_KEY": "sk-bench",
    }
    figures: dict[str, Any] = {}
    for run in ("rows", "saved"):
        port = free_port()
        started = time.perf_counter()
        command = [sys.executable, "-m", "kallm", "serve", "--host", HOST, "--port", str(port)]
        kallm = start(command, log, env)
        try:
            await wait_ready(port, "/health", kallm)
            health = time.perf_counter() - started
            ask = f"GET /ready HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
            client = await Client.open(port)
            while json.loads((await client.send(ask)).body).get("index") != "ready":
                await asyncio.sleep(0.2)
                if time.perf_counter() - started > 1800:
                    raise SystemExit("the SQLite store did not load in 30 minutes")
            figures[run] = {
                "health_s": health, "index_ready_s": time.perf_counter() - started,
                "rss_mb": psutil.Process(kallm.pid).memory_info().rss / 1e6,
            }  # fmt: skip
            client.close()
        finally:
            stopped = time.perf_counter()
            stop(kallm, 300)  # a clean stop saves the index: a million rows take seconds
            figures[run]["stop_s"] = time.perf_counter() - stopped
    return figures


def report(results: dict[str, Any]) -> list[str]:
    sizes = results["sizes"]
    tables = {
        "index": ["entries", "build s", "rows/s", "search p50 ms", "p99 ms", "recall@1",
                  "recall@1, best ≥ 0.8 (queries)", "max score error", "memory MB",
                  "recall@1 after a tenth replaced (best ≥ 0.8)"],
        "proxy": ["entries", "semantic HIT p50 ms", "p99 ms", "p50 / smallest size's", "served",
                  "exact HIT p50 ms", "kallm RSS MB", "fill s"],
        "sqlite": ["entries", "file written s", "/health s", "index built from the rows s",
                   "kallm RSS MB", "clean stop s", "/health s", "index loaded as saved s",
                   "kallm RSS MB"],
    }  # fmt: skip
    smallest = next(
        (p["proxy"]["semantic_hit"]["p50_ms"] for p in sizes.values() if "proxy" in p), 1
    )

    def row(size: int, phase: str, figures: dict[str, Any]) -> list[str]:
        if phase == "index":
            search = figures["search"]
            return [
                f"{figures['build_s']:.1f}", f"{figures['build_per_s']:,.0f}",
                f"{search['p50_ms']:.2f}", f"{search['p99_ms']:.2f}",
                f"{figures['recall_at_1']:.3f}",
                f"{figures['recall_at_1_close']:.3f} ({figures['close_queries']})",
                f"{figures['max_score_error']:.1e}", f"{figures['memory_mb']:,.0f}",
                f"{figures['churned_recall_at_1']:.3f} "
                f"({figures['churned_recall_at_1_close']:.3f})",
            ]  # fmt: skip
        if phase == "proxy":
            hit = figures["semantic_hit"]
            return [
                f"{hit['p50_ms']:.2f}", f"{hit['p99_ms']:.2f}", f"{hit['p50_ms'] / smallest:.2f}",
                f"{figures['served']:.1%}",
                f"{figures['exact_hit']['p50_ms']:.2f}", f"{figures['rss_mb']:,.0f}",
                f"{figures['fill_s']:.0f}",
            ]  # fmt: skip
        rows, saved = figures["rows"], figures["saved"]
        return [
            f"{figures['write_s']:.0f}", f"{rows['health_s']:.1f}",
            f"{rows['index_ready_s']:.1f}", f"{rows['rss_mb']:,.0f}", f"{rows['stop_s']:.1f}",
            f"{saved['health_s']:.1f}", f"{saved['index_ready_s']:.1f}",
            f"{saved['rss_mb']:,.0f}",
        ]  # fmt: skip

    lines = []
    for phase, head in tables.items():
        rows = [
            [f"{int(size):,}", *row(int(size), phase, phases[phase])]
            for size, phases in sizes.items()
            if phase in phases
        ]
        if rows:
            lines += ["", f"{phase}:", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--phases", nargs="+", default=["index", "proxy", "sqlite"])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--hits", type=int, default=300, help="timed HITs per size and kind")
    parser.add_argument("--json", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    texts, real = corpus(args.corpus)
    queries, real, texts = real[-QUERIES:], real[:-QUERIES], texts[:-QUERIES]
    vectors = dataset(real, max(args.sizes))
    results: dict[str, Any] = {"corpus": str(args.corpus), "real": len(real), "sizes": {}}
    with tempfile.TemporaryDirectory() as temp, open(Path(temp) / "kallm.log", "w+b") as log:
        vectors_at, texts_at = Path(temp) / "vectors.npy", Path(temp) / "texts.json"
        np.save(vectors_at, vectors)
        texts_at.write_text(json.dumps(texts))
        try:
            for size in args.sizes:
                phases: dict[str, Any] = {}
                results["sizes"][size] = phases
                if "index" in args.phases:
                    phases["index"] = index_phase(vectors[:size], queries, real)
                if "proxy" in args.phases:
                    phases["proxy"] = asyncio.run(
                        proxy_phase(size, vectors_at, texts_at, log, args.hits)
                    )
                if "sqlite" in args.phases:
                    path = Path(temp) / f"kallm-{size}.db"
                    write = sqlite_file(path, vectors[:size], texts)
                    phases["sqlite"] = asyncio.run(sqlite_phase(path, size, log)) | {
                        "write_s": write
                    }
                    path.unlink()
                args.json.parent.mkdir(exist_ok=True)
                args.json.write_text(json.dumps(results, indent=2))  # what is done so far
                print(f"{size:,} entries: {json.dumps(phases)}", flush=True)
        except BaseException:
            log.seek(0)
            print(log.read()[-4000:].decode(errors="replace"), file=sys.stderr)
            raise
    print("\n".join(report(results)))


if __name__ == "__main__":
    main()
