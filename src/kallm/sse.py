"""Server-sent events: an incremental parser and the writer, per the WHATWG HTML spec."""

from __future__ import annotations

from collections.abc import Iterator


class SSEParser:
    """Turns bytes as they arrive into the `data` of each complete event.

    Events end at a blank line; lines may end in LF, CRLF or CR. Only `data:` fields are
    kept (joined with newlines) since OpenAI-style streams carry everything there.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> Iterator[str]:
        self._buffer += chunk.decode("utf-8", errors="replace")
        *lines, self._buffer = self._buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        for line in lines:
            if not line:
                if self._data:
                    yield "\n".join(self._data)
                    self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)


def event(data: str) -> bytes:
    """One SSE event carrying `data` (a single line of JSON or a sentinel like [DONE])."""
    return f"data: {data}\n\n".encode()
