"""`kallm demo`: kallm in front of a simulated provider, driven by the official openai SDK."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
from openai import OpenAI

# (what the user asks, why it is in the script)
SCRIPT = [
    ("What is the capital of France?", "new question"),
    ("What is the capital of France?", "exact repeat"),
    ("what's the capital of France?", "paraphrase"),
    ("What is the capital of Germany?", "other country: must not hit"),
    ("How do I reverse a list in Python?", "new question"),
    ("How can I reverse a list in Python?", "paraphrase"),
    ("How do I sort a list in Python?", "other task: must not hit"),
    ("Explain what a Kubernetes pod is.", "new question"),
    ("Explain what a Kubernetes pod is.", "exact repeat"),
    ("Convert 100 USD to EUR", "new question"),
    ("Convert 100 EUR to USD", "swapped: cosine 0.98, must not hit"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], ready_url: str) -> Iterator[None]:
    process = subprocess.Popen(
        [sys.executable, "-m", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise SystemExit(f"kallm demo: {args[0]} failed to start:\n{error}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"kallm demo: {args[0]} did not become ready")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(10)


def run_demo(latency: float) -> None:
    sim_port, kallm_port = _free_port(), _free_port()
    print(
        f"Starting a SIMULATED provider on 127.0.0.1:{sim_port} (a stand-in: canned answers, "
        f"{latency:.1f} s latency, no real model, no API key) and kallm on 127.0.0.1:{kallm_port}."
    )
    simulator = ["kallm.simulator", "--port", str(sim_port), "--latency", str(latency)]
    env = {
        "OPENAI_BASE_URL": f"http://127.0.0.1:{sim_port}/v1",
        "OPENAI_API_KEY": "sk-demo-simulated",
        "KALLM_HOST": "127.0.0.1",
        "KALLM_PORT": str(kallm_port),
    }
    base = f"http://127.0.0.1:{kallm_port}"
    with (
        _process(simulator, {}, f"http://127.0.0.1:{sim_port}/v1/models"),
        _process(["kallm", "serve"], env, f"{base}/ready"),
        OpenAI(base_url=f"{base}/v1", api_key="sk-demo-client") as client,
    ):
        print(
            f"\n{'prompt':<36} {'case':<36} {'cache':<6} {'similarity':>10} {'verifier':<9}"
            f" {'latency':>9}  answer served"
        )
        for prompt, case in SCRIPT:
            started = time.perf_counter()
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
            )
            elapsed = (time.perf_counter() - started) * 1000
            similarity = raw.headers.get("x-kallm-similarity", "")
            verifier = raw.headers.get("x-kallm-verifier", "")
            cache = raw.headers.get("x-kallm-cache", "?")
            answer = (raw.parse().choices[0].message.content or "")[:34]
            print(
                f"{prompt:<36} {case:<36} {cache:<6} {similarity:>10} {verifier:<9}"
                f" {elapsed:>7.1f}ms  {answer}…"
            )
        stats = httpx.get(f"{base}/stats").json()
    print(
        f"\n/stats: {stats['total_entries']} entries, {stats['total_hits']} hits "
        f"({stats['exact_hits']} exact, {stats['semantic_hits']} semantic), "
        f"{stats['total_misses']} misses, hit rate {stats['hit_rate']:.0%}, "
        f"estimated saved ${stats['estimated_saved_usd']:.6f} at gpt-4o-mini prices."
    )
    print("(Answers came from the simulator; point OPENAI_BASE_URL at a real API to use kallm.)")
