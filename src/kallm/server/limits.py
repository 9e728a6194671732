"""Bounds on client connections: head size, head read time, idle time and how many.

uvicorn's httptools protocol accepts request heads of any size (llhttp has no limit and
httptools buffers a header value whole before handing it over), gives a connection that
sends nothing all the time it likes, and keeps every connection it accepts until the
process runs out of file descriptors. `bounded_protocol` returns a subclass that, in the
manner of nginx's client_header_timeout, large_client_header_buffers and keepalive_timeout:

- answers 431 and closes once a request head (request line and headers) passes
  KALLM_MAX_HEADER_SIZE bytes, counting bytes as they arrive, so a connection holds at
  most the limit plus one read (256 KiB) of head;
- closes a new connection that has not sent a whole head KALLM_HEADER_TIMEOUT seconds
  after it opened (408 if it sent part of one), and an idle keep-alive connection after
  KALLM_KEEPALIVE_TIMEOUT; once the next request's first byte arrives, its head has
  KALLM_HEADER_TIMEOUT to complete. (The header timer starts at that byte, not at the
  previous response, so the keep-alive setting keeps its meaning: an idle connection
  between requests is governed by KALLM_KEEPALIVE_TIMEOUT alone.)
- at KALLM_MAX_CONNECTIONS makes room for a new connection by closing the least recently
  used idle one (no request in flight), and answers 503 only when every one is busy, so
  a flood of idle connections cannot lock out /health or real clients.

Each kind of close is logged at most once per 10 s per reason, with a count. The decisions
(which connection goes, when to log) are plain classes below; the protocol does the I/O.
"""

from __future__ import annotations

import asyncio
import http
import logging
import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("kallm.server.limits")

LOG_INTERVAL = 10.0  # seconds: at most one line per reason this often
# After answering 431/408/503, read and drop what the client still sends, for this long
# and this many bytes at most, before closing: closing with unread bytes makes the kernel
# send a reset, which can destroy the answer before the client reads it (nginx's
# "lingering close").
LINGER = 1.0
LINGER_BYTES = 1 << 20

Reason = Literal["header_too_large", "slow_head", "idle", "evicted", "refused"]
_MESSAGES: dict[Reason, tuple[int, str]] = {
    "header_too_large": (
        logging.WARNING,
        "answered 431 and closed {count} connection(s) whose request head passed "
        "KALLM_MAX_HEADER_SIZE={max_header_size} bytes",
    ),
    "slow_head": (
        logging.WARNING,
        "answered 408 and closed {count} connection(s) that sent only part of a request "
        "head within KALLM_HEADER_TIMEOUT={header_timeout:g}s",
    ),
    "idle": (
        logging.INFO,
        "closed {count} new connection(s) that sent nothing within "
        "KALLM_HEADER_TIMEOUT={header_timeout:g}s",
    ),
    "evicted": (
        logging.WARNING,
        "closed {count} idle connection(s) to make room under "
        "KALLM_MAX_CONNECTIONS={max_connections}",
    ),
    "refused": (
        logging.WARNING,
        "answered 503 to {count} new connection(s): all KALLM_MAX_CONNECTIONS="
        "{max_connections} are busy with requests",
    ),
}


@dataclass(frozen=True)
class Limits:
    max_header_size: int  # bytes of request line and headers
    header_timeout: float  # seconds for a whole head
    keepalive_timeout: float  # seconds idle between requests
    max_connections: int


C = TypeVar("C", bound=Hashable)


class ConnectionTable(Generic[C]):
    """Which connections are open, which are idle, and in what order they went idle.

    Idle means no request in flight: new, between requests, or reading a request head.
    """

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._idle: OrderedDict[C, None] = OrderedDict()  # least recently used first
        self._busy: set[C] = set()

    def __len__(self) -> int:
        return len(self._idle) + len(self._busy)

    def admit(self, connection: C) -> list[C] | None:
        """Admit a new, idle `connection`: the idle connections to close to make room
        for it (least recently used first), or None when every open one is busy."""
        excess = len(self) + 1 - self.max_connections
        if excess > len(self._idle):
            return None
        victims = [self._idle.popitem(last=False)[0] for _ in range(max(excess, 0))]
        self._idle[connection] = None
        return victims

    def busy(self, connection: C) -> None:
        if connection in self._idle:  # not one already closed and removed
            del self._idle[connection]
            self._busy.add(connection)

    def idle(self, connection: C) -> None:
        if connection in self._busy:
            self._busy.discard(connection)
            self._idle[connection] = None

    def remove(self, connection: C) -> None:
        self._idle.pop(connection, None)
        self._busy.discard(connection)


class Throttle:
    """At most one log line per reason per `interval`, carrying the count since the last."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._held: dict[str, int] = {}
        self._next: dict[str, float] = {}

    def event(self, reason: str, now: float) -> int:
        """Count one event: how many to report now (0: hold them for a later line)."""
        self._held[reason] = self._held.get(reason, 0) + 1
        return self._take(reason, now) if now >= self._next.get(reason, -math.inf) else 0

    def due(self, now: float) -> dict[str, int]:
        """The held counts whose interval has passed, taken for reporting."""
        return {
            reason: self._take(reason, now)
            for reason in list(self._held)
            if now >= self._next.get(reason, -math.inf)
        }

    def next_due(self) -> float | None:
        """When the earliest held count may be reported; None if nothing is held."""
        return min((self._next[reason] for reason in self._held), default=None)

    def _take(self, reason: str, now: float) -> int:
        self._next[reason] = now + self.interval
        return self._held.pop(reason)


def head_size(method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """Bytes of a request head as sent: `METHOD url HTTP/1.1` and `name: value` lines."""
    return len(method) + len(url) + 12 + sum(len(n) + len(v) + 4 for n, v in headers) + 2


def plain_response(status: int, text: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


class Guard:
    """What every connection of one server shares: the limits, the table, the log."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.table: ConnectionTable[BoundedHttpToolsProtocol] = ConnectionTable(
            limits.max_connections
        )
        self.lingering = 0  # answered and closing: not in the table, still an open file
        self._throttle = Throttle()
        self._flush: asyncio.TimerHandle | None = None

    def note(self, reason: Reason, loop: asyncio.AbstractEventLoop) -> None:
        """Count a close for `reason`, logging now or in a later summed line."""
        count = self._throttle.event(reason, loop.time())
        if count:
            self._log(reason, count)
        elif self._flush is None:
            self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        when = self._throttle.next_due()
        if when is not None:
            self._flush = loop.call_at(when, self._flush_due, loop)

    def _flush_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush = None
        for reason, count in self._throttle.due(loop.time()).items():
            self._log(reason, count)  # type: ignore[arg-type]  # only Reasons are held
        self._schedule(loop)

    def _log(self, reason: Reason, count: int) -> None:
        level, message = _MESSAGES[reason]
        limits = self.limits
        text = message.format(
            count=count,
            max_header_size=limits.max_header_size,
            header_timeout=limits.header_timeout,
            max_connections=limits.max_connections,
        )
        log.log(level, text, extra={"fields": {"reason": reason, "count": count}})


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop httptools parsing the rest."""


Waiting = Literal["open", "head", "keepalive", "busy"]


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with kallm's connection limits (see the module doc).

    Written against uvicorn 0.54, it relies on HttpToolsProtocol's internals: `parser`,
    `url`, `headers`, `cycle`, `pipeline`, `flow` and `_start_asgi_task`.
    """

    guard: ClassVar[Guard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: Waiting = "open"  # what the timer, if armed, waits for
        self._awaiting_head = True  # the parser is between requests or inside a head
        self._head_bytes = 0  # bytes received since the current head began
        self._lingering = False  # answered and closing: drop whatever still arrives
        self._dropped = 0  # bytes dropped while lingering

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        victims = self.guard.table.admit(self)
        if victims is None:
            self._answer_and_close(503, "kallm is at its connection limit", "refused")
            return
        for victim in victims:
            victim._evict()
        self._arm(self.guard.limits.header_timeout, "open")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.table.remove(self)
        if self._lingering:
            self._lingering = False
            self.guard.lingering -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        limits = self.guard.limits
        if self._awaiting_head:
            if self._waiting == "keepalive":
                self._arm(limits.header_timeout, "head")  # the next request has begun
            elif self._waiting == "open":
                self._waiting = "head"  # same deadline: a whole head within the timeout
            self._head_bytes += len(data)
        # As HttpToolsProtocol.data_received, which cannot tell our stop from bad input.
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _HeadTooLarge):
                self._head_too_large()
            else:
                self._invalid_request()
            return
        except httptools.HttpParserError:
            self._invalid_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # A head still unfinished after this chunk: the bytes so far are all head.
        if self._awaiting_head and self._head_bytes > limits.max_header_size:
            self._head_too_large()

    def on_headers_complete(self) -> None:
        # A head that arrived whole in one read is measured here, from what was parsed.
        size = head_size(self.parser.get_method(), self.url, self.headers)
        if size > self.guard.limits.max_header_size:
            raise _HeadTooLarge
        self._awaiting_head = False
        self._head_bytes = 0
        self._disarm()
        self._waiting = "busy"
        self.guard.table.busy(self)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        # As HttpToolsProtocol.on_response_complete, with kallm's keep-alive timer.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.guard.table.idle(self)
        limits = self.guard.limits
        if self._head_bytes:  # the next request began while this answer was sent
            self._arm(limits.header_timeout, "head")
        else:
            self._arm(limits.keepalive_timeout, "keepalive")

    def _arm(self, seconds: float, waiting: Waiting) -> None:
        self._disarm()
        self._waiting = waiting
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._waiting == "head":
            self._answer_and_close(408, "request head not received in time", "slow_head")
            return
        if self._waiting == "open":
            self.guard.note("idle", self.loop)
        self.guard.table.remove(self)
        self.transport.close()  # an idle keep-alive connection: closing it is routine

    def _unsupported_upgrade_warning(self) -> None:
        # kallm serves no WebSockets on purpose (ws="none"): an upgrade request is served as
        # plain HTTP, and uvicorn's two warnings per such request would be log spam.
        pass

    def _evict(self) -> None:
        """Close this idle connection (already out of the table) to make room."""
        self._disarm()
        self.guard.note("evicted", self.loop)
        self.transport.close()

    def _head_too_large(self) -> None:
        self._answer_and_close(431, "request header fields too large", "header_too_large")

    def _invalid_request(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def _answer_and_close(self, status: int, text: str, reason: Reason) -> None:
        guard = self.guard
        guard.note(reason, self.loop)
        guard.table.remove(self)
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head while an answer is still being sent: let that answer
            # finish, then close, and read nothing more meanwhile.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            self._lingering = True
            guard.lingering += 1
            return
        self.transport.write(plain_response(status, text))
        if guard.lingering >= guard.limits.max_connections or not self.transport.can_write_eof():
            self.transport.close()
            return
        self._lingering = True
        guard.lingering += 1
        self.transport.write_eof()
        self.flow.resume_reading()
        self._timer = self.loop.call_later(LINGER, self.transport.close)


def bounded_protocol(limits: Limits) -> type[BoundedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` whose connections share `limits`."""
    guard = Guard(limits)

    class _Bound(BoundedHttpToolsProtocol):
        pass

    _Bound.guard = guard
    return _Bound
