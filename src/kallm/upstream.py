"""Talking to the upstream provider: which headers cross, and how failures map to statuses."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus

import httpx

# RFC 9110 section 7.6.1: connection-specific headers are not forwarded by proxies.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length"}
# Headers that carry a caller's credentials: where OpenAI, Azure, Anthropic and Gemini
# clients put keys, cookies, and any header whose name says key, token, secret... (a
# gateway's subscription key, a session). When kallm uses its own key they are all dropped,
# so nothing of the caller's travels beside kallm's key; when it forwards them, all of them
# divide the cache (auth.credentials).
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key", "cookie"}
)
_CREDENTIAL_WORDS = re.compile(
    r"key|token|auth|secret|cookie|session|credential|signature|password|passwd|subscription"
)
# Names that match a word above but carry no credential (SDKs send a fresh one per call).
_NOT_CREDENTIALS = frozenset({"idempotency-key", "x-idempotency-key"})
# Query parameters that carry credentials: Gemini's `key`, OAuth's `access_token`, signed
# URLs' `sig`/`signature`, and the like.
_CREDENTIAL_PARAM = re.compile(r"key|token|auth|secret|sig|password|session|credential")


def is_credential_header(name: str) -> bool:
    """Whether a header (lower-case name) carries a credential of the caller's."""
    if name in CREDENTIAL_HEADERS:
        return True
    return (
        not name.startswith("x-kallm-")
        and name not in _NOT_CREDENTIALS
        and _CREDENTIAL_WORDS.search(name) is not None
    )


def is_credential_param(name: str) -> bool:
    return _CREDENTIAL_PARAM.search(name.lower()) is not None


class UnsafePath(ValueError):
    """A request path that could leave the upstream's base path."""


def raw_path(scope: Mapping[str, object]) -> str:
    """A request's path as it was sent, still percent-encoded (ASGI's `raw_path`): what goes
    upstream is what was checked, byte for byte."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("latin-1")
    return str(scope.get("path", "/"))


def check_path(raw_path: bytes) -> None:
    """Refuse a path with a dot segment or an encoded slash or backslash, encoded once or
    more: after decoding, upstream or a proxy before it could resolve it outside the base
    URL kallm's key is meant for."""
    path = raw_path.decode("latin-1")
    for segment in path.split("/"):
        decoded = segment
        for _ in range(3):  # %252e%252e is ".." to a server that decodes twice
            decoded = unquote(decoded, encoding="latin-1")
        if decoded in {".", ".."} or any(c in decoded for c in "/\\\0"):
            raise UnsafePath("The request path has a dot segment or an encoded separator.")


def target_url(base_url: str, path: str) -> httpx.URL:
    """`base_url` + `path` (as received, still percent-encoded), checked to stay under the
    base URL: a key for `base_url` never goes anywhere else."""
    check_path(path.encode("latin-1"))
    base = httpx.URL(base_url)
    url = httpx.URL(base_url + path)
    prefix = base.raw_path.rstrip(b"/") + b"/"
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port) or not (
        url.raw_path == base.raw_path or url.raw_path.startswith(prefix)
    ):
        raise UnsafePath("The request path leaves the upstream's base URL.")
    return url


class UpstreamFailure(Exception):
    """No answer from upstream: `status` is 502 (unreachable) or 504 (timed out)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BrokenStream(Exception):
    """The upstream broke off a stream; raised to drop the client's connection too."""


def bearer(api_key: str | None) -> dict[str, str] | None:
    """OpenAI's way of sending a key."""
    return None if api_key is None else {"authorization": f"Bearer {api_key}"}


def post(
    client: httpx.AsyncClient,
    url: str | httpx.URL,
    headers: Mapping[str, str],
    auth: Mapping[str, str] | None,
    body: bytes,
    params: Mapping[str, str] | httpx.QueryParams | None = None,
) -> httpx.Request:
    """A cached API's request as it goes upstream: the body as the client sent it, with the
    client's headers as `request_headers` lets them cross, the answer asked for unencoded
    (kallm reads it)."""
    crossing = request_headers(headers, auth, decoded=True)
    return client.build_request("POST", url, params=params, headers=crossing, content=body)


def request_headers(
    headers: Mapping[str, str], auth: Mapping[str, str] | None, *, decoded: bool
) -> list[tuple[bytes, bytes]]:
    """Client headers to send upstream, repeats kept and values as the bytes they came as
    (HTTP allows any octet from 0x80 up; Starlette reads them as latin-1). kallm's own
    headers and Cache-Control are for kallm. With `auth` (kallm's own key, in the provider's
    header), it replaces the client's credentials. With `decoded`, kallm will read the body
    itself, so it asks for an unencoded one."""
    replaced = {*(auth or {}), *(["accept-encoding"] if decoded else [])}
    out = [
        (name, value)
        for name, value in headers.items()
        if name not in _NOT_FORWARDED
        and name not in replaced
        and not name.startswith("x-kallm-")
        and (name != "cache-control" or not decoded)
        and (auth is None or not is_credential_header(name))
    ]
    out += list((auth or {}).items())
    if decoded:
        out.append(("accept-encoding", "identity"))
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in out]


def query(raw: str, own_key: bool) -> httpx.QueryParams:
    """A client's query string to send upstream, less its credentials (Gemini's `?key=`,
    an `access_token`...) when kallm sends its own key."""
    params = httpx.QueryParams(raw)
    if own_key:
        for name in {name for name in params if is_credential_param(name)}:
            params = params.remove(name)
    return params


def forwarded_query(raw: bytes, kept: Collection[str], own_key: bool) -> bytes:
    """A query string as it was sent, byte for byte, less the parameters admission took out
    (those not in `kept`: a kallm key sent as `?key=`) and, when kallm sends its own key, the
    caller's credentials."""
    out = []
    for piece in raw.split(b"&"):
        name = unquote_plus(piece.partition(b"=")[0].decode("latin-1"), errors="replace")
        if piece and name in kept and not (own_key and is_credential_param(name)):
            out.append(piece)
    return b"&".join(out)


def response_headers(headers: httpx.Headers, *, decoded: bool) -> dict[str, str]:
    """Upstream headers to send to the client; lengths and encodings change when the body was
    decoded or re-framed."""
    # The ASGI server writes its own Date; the upstream's would make two.
    dropped = _NOT_FORWARDED | {"date"} | ({"content-encoding"} if decoded else set())
    return {name: value for name, value in headers.items() if name.lower() not in dropped}


async def send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send and return once the status and headers are in; the body streams after."""
    try:
        return await client.send(request, stream=True)
    except httpx.TimeoutException as error:
        raise UpstreamFailure(
            504,
            f"The upstream API at {origin(request.url)} did not answer in time "
            f"({type(error).__name__}).",
        ) from None
    except Exception as error:  # httpx.HTTPError, or a transport refusing the request
        raise UpstreamFailure(
            502,
            f"The upstream API at {origin(request.url)} could not be reached "
            f"({type(error).__name__}).",
        ) from None


def origin(url: httpx.URL) -> str:
    """Scheme, host and port: which upstream, never its credentials or path."""
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")


@dataclass
class Prefix:
    """The start of an upstream body: all of it (`whole`), or its first pieces and the
    iterator holding the rest."""

    head: bytes
    whole: bool
    rest: AsyncIterator[bytes] | None = None


async def read_prefix(response: httpx.Response, limit: int) -> Prefix:
    """The body if it is at most `limit` bytes, else the pieces read so far and the rest to
    relay. Raises UpstreamFailure (the response closed) when the upstream breaks off (502)
    or goes silent for longer than the read timeout (504)."""
    pieces: list[bytes] = []
    size = 0
    stream = response.aiter_bytes().__aiter__()
    try:
        async for piece in stream:
            pieces.append(piece)
            size += len(piece)
            if size > limit:
                return Prefix(b"".join(pieces), whole=False, rest=stream)
    except httpx.HTTPError as error:
        await response.aclose()
        where = origin(response.request.url)
        if isinstance(error, httpx.TimeoutException):
            raise UpstreamFailure(
                504, f"The upstream API at {where} stopped sending its answer (timed out)."
            ) from None
        raise UpstreamFailure(502, f"The upstream API at {where} broke off its answer.") from None
    return Prefix(b"".join(pieces), whole=True)


async def relay_rest(prefix: Prefix, response: httpx.Response) -> AsyncIterator[bytes]:
    """A body too large to hold: what was read, then the rest as it comes."""
    try:
        yield prefix.head
        if prefix.rest is not None:
            try:
                async for piece in prefix.rest:
                    yield piece
            except httpx.HTTPError as error:
                raise BrokenStream from error
    finally:
        await response.aclose()


async def read_limited(stream: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
