"""The HTTP client kallm talks to upstream APIs with.

kallm speaks httpx everywhere (`build_request`, `send(stream=True)`, `aiter_raw`, httpx's
exceptions) and tests hand in an `httpx.MockTransport`. On the network, though, requests go
through `AiohttpTransport`, an `httpx.AsyncBaseTransport` over one `aiohttp.ClientSession`.
httpcore's pool (httpx's default transport) scans every pooled connection, probing each
socket, on every request and every release, so its cost grows with the requests in flight:
measured on a 2-core box, 1.9 ms of CPU per request at 50 in flight and 2.6 ms at 200, and
three quarters of kallm's CPU with the cache bypassed. Through aiohttp's pool, which hands
out a free connection in constant time, the same calls cost 0.24 and 0.32 ms, and kallm's
bypassed MISSes went from 360-620 to 1,450-1,800 req/s (bench/forward_bench.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import certifi
import httpx
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict
from yarl import URL

from kallm.settings import Settings

# Framing and connection management are the transport's own (RFC 9110 section 7.6.1); the
# caller's `Transfer-Encoding: chunked` would clash with aiohttp setting it for a stream.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})
# aiohttp adds these unless told not to; the request httpx built is what must go upstream.
_NO_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent with aiohttp. What crosses is what the caller asked for: no
    decompression (`aiter_raw` gets the upstream's bytes, Content-Encoding and all), no
    cookies kept, no redirects followed, no proxy or netrc from the environment. Timeouts
    come from the httpx request (its client's `timeout`). The session is made on first use,
    inside the running loop, and closed by `aclose()`."""

    def __init__(self, max_connections: int = 1000) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,  # one upstream host may use them all
                # httpx checks certificates against certifi's bundle; so does kallm still,
                # rather than depend on the image having system CA certificates.
                ssl=ssl.create_default_context(cafile=certifi.where()),
            )
            handler = functools.partial(_Handler, loop=asyncio.get_running_loop())
            connector._factory = handler  # type: ignore[assignment]  # a subclass
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        headers = CIMultiDict(
            (name, value)  # httpx gives the names in lower case
            for name, value in request.headers.multi_items()
            if name not in _HOP_BY_HOP
        )
        # A bytes body (httpx's ByteStream) goes with its length; anything else is an async
        # stream, which aiohttp sends chunked, each piece as it is produced.
        stream = request.stream
        data: Any = (b"".join(stream) or None) if isinstance(stream, httpx.ByteStream) else stream
        with _mapped(request):
            response = await session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=_timeout(**request.extensions.get("timeout", {})),
            )
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            extensions={
                "http_version": f"HTTP/{response.version.major}.{response.version.minor}".encode()
                if response.version
                else b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _Handler(ResponseHandler):
    """aiohttp's connection protocol, except that a body that fails to parse (a chunk size
    that is no number, say) fails the body's reader too. aiohttp 3.14 records that error on
    the protocol alone, and when the upstream then closes the connection, a reader waiting
    for the body may be left waiting for ever, its read timeout dropped with the error."""

    def set_exception(self, exc: BaseException, *args: Any) -> None:
        payload = self._payload
        super().set_exception(exc, *args)
        # Only a parse error: aiohttp itself hands a read timeout or a lost connection on.
        unhandled = isinstance(exc, HttpProcessingError)
        if unhandled and payload is not None and not payload.is_eof() and not payload.exception():
            payload.set_exception(aiohttp.ClientPayloadError(f"unreadable body: {exc}"))


class _Body(httpx.AsyncByteStream):
    """The response body, each piece as it arrives; `aclose` hands the connection back to
    the pool (or drops it, if the body was not read to its end)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for piece in self._response.content.iter_any():
                yield piece

    async def aclose(self) -> None:
        self._response.release()


@functools.lru_cache(maxsize=16)
def _timeout(
    connect: float | None = None,
    read: float | None = None,
    write: float | None = None,
    pool: float | None = None,
) -> aiohttp.ClientTimeout:
    """httpx's timeouts in aiohttp's terms. `sock_read` bounds the wait for the response head
    and then for each piece of the body, as httpx's `read` does. aiohttp's `connect` covers
    waiting for a pooled connection and making a new one, so it gets both bounds. aiohttp has
    no write timeout; a stalled upload ends at the read timeout."""
    both = None if connect is None or pool is None else connect + pool
    return aiohttp.ClientTimeout(total=None, connect=both, sock_connect=connect, sock_read=read)


@contextlib.contextmanager
def _mapped(request: httpx.Request) -> Iterator[None]:
    """aiohttp's errors as the httpx errors kallm handles (`TimeoutException` -> 504,
    `HTTPError` -> 502 or a broken stream). Order matters: aiohttp's timeouts are also
    connection errors."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:
        raise httpx.ConnectTimeout(str(error), request=request) from error
    except TimeoutError as error:  # aiohttp's SocketTimeoutError and ServerTimeoutError too
        raise httpx.ReadTimeout(str(error) or "read timed out", request=request) from error
    except aiohttp.ClientConnectorError as error:
        raise httpx.ConnectError(str(error), request=request) from error
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as error:
        # A connection closed before the head, or a body cut short: httpx says the same.
        raise httpx.RemoteProtocolError(str(error), request=request) from error
    except aiohttp.ClientResponseError as error:  # a response aiohttp could not parse
        raise httpx.RemoteProtocolError(str(error), request=request) from error
    except aiohttp.ClientConnectionError as error:  # reset, broken pipe, ...
        raise httpx.ReadError(str(error), request=request) from error
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as error:
        raise httpx.UnsupportedProtocol(str(error), request=request) from error
    except aiohttp.ClientError as error:
        raise httpx.TransportError(str(error), request=request) from error


class _NoCookies(httpx.Cookies):
    """A jar that stays empty. httpx's client would keep the cookies of every response and
    send them on later requests, so one caller's upstream cookie would travel with everyone's
    calls; and parsing them costs about 20 us a request."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass


class _Client(httpx.AsyncClient):
    """httpx's client with `_NoCookies` for its jar (the jar is only reached through
    `cookies`)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise AttributeError("kallm's upstream client keeps no cookies")


def upstream_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The client for every upstream call; `transport` replaces the network (tests)."""
    return _Client(
        transport=transport or AiohttpTransport(max_connections=1000),
        timeout=httpx.Timeout(
            settings.upstream_timeout, connect=min(10.0, settings.upstream_timeout)
        ),
        follow_redirects=False,
        trust_env=False,
    )
