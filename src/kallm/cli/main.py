"""The `kallm` command: serve, demo, eval, calibrate, and the management API's commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kallm.settings import ENV_NAMES, SettingsError, load_settings

if TYPE_CHECKING:
    from kallm.cli.manage import Client

# Help for each setting; the flag is the field name with dashes, the default the env var's.
SETTING_HELP = {
    "openai_base_url": "upstream OpenAI-compatible API (default https://api.openai.com/v1)",
    "anthropic_base_url": "upstream Anthropic API (default https://api.anthropic.com)",
    "gemini_base_url": "upstream Gemini API (default https://generativelanguage.googleapis.com)",
    "port": "port to listen on (default 8080)",
    "host": "address to listen on (default 0.0.0.0)",
    "similarity_threshold": "cosine similarity a cached prompt needs to be a candidate, 0-1 "
    "(default: calibrated)",
    "verifier": "turn the verifier off: semantic hits are decided by similarity alone",
    "verifier_threshold": "minimum verifier probability for a semantic hit, 0-1 "
    "(default: calibrated)",
    "verifier_model": "folder with a retrained pair_model.onnx and pair_model.json "
    "(default: the model shipped in the package)",
    "cache_ttl": "how long an answer stays cached: 90s, 30m, 24h, 1h30m (default 24h)",
    "max_cache_size": "most entries kept; least recently used go first (default 10000)",
    "embedding_model": "all-MiniLM-L6-v2 (local, default) or openai:<model> / text-embedding-*",
    "log_json": "log JSON lines (default false)",
    "upstream_timeout": "seconds to wait for the upstream to connect, answer and each read (300)",
    "max_body_size": "largest request body in bytes (default 10485760)",
    "prices_file": "JSON price table replacing the built-in one",
    "backend": "store: memory (default), sqlite:///path.db, redis://..., postgresql://...",
    "watch_policies": "apply SemanticCachePolicy objects from the Kubernetes API (false)",
    "kube_api_url": "Kubernetes API URL (default: in-cluster service account)",
    "namespace_from_pod_ip": "take the namespace from the client's pod, not a header (false)",
    "shutdown_delay": "seconds /ready is 503 before kallm stops accepting on SIGTERM (0)",
    "shutdown_grace": "seconds requests in flight may take to finish on SIGTERM (25)",
    "max_header_size": "largest request line and headers in bytes; more gets 431 (65536)",
    "header_timeout": "seconds a connection has to send a whole request head (10s)",
    "keepalive_timeout": "seconds an idle keep-alive connection is kept open (15s)",
    "max_connections": "most client connections; idle ones are closed first to make room (1000)",
    "client_keys_file": "JSON file of client keys, each with a tenant and optionally allowed "
    "models and routes (KALLM_CLIENT_KEYS holds tenant:key pairs, from the environment only)",
    "insecure_open_relay": "let callers without a client key spend kallm's provider keys on "
    "a non-loopback address (false)",
    "max_ttl": "longest TTL a request (X-Kallm-TTL) or a warmed entry may ask for "
    "(default: the cache TTL)",
    "max_answer_size": "largest answer in bytes kallm caches; larger ones are relayed "
    "(default 2097152)",
    "coalesce_timeout": "seconds identical misses wait for the first one's answer instead of "
    "calling upstream too; 0 turns this off (60)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kallm",
        description="kallm: a semantic cache for LLM APIs, as an OpenAI-compatible proxy.",
    )
    parser.add_argument("--version", action="version", version=f"kallm {version('kallm')}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy. Every flag has an environment variable; flags win. "
        "OPENAI_API_KEY, ANTHROPIC_API_KEY and GEMINI_API_KEY are read from the environment "
        "only, so they never show in a process list: when one is set, kallm uses it upstream "
        "for that provider; when unset, it forwards each client's own key. KALLM_CLIENT_KEYS "
        "(tenant:key pairs, environment only) makes callers present a kallm key, as their API "
        "key or in X-Kallm-Key; with a provider key, kallm refuses to listen on a "
        "non-loopback address without client keys, pod-IP identity or --insecure-open-relay.",
    )
    for name, text in SETTING_HELP.items():
        flag = "--" + name.replace("_", "-")
        if name in {"log_json", "watch_policies", "namespace_from_pod_ip", "insecure_open_relay"}:
            serve.add_argument(
                flag, action="store_const", const=True, help=f"{text} [{ENV_NAMES[name]}]"
            )
        elif name == "verifier":
            serve.add_argument(
                "--no-verifier",
                dest=name,
                action="store_const",
                const=False,
                help=f"{text} [{ENV_NAMES[name]}=false]",
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
    formats = (
        "FILE is JSON lines in one of two formats, detected from the first row: "
        'pairs {"a", "b", "label"} (label 1: a cached answer to a is right for b; each pair is '
        'cached and asked alone), or a cache simulation {"origin", "similar": str or [str], '
        '"near": [str]} (the origins of even rows are cached together; every similar and near '
        "prompt is asked; a hit is correct only for a similar prompt of a cached origin, on "
        "that origin). Prompts go through the server's own path: local embedding model, "
        "exact lookup, nearest candidates, verifier, thresholds."
    )
    evaluate = commands.add_parser(
        "eval",
        help="measure hit precision and recall on labelled prompts",
        description="Measure how often kallm would serve a right or a wrong cached answer, "
        "with the verifier at its thresholds (kallm) and with cosine similarity alone at 0.95 "
        "(cosine), and sweep each into a precision-recall curve. " + formats,
    )
    calibrate = commands.add_parser(
        "calibrate",
        help="find the thresholds that reach a target precision on your prompts",
        description="Find the similarity threshold (0.50-0.99) and verifier threshold (0-1) "
        "with the highest recall whose precision reaches the target, and print them as "
        "environment variables for kallm serve. Exits 1 when no setting reaches it. " + formats,
    )
    for command in (evaluate, calibrate):
        command.add_argument(
            "file",
            type=Path,
            metavar="FILE",
            nargs="?" if command is calibrate else None,
            help="labelled JSON lines",
        )
        command.add_argument(
            "--protocol", choices=["pairs", "cache"], help="row format (default: detected)"
        )
        command.add_argument(
            "--limit", type=int, metavar="N", help="use only the first N rows (quick runs)"
        )
    evaluate.add_argument(
        "--out",
        type=Path,
        default=Path("kallm-eval"),
        metavar="DIR",
        help="where report.json and pr_curve.png go (default ./kallm-eval)",
    )
    evaluate.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="kallm's similarity threshold (default: KALLM_SIMILARITY_THRESHOLD or calibrated)",
    )
    evaluate.add_argument(
        "--verifier-threshold",
        type=float,
        metavar="P",
        help="kallm's minimum verifier probability (default: KALLM_VERIFIER_THRESHOLD or "
        "calibrated)",
    )
    calibrate.add_argument(
        "--target-precision",
        type=float,
        default=0.98,
        metavar="P",
        help="precision the chosen setting must reach, 0-1 (default 0.98)",
    )
    calibrate.add_argument(
        "--from-reports",
        action="store_true",
        help="instead of FILE, the reports of a running kallm (--url, --token): propose "
        "thresholds at least as strict as now that refuse every reported wrong hit",
    )
    calibrate.add_argument("--url", help="with --from-reports: kallm's address [KALLM_URL]")
    calibrate.add_argument(
        "--token", help="with --from-reports: its admin token [KALLM_ADMIN_TOKEN]"
    )
    calibrate.add_argument(
        "--no-verifier",
        dest="verifier",
        action="store_false",
        help="calibrate the cosine threshold alone (for KALLM_VERIFIER=false)",
    )
    manage = {
        "warm": "pre-load answers from JSON lines (as export writes them), with a progress bar",
        "export": "write every cached entry as JSON lines that warm reads back",
        "entries": "list cached entries",
        "clear": "delete every cached entry, or one namespace's",
        "report-wrong": "report that an entry's answer was wrong for a request: that request "
        "never gets it again, on any replica",
        "report-right": "report that an entry's answer was right for a request (or should "
        "have been served): a labelled pair for calibrate --from-reports",
    }
    for name, text in manage.items():
        command = commands.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}, through a running kallm's management "
            "API (enabled there by KALLM_ADMIN_TOKEN).",
        )
        command.add_argument("--url", help="kallm's address [KALLM_URL, http://127.0.0.1:8080]")
        command.add_argument("--token", help="its admin token [KALLM_ADMIN_TOKEN]")
        if name == "warm":
            command.add_argument("file", type=Path, metavar="FILE", help="JSON lines")
            command.add_argument(
                "--namespace", help="store into this namespace (as X-Kallm-Namespace names it)"
            )
            command.add_argument(
                "--tenant", help="for this tenant (a client key's tenant, or a pod's namespace)"
            )
            command.add_argument(
                "--key-env",
                metavar="VAR",
                help="for callers presenting the API key in environment variable VAR, when "
                "kallm forwards client keys (a key never goes on the command line)",
            )
        elif name.startswith("report-"):
            command.add_argument("entry", metavar="ENTRY", help="the entry's id (X-Kallm-Entry)")
            command.add_argument(
                "request",
                type=Path,
                metavar="REQUEST",
                help="the request as sent to the API, a JSON file (- for standard input)",
            )
        else:
            command.add_argument("--namespace", help="only this namespace")
        if name == "export":
            command.add_argument(
                "--reports",
                action="store_true",
                help="write the reports on cached answers instead (JSON lines, oldest first)",
            )
        if name == "entries":
            command.add_argument("--model", help="only this model")
            command.add_argument("--search", help="prompts containing this text")
            command.add_argument("--offset", type=int, default=0)
            command.add_argument("--limit", type=int, default=50)
    return parser


def _manage(args: argparse.Namespace) -> None:
    from kallm.cli import manage

    try:
        with _client(args) as client:
            if args.command == "warm":
                target = {"namespace": args.namespace, "tenant": args.tenant}
                key = None
                if args.key_env is not None:
                    key = os.environ.get(args.key_env)
                    if not key:
                        raise manage.ManageError(f"--key-env: {args.key_env} is not set")
                totals = manage.warm(client, args.file, {k: v for k, v in target.items() if v}, key)
                for problem in totals.problems:
                    print(f"kallm warm: {args.file}: {problem}", file=sys.stderr)
                print(f"stored {totals.stored}, skipped {totals.skipped}, errors {totals.errors}")
                for name, count in sorted(totals.namespaces.items()):
                    print(f"  {count} into namespace {name}")
                for warning in sorted(totals.warnings):
                    print(f"kallm warm: warning: {warning}", file=sys.stderr)
                if totals.skipped or totals.errors:
                    sys.exit(1)  # a warm is meant to load every line
            elif args.command.startswith("report-"):
                right = args.command == "report-right"
                made = manage.report(client, args.entry, args.request, right)["report"]
                print(
                    f"reported {'right' if right else 'wrong'}: entry {args.entry} for "
                    f"{made['asked_text']!r} (similarity {made['similarity']})"
                )
            elif args.command == "export" and args.reports:
                reports = client.call("GET", "/admin/reports").json()["reports"]
                if args.namespace is not None:
                    reports = [r for r in reports if r["namespace"] == args.namespace]
                for report in reports:
                    print(json.dumps(report))
                print(f"kallm: exported {len(reports)} reports", file=sys.stderr)
            elif args.command == "export":
                count = manage.export(client, args.namespace)
                print(f"kallm: exported {count} entries", file=sys.stderr)
            elif args.command == "entries":
                params = {"namespace": args.namespace, "model": args.model, "q": args.search,
                          "offset": args.offset, "limit": args.limit}  # fmt: skip
                manage.print_entries(client, {k: v for k, v in params.items() if v is not None})
            else:
                params = {"namespace": args.namespace} if args.namespace else {}
                deleted = client.call("DELETE", "/admin/cache", params=params).json()["deleted"]
                print(f"deleted {deleted} entries")
    except manage.ManageError as error:
        sys.exit(f"kallm: {error}")


def _client(args: argparse.Namespace) -> Client:
    """The management API client that --url and --token (or KALLM_URL, KALLM_ADMIN_TOKEN)
    name."""
    from kallm.cli import manage
    from kallm.settings import ClientSettings

    defaults = ClientSettings()
    token = args.token or (
        defaults.admin_token.get_secret_value() if defaults.admin_token else None
    )
    return manage.Client(args.url or defaults.url, token)


def _reports(args: argparse.Namespace) -> list[dict[str, Any]]:
    from kallm.cli import manage

    try:
        with _client(args) as client:
            found: list[dict[str, Any]] = client.call("GET", "/admin/reports").json()["reports"]
    except manage.ManageError as error:
        sys.exit(f"kallm: {error}")
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in {"eval", "calibrate"} and args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if not 0 <= getattr(args, "target_precision", 0) <= 1:
        parser.error("--target-precision must be between 0 and 1")
    if args.command == "serve":
        overrides: dict[str, Any] = {name: getattr(args, name) for name in SETTING_HELP}
        try:
            settings = load_settings(**overrides)
        except SettingsError as error:
            sys.exit(f"kallm: {error}")
        from kallm.proxy.auth import ClientKeysError
        from kallm.server.run import serve

        try:
            serve(settings)
        except ClientKeysError as error:
            sys.exit(f"kallm: {error}")
    elif args.command in {"warm", "export", "entries", "clear", "report-wrong", "report-right"}:
        _manage(args)
    elif args.command == "demo":
        from kallm.cli.demo import run_demo

        run_demo(args.latency)
    else:
        from kallm.cli.evaluate import (
            EvalError,
            calibrate_command,
            calibrate_reports,
            eval_command,
        )

        try:
            if args.command == "eval":
                code = eval_command(
                    args.file,
                    args.protocol,
                    args.limit,
                    args.out,
                    args.threshold,
                    args.verifier_threshold,
                )
            elif args.from_reports:
                if args.file is not None:
                    parser.error("give FILE or --from-reports, not both")
                code = calibrate_reports(_reports(args), args.verifier)
            elif args.file is None:
                parser.error("calibrate needs FILE, or --from-reports")
            else:
                code = calibrate_command(
                    args.file, args.protocol, args.limit, args.target_precision, args.verifier
                )
        except (EvalError, SettingsError) as error:
            sys.exit(f"kallm: {error}")
        sys.exit(code)
