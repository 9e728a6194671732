"""Server-sent events: an incremental parser and the writer, per the WHATWG HTML spec."""

from __future__ import annotations

import codecs
from collections.abc import Iterator


class SSEParser:
    """Turns bytes as they arrive into the `data` of each complete event.

    Events end at a blank line; lines may end in LF, CRLF or CR. Only `data:` fields are
    kept (joined with newlines) since OpenAI-style streams carry everything there.

    Each call scans only the bytes it is given: the unfinished line is kept as a list of
    pieces and joined once when its end arrives, so one large event costs time in
    proportion to its size, not to its size squared.
    """

    def __init__(self) -> None:
        # Incremental, so a multi-byte character split across two chunks decodes whole.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line: list[str] = []  # the pieces of the line not yet ended
        self._after_cr = False  # the text so far ended in CR: a LF next is that line's end
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> Iterator[str]:
        text = self._decoder.decode(chunk)
        if not text:
            return  # nothing new (or only part of a character): the CR state stands
        if self._after_cr and text[0] == "\n":
            text = text[1:]  # the LF of a CRLF whose CR ended the previous chunk
        self._after_cr = text.endswith("\r")
        # HTML § 9.2.5 "Parsing an event stream": a line ends at CRLF, LF or CR. str
        # methods run in C, several times faster than scanning with a regular expression.
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        *ended, rest = text.split("\n")
        for tail in ended:
            self._line.append(tail)
            line = "".join(self._line)
            self._line = []
            if not line:
                if self._data:
                    yield "\n".join(self._data)
                    self._data = []
            elif line.startswith("data:"):
                self._data.append(line[6:] if line.startswith(" ", 5) else line[5:])
        if rest:
            self._line.append(rest)


def event(data: str) -> bytes:
    """One SSE event carrying `data` (a single line of JSON or a sentinel like [DONE])."""
    return f"data: {data}\n\n".encode()
