"""Fuzzing a running kallm: generated bodies, headers, paths and query strings on every
cached route, the passthrough and the management API, sent as raw bytes.

Whatever arrives, kallm must (README "Errors", "Endpoints", "Management API"):
- never answer 5xx itself (the simulator upstream never sends one for these requests) and
  never log a traceback;
- answer its own refusals with a 4xx whose body is JSON in the provider's error shape, and
  without calling the upstream;
- refuse what is plainly not a request of the route (not UTF-8 JSON, NaN, not an object,
  no model, ...) or carries an invalid X-Kallm-* header, with 400 and no upstream call;
- cache nothing from a request it refused or the upstream refused;
- pass what it does not cache through with its path and query unchanged.

Examples run one at a time against one kallm; the session simulator's record is cleared
before each, so every upstream call it holds afterwards came from that example.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, quote_from_bytes, unquote

import httpx
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from processes import SERVER_KEY, Kallm, Simulator, start_kallm

ADMIN_TOKEN = "fuzz-admin-token-0123456789"
ADMIN = [(b"authorization", f"Bearer {ADMIN_TOKEN}".encode())]
# The statuses kallm may answer a request it refuses itself.
KALLM_REFUSALS = frozenset({400, 401, 403, 404, 405, 413, 415, 422, 431})
NAMESPACE_CHARS = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
STRICT_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=False,
        database=None,  # no .hypothesis directory in the work tree
        report_multiple_bugs=False,  # one minimal failing example per test, found quickly
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator) -> Iterator[Target]:
    kallm = start_kallm(
        tmp_path_factory,
        simulator,
        "kallm-fuzz",
        OPENAI_API_KEY=SERVER_KEY,
        ANTHROPIC_API_KEY="sk-ant-fuzz-server-key-0123456789",
        GEMINI_API_KEY="gemini-fuzz-server-key-0123456789",
        KALLM_ADMIN_TOKEN=ADMIN_TOKEN,
        KALLM_INSECURE_OPEN_RELAY="true",
        KALLM_LOG_JSON="true",
    )
    fuzzed = Target(kallm, simulator)
    yield fuzzed
    fuzzed.close()
    kallm.process.stop()


# --- what a request is, and what kallm must do with it -----------------------------------


@dataclass
class Sent:
    """One generated request. `must_refuse` says why kallm must refuse it (None: it may
    answer or refuse); `shape` is the error format of the route."""

    method: str
    path: str  # raw: percent-escapes as sent, query included
    body: bytes | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    shape: str = "openai"
    must_refuse: str | None = None

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        body = (
            self.body
            if self.body is None or len(self.body) <= 600
            else (self.body[:300] + b"...%d bytes..." % len(self.body) + self.body[-100:])
        )
        return (
            f"Sent({self.method} {self.path!r}, headers={self.headers!r}, body={body!r}, "
            f"must_refuse={self.must_refuse!r})"
        )


@dataclass
class Outcome:
    response: httpx.Response
    calls: list[dict[str, Any]]  # what the simulator received for this request
    forwarded: bool


def shape_of(method: str, path: str) -> str:
    """Which provider's error format kallm's own errors on this path come in (routes match
    the decoded path: an encoded slash makes another segment)."""
    bare = unquote(path.split("?", 1)[0])
    if bare == "/v1/messages" or bare.startswith("/v1/messages/"):
        return "anthropic"
    gemini_v1 = re.fullmatch(r"/v1/models/[^/]+", bare) is not None
    if bare.startswith("/v1beta/") or (method == "POST" and gemini_v1):
        return "gemini"
    return "openai"


def error_problem(shape: str, response: httpx.Response) -> str | None:
    """Why `response` is not an error in `shape`'s format (None: it is)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"the body is not JSON: {response.content[:300]!r}"
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return f"no error object: {body!r:.300}"
    error = body["error"]
    if not isinstance(error.get("message"), str) or not error["message"]:
        return f"no error message: {body!r:.300}"
    if shape == "anthropic":
        if body.get("type") != "error" or not isinstance(error.get("type"), str):
            return f'not {{"type": "error", "error": {{"type", "message"}}}}: {body!r:.300}'
    elif shape == "gemini":
        if error.get("code") != response.status_code or not isinstance(error.get("status"), str):
            return f'not {{"error": {{"code", "message", "status"}}}}: {body!r:.300}'
    elif not isinstance(error.get("type"), str):
        return f'not {{"error": {{"message", "type", ...}}}}: {body!r:.300}'
    return None


def crash(what: str, shown: str, log: str) -> NoReturn:
    """Fail for kallm crashing; one place for every kind of crash, so that hypothesis sees
    one failure however the crash shows (a 500, a traceback, a dropped connection)."""
    raise AssertionError(f"{what} for {shown}\nkallm's log:\n{log[-3000:]}")


def json_records(log: str) -> Iterator[dict[str, Any]]:
    """The records of a JSON-lines log (KALLM_LOG_JSON=true)."""
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def traceback_summary(log: str) -> str:
    """The innermost kallm frame and the exception of the first traceback in a JSON log."""
    for record in json_records(log):
        error = record.get("error")
        if isinstance(error, str) and "Traceback" in error:
            frames = re.findall(r'File "[^"]*/(kallm/[^"]+)", line (\d+), in (\w+)', error)
            where = ":".join(frames[-1]) if frames else "?"
            return f"{where}: {error.strip().splitlines()[-1]}"
    return "?"


class Target:
    """The kallm under test and the checks every example goes through."""

    def __init__(self, kallm: Kallm, simulator: Simulator) -> None:
        self.kallm = kallm
        self.simulator = simulator
        # A fresh connection per request: one example's broken connection never spills
        # into the next.
        self.client = httpx.Client(
            base_url=kallm.root, timeout=60, limits=httpx.Limits(max_keepalive_connections=0)
        )
        # The simulator's too: its server closes a connection idle for 5 s, and a loaded
        # machine can pause that long between examples, so a kept connection could be reset
        # just as it is reused (the flaky "Connection reset by peer" seen under 4 workers).
        self.upstream = httpx.Client(
            base_url=simulator.root, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
        )

    def close(self) -> None:
        self.client.close()
        self.upstream.close()

    def entries(self) -> int:
        response = self.client.get("/stats")
        assert response.status_code == 200, response.text
        count: int = response.json()["total_entries"]
        return count

    def upstream_calls(self) -> list[dict[str, Any]]:
        """What the simulator received since it was cleared. Its record cannot list a body
        that holds a lone surrogate (it answers 500): then it did receive a call."""
        response = self.upstream.get("/_sim/requests")
        if response.status_code != 200:
            return [{"unlisted": response.status_code}]
        calls: list[dict[str, Any]] = response.json()
        return calls

    def log_since(self, offset: int) -> str:
        with self.kallm.process.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def exchange(self, sent: Sent) -> Outcome:
        """Send one request and check what holds for every request; return what happened."""
        self.upstream.delete("/_sim/requests").raise_for_status()
        before = self.entries()
        offset = self.kallm.log_size()
        simulator_offset = self.simulator.process.log_path.stat().st_size
        try:
            response = self.client.request(
                sent.method, sent.path, content=sent.body, headers=sent.headers
            )
        except httpx.TransportError as error:
            crash(f"kallm dropped the connection ({error!r})", repr(sent), self.log_since(offset))
        calls = self.upstream_calls()
        status = response.status_code
        shown = f"{sent!r} -> {status} {response.content[:400]!r}"
        log = self.log_since(offset)
        # /v1beta paths the simulator does not serve get Starlette's plain-text 404 or 405
        # there, unrecorded (kallm's own errors are JSON; its log says it passed one on).
        unrecorded = (
            sent.path.startswith("/v1beta/")
            and status in (404, 405)
            and response.headers.get("content-type", "").startswith("text/plain")
            and (sent.method == "HEAD" or response.content in (b"Not Found", b"Method Not Allowed"))
            and any(
                record.get("route") == "passthrough" and record.get("status") == status
                for record in json_records(log)
            )
        )
        forwarded = bool(calls) or unrecorded
        # (kallm shows one warning or error of a kind per 10 s: a 500 may come without its
        # traceback, which the server logs just after the 500 went out, if at all.)
        if "Traceback" in log:
            crash(f"kallm logged a traceback ({traceback_summary(log)})", shown, log)
        if status >= 500:
            # Only the upstream's own 5xx may pass: the simulator's, when it crashed on what
            # kallm passed on unchanged (it cannot parse, or even record, all kallm forwards).
            # A relayed answer keeps the simulator's `server: uvicorn` (kallm sends none).
            with self.simulator.process.log_path.open("rb") as upstream_log:
                upstream_log.seek(simulator_offset)
                upstream_crashed = b"Traceback" in upstream_log.read()
            if not (upstream_crashed or response.headers.get("server") == "uvicorn"):
                crash(f"kallm answered {status} itself", shown, log)
            forwarded = True
        if status >= 400 and not forwarded:
            assert status in KALLM_REFUSALS, f"kallm refused with an odd status: {shown}"
            problem = None if sent.method == "HEAD" else error_problem(sent.shape, response)
            assert problem is None, (
                f"kallm's error is not in the {sent.shape} shape ({problem}) for {shown}"
            )
        if sent.must_refuse is not None:
            assert not forwarded, f"sent upstream though {sent.must_refuse}: {shown}"
            assert status in KALLM_REFUSALS, f"not refused though {sent.must_refuse}: {shown}"
        outcome = "forwarded" if forwarded else ("refused" if status >= 400 else "answered")
        if currently_in_test_context():
            event(f"{outcome} {status}")  # seen with --hypothesis-show-statistics
        if status >= 400:
            after = self.entries()
            assert after <= before, f"{after - before} entries stored by a refused {shown}"
        return Outcome(response, calls, forwarded)


# --- generators ------------------------------------------------------------------------------

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
prompt_text = st.text(max_size=60).filter(lambda t: "[sim:" not in t)

# JSON text Python's json module reads but that is no plain JSON value, and text no JSON
# parser should accept.
hazard_literals = st.one_of(
    st.sampled_from(
        [
            '"\\ud800"',
            '"\\udfff"',
            '"x\\ud83d"',
            '"\\ud800\\ud800 tail"',
            '"\\u0000"',
            "NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "-1e400",
            "1E+99999",
            "1e-400",
            "-0",
            "1.7976931348623157e308",
            "tru",
            "01",
            "1.",
            "+1",
            "'single'",
            '"\\x41"',
            '"unterminated',
        ]
    ),
    st.integers(min_value=4300, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=4300, max_value=6000).map(lambda n: "-1" + "0" * n),
    st.integers(min_value=309, max_value=4200).map(lambda n: "1" + "0" * n),
    st.integers(min_value=1000, max_value=50_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1000, max_value=20_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(min_value=100, max_value=200).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1000, max_value=50_000).map(lambda n: "[" * n),
)

# Numbers as people (and attackers) write them in headers.
numberish = st.one_of(
    st.sampled_from(
        [
            "1e308",
            "-1e308",
            "1e309",
            "nan",
            "NaN",
            "-nan",
            "inf",
            "-inf",
            "Infinity",
            "-0",
            "0",
            "1",
            "0.5",
            "0.99999999999999999999",
            "1e-320",
            "0x1p-1",
            "1_0",
            "+1",
            ".5",
            "5.",
            "1,5",
            "0.5 0.6",
            "",
            "3600",
            "-3600",
        ]
    ),
    st.integers(min_value=300, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=300, max_value=6000).map(lambda n: "0." + "9" * n),
    st.floats().map(repr),
    st.integers().map(str),
)
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
# Header values may hold any byte but controls (RFC 9110 obs-text: 0x80-0xFF); Starlette
# reads them as latin-1.
latin1_header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    min_size=1,
    max_size=20,
).filter(lambda text: any(ord(c) >= 0x80 for c in text))
KALLM_HEADERS = ("x-kallm-threshold", "x-kallm-ttl", "x-kallm-namespace")
header_names = st.sampled_from(
    [
        *KALLM_HEADERS,
        "cache-control",
        "content-type",
        "content-encoding",
        "accept-encoding",
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "anthropic-version",
        "anthropic-beta",
        "accept",
        "x-fuzz",
    ]
)
header_values = st.one_of(
    numberish,
    header_text,
    st.sampled_from(
        [
            "no-cache",
            "no-store",
            "no-cache, no-store",
            "max-age=abc",
            "no-cache=",
            ",,,",
            "team-a",
            "a" * 129,
            "../../etc",
            "a@b",
            "gzip",
            "application/json; charset=utf-16",
        ]
    ),
)
headers_lists = st.lists(st.tuples(header_names, header_values), max_size=5)
query_strings = st.one_of(
    st.just(""),
    st.binary(max_size=40).map(lambda b: quote_from_bytes(b, safe="=&")),
    st.lists(
        st.tuples(st.sampled_from(["alt", "key", "x", "alt", "a b"]), header_text), max_size=3
    ).map(lambda pairs: "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)),
    st.sampled_from(
        ["alt=sse", "alt=json", "key=abc", "alt=sse&alt=json", "=", "&&", "%", "a=%zz"]
    ),
)


def header_bytes(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    # Header values travel as latin-1 bytes; the HTTP client refuses surrounding blanks.
    return [(name.encode(), value.strip(" \t").encode("latin-1")) for name, value in pairs]


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (itself included) that a mutation can replace."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += leaf_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += leaf_paths(item, (*prefix, index))
    return paths


PLACEHOLDER = "__kallm_fuzz_raw__"


def with_raw(value: Any, path: tuple[Any, ...], raw: str) -> str:
    """JSON text of `value` with the item at `path` replaced by the raw JSON text `raw`."""
    if not path:
        return raw
    changed = json.loads(json.dumps(value))
    target = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = PLACEHOLDER
    return json.dumps(changed).replace(json.dumps(PLACEHOLDER), raw, 1)


@dataclass(frozen=True)
class Route:
    """A cached route: where it is, a valid body for it, and what it must refuse."""

    name: str
    path: str
    base: Callable[[str, bool], dict[str, Any]]
    refuse: Callable[[dict[str, Any]], str | None]


def _chat(text: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    return body | ({"stream": True} if stream else {})


def _completions(text: str, stream: bool) -> dict[str, Any]:
    return {"model": "gpt-3.5-turbo-instruct", "prompt": text} | (
        {"stream": True} if stream else {}
    )


def _responses(text: str, stream: bool) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "input": text} | ({"stream": True} if stream else {})


def _messages(text: str, stream: bool) -> dict[str, Any]:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": text}],
    }
    return body | ({"stream": True} if stream else {})


def _gemini(text: str, stream: bool) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def _embeddings(text: str, stream: bool) -> dict[str, Any]:
    return {"model": "text-embedding-3-small", "input": [text, text + "!"] if stream else text}


def _needs_model(body: dict[str, Any]) -> str | None:
    return None if isinstance(body.get("model"), str) else "it has no string model"


def _refuse_chat(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("messages"), list):
        return "it has no messages list"
    return _needs_model(body)


def _refuse_completions(body: dict[str, Any]) -> str | None:
    prompt = body.get("prompt")  # (null counts as absent: how kallm reads that is its call)
    ints = lambda v: isinstance(v, list) and all(type(t) is int for t in v)  # noqa: E731
    if prompt is not None and not (
        isinstance(prompt, str)
        or (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt))
        or ints(prompt)
        or (isinstance(prompt, list) and all(ints(p) for p in prompt))
    ):
        return "its prompt is no string, strings or token arrays"
    return _needs_model(body)


def _refuse_responses(body: dict[str, Any]) -> str | None:
    given_input = body.get("input")  # (null counts as absent)
    if given_input is not None and not (
        isinstance(given_input, str)
        or (isinstance(given_input, list) and all(isinstance(i, dict) for i in given_input))
    ):
        return "its input is no string or list of objects"
    if "prompt" not in body:
        return _needs_model(body)
    return None


def _refuse_messages(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("messages"), list):
        return "it has no messages list"
    return _needs_model(body)


def _refuse_gemini(body: dict[str, Any]) -> str | None:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "it has no non-empty contents list"
    if not all(isinstance(c, dict) and isinstance(c.get("parts"), list) for c in contents):
        return "a turn of its contents has no parts"
    return None


def _refuse_embeddings(body: dict[str, Any]) -> str | None:
    if body.get("input") is None:
        return "it has no input"
    given_input = body["input"]
    if isinstance(given_input, list):
        if not given_input:
            return "its input is empty"
        kinds = {type(i) for i in given_input}
        if not kinds <= {str, int, list} or (str in kinds and len(kinds) > 1):
            return "its input mixes texts with other things"
    elif not isinstance(given_input, str):
        return "its input is no string or list"
    return _needs_model(body)


ROUTES = [
    Route("chat", "/v1/chat/completions", _chat, _refuse_chat),
    Route("completions", "/v1/completions", _completions, _refuse_completions),
    Route("responses", "/v1/responses", _responses, _refuse_responses),
    Route("messages", "/v1/messages", _messages, _refuse_messages),
    Route("gemini", "/v1beta/models/gemini-2.5-flash:generateContent", _gemini, _refuse_gemini),
    Route(
        "gemini-sse",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        _gemini,
        _refuse_gemini,
    ),
    Route("gemini-v1", "/v1/models/gemini-2.5-flash:generateContent", _gemini, _refuse_gemini),
    Route("embeddings", "/v1/embeddings", _embeddings, _refuse_embeddings),
]


class _NotJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not JSON")


def _depth_and_oddities(value: Any) -> tuple[int, bool, bool]:
    """How deep `value` nests (a scalar is 0, `[]` is 1), and whether it holds a lone
    surrogate or a float beyond a double (1e400 reads as inf)."""
    deepest, surrogate, infinite = 0, False, False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth + 1)
            stack += [(child, depth + 1) for pair in item.items() for child in pair]
        elif isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack += [(child, depth + 1) for child in item]
        elif isinstance(item, str):
            surrogate = surrogate or any(0xD800 <= ord(c) <= 0xDFFF for c in item)
        elif isinstance(item, float):
            infinite = infinite or not math.isfinite(item)
    return deepest, surrogate, infinite


def body_verdict(route: Route, body: bytes) -> str | None:
    """Why kallm must refuse `body` on `route` (None: it may answer). README "Errors": a
    body that is not JSON (RFC 8259: UTF-8), not an object, lacks the route's required
    fields, or is JSON kallm cannot hold: lone surrogates, integers of over 4,300 digits,
    nesting over 128 levels, NaN, numbers beyond a double."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not UTF-8"
    if text.startswith("\ufeff"):
        return None  # RFC 8259 lets a parser ignore a byte order mark
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except _NotJSON as error:
        return str(error)
    except RecursionError:
        return "it nests over 128 levels"
    except json.JSONDecodeError:
        return "it is not JSON"
    except ValueError:
        return "it holds an integer of over 4,300 digits"
    depth, surrogate, infinite = _depth_and_oddities(value)
    if surrogate:
        return "it holds a lone surrogate"
    if infinite:
        return "it holds a number beyond a double"
    if depth > 130:  # (a level or two of slack: how the levels are counted is kallm's)
        return "it nests over 128 levels"
    if depth > 126:
        return None
    if not isinstance(value, dict):
        return "it is not a JSON object"
    return route.refuse(value)


def _header_number(raw: str) -> float | None:
    """A header's number when it is written plainly; NaN when it is no number at all."""
    text = raw.strip()
    if STRICT_NUMBER.fullmatch(text):
        return float(text)
    if text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        return math.nan
    try:
        float(text)
    except ValueError:
        return math.nan
    return None  # Python reads it ("1_0", ".5"); how kallm reads it is its choice


CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def credential_verdict(headers: list[tuple[str, str]], query: str) -> str | None:
    """README "Errors": a credential header or parameter sent twice is refused."""
    for name in CREDENTIAL_HEADERS:
        if sum(n == name for n, _ in headers) > 1:
            return f"the credential header {name} is sent twice"
    if sum(n == "key" for n, _ in parse_qsl(query, keep_blank_values=True)) > 1:
        return "the credential parameter key is sent twice"
    return None


def header_verdict(route: Route, headers: list[tuple[str, str]]) -> str | None:
    """Why kallm must refuse these X-Kallm-* headers (README "Per-request controls")."""
    for name in KALLM_HEADERS:
        values = [v.strip(" \t") for n, v in headers if n == name]
        if len(values) != 1:
            continue  # absent, or repeated: which one counts is kallm's choice
        value = values[0]
        if name == "x-kallm-namespace":
            if value and not NAMESPACE_CHARS.fullmatch(value):
                return f"X-Kallm-Namespace {value!r} is not 1-128 of letters, digits, ._:/-"
            continue
        if name == "x-kallm-threshold" and route.name == "embeddings":
            continue  # embeddings match exactly: no threshold to set
        number = _header_number(value)
        if number is None:
            continue
        if name == "x-kallm-threshold" and not (math.isfinite(number) and 0 <= number <= 1):
            return f"X-Kallm-Threshold {value[:40]!r} is no number from 0 to 1"
        if name == "x-kallm-ttl" and not (math.isfinite(number) and number > 0):
            return f"X-Kallm-TTL {value[:40]!r} is no positive, finite number"
    return None


TEXT_KINDS = ["valid", "replace", "delete", "add", "raw", "duplicate"]
BYTE_KINDS = ["bytes", "bad-utf8"]


@st.composite
def cached_bodies(draw: st.DrawFn, route: Route, kinds: list[str]) -> bytes:
    """Valid bodies, mutated ones and hazardous JSON text (TEXT_KINDS), or raw bytes and
    bytes that are not UTF-8 in an otherwise valid body (BYTE_KINDS)."""
    base = route.base(draw(prompt_text), draw(st.booleans()))
    kind = draw(st.sampled_from(kinds))
    paths = leaf_paths(base)
    if kind == "valid":
        return json.dumps(base).encode()
    if kind == "replace":
        path = draw(st.sampled_from(paths))
        return with_raw(base, path, json.dumps(draw(json_values))).encode()
    if kind == "delete":
        path = draw(st.sampled_from(paths[1:]))
        changed = json.loads(json.dumps(base))
        target = changed
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
        return json.dumps(changed).encode()
    if kind == "add":
        return json.dumps(base | {draw(st.text(max_size=10)): draw(json_values)}).encode()
    if kind == "raw":
        path = draw(st.sampled_from(paths))
        return with_raw(base, path, draw(hazard_literals)).encode()
    if kind == "duplicate":
        name = draw(st.sampled_from([*base, "stream"]))
        twice = json.dumps(name) + ": " + json.dumps(draw(json_values)) + ", "
        first = draw(st.booleans())
        text = json.dumps(base)
        return (
            ("{" + twice + text[1:]) if first else (text[:-1] + ", " + twice[:-2] + "}")
        ).encode()
    if kind == "bytes":
        return draw(
            st.one_of(
                st.binary(max_size=200),
                st.sampled_from([b"", b" ", b"\xef\xbb\xbf" + json.dumps(base).encode()]),
                st.just(json.dumps(base).encode("utf-16")),
                st.just(json.dumps(base).encode() + b"\x00"),
                st.just(json.dumps(base).encode() + b"}garbage"),
            )
        )
    # bad-utf8: bytes that are not UTF-8 inside a string of an otherwise valid body
    path = draw(st.sampled_from(paths))
    junk = draw(
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"])
    )
    return (
        with_raw(base, path, json.dumps(PLACEHOLDER))
        .encode()
        .replace(PLACEHOLDER.encode(), b"x" + junk + b"y", 1)
    )


def namespace_header() -> tuple[bytes, bytes]:
    return (b"x-kallm-namespace", f"fuzz-{uuid.uuid4().hex[:16]}".encode())


def cached_request(route: Route, body: bytes, headers: list[tuple[str, str]], query: str) -> Sent:
    path = route.path
    if query:
        path += ("&" if "?" in path else "?") + query
    verdict = (
        body_verdict(route, body)
        or header_verdict(route, headers)
        or credential_verdict(headers, query)
    )
    sent = [*header_bytes(headers), (b"content-type", b"application/json")]
    if not any(name == "x-kallm-namespace" for name, _ in headers):
        sent.append(namespace_header())  # each example in a namespace of its own
    return Sent("POST", path, body, sent, shape_of("POST", route.path), verdict)


# --- the cached routes ---------------------------------------------------------------------


@st.composite
def cached_requests(draw: st.DrawFn, kinds: list[str]) -> Sent:
    route = draw(st.sampled_from(ROUTES))
    return cached_request(route, draw(cached_bodies(route, kinds)), [], "")


CHAT, EMBEDDINGS = ROUTES[0], ROUTES[-1]
CHAT_BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'


def _chat_with(raw: str) -> bytes:
    return CHAT_BODY.replace(b'"hi"', raw.encode())


@fuzz_settings(1000)
@given(sent=cached_requests(TEXT_KINDS))
def test_cached_routes_survive_generated_bodies(target: Target, sent: Sent) -> None:
    target.exchange(sent)


@fuzz_settings(200)
@given(sent=cached_requests(BYTE_KINDS))
def test_cached_routes_refuse_bodies_that_are_not_utf8(target: Target, sent: Sent) -> None:
    """Random bytes, UTF-16, encoded surrogates (ED A0 80), overlong forms: JSON is UTF-8
    (RFC 8259 section 8.1), and a body that is not is refused without an upstream call."""
    target.exchange(sent)


@st.composite
def cached_requests_with_headers(draw: st.DrawFn) -> Sent:
    route = draw(st.sampled_from(ROUTES))
    body = json.dumps(route.base(draw(prompt_text), draw(st.booleans()))).encode()
    return cached_request(route, body, draw(headers_lists), draw(query_strings))


@fuzz_settings(800)
@given(sent=cached_requests_with_headers())
def test_cached_routes_survive_generated_headers_and_queries(target: Target, sent: Sent) -> None:
    target.exchange(sent)


@st.composite
def requests_with_header_bytes(draw: st.DrawFn) -> Sent:
    path = draw(
        st.sampled_from([*(r.path for r in ROUTES), "/v1/models", "/v1/messages/count_tokens"])
    )
    name = draw(header_names.filter(lambda n: n not in KALLM_HEADERS))
    value = draw(latin1_header_text)
    route = next((r for r in ROUTES if r.path == path), None)
    if route is not None:
        body = json.dumps(route.base(f"hello {uuid.uuid4().hex}", False)).encode()
        return cached_request(route, body, [(name, value)], "")
    method = "GET" if path == "/v1/models" else "POST"
    body = None if method == "GET" else json.dumps(_messages("hello", False)).encode()
    headers = [*header_bytes([(name, value)]), namespace_header()]
    return Sent(method, path, body, headers, shape_of(method, path))


@fuzz_settings(60)
@given(sent=requests_with_header_bytes())
def test_routes_survive_header_values_beyond_ascii(target: Target, sent: Sent) -> None:
    """Header values with bytes 0x80-0xFF (obs-text, legal in HTTP/1.1) on every route
    kallm serves, cached or passed through."""
    target.exchange(sent)


@st.composite
def gemini_model_calls(draw: st.DrawFn) -> Sent:
    model = quote_from_bytes(draw(st.binary(min_size=1, max_size=30)), safe="")
    method = draw(
        st.sampled_from(["generateContent", "streamGenerateContent", "countTokens", "", "x:y"])
    )
    prefix = draw(st.sampled_from(["/v1beta/models/", "/v1/models/"]))
    query = draw(st.sampled_from(["", "?alt=sse", "?key=x"]))
    body = json.dumps(_gemini(draw(prompt_text), False)).encode()
    path = f"{prefix}{model}:{method}{query}" if method else f"{prefix}{model}{query}"
    headers = [namespace_header(), (b"content-type", b"application/json")]
    # An encoded slash in the model makes another segment: not a Gemini route then.
    return Sent("POST", path, body, headers, shape_of("POST", path))


GEMINI_BODY = b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}'


@fuzz_settings(100)
@given(sent=gemini_model_calls())
def test_gemini_model_paths_survive_generated_names(target: Target, sent: Sent) -> None:
    """The model and method of a Gemini call are in its path: any bytes may come there."""
    target.exchange(sent)


@fuzz_settings(6)
@given(
    route=st.sampled_from(ROUTES),
    size=st.integers(min_value=900_000, max_value=1_100_000),
    char=st.sampled_from(["a", "é", "\U0001f600", " ", "\\u0041", "\\ud800"]),
)
def test_cached_routes_survive_megabyte_strings(
    target: Target, route: Route, size: int, char: str
) -> None:
    """Prompts of about a megabyte (a few examples only: each is embedded)."""
    base = route.base("x", False)
    literal = '"' + char * (size // len(char.encode())) + '"'
    body = with_raw(base, leaf_paths(base)[-1], literal).encode()
    target.exchange(cached_request(route, body, [], ""))


def _known(sent: Sent, name: str) -> Any:
    return pytest.param(sent, id=name)


GEMINI_PATH = "/v1beta/models/gemini-2.5-flash:generateContent"
GEMINI = ROUTES[4]
HAZARDS = [
    # JSON kallm cannot hold (README "Errors"): 400, nothing upstream.
    _known(cached_request(CHAT, _chat_with('"\\ud800"'), [], ""), "lone-surrogate-escape"),
    _known(cached_request(CHAT, _chat_with("9" * 5000), [], ""), "int-5000-digits"),
    _known(cached_request(CHAT, _chat_with("[" * 50_000 + "]" * 50_000), [], ""), "nested-50000"),
    _known(cached_request(CHAT, b"[" * 50_000, [], ""), "unclosed-50000"),
    _known(cached_request(CHAT, _chat_with("NaN"), [], ""), "nan"),
    _known(cached_request(CHAT, _chat_with("-Infinity"), [], ""), "infinity"),
    _known(cached_request(CHAT, _chat_with("1e400"), [], ""), "float-1e400"),
    _known(cached_request(CHAT, b'{"model": "a", "model": 5, "messages": []}', [], ""), "dup-keys"),
    # Bytes that are not UTF-8.
    _known(cached_request(CHAT, CHAT_BODY.decode().encode("utf-16"), [], ""), "utf16-body"),
    _known(cached_request(CHAT, CHAT_BODY.replace(b"hi", b"\xed\xa0\x80"), [], ""), "cesu-chat"),
    _known(
        cached_request(EMBEDDINGS, b'{"model": "m", "input": "x\xed\xa0\x80y"}', [], ""),
        "cesu-embeddings",
    ),
    _known(
        cached_request(GEMINI, GEMINI_BODY.replace(b"hi", b"\xed\xb0\x80"), [], ""), "cesu-gemini"
    ),
    _known(cached_request(CHAT, CHAT_BODY.replace(b"hi", b"\xc0\xaf"), [], ""), "overlong-utf8"),
    # X-Kallm-* headers and credentials (README "Per-request controls", "Errors").
    _known(cached_request(CHAT, CHAT_BODY, [("x-kallm-threshold", "nan")], ""), "threshold-nan"),
    _known(cached_request(CHAT, CHAT_BODY, [("x-kallm-threshold", "1e308")], ""), "threshold-big"),
    _known(cached_request(CHAT, CHAT_BODY, [("x-kallm-ttl", "9" * 400)], ""), "ttl-inf"),
    _known(cached_request(CHAT, CHAT_BODY, [("x-kallm-ttl", "-0")], ""), "ttl-minus-zero"),
    _known(cached_request(CHAT, CHAT_BODY, [("x-kallm-namespace", "a" * 129)], ""), "ns-129"),
    _known(
        cached_request(CHAT, CHAT_BODY, [("authorization", "a"), ("authorization", "b")], ""),
        "authorization-twice",
    ),
    _known(cached_request(GEMINI, GEMINI_BODY, [], "key=a&key=b"), "gemini-key-param-twice"),
    # Header values beyond ASCII (obs-text, RFC 9110 section 5.5).
    _known(
        cached_request(CHAT, _chat_with('"\u00e9t\u00e9"'), [("content-encoding", "\x80")], ""),
        "chat-header-byte-80",
    ),
    _known(
        cached_request(GEMINI, GEMINI_BODY, [("anthropic-beta", "caf\u00e9")], ""),
        "gemini-header-latin1",
    ),
    _known(Sent("GET", "/v1/models", None, [(b"x-fuzz", b"\xe9")]), "passthrough-header-latin1"),
    # Gemini model names are in the path.
    _known(
        Sent("POST", "/v1beta/models/%01:generateContent", GEMINI_BODY, shape="gemini"),
        "gemini-model-ctl",
    ),
    _known(
        Sent("POST", "/v1beta/models/a%20b:generateContent", GEMINI_BODY, shape="gemini"),
        "gemini-model-space",
    ),
    _known(
        Sent("POST", "/v1beta/models/%FF:generateContent", GEMINI_BODY, shape="gemini"),
        "gemini-model-ff",
    ),
    # Passthrough paths and shapes.
    _known(Sent("GET", "/v1beta/models/%0A", None, [], "gemini"), "v1beta-newline"),
    _known(Sent("GET", "/v1/files/%2E%2E", None, [], must_refuse="a dot segment"), "dot-dot"),
    _known(Sent("GET", "/v1beta/files/a%2Fb", None, [], "gemini", "an encoded slash"), "enc-slash"),
    _known(
        Sent(
            "GET",
            "/v1beta/models",
            None,
            [(b"x-kallm-namespace", b"a"), (b"x-kallm-namespace", b"b")],
            "gemini",
        ),
        "v1beta-namespace-twice",
    ),
    _known(
        Sent(
            "GET",
            "/v1/messages/batches",
            None,
            [(b"x-api-key", b"a"), (b"x-api-key", b"b")],
            "anthropic",
            "a credential header sent twice",
        ),
        "anthropic-key-twice",
    ),
    # The management API.
    _known(Sent("GET", "/admin/entries?offset=" + "9" * 5000, None, ADMIN), "offset-5000-digits"),
    _known(Sent("GET", "/admin/entries?offset=" + "9" * 4000, None, ADMIN), "offset-4000-digits"),
    _known(Sent("GET", "/admin/entries?limit=1e3", None, ADMIN, must_refuse="limit"), "limit-1e3"),
    _known(Sent("GET", "/admin/entries?limit=0", None, ADMIN, must_refuse="limit 0"), "limit-0"),
    _known(Sent("GET", "/admin/entries?q=%FF%00&namespace=%ED%A0%80", None, ADMIN), "q-bytes"),
    _known(Sent("DELETE", "/admin/entries/%00%FF", None, ADMIN), "entry-id-bytes"),
    _known(Sent("DELETE", "/admin/cache?namespace=%FF", None, ADMIN), "clear-namespace-byte"),
    _known(Sent("GET", "/admin/cache", None, ADMIN, must_refuse="GET /admin/cache"), "admin-405"),
]


@pytest.mark.parametrize("sent", HAZARDS)
def test_known_hazards(target: Target, sent: Sent) -> None:
    """The generators' sharpest cases, each once: what the fuzz tests found or must keep."""
    target.exchange(sent)


# --- the passthrough -------------------------------------------------------------------------

path_segments = st.one_of(
    st.binary(min_size=1, max_size=12).map(lambda b: quote_from_bytes(b, safe="")),
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#%"),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from(
        [
            "%2E%2E",
            "%2e",
            ".%2E",
            "%2F",
            "%3F",
            "%23",
            "%25",
            "%2541",
            "%00",
            "%20",
            "%FF",
            "a%2Fb",
            "file-abc123",
            ";x=1",
            "~user",
            "%C3%A9",
            "%252E%252E",
            "%252F",
            "%5C",
            "..%5C..",
        ]
    ),
).filter(lambda segment: segment not in (".", ".."))  # the client would resolve those


def path_verdict(path: str) -> tuple[str | None, bool]:
    """(why kallm must refuse the path, whether it may): README "Errors" refuses a path with
    dot segments or encoded slashes; what only further decoding makes one (%252e), and
    encoded backslashes and NULs, kallm may refuse as well."""
    must, may = None, False
    for segment in path.split("?", 1)[0].split("/"):
        once = unquote(segment, encoding="latin-1")
        if once in (".", "..") or "/" in once:
            must = "its path has a dot segment or an encoded slash"
        deeper = unquote(unquote(once, encoding="latin-1"), encoding="latin-1")
        if deeper in (".", "..") or any(c in deeper for c in "/\\\0"):
            may = True
    return must, may or must is not None


@st.composite
def passthrough_requests(draw: st.DrawFn) -> Sent:
    prefix = draw(
        st.sampled_from(
            [
                "/v1/models",
                "/v1/files",
                "/v1/batches",
                "/v1/messages/count_tokens",
                "/v1/messages/batches",
                "/v1beta/models",
                "/v1beta/models/gemini-2.5-flash:countTokens",
                "/v1beta/files",
            ]
        )
    )
    segments = draw(st.lists(path_segments, max_size=3))
    path = "/".join([prefix, *segments])
    method = draw(st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]))
    body = None
    if method in ("POST", "PUT", "PATCH"):
        base = {
            "model": "claude-sonnet-4-6",
            "messages": [{"role": "user", "content": draw(prompt_text)}],
            "contents": [{"parts": [{"text": "x"}]}],
        }
        body = draw(
            st.one_of(
                st.just(json.dumps(base).encode()),
                st.binary(max_size=100),
                hazard_literals.map(str.encode),
                st.builds(
                    lambda p, v: with_raw(base, p, v).encode(),
                    st.sampled_from(leaf_paths(base)),
                    hazard_literals,
                ),
            )
        )
    query = draw(query_strings)
    if query:
        path += "?" + query
    fuzzed = draw(headers_lists)
    headers = [*header_bytes(fuzzed), namespace_header()]
    refuse = path_verdict(path)[0] or credential_verdict(fuzzed, query)
    return Sent(method, path, body, headers, shape_of(method, path), refuse)


@fuzz_settings(600)
@given(sent=passthrough_requests())
def test_passthrough_survives_generated_requests(target: Target, sent: Sent) -> None:
    target.exchange(sent)


def _query_pairs(query: str) -> dict[str, list[str]]:
    """A query's values per name, in order (how the pairs of different names interleave
    does not matter), less `key`, which kallm drops when it sends its own key."""
    pairs: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, encoding="latin-1"):
        if name != "key":
            pairs.setdefault(name, []).append(value)
    return pairs


@fuzz_settings(300)
@given(
    # The simulator's record drops what follows a tab or line break in a path (Python's
    # urlsplit does): such paths cannot be compared there.
    segments=st.lists(
        path_segments.filter(lambda segment: not set(unquote(segment)) & set("\t\r\n")),
        min_size=1,
        max_size=3,
    ),
    query=query_strings,
    method=st.sampled_from(["GET", "DELETE", "POST"]),
)
def test_passthrough_keeps_path_and_query(
    target: Target, segments: list[str], query: str, method: str
) -> None:
    """README "Endpoints": any other /v1 path is passed through unchanged (method, query,
    ...). The simulator records every /v1 request."""
    check_passthrough(target, segments, query, method)


def check_passthrough(target: Target, segments: list[str], query: str, method: str) -> None:
    path = "/v1/files/" + "/".join(segments)
    must_refuse, may_refuse = path_verdict(path)
    must_refuse = must_refuse or credential_verdict([], query)
    sent = Sent(method, path + ("?" + query if query else ""), b"{}" if method == "POST" else None)
    sent.headers = [namespace_header()]
    sent.must_refuse = must_refuse
    outcome = target.exchange(sent)
    if must_refuse or (may_refuse and not outcome.forwarded):
        assert outcome.response.status_code == 400, outcome.response.text[:300]
        return
    assert len(outcome.calls) == 1, f"{len(outcome.calls)} upstream calls for {sent!r}"
    call = outcome.calls[0]
    assert call["method"] == method
    # The simulator records Starlette's request.url.path: uvicorn's decoded path with "?",
    # "#" and "\\" encoded again.
    recorded = unquote(path).replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    assert call["path"] == recorded, f"kallm sent {call['path']!r} upstream for {path!r}"
    assert _query_pairs(call["query"]) == _query_pairs(query), (
        f"kallm sent the query {call['query']!r} upstream for {query!r}"
    )


@pytest.mark.parametrize(
    ("segments", "query"),
    [
        pytest.param(["x"], "%80", id="query-byte-not-utf8"),
        pytest.param(["x"], "a=1&b=2&a=3", id="query-repeated-name"),
        pytest.param(["x"], "q=a+b&r=%2B", id="query-plus"),
        pytest.param(["%2541"], "", id="path-encoded-percent"),
        pytest.param(["%3F"], "", id="path-encoded-question-mark"),
        pytest.param(["%23x"], "", id="path-encoded-hash"),
        pytest.param(["%2E%2E", "admin"], "", id="path-encoded-dot-dot"),
        pytest.param(["%252E%252E"], "", id="path-twice-encoded-dot-dot"),
        pytest.param(["a%2Fb"], "", id="path-encoded-slash"),
        pytest.param(["x"], "key=a&key=b", id="credential-param-twice"),
    ],
)
def test_passthrough_keeps_path_and_query_of_known_cases(
    target: Target, segments: list[str], query: str
) -> None:
    check_passthrough(target, segments, query, "GET")


# --- the management API ----------------------------------------------------------------------

admin_params = st.one_of(
    numberish,
    header_text,
    latin1_header_text,
    st.integers(min_value=-5, max_value=2000).map(str),
    st.sampled_from(["", " 1", "1 ", "٣", "1e3", "10.0", "0x10", "-0", "00", "1_000"]),
)


def _strict_count(raw: str, low: int, high: float) -> str | None:
    """Why `raw` is no integer in [low, high] (None: it is one, or is written oddly)."""
    if re.fullmatch(r"-?[0-9]+", raw):
        if len(raw) > 4000:
            return None  # valid digits past what Python converts: kallm's choice
        return None if low <= int(raw) <= high else "out of range"
    try:
        int(raw)
    except ValueError:
        return "not an integer"
    return None  # Python reads it (" 1", "٣", "1_000"); how kallm reads it is its choice


@st.composite
def admin_requests(draw: st.DrawFn) -> Sent:
    """The management API's calls, with generated parameters and tokens."""
    kind = draw(st.sampled_from(["entries", "cache", "entry", "export"]))
    params: list[tuple[str, str]] = []
    refuse = None
    if kind == "entries":
        method, path = "GET", "/admin/entries"
        for name in ("offset", "limit", "namespace", "model", "q"):
            if draw(st.booleans()):
                params.append((name, draw(admin_params)))
        given_params = dict(params)
        offset, limit = given_params.get("offset"), given_params.get("limit")
        if offset is not None and _strict_count(offset, 0, math.inf):
            refuse = f"offset {offset[:20]!r} is no integer >= 0"
        if limit is not None and _strict_count(limit, 1, 1000):
            refuse = f"limit {limit[:20]!r} is no integer from 1 to 1000"
    elif kind == "cache":
        method, path = "DELETE", "/admin/cache"
        # Always a namespace: deleting everything would wipe what other examples count on.
        params.append(("namespace", "fuzz-" + draw(admin_params)))
    elif kind == "entry":
        method = "DELETE"
        # Any id but one with a slash, which would be another path.
        entry_id = draw(st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b))
        path = "/admin/entries/" + quote_from_bytes(entry_id, "")
    else:
        method, path = "GET", "/admin/export"
        if draw(st.booleans()):
            params.append(("namespace", draw(admin_params)))
    if params:
        path += "?" + "&".join(
            f"{quote(k)}={quote(v.encode('latin-1', 'replace'), safe='')}" for k, v in params
        )
    token = draw(st.sampled_from([ADMIN_TOKEN, ADMIN_TOKEN, ADMIN_TOKEN, "", "wrong", None]))
    value = f"Bearer {token}".strip().encode()
    headers = [] if token is None else [(b"authorization", value)]
    if token != ADMIN_TOKEN:
        refuse = "the admin token is wrong or missing"
    return Sent(method, path, None, headers, "openai", refuse)


@fuzz_settings(400)
@given(sent=admin_requests())
def test_admin_api_survives_generated_requests(target: Target, sent: Sent) -> None:
    outcome = target.exchange(sent)
    response = outcome.response
    assert not outcome.forwarded, f"the management API called the upstream for {sent!r}"
    if sent.must_refuse and "token" in sent.must_refuse:
        assert response.status_code == 401, (sent, response.status_code, response.text[:300])
    if response.status_code == 200 and sent.path.startswith("/admin/export"):
        _assert_json_lines(response.content)
    if response.status_code == 200 and sent.path.startswith("/admin/entries?"):
        page = json.loads(response.content)
        assert isinstance(page.get("entries"), list)


ADMIN_CALLS = {
    ("DELETE", "/admin/cache"),
    ("GET", "/admin/entries"),
    ("HEAD", "/admin/entries"),
    ("DELETE", "/admin/entries/x"),
    ("POST", "/admin/warm"),
    ("GET", "/admin/export"),
    ("HEAD", "/admin/export"),
}


@fuzz_settings(60)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    path=st.sampled_from(
        [
            "/admin/cache",
            "/admin/entries",
            "/admin/entries/x",
            "/admin/warm",
            "/admin/export",
            "/admin",
            "/admin/nothing-here",
            "/admin/entries/x/y",
        ]
    ),
)
def test_admin_api_refuses_other_methods_and_paths_in_json(
    target: Target, method: str, path: str
) -> None:
    """A method or path the management API does not have is a 404 or 405, in OpenAI's error
    shape like every other error of the API (with the right token)."""
    assume((method, path) not in ADMIN_CALLS)
    headers = [(b"authorization", f"Bearer {ADMIN_TOKEN}".encode())]
    sent = Sent(method, path, b"" if method in ("POST", "PUT", "PATCH") else None, headers)
    sent.must_refuse = f"the management API has no {method} {path}"
    outcome = target.exchange(sent)
    assert outcome.response.status_code in (404, 405), outcome.response.status_code


def _refuse_constant_in_export(name: str) -> Any:
    raise AssertionError(f"{name} in an export: it is not JSON")


def _assert_json_lines(content: bytes) -> None:
    """An export is JSON lines (RFC 8259 JSON: no NaN or Infinity) that warm reads back."""
    for line in content.decode().splitlines():
        if line.strip():
            row = json.loads(line, parse_constant=_refuse_constant_in_export)
            assert isinstance(row, dict) and isinstance(row.get("request"), dict), line[:300]


def _warm_row(namespace: str, text: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": f"Warmed answer to {text}"}
    return {
        "namespace": namespace,
        "route": "chat.completions",
        "request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
        "response": {
            "id": "chatcmpl-warm",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        },
        "ttl": 600,
    }


WARM_NAMESPACE = "fuzz-warm-namespace"  # each example gets its own in place of this


@st.composite
def warm_bodies(draw: st.DrawFn) -> bytes:
    lines: list[bytes] = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        row = _warm_row(WARM_NAMESPACE, draw(prompt_text))
        kind = draw(st.sampled_from(["valid", "replace", "raw", "json", "bytes"]))
        paths = [p for p in leaf_paths(row) if p[:1] != ("namespace",)]
        if kind == "valid":
            line = json.dumps(row).encode()
        elif kind == "replace":
            line = with_raw(row, draw(st.sampled_from(paths)), json.dumps(draw(json_values)))
            line = line.encode()
        elif kind == "raw":
            line = with_raw(row, draw(st.sampled_from(paths)), draw(hazard_literals)).encode()
        elif kind == "json":
            line = json.dumps(draw(json_values)).encode()
        else:
            line = draw(st.binary(max_size=60)).replace(b"\n", b" ")
        lines.append(line)
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"]))


def _warm_line(raw: str, where: tuple[Any, ...]) -> bytes:
    return with_raw(_warm_row(WARM_NAMESPACE, "warm me"), where, raw).encode()


@fuzz_settings(400)
@given(body=warm_bodies())
def test_admin_warm_survives_generated_lines(target: Target, body: bytes) -> None:
    """Warm reads JSON lines: a bad line is reported in `errors`, never a 5xx; what it
    stores, export writes back as JSON lines."""
    check_warm(target, body)


def check_warm(target: Target, body: bytes) -> None:
    namespace = f"fuzz-warm-{uuid.uuid4().hex[:12]}"
    body = body.replace(WARM_NAMESPACE.encode(), namespace.encode())
    headers = [(b"authorization", f"Bearer {ADMIN_TOKEN}".encode())]
    before = target.entries()
    outcome = target.exchange(Sent("POST", "/admin/warm", body, headers, "openai"))
    response = outcome.response
    if response.status_code != 200:
        return
    report = json.loads(response.content)
    assert set(report) >= {"stored", "skipped", "errors"}, report
    assert target.entries() - before <= report["stored"], report
    offset = target.kallm.log_size()
    exported = target.client.get(
        "/admin/export",
        params={"namespace": namespace},
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    log = target.log_since(offset)
    assert "Traceback" not in log, f"export after warming {body!r:.2000}:\n{log}"
    assert exported.status_code == 200, exported.text[:300]
    _assert_json_lines(exported.content)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[1]\n", id="line-not-an-object"),
        pytest.param(b"\xff\xfe\n", id="line-not-utf8"),
        pytest.param(b"[" * 50_000 + b"\n", id="line-nested-50000-deep"),
        pytest.param(_warm_line("9" * 5000, ("ttl",)), id="ttl-5000-digits"),
        pytest.param(_warm_line("1" + "0" * 400, ("ttl",)), id="ttl-10e400"),
        pytest.param(
            _warm_line("1" + "0" * 400, ("response", "usage", "prompt_tokens")),
            id="usage-10e400",
        ),
        pytest.param(_warm_line("NaN", ("ttl",)), id="ttl-nan"),
        pytest.param(_warm_line("1e999", ("ttl",)), id="ttl-1e999"),
        pytest.param(_warm_line("1e-320", ("ttl",)), id="ttl-tiny"),
        pytest.param(_warm_line('"soon"', ("ttl",)), id="ttl-string"),
        pytest.param(_warm_line("NaN", ("response", "usage", "prompt_tokens")), id="usage-nan"),
        pytest.param(_warm_line("-5", ("response", "usage", "prompt_tokens")), id="usage-negative"),
        pytest.param(
            _warm_line('"\\ud800"', ("request", "messages", 0, "content")), id="lone-surrogate"
        ),
        pytest.param(_warm_line("[1]", ("response",)), id="response-a-list"),
        pytest.param(_warm_line('"x"', ("response", "choices")), id="choices-a-string"),
        pytest.param(_warm_line('"gemini"', ("route",)), id="route-gemini-chat-request"),
        pytest.param(_warm_line('"nope"', ("route",)), id="route-unknown"),
        pytest.param(_warm_line("{}", ("request",)), id="request-empty"),
    ],
)
def test_admin_warm_survives_known_cases(target: Target, body: bytes) -> None:
    check_warm(target, body)


def test_fuzz_suite_kallm_is_still_healthy(target: Target) -> None:
    """After everything above, kallm still answers a plain request and its probes."""
    started = time.monotonic()
    assert target.client.get("/health").status_code == 200
    body = json.dumps(_chat("fuzz suite final check", False)).encode()
    outcome = target.exchange(cached_request(ROUTES[0], body, [], ""))
    assert outcome.response.status_code == 200, outcome.response.text[:300]
    assert time.monotonic() - started < 30
