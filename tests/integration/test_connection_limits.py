"""Connection limits on a real kallm: head size (431), head read time (408 / close), idle
keep-alive time, and how many connections (the least recently used idle ones go first).

Raw sockets, because what matters here is what an HTTP client library would hide: when
the server closes, and what it wrote before closing. Waits poll with a deadline.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from processes import SERVER_KEY, Kallm, start_kallm

from kallm.server.limits import ConnectionTable, Throttle, head_size

HEADER_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 2.0
MAX_CONNECTIONS = 50
MAX_HEADER_SIZE = 8192
CLOSE_DEADLINE = 10.0  # generous: a slow box may run timers late, never early


@pytest.fixture(scope="module")
def limited(tmp_path_factory, simulator) -> Iterator[Kallm]:
    proxy = start_kallm(
        tmp_path_factory,
        simulator,
        "kallm-limits",
        OPENAI_API_KEY=SERVER_KEY,
        KALLM_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        KALLM_KEEPALIVE_TIMEOUT=str(KEEPALIVE_TIMEOUT),
        KALLM_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        KALLM_MAX_HEADER_SIZE=str(MAX_HEADER_SIZE),
    )
    yield proxy
    proxy.process.stop()


def address(proxy: Kallm) -> tuple[str, int]:
    host, port = proxy.root.removeprefix("http://").split(":")
    return host, int(port)


def rss_mb(proxy: Kallm) -> float:
    with open(f"/proc/{proxy.process.popen.pid}/status") as status:
        line = next(ln for ln in status if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def read_until_closed(sock: socket.socket, timeout: float = CLOSE_DEADLINE) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection (True) or `timeout` passes."""
    data, deadline = b"", time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, True
        if not piece:
            return data, True
        data += piece
    return data, False


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One Content-Length response from a keep-alive connection: (status, body)."""
    sock.settimeout(CLOSE_DEADLINE)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"closed mid-response: {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body


def get(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: kallm", *headers, "", ""]).encode()


def push_until_answered(sock: socket.socket, prefix: bytes, limit: int) -> int:
    """Send `prefix`, then header bytes that never end, until the server answers (the
    socket turns readable), the connection breaks, or `limit` bytes are sent."""
    sock.sendall(prefix)
    sock.setblocking(False)
    sent, piece = 0, b"a" * (1 << 20)
    try:
        while sent < limit:
            readable, writable, _ = select.select([sock], [sock], [], CLOSE_DEADLINE)
            if readable or not writable:
                break
            sent += sock.send(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.setblocking(True)
    return sent


def test_an_oversize_head_gets_431_and_closes_and_memory_stays_flat(limited):
    before = rss_mb(limited)
    for _ in range(4):  # the report: four 100 MB headers doubled the memory
        with socket.create_connection(address(limited)) as sock:
            sent = push_until_answered(sock, b"GET /health HTTP/1.1\r\nX-Big: ", 100 << 20)
            answer, closed = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        assert b"connection: close" in answer.lower()
        assert closed
        assert sent < 64 << 20  # kallm answered long before the client ran out
    assert rss_mb(limited) - before < 32


def test_a_head_is_measured_exactly_even_when_it_arrives_in_one_piece(limited):
    def status_for(head_bytes: int) -> bytes:
        pad = "a" * (head_bytes - len(get("/health", "X-Pad: ")))
        with socket.create_connection(address(limited)) as sock:
            sock.sendall(get("/health", f"X-Pad: {pad}", "Connection: close"))
            answer, _ = read_until_closed(sock)
        return answer.split(b"\r\n", 1)[0]

    assert status_for(MAX_HEADER_SIZE - 100) == b"HTTP/1.1 200 OK"
    assert status_for(MAX_HEADER_SIZE + 100).startswith(b"HTTP/1.1 431")


def test_an_idle_connection_is_closed_after_the_header_timeout(limited):
    with socket.create_connection(address(limited)) as sock:
        opened = time.monotonic()
        answer, closed = read_until_closed(sock)
        waited = time.monotonic() - opened
    assert closed and answer == b""  # it never asked: no answer, just the close
    assert waited >= HEADER_TIMEOUT * 0.9


def test_a_slowloris_connection_gets_408_after_the_header_timeout(limited):
    head = get("/health", "X-Slow: " + "b" * 1000)[:-2]  # never finishes
    with socket.create_connection(address(limited)) as sock:
        opened = time.monotonic()
        answered = False
        for byte in head:  # one byte every 50 ms: 50 s for the whole head
            if select.select([sock], [], [], 0.05)[0]:
                answered = True
                break
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if time.monotonic() - opened > CLOSE_DEADLINE:
                break
        answer, closed = read_until_closed(sock)
        waited = time.monotonic() - opened
    assert answered and closed
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert HEADER_TIMEOUT * 0.9 <= waited < CLOSE_DEADLINE


def test_more_idle_connections_than_the_limit_do_not_lock_out_health(limited):
    offset = limited.log_size()
    flood = [socket.create_connection(address(limited)) for _ in range(4 * MAX_CONNECTIONS)]
    try:
        started = time.monotonic()
        with socket.create_connection(address(limited)) as sock:
            sock.sendall(get("/health"))
            status, body = read_response(sock)
        assert status == 200 and b"ok" in body
        # It got in because the oldest idle connections were closed to make room, not
        # because they timed out (1 s): it took far less than that.
        assert time.monotonic() - started < HEADER_TIMEOUT
        lines = limited.log_lines_since(offset, 1)
        assert any("to make room under KALLM_MAX_CONNECTIONS=50" in ln for ln in lines), lines
        oldest, _ = read_until_closed(flood[0], timeout=1)
        assert oldest == b""
    finally:
        for sock in flood:
            sock.close()


def test_a_keep_alive_client_reuses_one_connection_past_the_header_timeout(limited):
    with socket.create_connection(address(limited)) as sock:
        for pause in (0.0, 0.2, HEADER_TIMEOUT * 1.3):  # idle longer than the header timeout
            time.sleep(pause)
            sock.sendall(get("/health"))
            assert read_response(sock) == (200, b'{"status":"ok"}')
        idle = time.monotonic()
        answer, closed = read_until_closed(sock)
        assert closed and answer == b""
        assert time.monotonic() - idle >= KEEPALIVE_TIMEOUT * 0.9


def test_an_http_client_and_a_stream_longer_than_every_timeout_work(limited, make_caller):
    with httpx.Client(base_url=limited.root, timeout=30) as client:
        peers = {client.get("/health").extensions["network_stream"] for _ in range(5)}
    assert len(peers) == 1  # five requests, one connection
    reply = make_caller(limited).stream("Tell me a story [sim:slow]")  # about 2.4 s
    assert reply.finish_reason == "stop" and len(reply.content_chunks) == 6
    assert reply.finished > 1.5 * HEADER_TIMEOUT  # no timer runs while a request is served


def test_new_connections_get_503_only_when_every_connection_is_busy(
    tmp_path_factory, simulator, make_caller
):
    proxy = start_kallm(tmp_path_factory, simulator, "kallm-two-connections",
                        OPENAI_API_KEY=SERVER_KEY, KALLM_MAX_CONNECTIONS="2")  # fmt: skip
    try:
        callers = [make_caller(proxy) for _ in range(2)]
        replies: list[object] = []
        streams = [
            threading.Thread(target=lambda c=c: replies.append(c.stream("Story [sim:slow]")))
            for c in callers
        ]
        for stream in streams:
            stream.start()
        deadline = time.monotonic() + CLOSE_DEADLINE
        answer = b""
        while time.monotonic() < deadline and not answer.startswith(b"HTTP/1.1 503"):
            time.sleep(0.1)  # until both streams are in flight
            with socket.create_connection(address(proxy)) as sock:
                sock.sendall(get("/health", "Connection: close"))
                answer, _ = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
        for stream in streams:
            stream.join(15)
        assert len(replies) == 2  # the busy ones were never cut off
        assert httpx.get(f"{proxy.root}/health").status_code == 200
    finally:
        proxy.process.stop()


# The decisions behind them, without a server.


def test_the_table_gives_up_the_least_recently_idle_connection():
    table: ConnectionTable[str] = ConnectionTable(3)
    assert table.admit("a") == [] and table.admit("b") == [] and table.admit("c") == []
    table.busy("a")
    table.busy("b")
    table.idle("a")  # a is idle again, more recently than c
    assert table.admit("d") == ["c"]
    assert table.admit("e") == ["a"]
    table.busy("d")
    table.busy("e")
    assert table.admit("f") is None  # b, d and e are all busy: refuse, close nothing
    assert len(table) == 3
    table.remove("b")
    assert table.admit("f") == []


def test_the_throttle_logs_once_per_interval_with_the_count():
    throttle = Throttle(interval=10)
    assert throttle.event("idle", now=100) == 1
    assert [throttle.event("idle", now=101 + i) for i in range(3)] == [0, 0, 0]
    assert throttle.event("evicted", now=102) == 1  # reasons are counted apart
    assert throttle.next_due() == 110
    assert throttle.due(now=105) == {}
    assert throttle.due(now=110) == {"idle": 3}
    assert throttle.next_due() is None


def test_head_size_counts_the_request_line_and_header_lines():
    raw = b"GET /v1/x HTTP/1.1\r\nHost: a\r\nX-Y: zz\r\n\r\n"
    assert head_size(b"GET", b"/v1/x", [(b"host", b"a"), (b"x-y", b"zz")]) == len(raw)
