"""Log lines: human-readable by default, JSON lines with KALLM_LOG_JSON=true.

Request lines carry their fields in `extra={"fields": {...}}`; nothing here ever formats
an API key or prompt text.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from kallm.upstream import BrokenStream


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return text


def _not_a_broken_stream(record: logging.LogRecord) -> bool:
    """A stream broken off upstream is already logged as the request's one line; the ASGI
    server's traceback for the connection kallm drops on purpose would be noise."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, BaseExceptionGroup):  # task groups may wrap it
        return error.subgroup(BrokenStream) is None
    return not isinstance(error, BrokenStream)


class RepeatFilter:
    """Lets through one warning (or error) of a kind per `interval` seconds: an outage
    repeats the same failure on every request, and thousands of identical lines bury the one
    that matters. A kind is the logger and the message's format string; the next line of a
    kind after its quiet interval says how many were left out. Counters keep counting."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._kinds: dict[tuple[str, str], tuple[float, int]] = {}  # kind: (last shown, left out)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, str(record.msg))
        now = self._clock()
        shown, left_out = self._kinds.get(kind, (-math.inf, 0))
        if now - shown < self._interval:
            self._kinds[kind] = (shown, left_out + 1)
            return False
        if len(self._kinds) > 1000:  # kinds are format strings, but stay bounded anyway
            self._kinds.clear()
        self._kinds[kind] = (now, 0)
        if left_out:
            record.msg = f"{record.msg} [{left_out} more like this in the last {now - shown:.0f}s]"
        return True


def configure(json_lines: bool, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JSONFormatter() if json_lines else _TextFormatter())
    handler.addFilter(_not_a_broken_stream)
    handler.addFilter(RepeatFilter())
    for name in ("kallm", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
