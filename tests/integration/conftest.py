"""Integration fixtures: the simulator and kallm run as real processes on 127.0.0.1.

Tests drive kallm with the official openai SDK, as users do, and ask the simulator
(GET /_sim/requests) whether kallm called upstream. One simulator serves the whole
session; kallm processes are session-scoped and started only when a test needs them.
Tests sharing a kallm are kept apart by a unique X-Kallm-Namespace each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from processes import (
    CLIENT_KEY,
    SERVER_KEY,
    Caller,
    Kallm,
    Process,
    Simulator,
    clean_env,
    free_port,
    start_kallm,
    unique_namespace,
)


@pytest.fixture(scope="session")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    port = free_port()
    args = [sys.executable, "-m", "kallm.simulator", "--host", "127.0.0.1", "--port", str(port)]
    log_path = tmp_path_factory.mktemp("logs") / "simulator.log"
    process = Process("simulator", args, clean_env(), log_path)
    sim = Simulator(process, port)
    process.wait_until(f"{sim.root}/_sim/requests")
    yield sim
    process.stop()


@pytest.fixture
def upstream(simulator: Simulator) -> Simulator:
    """The simulator with its record cleared: what it holds now, this test caused."""
    simulator.clear()
    return simulator


# kallm processes, one per combination of settings the tests need. Each loads the model.


@pytest.fixture(scope="session")
def kallm(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Kallm]:
    """Defaults, with its own upstream key and JSON logs."""
    proxy = start_kallm(
        tmp_path_factory, simulator, "kallm", OPENAI_API_KEY=SERVER_KEY, KALLM_LOG_JSON="true"
    )
    yield proxy
    proxy.process.stop()


@pytest.fixture(scope="session")
def kallm_forwarding(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator
) -> Iterator[Kallm]:
    """No OPENAI_API_KEY: forwards each client's key and isolates the cache by it. Text logs."""
    proxy = start_kallm(tmp_path_factory, simulator, "kallm-forwarding")
    yield proxy
    proxy.process.stop()


@pytest.fixture(scope="session")
def kallm_small(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Kallm]:
    """Room for 3 entries and a 1 s upstream timeout."""
    proxy = start_kallm(
        tmp_path_factory,
        simulator,
        "kallm-small",
        OPENAI_API_KEY=SERVER_KEY,
        KALLM_MAX_CACHE_SIZE="3",
        KALLM_UPSTREAM_TIMEOUT="1",
    )
    yield proxy
    proxy.process.stop()


@pytest.fixture(scope="session")
def kallm_remote(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Kallm]:
    """Embeds with the upstream /v1/embeddings instead of the local model."""
    proxy = start_kallm(
        tmp_path_factory,
        simulator,
        "kallm-remote",
        OPENAI_API_KEY=SERVER_KEY,
        KALLM_EMBEDDING_MODEL="openai:text-embedding-3-small",
    )
    yield proxy
    proxy.process.stop()


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    return unique_namespace(request)


@pytest.fixture
def make_caller(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Build callers for any kallm; each gets this test's namespace unless told otherwise."""
    callers: list[Caller] = []
    default = unique_namespace(request)

    def make(proxy: Kallm, namespace: str | None = default, api_key: str = CLIENT_KEY) -> Caller:
        caller = Caller(proxy, namespace, api_key)
        callers.append(caller)
        return caller

    yield make
    for caller in callers:
        caller.close()


@pytest.fixture
def caller(make_caller: Any, kallm: Kallm) -> Caller:
    """The default kallm, in a namespace of this test's own."""
    return make_caller(kallm)


@pytest.fixture
def http(kallm: Kallm) -> Iterator[httpx.Client]:
    """Raw HTTP to the default kallm, for what the SDK would hide."""
    with httpx.Client(base_url=kallm.root, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def kallm_unreachable(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator
) -> Iterator[Kallm]:
    """Its upstream is a port where nothing listens."""
    proxy = start_kallm(
        tmp_path_factory,
        simulator,
        "kallm-unreachable",
        OPENAI_API_KEY=SERVER_KEY,
        OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
    )
    yield proxy
    proxy.process.stop()


@pytest.fixture
def start_failing_kallm(simulator: Simulator) -> Any:
    """Run `kallm serve` with `settings` and return (exit status, output) once it exits."""

    def run(**settings: str) -> tuple[int, str]:
        settings.setdefault("OPENAI_BASE_URL", simulator.base_url)
        args = [sys.executable, "-m", "kallm", "serve", "--host", "127.0.0.1"]
        args += ["--port", str(free_port())]
        try:
            done = subprocess.run(
                args, env=clean_env(**settings), capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired as error:
            pytest.fail(f"kallm kept running with {settings}: {error.output!r}")
        return done.returncode, done.stdout + done.stderr

    return run


def _sse_events(body: str) -> list[str]:
    return [ln.removeprefix("data:").strip() for ln in body.splitlines() if ln.startswith("data:")]


@pytest.fixture
def sse_events() -> Any:
    """Parse a text/event-stream body into its data payloads, in order."""
    return _sse_events


def _error_of(response: httpx.Response) -> dict[str, Any]:
    body = json.loads(response.text)
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), response.text
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


@pytest.fixture
def error_of() -> Any:
    """The error object of an OpenAI-style error response, asserting its shape."""
    return _error_of
