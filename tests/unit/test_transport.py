"""The upstream client against real local servers: what crosses, and how failures map.

Each test starts an aiohttp server (or a bare asyncio one) on 127.0.0.1 and talks to it
through `upstream_client`, so the aiohttp transport underneath is the one kallm runs with.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from kallm.settings import Settings
from kallm.transport import AiohttpTransport, upstream_client

pytestmark = pytest.mark.asyncio

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WAIT = 5.0  # a bound on waiting for an event that should come at once, not a sleep


def settings(timeout: float = 30.0) -> Settings:
    return Settings(
        openai_base_url="http://127.0.0.1:1/v1", openai_api_key="sk-test", upstream_timeout=timeout
    )


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve a handler on every path of a free port; its root URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_streamed_body_arrives_piece_by_piece(serve):
    first_seen = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        await asyncio.wait_for(first_seen.wait(), WAIT)  # the client has the first piece
        await response.write(b"data: two\n\n")
        await response.write_eof()
        return response

    root = await serve(handler)
    async with upstream_client(settings()) as client:
        response = await client.send(client.build_request("GET", f"{root}/stream"), stream=True)
        pieces = []
        async for piece in response.aiter_raw():
            pieces.append(piece)
            first_seen.set()
        await response.aclose()
    assert response.status_code == 200
    assert pieces == [b"data: one\n\n", b"data: two\n\n"]


async def test_raw_bytes_and_content_encoding_cross_untouched(serve):
    compressed = gzip.compress(b'{"answer": "yes"}' * 50)

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.headers["accept-encoding"] == "gzip"
        return web.Response(
            body=compressed, headers={"content-encoding": "gzip", "content-type": "text/plain"}
        )

    root = await serve(handler)
    async with upstream_client(settings()) as client:
        request = client.build_request("GET", f"{root}/z", headers={"accept-encoding": "gzip"})
        response = await client.send(request, stream=True)
        raw = b"".join([piece async for piece in response.aiter_raw()])
        await response.aclose()
    assert raw == compressed
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-length"] == str(len(compressed))


async def test_headers_cross_as_sent_both_ways(serve):
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.update((name.lower(), value) for name, value in request.headers.items())
        seen["path"] = request.path_qs
        response = web.Response(status=201, reason="Made", body=b"{}")
        response.headers.add("x-multi", "a")
        response.headers.add("x-multi", "b")
        return response

    root = await serve(handler)
    async with upstream_client(settings()) as client:
        request = client.build_request(
            "POST", f"{root}/v1/x?q=a%20b", headers={"x-custom": "1"}, content=b"{}"
        )
        response = await client.send(request)
    assert response.status_code == 201
    assert response.reason_phrase == "Made"
    assert response.headers.get_list("x-multi") == ["a", "b"]
    assert seen["x-custom"] == "1"
    assert seen["content-length"] == "2"
    assert seen["path"] == "/v1/x?q=a%20b"
    assert "content-type" not in seen  # aiohttp added none of its own


async def test_a_request_body_streams_upstream(serve):
    first_arrived = asyncio.Event()
    received: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        async for piece in request.content.iter_any():
            received.append(piece)
            first_arrived.set()
        return web.Response(body=b"".join(received))

    async def body() -> AsyncIterator[bytes]:
        yield b"first,"
        # Only sent once the server has the first piece: a buffering client would hang here.
        await asyncio.wait_for(first_arrived.wait(), WAIT)
        yield b"second"

    root = await serve(handler)
    async with upstream_client(settings()) as client:
        request = client.build_request("POST", f"{root}/upload", content=body())
        response = await client.send(request)
    assert response.content == b"first,second"
    assert received[0] == b"first,"


async def test_redirects_are_not_followed(serve):
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"location": "/elsewhere"})

    root = await serve(handler)
    async with upstream_client(settings()) as client:
        response = await client.get(f"{root}/moved")
    assert response.status_code == 302
    assert response.headers["location"] == "/elsewhere"


async def test_no_cookies_are_kept_between_requests(serve):
    cookies_seen: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        cookies_seen.append(request.headers.get("cookie"))
        return web.Response(text="ok", headers={"set-cookie": "session=secret; Path=/"})

    # A host name: aiohttp's own jar would never keep cookies from an IP address anyway.
    root = (await serve(handler)).replace("127.0.0.1", "localhost")
    async with upstream_client(settings()) as client:
        first = await client.get(f"{root}/a")
        await client.get(f"{root}/b")
    assert first.headers["set-cookie"] == "session=secret; Path=/"  # passed on, not kept
    assert cookies_seen == [None, None]
    assert not client.cookies


async def test_an_upstream_that_never_answers_times_out(serve):
    never = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await never.wait()
        return web.Response()

    root = await serve(handler)
    async with upstream_client(settings(timeout=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{root}/slow")
    never.set()  # lets the server shut down


async def test_a_stalled_body_times_out_while_reading(serve):
    never = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"partial")
        await never.wait()
        return response

    root = await serve(handler)
    async with upstream_client(settings(timeout=0.2)) as client:
        response = await client.send(client.build_request("GET", f"{root}/s"), stream=True)
        with pytest.raises(httpx.ReadTimeout):
            async for _ in response.aiter_raw():
                pass
        await response.aclose()
    never.set()


async def test_a_body_cut_short_is_a_protocol_error():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, upstream_client(settings()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_an_unreadable_chunk_after_the_head_is_a_protocol_error():
    # The head arrives first, then a chunk size that is no number, then the close: aiohttp
    # alone would leave the body's reader waiting for ever.
    head_read = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await head_read.wait()
        writer.write(b"zz\r\n{}\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, upstream_client(settings()) as client:
        request = client.build_request("GET", f"http://127.0.0.1:{port}/")
        response = await client.send(request, stream=True)
        head_read.set()
        with pytest.raises(httpx.RemoteProtocolError):
            await asyncio.wait_for(response.aread(), 10)
        await response.aclose()


async def test_a_refused_connection_is_a_connect_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens on it once closed
    async with upstream_client(settings()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_aclose_closes_the_session_and_its_connections():
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if await reader.read() == b"":  # kept alive until the client hangs up
            closed.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AiohttpTransport()
    async with server:
        client = upstream_client(settings(), transport)
        assert (await client.get(f"http://127.0.0.1:{port}/")).text == "ok"
        assert not closed.is_set()  # pooled, not closed after the answer
        await client.aclose()
        await asyncio.wait_for(closed.wait(), WAIT)
    with pytest.raises(RuntimeError, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", f"http://127.0.0.1:{port}/"))


async def test_a_transport_passed_in_is_used_unchanged():
    mock = httpx.MockTransport(lambda request: httpx.Response(204))
    async with upstream_client(settings(), mock) as client:
        assert (await client.get("http://upstream.test/")).status_code == 204
