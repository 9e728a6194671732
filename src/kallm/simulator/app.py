"""The stand-ins together as one ASGI app, and `python -m kallm.simulator`."""

from __future__ import annotations

import argparse
import logging

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from kallm.simulator import anthropic, gemini, responses
from kallm.simulator.openai import ANY_METHOD, SimulatedDisconnect, Simulator


def create_simulator_app(latency: float = 0.0) -> Starlette:
    """The simulator as an ASGI app; `latency` seconds pass before each chat answer starts."""
    sim = Simulator(latency)
    # Each provider's stand-in lives in its own module; they share the request record.
    routes = [
        *anthropic.routes(sim),
        *gemini.routes(sim),
        *responses.routes(sim),
        Route("/v1/chat/completions", sim.recorded(sim.chat), methods=["POST"]),
        Route("/v1/embeddings", sim.recorded(sim.embeddings), methods=["POST"]),
        Route("/v1/models", sim.recorded(sim.models), methods=["GET"]),
        Route("/v1/{path:path}", sim.recorded(sim.not_found), methods=ANY_METHOD),
        Route("/_sim/requests", sim.list_requests, methods=["GET"]),
        Route("/_sim/requests", sim.clear_requests, methods=["DELETE"]),
    ]
    return Starlette(routes=routes)


def _not_simulated(record: logging.LogRecord) -> bool:
    """Keep uvicorn from printing a traceback for every connection dropped on purpose."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, BaseExceptionGroup):
        return error.subgroup(SimulatedDisconnect) is None
    return not isinstance(error, SimulatedDisconnect)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m kallm.simulator",
        description="A simulated OpenAI-compatible provider (test double, answers are canned).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds before each chat answer"
    )
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        create_simulator_app(args.latency), host=args.host, port=args.port, log_level="warning"
    )
    # uvicorn.Config sets logging up, so the filter goes on afterwards.
    logging.getLogger("uvicorn.error").addFilter(_not_simulated)
    url = f"http://{args.host}:{args.port}/v1"
    print(f"kallm SIMULATED OpenAI provider (test double, answers are canned) on {url}", flush=True)
    uvicorn.Server(config).run()
