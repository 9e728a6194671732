"""HIT latency of every cached API, against chat completions in the same run.

Starts `kallm.simulator` and `kallm serve` (with its own key for every provider) as
subprocesses on free ports, caches the same questions through each API, then times exact
HITs (JSON and streamed) and semantic HITs (paraphrases) per API, one keep-alive connection,
sequentially. Prints p50/p99 and each API's p50 as a ratio of chat's, and writes JSON
(default bench/results/providers.json).

    .venv/bin/python bench/providers_bench.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from proxy_bench import HOST, PAIRS, percentile, serving

RESULTS = Path(__file__).parent / "results" / "providers.json"

# Per API: the path and the body for a question, and whether it can stream.
Build = Callable[[str, bool], tuple[str, dict[str, Any]]]


def chat(question: str, stream: bool) -> tuple[str, dict[str, Any]]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}]}
    return "/v1/chat/completions", body | ({"stream": True} if stream else {})


def completions(question: str, stream: bool) -> tuple[str, dict[str, Any]]:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": question}
    return "/v1/completions", body | ({"stream": True} if stream else {})


def responses(question: str, stream: bool) -> tuple[str, dict[str, Any]]:
    body = {"model": "gpt-4o-mini", "input": question}
    return "/v1/responses", body | ({"stream": True} if stream else {})


def messages(question: str, stream: bool) -> tuple[str, dict[str, Any]]:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": question}],
    }
    return "/v1/messages", body | ({"stream": True} if stream else {})


def gemini(question: str, stream: bool) -> tuple[str, dict[str, Any]]:
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": question}]}]}
    return f"/v1beta/models/gemini-2.5-flash:{method}", body


APIS: dict[str, Build] = {
    "chat.completions": chat,
    "completions": completions,
    "responses": responses,
    "messages": messages,
    "gemini": gemini,
}


async def send(client: httpx.AsyncClient, build: Build, question: str, stream: bool) -> str:
    """The X-Kallm-Cache of one whole answer (a stream is read to its end)."""
    path, body = build(question, stream)
    async with client.stream("POST", path, json=body) as reply:
        await reply.aread()
        if reply.status_code != 200:
            raise SystemExit(f"{path}: {reply.status_code} {reply.text[:200]}")
        return reply.headers.get("x-kallm-cache", "")


async def timed(
    client: httpx.AsyncClient, build: Build, questions: list[str], count: int, stream: bool
) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        cache = await send(client, build, questions[i % len(questions)], stream)
        samples.append(time.perf_counter() - started)
        if cache != "HIT":
            raise SystemExit(f"expected a HIT, got {cache!r} for {questions[i % len(questions)]!r}")
    return samples


def stats(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99)}


async def measure(port: int, count: int) -> dict[str, Any]:
    headers = {"x-kallm-namespace": "bench", "anthropic-version": "2023-06-01"}
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", headers=headers) as client:
        for name, build in APIS.items():
            for question, _ in PAIRS:
                await send(client, build, question, stream=False)
            # Only paraphrases this API serves as semantic HITs are timed (every API shares
            # the matcher, so these are the same pairs unless a key differs).
            paraphrases = [
                p for _, p in PAIRS if await send(client, build, p, stream=False) == "HIT"
            ]
            questions = [q for q, _ in PAIRS]
            for phase in ("warm-up", "measured"):
                n = count if phase == "measured" else 20
                exact = await timed(client, build, questions, n, stream=False)
                streamed = await timed(client, build, questions, n, stream=True)
            results[name] = {
                "exact_hit": stats(exact),
                "exact_hit_stream": stats(streamed),
                "semantic_pairs": len(paraphrases),
            }
            # Each paraphrase is a semantic HIT once: afterwards it is cached exactly.
            if paraphrases:
                semantic = await timed(client, build, paraphrases, len(paraphrases), False)
                results[name]["semantic_hit"] = stats(semantic)
    return results


async def run(count: int, log: IO[bytes]) -> dict[str, Any]:
    def settings(root: str) -> dict[str, str]:
        return {
            "OPENAI_BASE_URL": f"{root}/v1",
            "ANTHROPIC_BASE_URL": root,
            "GEMINI_BASE_URL": root,
            "OPENAI_API_KEY": "sk-bench",
            "ANTHROPIC_API_KEY": "sk-ant-bench",
            "GEMINI_API_KEY": "gm-bench",
        }

    return await serving(log, settings, lambda port, sim, pid: measure(port, count))


def report(results: dict[str, Any]) -> list[str]:
    base = results["chat.completions"]
    lines = [
        f"{'p50 / p99 ms (x chat p50)':<20}{'exact HIT':>24}{'exact HIT, streamed':>24}"
        f"{'semantic HIT':>24}"
    ]
    for name, row in results.items():
        cells = []
        for phase in ("exact_hit", "exact_hit_stream", "semantic_hit"):
            if phase not in row:
                cells.append(f"{'-':>24}")
                continue
            ratio = row[phase]["p50_ms"] / base[phase]["p50_ms"]
            text = f"{row[phase]['p50_ms']:.2f} / {row[phase]['p99_ms']:.2f} (x{ratio:.2f})"
            cells.append(f"{text:>24}")
        lines.append(f"{name:<20}" + "".join(cells))
    pairs = ", ".join(f"{n} {r['semantic_pairs']}" for n, r in results.items())
    lines.append(f"(semantic HITs timed per API, one each: {pairs})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per API and phase")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where results go")
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile(prefix="kallm-bench-", suffix=".log") as log:
        try:
            results = asyncio.run(run(args.requests, log))
        except BaseException:
            log.flush()
            print(Path(log.name).read_text()[-3000:], file=sys.stderr)
            raise
    print("\n".join(report(results)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}
    args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
