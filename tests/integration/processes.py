"""Real processes on 127.0.0.1 for the integration tests: the simulator, kallm, and callers
that drive kallm with the official openai SDK, as users do. The fixtures in conftest.py
start them; tests import what they need from here."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

MODEL = "gpt-4o-mini"  # a priced model name, so savings estimates are non-zero
SERVER_KEY = "sk-kallm-server-key-0123456789"  # kallm's own upstream key (OPENAI_API_KEY)
CLIENT_KEY = "sk-client-key-aaaaaaaaaaaa"
STARTUP_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**settings: str) -> dict[str, str]:
    """The test runner's environment without any kallm/OpenAI settings, plus `settings`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KALLM_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_"))
        and k not in ("HTTP_PROXY", "HTTPS_PROXY")
    }
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the file as they are written
    env.update(settings)
    return env


class Process:
    """A child process whose stdout and stderr go to one log file."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            args, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_until(self, url: str) -> None:
        """Poll `url` until it answers 200; fail with the log if the process dies first."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"{self.name} not ready at {url} after {STARTUP_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()


class Simulator:
    def __init__(self, process: Process, port: int) -> None:
        self.process = process
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root}/v1"

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        recorded: list[dict[str, Any]] = httpx.get(f"{self.root}/_sim/requests").json()
        return [r for r in recorded if path is None or r["path"] == path]

    def chat_calls(self) -> list[dict[str, Any]]:
        return self.requests("/v1/chat/completions")

    def clear(self) -> None:
        httpx.delete(f"{self.root}/_sim/requests").raise_for_status()


class Kallm:
    def __init__(self, process: Process, port: int, upstream_key: str | None) -> None:
        self.process = process
        self.upstream_key = upstream_key  # its OPENAI_API_KEY; None: it forwards client keys
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root}/v1"

    def log_size(self) -> int:
        return self.process.log_path.stat().st_size

    def log_lines_since(self, offset: int, count: int, timeout: float = 5.0) -> list[str]:
        """The log lines written after byte `offset`, waiting until there are `count`."""
        deadline = time.monotonic() + timeout
        while True:
            with self.process.log_path.open("rb") as log:
                log.seek(offset)
                lines = [ln for ln in log.read().decode(errors="replace").splitlines() if ln]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.root}/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats


@dataclass
class Reply:
    """A non-stream answer and the headers it came with."""

    completion: ChatCompletion
    headers: httpx.Headers

    @property
    def cache(self) -> str | None:
        return self.headers.get("x-kallm-cache")

    @property
    def similarity(self) -> str | None:
        return self.headers.get("x-kallm-similarity")

    @property
    def content(self) -> str | None:
        return self.completion.choices[0].message.content


@dataclass
class StreamReply:
    """A streamed answer: its chunks, when each arrived, and the response headers."""

    headers: httpx.Headers
    chunks: list[ChatCompletionChunk] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # seconds since the request was sent
    finished: float = 0.0

    @property
    def cache(self) -> str | None:
        return self.headers.get("x-kallm-cache")

    @property
    def content(self) -> str:
        return "".join(c.choices[0].delta.content or "" for c in self.chunks if c.choices)

    @property
    def content_chunks(self) -> list[ChatCompletionChunk]:
        return [c for c in self.chunks if c.choices and c.choices[0].delta.content]

    @property
    def finish_reason(self) -> str | None:
        reasons = [c.choices[0].finish_reason for c in self.chunks if c.choices]
        return next((r for r in reversed(reasons) if r), None)


def as_messages(prompt: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


class Caller:
    """An openai SDK client bound to one kallm, namespace and API key."""

    def __init__(self, kallm: Kallm, namespace: str | None, api_key: str = CLIENT_KEY) -> None:
        self.kallm = kallm
        self.namespace = namespace
        self.api_key = api_key
        self.headers = {"X-Kallm-Namespace": namespace} if namespace else {}
        self.client = openai.OpenAI(
            base_url=kallm.base_url,
            api_key=api_key,
            max_retries=0,  # the SDK would retry 429/5xx and hide what kallm did
            timeout=30,
            default_headers=self.headers,
        )

    def async_client(self) -> openai.AsyncOpenAI:
        """A fresh async client; use it as `async with` inside the test's event loop."""
        return openai.AsyncOpenAI(
            base_url=self.kallm.base_url,
            api_key=self.api_key,
            max_retries=0,
            timeout=30,
            default_headers=self.headers,
        )

    def chat(
        self,
        prompt: str | list[dict[str, Any]],
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> Reply:
        params.setdefault("model", MODEL)
        raw = self.client.chat.completions.with_raw_response.create(
            messages=as_messages(prompt), extra_headers=headers, **params
        )
        return Reply(raw.parse(), raw.headers)

    def stream(
        self,
        prompt: str | list[dict[str, Any]],
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> StreamReply:
        params.setdefault("model", MODEL)
        started = time.monotonic()
        with self.client.chat.completions.with_streaming_response.create(
            messages=as_messages(prompt), stream=True, extra_headers=headers, **params
        ) as response:
            reply = StreamReply(response.headers)
            for chunk in response.parse():
                reply.chunks.append(chunk)
                reply.arrivals.append(time.monotonic() - started)
        reply.finished = time.monotonic() - started
        return reply

    def close(self) -> None:
        self.client.close()


def unique_namespace(request: pytest.FixtureRequest) -> str:
    """A valid namespace (letters, digits, ._-) unique to this test."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:80]
    return f"{name}-{uuid.uuid4().hex[:8]}"


def start_kallm(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, name: str, **settings: str
) -> Kallm:
    port = free_port()
    settings.setdefault("OPENAI_BASE_URL", simulator.base_url)
    settings.setdefault("ANTHROPIC_BASE_URL", simulator.root)
    settings.setdefault("GEMINI_BASE_URL", simulator.root)
    args = [sys.executable, "-m", "kallm", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log_path = tmp_path_factory.mktemp("logs") / f"{name}.log"
    process = Process(name, args, clean_env(**settings), log_path)
    kallm = Kallm(process, port, settings.get("OPENAI_API_KEY"))
    process.wait_until(f"{kallm.root}/ready")
    return kallm
