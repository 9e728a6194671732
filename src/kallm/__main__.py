"""The `kallm` command: serve, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from kallm.settings import ENV_NAMES, SettingsError, load_settings

# Help for each setting; the flag is the field name with dashes, the default the env var's.
SETTING_HELP = {
    "openai_base_url": "upstream OpenAI-compatible API (default https://api.openai.com/v1)",
    "port": "port to listen on (default 8080)",
    "host": "address to listen on (default 0.0.0.0)",
    "similarity_threshold": "cosine similarity a paraphrase needs to be a hit, 0-1 (default 0.95)",
    "cache_ttl": "how long an answer stays cached: 90s, 30m, 24h, 1h30m (default 24h)",
    "max_cache_size": "most entries kept; least recently used go first (default 10000)",
    "embedding_model": "all-MiniLM-L6-v2 (local, default) or openai:<model> / text-embedding-*",
    "log_json": "log JSON lines (default false)",
    "upstream_timeout": "seconds to wait for the upstream to connect, answer and each read (300)",
    "max_body_size": "largest request body in bytes (default 10485760)",
    "prices_file": "JSON price table replacing the built-in one",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kallm",
        description="kallm: a semantic cache for LLM APIs, as an OpenAI-compatible proxy.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy. Every flag has an environment variable; flags win. "
        "OPENAI_API_KEY is read from the environment only, so it never shows in a process list: "
        "when set, kallm uses it upstream; when unset, it forwards each client's own key.",
    )
    for name, text in SETTING_HELP.items():
        flag = "--" + name.replace("_", "-")
        if name == "log_json":
            serve.add_argument(
                flag, action="store_const", const=True, help=f"{text} [{ENV_NAMES[name]}]"
            )
        else:
            serve.add_argument(flag, metavar="VALUE", help=f"{text} [{ENV_NAMES[name]}]")
    demo = commands.add_parser(
        "demo",
        help="see kallm work against a local simulated provider (no API key needed)",
        description="Start a simulated provider and kallm on free local ports, send scripted "
        "questions, repeats and paraphrases through the openai SDK, and print what the cache did.",
    )
    demo.add_argument("--latency", type=float, default=0.4, help="simulated upstream latency (s)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        overrides: dict[str, Any] = {name: getattr(args, name) for name in SETTING_HELP}
        try:
            settings = load_settings(**overrides)
        except SettingsError as error:
            sys.exit(f"kallm: {error}")
        from kallm.server import serve

        serve(settings)
    elif args.command == "demo":
        from kallm.demo import run_demo

        run_demo(args.latency)


if __name__ == "__main__":
    main()
