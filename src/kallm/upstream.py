"""Talking to the upstream provider: which headers cross, and how failures map to statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

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
# Where clients put API keys (OpenAI, Azure, Anthropic, Gemini): all dropped when kallm uses
# its own key, so a client's key never travels beside kallm's.
CLIENT_KEY_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})


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


def request_headers(
    headers: Mapping[str, str], auth: Mapping[str, str] | None, *, decoded: bool
) -> dict[str, str]:
    """Client headers to send upstream. kallm's own headers and Cache-Control are for kallm.
    With `auth` (kallm's own key, in the provider's header), it replaces the client's keys.
    With `decoded`, kallm will read the body itself, so it asks for an unencoded one."""
    out = {
        name: value
        for name, value in headers.items()
        if name not in _NOT_FORWARDED
        and not name.startswith("x-kallm-")
        and (name != "cache-control" or not decoded)
        and (auth is None or name not in CLIENT_KEY_HEADERS)
    }
    if auth is not None:
        out.update(auth)
    if decoded:
        out["accept-encoding"] = "identity"
    return out


def query(raw: str, own_key: bool) -> httpx.QueryParams:
    """A client's query string to send upstream, less its `?key=` (how Gemini clients may
    send a key) when kallm sends its own key."""
    params = httpx.QueryParams(raw)
    return params.remove("key") if own_key else params


def response_headers(headers: httpx.Headers, *, decoded: bool) -> dict[str, str]:
    """Upstream headers to send to the client; lengths and encodings change when the body was
    decoded or re-framed."""
    dropped = _NOT_FORWARDED | ({"content-encoding"} if decoded else set())
    return {name: value for name, value in headers.items() if name.lower() not in dropped}


async def send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send and return once the status and headers are in; the body streams after."""
    try:
        return await client.send(request, stream=True)
    except httpx.TimeoutException as error:
        raise UpstreamFailure(
            504, f"The upstream API did not answer in time ({type(error).__name__})."
        ) from None
    except httpx.HTTPError as error:
        raise UpstreamFailure(
            502, f"The upstream API could not be reached ({type(error).__name__})."
        ) from None


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
