"""Forwarding throughput: kallm's cache-bypassing MISSes against a bare relay and the upstream.

Starts `kallm.simulator` (latency 0), `kallm serve` in front of it, and a bare aiohttp
forwarder (this file with --forwarder: it only relays) as subprocesses on free ports. Then,
at each concurrency, it sends chat completions from that many keep-alive connections to the
simulator directly, through the bare forwarder and through kallm, every request with
`Cache-Control: no-cache, no-store` so kallm neither looks up nor stores. The three take
turns in short slices (--rounds of each), so a burst of other work on the box hits all
alike; a rate is the median slice's. Prints req/s, p50 latency and each rate as a ratio of
direct, and writes JSON (default bench/results/forward.json). About 80 s with the defaults.

The load generator is this process, apart from everything it measures: proxy_bench's
minimal HTTP/1.1 client on uvloop, which costs less per request than aiohttp's client.

    .venv/bin/python bench/forward_bench.py [--concurrency 50 100 200] [--duration 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
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
    chat_request,
    cpu_seconds,
    free_port,
    serving,
    summary,
    wait_ready,
)

RESULTS = Path(__file__).parent / "results" / "forward.json"
BYPASS = "Cache-Control: no-cache, no-store"
# What an HTTP/1.1 relay must not copy between its two connections (RFC 9110 7.6.1), plus
# the framing that the relay sets itself.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def forwarder(port: int, upstream: str) -> None:
    """The bare relay: one aiohttp server, one aiohttp client session, nothing else; about
    the most any Python forwarder can do on the same box."""
    import aiohttp
    from aiohttp import web

    async def relay(request: web.Request) -> web.Response:
        session: aiohttp.ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with session.request(
            request.method, upstream + request.rel_url.path_qs, headers=headers,
            data=await request.read(),
        ) as answer:  # fmt: skip
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(body=body, status=answer.status, headers=kept)

    async def session(app: web.Application) -> Any:
        connector = aiohttp.TCPConnector(limit=1000)
        app["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{path:.*}", relay)
    try:
        import uvloop  # as kallm's uvicorn uses when it is installed

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    web.run_app(app, host=HOST, port=port, access_log=None, print=None, loop=loop)


class Load:
    """`concurrency` keep-alive connections sending chat completions to one port; every reply
    must be a 200. CPU is that of `pids` (the processes serving) and of this one."""

    def __init__(self, port: int, concurrency: int, pids: list[int]) -> None:
        self.port, self.concurrency, self.pids = port, concurrency, pids
        self.requests = [
            chat_request(port, f"{question} (load {i})", BYPASS)
            for i, (question, _) in enumerate(PAIRS * 2)
        ]
        self.clients: list[Client] = []
        self.slices: list[dict[str, Any]] = []
        self.samples: list[float] = []

    async def open(self) -> None:
        self.clients = [await Client.open(self.port) for _ in range(self.concurrency)]
        await self.burst(1.0)  # warm up (connections upstream, caches), then forget it
        self.slices.clear()
        self.samples.clear()

    async def burst(self, seconds: float) -> None:
        samples: list[float] = []
        failures = 0

        async def worker(n: int, deadline: float) -> None:
            nonlocal failures
            i = n
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    reply = await self.clients[n].send(self.requests[i % len(self.requests)])
                    failures += reply.status != 200
                except (OSError, asyncio.IncompleteReadError):
                    # Dropped by the server: counted, and the connection opened anew.
                    failures += 1
                    self.clients[n].close()
                    self.clients[n] = await Client.open(self.port)
                samples.append(time.perf_counter() - started)
                i += 1

        cpu = [cpu_seconds(pid) for pid in self.pids]
        own = time.process_time()
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(worker(n, deadline) for n in range(len(self.clients))))
        elapsed = time.perf_counter() - started
        self.samples += samples
        self.slices.append(
            {
                "requests_per_s": (len(samples) - failures) / elapsed,  # answered with 200
                "failures": failures,
                "server_cpu_pct": [
                    100 * (cpu_seconds(pid) - before) / elapsed
                    for pid, before in zip(self.pids, cpu, strict=True)
                ],
                "client_cpu_pct": 100 * (time.process_time() - own) / elapsed,
            }
        )

    def close(self) -> dict[str, Any]:
        """The median slice's rate (robust to a burst of other work on the box) and the
        latency of every request sent."""
        for client in self.clients:
            client.close()
        return {
            "requests_per_s": statistics.median(s["requests_per_s"] for s in self.slices),
            "requests": len(self.samples),
            "failures": sum(s["failures"] for s in self.slices),
            "latency": summary(self.samples),
            "slices": self.slices,
        }


async def measure(
    args: argparse.Namespace, log: IO[bytes], port: int, sim_port: int, kallm_pid: int
) -> dict[str, Any]:
    relay_port = free_port()
    relay = subprocess.Popen(
        [sys.executable, __file__, "--forwarder", str(relay_port), f"http://{HOST}:{sim_port}"],
        stdout=log,
        stderr=log,
    )
    sim_pid = _simulator_pid(sim_port)
    try:
        await wait_ready(relay_port, "/v1/models", relay)
        results: dict[str, Any] = {}
        for concurrency in args.concurrency:
            loads = {
                "direct": Load(sim_port, concurrency, [sim_pid]),
                "forwarder": Load(relay_port, concurrency, [relay.pid, sim_pid]),
                "kallm": Load(port, concurrency, [kallm_pid, sim_pid]),
            }
            for load in loads.values():
                await load.open()
            # Short slices of each in turn, so that other work on the box hits all alike.
            for _ in range(args.rounds):
                for load in loads.values():
                    await load.burst(args.duration / args.rounds)
            row = {name: load.close() for name, load in loads.items()}
            results[str(concurrency)] = row
            print(_line(concurrency, row), flush=True)
        return results
    finally:
        relay.terminate()
        try:
            relay.wait(10)
        except subprocess.TimeoutExpired:
            relay.kill()


def _simulator_pid(port: int) -> int:
    """The simulator's pid, for its CPU share (`serving` starts it but keeps it); 0 if the
    platform has no /proc."""
    wanted = f"kallm.simulator\0--host\0{HOST}\0--port\0{port}\0".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if wanted in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except OSError:
            continue
    return 0


def _line(concurrency: int, row: dict[str, Any]) -> str:
    direct = row["direct"]["requests_per_s"]
    cells = []
    for name in ("direct", "forwarder", "kallm"):
        stats = row[name]
        rate = stats["requests_per_s"]
        failed = f" ({stats['failures']} failed)" if stats["failures"] else ""
        cells.append(
            f"{rate:>7.0f} {stats['latency']['p50_ms']:>7.1f} {rate / direct:>5.2f}{failed}"
        )
    return f"{concurrency:>5}  " + "  ".join(cells)


def header() -> list[str]:
    names = "".join(f"{name:<23}" for name in ("direct", "bare forwarder", "kallm"))
    units = "  ".join(f"{'req/s':>7} {'p50 ms':>7} {'ratio':>5}" for _ in range(3))
    return [f"{'':>5}  {names}", f"{'C':>5}  {units}"]


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--forwarder":
        forwarder(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="slices the duration is cut in")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where results go")
    args = parser.parse_args()

    def settings(root: str) -> dict[str, str]:
        return {
            "OPENAI_BASE_URL": f"{root}/v1",
            "OPENAI_API_KEY": "sk-test",
            "KALLM_INSECURE_OPEN_RELAY": "true",
        }

    try:
        import uvloop  # the load generator's own overhead is smaller on uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with tempfile.NamedTemporaryFile(prefix="kallm-forward-bench-", suffix=".log") as log:
        print("\n".join(header()), flush=True)
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                results = runner.run(
                    serving(
                        log, settings, lambda port, sim, pid: measure(args, log, port, sim, pid)
                    )
                )
        except BaseException:
            log.flush()
            print(Path(log.name).read_text()[-3000:], file=sys.stderr)
            raise
    print("(ratio: req/s as a share of direct; every request bypasses kallm's cache)")
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "options": {k: str(v) for k, v in vars(args).items()},
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
