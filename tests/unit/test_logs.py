"""Repeated failures are logged once an interval, with a count (issue 10, item 16)."""

from __future__ import annotations

import logging

from kallm.logs import RepeatFilter


def record(message: str, level: int = logging.WARNING, *args: object) -> logging.LogRecord:
    return logging.LogRecord("kallm", level, __file__, 1, message, args, None)


def test_one_line_per_kind_and_interval_then_the_count():
    now = [0.0]
    repeats = RepeatFilter(interval=10, clock=lambda: now[0])
    outage = "cache %s failed (%r); answering without it"
    shown = [repeats.filter(record(outage, logging.WARNING, "store", i)) for i in range(2853)]
    assert shown.count(True) == 1
    assert repeats.filter(record("another failure")) is True  # another kind is not held back
    now[0] = 10.5
    line = record(outage, logging.WARNING, "store", "x")
    assert repeats.filter(line) is True
    assert "[2852 more like this in the last 10s]" in line.getMessage()
    assert repeats.filter(record(outage, logging.WARNING, "store", "y")) is False


def test_info_lines_are_never_held_back():
    repeats = RepeatFilter(interval=10, clock=lambda: 0.0)
    assert all(repeats.filter(record("request", logging.INFO)) for _ in range(100))
