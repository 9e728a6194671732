"""A hostile stand-in upstream for kallm's integration tests (a test double).

It answers every API kallm caches (OpenAI chat completions, completions and Responses,
Anthropic Messages, Gemini) with exactly the bytes a test scripts: malformed JSON, broken
framing, resets, hangs, slow drips, huge bodies. It is a raw asyncio HTTP/1.1 server, not an
ASGI app, so that it can send precisely what (and fail precisely how) a broken provider would.

A request is matched to its script by its model name: the JSON body's `model`, or for Gemini
the `{model}` of `/v1beta/models/{model}:method`. Control calls on the same port:

    POST /_hostile/script  {"name": str, "answer": ANSWER}  requests for model `name` get it
    GET  /_hostile/calls   {"calls": {name: count}, "active": {name: count}}
    GET  /_hostile/health  200 once listening

ANSWER (every field optional):

    status      HTTP status (200)
    headers     [[name, value], ...] (default: content-type application/json)
    parts       the body, in order: str (UTF-8), {"b64": str}, {"repeat": str, "times": n}
                (generated lazily in 64 KiB pieces, so huge bodies cost no memory here), or
                {"drip": str, "every": seconds} (sent one byte at a time)
    interval    seconds to wait between parts (0)
    pace        seconds to wait after each 64 KiB of a repeated part (0)
    framing     "length" (Content-Length, the default), "chunked", or "close" (neither:
                the body ends when the connection closes)
    length      a Content-Length to announce instead of the real one
    end         "finish" (default), "reset" (TCP RST once the parts are out) or "hang"
                (once the parts are out, send nothing more until the client goes away)
    silent      true: never answer at all, not even the status line (a hang before headers)

Unscripted models get a small valid chat completion (or its stream, for `"stream": true`),
so a test can prime kallm's cache through this stand-in too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import re
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from typing import Any

PIECE = 64 * 1024
MAX_HEAD = 1024 * 1024
HANG_LIMIT = 120.0  # a hang ends by itself eventually, so no test can leave it behind
_GEMINI_PATH = re.compile(r"/v1(?:beta)?/models/([^/:]+):")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}


class Hostile:
    def __init__(self) -> None:
        self.scripts: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.active: Counter[str] = Counter()
        self.served = 0

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; whether the connection may carry another."""
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await _read_body(reader, headers)
        path = target.split("?", 1)[0]
        if path.startswith("/_hostile/"):
            await self._control(writer, method, path, body)
            return True
        name = _model_of(path, body)
        self.calls[name] += 1
        answer = self.scripts.get(name) or _default_answer(path, body)
        self.active[name] += 1
        try:
            return await self._answer(reader, writer, answer)
        finally:
            self.active[name] -= 1

    async def _control(
        self, writer: asyncio.StreamWriter, method: str, path: str, body: bytes
    ) -> None:
        if method == "POST" and path == "/_hostile/script":
            script = json.loads(body)
            self.scripts[str(script["name"])] = dict(script["answer"])
            reply: Any = {"ok": True}
        elif path == "/_hostile/calls":
            reply = {"calls": dict(self.calls), "active": dict(+self.active)}
        else:
            reply = {"ok": True}
        data = json.dumps(reply).encode()
        writer.write(_head(200, [("content-type", "application/json")], len(data)) + data)
        await writer.drain()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: dict[str, Any]
    ) -> bool:
        if answer.get("silent"):
            await _until_gone(reader)
            return False
        status = int(answer.get("status", 200))
        headers = [(str(k), str(v)) for k, v in answer.get("headers") or []]
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("content-type", "application/json"))
        parts = answer.get("parts") or []
        framing = answer.get("framing", "length")
        length = answer.get("length", sum(_part_size(p) for p in parts))
        if framing == "length":
            writer.write(_head(status, headers, int(length)))
        elif framing == "chunked":
            writer.write(_head(status, [*headers, ("transfer-encoding", "chunked")], None))
        else:
            writer.write(_head(status, [*headers, ("connection", "close")], None))
        await writer.drain()
        chunked = framing == "chunked"
        interval = float(answer.get("interval", 0))
        pace = float(answer.get("pace", 0))
        for index, part in enumerate(parts):
            if index and interval:
                await asyncio.sleep(interval)
            if isinstance(part, dict) and "drip" in part:
                data = part["drip"].encode()
                for i in range(len(data)):
                    await _send(writer, data[i : i + 1], chunked)
                    await asyncio.sleep(float(part["every"]))
                continue
            for piece in iter_part(part):
                await _send(writer, piece, chunked)
                if pace and isinstance(part, dict) and "repeat" in part:
                    await asyncio.sleep(pace)
        end = answer.get("end", "finish")
        if end == "reset":
            await _flushed(writer)
            _reset(writer)
            return False
        if end == "hang":
            await _until_gone(reader)
            return False
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        self.served += 1
        return framing != "close"


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return b"".join(chunks)
            chunks.append(chunk[:-2])
    return await reader.readexactly(int(headers.get("content-length", "0")))


def _model_of(path: str, body: bytes) -> str:
    if match := _GEMINI_PATH.match(path):
        return match.group(1)
    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return model if isinstance(model, str) else ""


def _head(status: int, headers: list[tuple[str, str]], length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _part_size(part: Any) -> int:
    if isinstance(part, dict) and "repeat" in part:
        return len(part["repeat"].encode()) * int(part["times"])
    return sum(len(piece) for piece in iter_part(part))


def iter_part(part: Any) -> Iterator[bytes]:
    """The bytes of one part of an answer's body, in pieces of at most about 64 KiB."""
    if isinstance(part, str):
        yield part.encode()
    elif "b64" in part:
        yield base64.b64decode(part["b64"])
    elif "drip" in part:
        yield part["drip"].encode()
    else:
        unit = part["repeat"].encode()
        per_piece = max(1, PIECE // len(unit))
        left = int(part["times"])
        while left > 0:
            count = min(per_piece, left)
            left -= count
            yield unit * count


def iter_body(parts: list[Any]) -> Iterator[bytes]:
    """The whole body an answer's `parts` make, as the stand-in sends it (for tests)."""
    for part in parts:
        yield from iter_part(part)


async def _send(writer: asyncio.StreamWriter, data: bytes, chunked: bool) -> None:
    if not data:
        return
    writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
    await writer.drain()


async def _flushed(writer: asyncio.StreamWriter) -> None:
    """Wait until what was written has left for the kernel, so a reset cuts after it."""
    transport = writer.transport
    for _ in range(1000):
        if transport.get_write_buffer_size() == 0:
            return
        await asyncio.sleep(0.005)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN, as a crashed or killed server does."""
    sock = writer.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _until_gone(reader: asyncio.StreamReader) -> None:
    """Say nothing until the client closes the connection (or HANG_LIMIT passes)."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(HANG_LIMIT):
            while await reader.read(PIECE):
                pass


def _default_answer(path: str, body: bytes) -> dict[str, Any]:
    """A small valid chat completion, so unscripted models prime kallm's cache."""
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    model = request.get("model") if isinstance(request, dict) else None
    if not path.endswith("/chat/completions") or not isinstance(model, str):
        error = {"message": f"not scripted: {path}", "type": "invalid_request_error"}
        return {"status": 404, "parts": [json.dumps({"error": error})]}
    base = {"id": "chatcmpl-hostile", "created": 1, "model": model}
    if request.get("stream") is True:
        events = []
        for delta, finish in (
            ({"role": "assistant", "content": ""}, None),
            ({"content": "Default answer."}, None),
            ({}, "stop"),
        ):
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            chunk = {**base, "object": "chat.completion.chunk", "choices": [choice]}
            events.append(f"data: {json.dumps(chunk)}\n\n")
        events.append("data: [DONE]\n\n")
        return {"headers": [["content-type", "text/event-stream"]], "parts": events}
    message = {"role": "assistant", "content": "Default answer."}
    completion = {
        **base,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    return {"parts": [json.dumps(completion)]}


async def serve(host: str, port: int) -> None:
    hostile = Hostile()
    server = await asyncio.start_server(hostile.connection, host, port, limit=MAX_HEAD)
    print(f"hostile upstream (test double) on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="A hostile stand-in upstream (test double).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
