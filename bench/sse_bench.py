"""How long kallm's SSE parser takes for one large event arriving in 64 KB chunks.

A stream's parser runs on the event loop, so a slow parse stalls every other request. This
prints the parse time of single `data:` events of 1, 5, 10 and 20 MB, fed the way an
upstream stream arrives (64 KB at a time), best of a few runs:

    .venv/bin/python bench/sse_bench.py [--sizes 1 5 10 20] [--chunk 65536] [--runs 3]
"""

from __future__ import annotations

import argparse
import time

from kallm.sse import SSEParser

MB = 1024 * 1024


def one_event(size: int) -> bytes:
    """One SSE event whose data line is `size` bytes of JSON-ish text."""
    return b"data: " + b'{"x":"' + b"a" * (size - 8) + b'"}' + b"\n\n"


def parse_seconds(body: bytes, chunk: int) -> float:
    """Seconds to feed `body` in `chunk`-byte pieces, checking the one event comes out."""
    parser = SSEParser()
    events = 0
    started = time.perf_counter()
    for start in range(0, len(body), chunk):
        for _ in parser.feed(body[start : start + chunk]):
            events += 1
    elapsed = time.perf_counter() - started
    assert events == 1, events
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 5, 10, 20], help="MB")
    parser.add_argument("--chunk", type=int, default=64 * 1024, help="bytes per feed")
    parser.add_argument("--runs", type=int, default=3, help="runs per size; the best is shown")
    args = parser.parse_args()
    print(f"{'event':>8}  {'parse (best of ' + str(args.runs) + ')':>20}  {'MB/s':>8}")
    for size_mb in args.sizes:
        body = one_event(int(size_mb * MB))
        best = min(parse_seconds(body, args.chunk) for _ in range(args.runs))
        print(f"{size_mb:>6g}MB  {best * 1000:>18.1f}ms  {size_mb / best:>8.0f}")


if __name__ == "__main__":
    main()
