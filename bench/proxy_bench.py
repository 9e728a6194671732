"""Latency and throughput of kallm against the simulated provider, in one run.

Starts `kallm.simulator` (latency 0) and `kallm serve` as subprocesses on free ports, then
measures exact-HIT and semantic-HIT latency, MISS overhead against calling the simulator
directly, exact-HIT throughput with concurrent keep-alive clients, and MISS throughput
(unique prompts) against the simulator called directly at the same concurrency. Prints a
table and writes JSON (default bench/results/latest.json).

    .venv/bin/python bench/proxy_bench.py [--requests N] [--duration S] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

HOST = "127.0.0.1"
RESULTS = Path(__file__).parent / "results" / "latest.json"
T = TypeVar("T")
TARGETS = {"exact_hit": 2.0, "semantic_hit": 20.0, "miss_overhead": 25.0, "throughput": 1000.0}

# Questions and paraphrases that all-MiniLM-L6-v2 puts at cosine >= 0.96 (most >= 0.98),
# while no two questions come within 0.75 of each other. Each run still checks every pair
# through kallm and drops any that does not behave, so a new model cannot skew the numbers.
PAIRS = [
    ("What is the capital of France?", "what's the capital of France?"),
    ("What is the boiling point of water?", "what's the boiling point of water?"),
    ("How do I reverse a list in Python?", "How can I reverse a list in Python?"),
    ("What is the speed of light in a vacuum?", "what's the speed of light in a vacuum?"),
    ("Who wrote the novel Pride and Prejudice?", "Who wrote the novel 'Pride and Prejudice'?"),
    ("How many bones are in the human body?", "How many bones are there in the human body?"),
    ("What is the tallest mountain in the world?", "what's the tallest mountain in the world?"),
    ("How do I create a virtualenv in Python?", "How can I create a virtualenv in Python?"),
    ("What is the chemical symbol for gold?", "what's the chemical symbol for gold?"),
    ("Who painted the Mona Lisa?", "Who painted the Mona Lisa painting?"),
    ("What is the largest ocean on Earth?", "what's the largest ocean on Earth?"),
    ("How do I sort a dict by value in Python?", "How can I sort a dict by value in Python?"),
    ("What is the population of Tokyo?", "what's the population of Tokyo?"),
    ("How far is the Moon from the Earth?", "How far away is the Moon from the Earth?"),
    ("What is the meaning of the word serendipity?", "what's the meaning of the word serendipity?"),
    ("How do I undo the last commit in git?", "How can I undo the last commit in git?"),
    ("What is the freezing point of mercury?", "what's the freezing point of mercury?"),
    ("Who discovered penicillin?", "Who was it that discovered penicillin?"),
    ("What is the square root of 144?", "what's the square root of 144?"),
    ("How do I parse an integer in JavaScript?", "How can I parse an integer in JavaScript?"),
    ("What is the longest river in Africa?", "what's the longest river in Africa?"),
    ("When did the Second World War end?", "When did the Second World War come to an end?"),
    ("What is photosynthesis?", "what's photosynthesis?"),
    ("How do I make a cup of green tea?", "How can I make a cup of green tea?"),
    ("What is the currency of Japan?", "what's the currency of Japan?"),
    ("How many players are on a soccer team?", "How many players are there on a soccer team?"),
    ("What is a tuple in Python?", "what's a tuple in Python?"),
    ("Who first walked on the Moon?", "Who was the first to walk on the Moon?"),
    ("What is the main ingredient in guacamole?", "what's the main ingredient in guacamole?"),
    ("How do I center a div in CSS?", "How can I center a div in CSS?"),
    ("What is the largest planet?", "what's the largest planet?"),
    ("How do I read a CSV file with pandas?", "How can I read a CSV file with pandas?"),
    ("What is the atomic number of carbon?", "what's the atomic number of carbon?"),
    ("Why is the sky blue?", "Why is the sky blue in color?"),
    ("What is the official language of Brazil?", "what's the official language of Brazil?"),
    ("How do I check my Python version?", "How can I check my Python version?"),
    ("What is the hardest natural substance?", "what's the hardest natural substance?"),
    ("How long does it take to boil an egg?", "How long does it take to hard boil an egg?"),
    ("What is the capital city of Australia?", "what's the capital city of Australia?"),
    ("How do I list running processes in Linux?", "How can I list running processes in Linux?"),
    ("What is the normal human body temperature?", "what's the normal human body temperature?"),
    ("Who invented the telephone?", "Who was the inventor of the telephone?"),
    ("What is the smallest prime number?", "what's the smallest prime number?"),
    ("How do I merge two dictionaries in Python?", "How can I merge two dictionaries in Python?"),
    ("What is the mass of the Sun?", "what's the mass of the Sun?"),
    ("How many continents are there?", "How many continents are there in the world?"),
    ("What is the best way to learn French?", "what's the best way to learn French?"),
    ("How do I delete a branch in git?", "How can I delete a branch in git?"),
    ("What is the melting point of iron?", "what's the melting point of iron?"),
    ("Who composed the Four Seasons?", "Who was it that composed the Four Seasons?"),
    ("What is the speed of sound in air?", "what's the speed of sound in air?"),
    ("How do I install Node.js on Ubuntu?", "How can I install Node.js on Ubuntu?"),
    ("What is the GDP of Germany?", "what's the GDP of Germany?"),
    ("How do I find the length of a string in Go?", "How can I find the length of a string in Go?"),
    ("What is the largest desert in the world?", "what's the largest desert in the world?"),
    ("How much sleep does an adult need?", "How much sleep does an adult person need?"),
    ("What is the recipe for pancakes?", "what's the recipe for pancakes?"),
    ("How do I open a file in read mode in C?", "How can I open a file in read mode in C?"),
    ("What is the complexity of binary search?", "what's the complexity of binary search?"),
    ("Who is the author of the Harry Potter books?", "Who's the author of the Harry Potter books?"),
]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def cache(self) -> str | None:
        return self.headers.get("x-kallm-cache")

    @property
    def similarity(self) -> float:
        return float(self.headers.get("x-kallm-similarity", "nan"))


class Client:
    """One keep-alive HTTP/1.1 connection, one request at a time. Far cheaper per request
    than httpx, so the load generator leaves the CPU to kallm on a small box."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection(HOST, port))

    async def send(self, raw: bytes) -> Reply:
        # No drain(): a single small request never fills the transport's write buffer.
        self.writer.write(raw)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        # Every answer measured here is a whole body with Content-Length (no streaming).
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Reply(int(head[0].split(" ", 2)[1]), headers, body)

    def close(self) -> None:
        self.writer.close()


def chat_request(port: int, prompt: str, *headers: str) -> bytes:
    """Request bytes built once up front, so timing covers only the round trip."""
    body = json.dumps({"model": "sim-small", "messages": [{"role": "user", "content": prompt}]})
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Authorization: Bearer sk-bench",
        "Content-Type: application/json",
        f"Content-Length: {len(body.encode())}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)] * 1000


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99), "n": len(samples)}


def answered(reply: Reply, prompt: str) -> bool:
    """Whether the body is the simulator's answer to `prompt` (not to some other question)."""
    content = json.loads(reply.body)["choices"][0]["message"]["content"]
    return reply.status == 200 and content.endswith(": " + prompt)


async def timed(
    client: Client, requests: list[bytes], count: int, check: Callable[[Reply], bool]
) -> list[float]:
    """Send `count` requests cycling through `requests`; `check` rejects a wrong reply."""
    samples = []
    for i in range(count):
        started = time.perf_counter()
        reply = await client.send(requests[i % len(requests)])
        samples.append(time.perf_counter() - started)
        if not check(reply):
            raise SystemExit(
                f"unexpected reply {reply.status} {reply.headers} {reply.body[:200]!r}"
            )
    return samples


def exact_hit(reply: Reply) -> bool:
    return reply.status == 200 and reply.cache == "HIT" and reply.similarity == 1.0


def semantic_hit(reply: Reply) -> bool:
    return reply.status == 200 and reply.cache == "HIT" and reply.similarity < 1.0


async def verified_pairs(client: Client, port: int) -> list[tuple[str, str]]:
    """Cache every question, then keep the pairs whose repeat is an exact HIT and whose
    paraphrase is a semantic HIT serving that same question's answer."""
    stored = [q for q, p in PAIRS if (await client.send(chat_request(port, q))).cache == "MISS"]
    kept = []
    for question, paraphrase in PAIRS:
        if question not in stored:
            continue  # a semantic hit on an earlier question: not a distinct question
        repeat = await client.send(chat_request(port, question))
        similar = await client.send(chat_request(port, paraphrase))
        if exact_hit(repeat) and semantic_hit(similar) and answered(similar, question):
            kept.append((question, paraphrase))
    return kept


async def misses(port: int, sim_port: int, count: int) -> dict[str, Any]:
    """Unique prompts through kallm and straight to the simulator, alternated so noise on
    the box hits both alike. X-Kallm-Threshold: 1 keeps the whole lookup (embed, search)
    but rejects every candidate, so each prompt, near a cached one or not, is a MISS."""
    kallm, direct = await Client.open(port), await Client.open(sim_port)
    via, straight = [], []
    for i in range(count + 20):  # the first 20 warm up both paths
        question = PAIRS[i % len(PAIRS)][0]
        started = time.perf_counter()
        reply = await kallm.send(
            chat_request(port, f"{question} (kallm {i})", "X-Kallm-Threshold: 1")
        )
        middle = time.perf_counter()
        plain = await direct.send(chat_request(sim_port, f"{question} (direct {i})"))
        ended = time.perf_counter()
        if reply.cache != "MISS" or reply.status != 200 or plain.status != 200:
            raise SystemExit(f"expected a MISS, got {reply.status} {reply.headers}")
        if i >= 20:
            via.append(middle - started)
            straight.append(ended - middle)
    kallm.close()
    direct.close()
    paired = [a - b for a, b in zip(via, straight, strict=True)]
    return {
        "kallm": summary(via),
        "direct": summary(straight),
        "overhead_p50_ms": percentile(via, 50) - percentile(straight, 50),
        "paired_overhead": summary(paired),
    }


def cpu_seconds(pid: int) -> float:
    """User+system CPU a process has used, from /proc (Linux); 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


async def throughput(
    port: int,
    request: Callable[[int], bytes],
    concurrency: int,
    duration: float,
    kallm_pid: int,
    ok: Callable[[Reply], bool] = lambda reply: exact_hit(reply),
) -> dict[str, Any]:
    """Requests from `concurrency` keep-alive connections for `duration` seconds; the
    `i`-th request is `request(i)`, and a reply not `ok` counts as a failure."""
    clients = [await Client.open(port) for _ in range(concurrency)]
    samples: list[float] = []
    failures = 0
    sent = 0

    async def worker(client: Client, deadline: float) -> None:
        nonlocal failures, sent
        while time.perf_counter() < deadline:
            sent += 1
            started = time.perf_counter()
            reply = await client.send(request(sent))
            samples.append(time.perf_counter() - started)
            failures += not ok(reply)

    async def burst(seconds: float) -> float:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(worker(c, deadline) for c in clients))
        return time.perf_counter() - started

    await burst(min(1.0, duration / 5))  # warm up, then forget it
    samples.clear()
    failures = 0
    cpu_kallm, cpu_self = cpu_seconds(kallm_pid), time.process_time()
    elapsed = await burst(duration)
    for client in clients:
        client.close()
    return {
        "requests_per_s": len(samples) / elapsed,
        "requests": len(samples),
        "failures": failures,
        "concurrency": concurrency,
        "latency": summary(samples),
        "kallm_cpu_pct": 100 * (cpu_seconds(kallm_pid) - cpu_kallm) / elapsed,
        "client_cpu_pct": 100 * (time.process_time() - cpu_self) / elapsed,
    }


async def measure(args: argparse.Namespace, port: int, sim_port: int, pid: int) -> dict[str, Any]:
    client = await Client.open(port)
    pairs = await verified_pairs(client, port)
    if len(pairs) < 10:
        raise SystemExit(f"only {len(pairs)} question/paraphrase pairs behaved; see kallm's log")
    exact = [chat_request(port, q) for q, _ in pairs]
    similar = [chat_request(port, p) for _, p in pairs]
    await timed(client, exact, 200, exact_hit)  # warm-up, discarded
    exact_samples = await timed(client, exact, args.requests, exact_hit)
    await timed(client, similar, 50, semantic_hit)
    semantic_samples = await timed(client, similar, args.requests, semantic_hit)
    client.close()
    return {
        "pairs": len(pairs),
        "exact_hit": summary(exact_samples),
        "semantic_hit": summary(semantic_samples),
        "miss": await misses(port, sim_port, args.misses),
        "throughput": await throughput(
            port, lambda i: exact[i % len(exact)], args.concurrency, args.duration, pid
        ),
        "miss_throughput": await miss_throughput(port, sim_port, args, pid),
    }


async def miss_throughput(
    port: int, sim_port: int, args: argparse.Namespace, pid: int
) -> dict[str, Any]:
    """Unique prompts (each a MISS, stored) from `--concurrency` connections, through kallm
    and then straight to the simulator, and kallm's rate as a share of direct."""

    def prompt(i: int) -> str:
        return f"{PAIRS[i % len(PAIRS)][0]} (load {i} {time.perf_counter_ns()})"

    def fresh(reply: Reply) -> bool:
        return reply.status == 200 and reply.cache == "MISS"

    # As in `misses`: the whole lookup runs, and every candidate is rejected.
    def asked(i: int) -> bytes:
        return chat_request(port, prompt(i), "X-Kallm-Threshold: 1")

    via = await throughput(port, asked, args.concurrency, args.duration, pid, fresh)
    direct = await throughput(
        sim_port,
        lambda i: chat_request(sim_port, prompt(i)),
        args.concurrency,
        args.duration,
        pid,
        lambda reply: reply.status == 200,
    )
    return {
        "kallm": via,
        "direct": direct,
        "ratio": via["requests_per_s"] / direct["requests_per_s"],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def wait_ready(
    port: int, path: str, process: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    """Poll until `path` answers 200; kallm loads its embedding model first."""
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            client = await Client.open(port)
            status = (await client.send(request)).status
            client.close()
            if status == 200:
                return
        except (OSError, asyncio.IncompleteReadError):
            pass  # not listening yet, or closed on us while starting
        await asyncio.sleep(0.1)
    raise SystemExit(f"{process.args} did not become ready on port {port}")


async def serving(
    log: IO[bytes],
    settings: Callable[[str], dict[str, str]],
    measure: Callable[[int, int, int], Awaitable[T]],
) -> T:
    """Start the simulator and kallm (with `settings(simulator root)` in its environment) on
    free ports, run `measure(kallm port, simulator port, kallm pid)`, then stop both."""
    sim_port, port = free_port(), free_port()
    sim = [sys.executable, "-m", "kallm.simulator", "--host", HOST, "--port", str(sim_port)]
    env = settings(f"http://{HOST}:{sim_port}")
    kallm = [sys.executable, "-m", "kallm", "serve", "--host", HOST, "--port", str(port)]
    processes = [start([*sim, "--latency", "0"], log), start(kallm, log, env)]
    try:
        await wait_ready(sim_port, "/v1/models", processes[0])
        await wait_ready(port, "/ready", processes[1])
        return await measure(port, sim_port, processes[1].pid)
    finally:
        for process in processes:
            stop(process)


def start(
    command: list[str], log: IO[bytes], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A process with `env` added to this one's. It logs to a file: kallm logs a line per
    request, and a pipe nobody reads would block it."""
    return subprocess.Popen(command, stdout=log, stderr=log, env=os.environ | (env or {}))


def stop(process: subprocess.Popen[bytes], wait: float = 10) -> None:
    """SIGTERM, then SIGKILL after `wait` seconds."""
    process.terminate()
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        process.kill()


async def run(args: argparse.Namespace, log: IO[bytes]) -> dict[str, Any]:
    def settings(root: str) -> dict[str, str]:
        return {"OPENAI_BASE_URL": f"{root}/v1", "OPENAI_API_KEY": "sk-bench"}

    return await serving(log, settings, lambda port, sim, pid: measure(args, port, sim, pid))


def report(results: dict[str, Any]) -> list[str]:
    miss, load, misses = results["miss"], results["throughput"], results["miss_throughput"]

    def row(name: str, stats: dict[str, float], target: str = "", ok: bool | None = None) -> str:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        return f"{name:<28}{stats['p50_ms']:>9.2f}{stats['p99_ms']:>9.2f}  {target:<16}{verdict}"

    exact, semantic = results["exact_hit"], results["semantic_hit"]
    overhead = {"p50_ms": miss["overhead_p50_ms"], "p99_ms": miss["paired_overhead"]["p99_ms"]}
    rps = load["requests_per_s"]
    return [
        f"{'':<28}{'p50 ms':>9}{'p99 ms':>9}  {'target':<16}",
        row("exact HIT", exact, "p50 < 2 ms", exact["p50_ms"] < TARGETS["exact_hit"]),
        row("semantic HIT", semantic, "p50 < 20 ms", semantic["p50_ms"] < TARGETS["semantic_hit"]),
        row("MISS via kallm", miss["kallm"]),
        row("MISS direct to simulator", miss["direct"]),
        row(
            "MISS overhead", overhead, "p50 < 25 ms", overhead["p50_ms"] < TARGETS["miss_overhead"]
        ),
        row(f"exact HIT under load (C={load['concurrency']})", load["latency"]),
        f"{'exact HIT throughput':<28}{rps:>9.0f} req/s    {'> 1000 req/s':<16}"
        + ("PASS" if rps > TARGETS["throughput"] and not load["failures"] else "FAIL"),
        f"{'MISS throughput':<28}{misses['kallm']['requests_per_s']:>9.0f} req/s    "
        f"(direct {misses['direct']['requests_per_s']:.0f} req/s, ratio {misses['ratio']:.3f}; "
        f"{misses['kallm']['failures']} not MISS)",
        f"({results['pairs']} verified pairs; {load['requests']} load requests, "
        f"{load['failures']} not HIT; CPU during load: kallm {load['kallm_cpu_pct']:.0f}%, "
        f"client {load['client_cpu_pct']:.0f}%; MISS p99 is of paired differences)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="per latency phase")
    parser.add_argument("--misses", type=int, default=200, help="MISS pairs (kallm, direct)")
    parser.add_argument("--duration", type=float, default=5.0, help="throughput seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="throughput connections")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where results go")
    args = parser.parse_args()
    try:
        import uvloop  # the load generator's own overhead is smaller on uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with tempfile.NamedTemporaryFile(prefix="kallm-bench-", suffix=".log") as log:
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                results = runner.run(run(args, log))
        except BaseException:
            log.flush()
            print(Path(log.name).read_text()[-3000:], file=sys.stderr)
            raise
    lines = report(results)
    print("\n".join(lines))
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "options": {k: str(v) for k, v in vars(args).items()},
        "targets": TARGETS,
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
