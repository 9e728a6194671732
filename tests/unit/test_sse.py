"""The SSE parser: the same events however the bytes are split, and linear time."""

from __future__ import annotations

import gc
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from kallm.sse import SSEParser, event


def reference(body: bytes) -> list[str]:
    """The events in `body` read in one go: the plain reading of HTML § 9.2.5 (for the
    fields kallm keeps) that the incremental parser must match for any split."""
    text = body.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    events, data = [], []
    for line in text.split("\n")[:-1]:  # the last piece has no line end yet
        if not line:
            if data:
                events.append("\n".join(data))
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    return events


def parse(*chunks: bytes) -> list[str]:
    parser = SSEParser()
    return [data for chunk in chunks for data in parser.feed(chunk)]


SAMPLES = [
    b'data: {"a": 1}\n\ndata: [DONE]\n\n',
    b"data: one\r\ndata: two\r\n\r\ndata: three\r\rdata:four\n\n",
    b": keep-alive comment\nevent: delta\nid: 7\nretry: 100\ndata: x\n\n",
    "data: caf\u00e9 \u20ac \U0001f600 \u65e5\u672c\n\n".encode(),
    b"data:no space\ndata:  two spaces\ndata\ndata:\n\n",
    b"data: partial event with no blank line\n",
]


def test_every_sample_matches_the_reference_split_at_every_byte():
    for body in SAMPLES:
        expected = reference(body)
        assert parse(body) == expected
        assert parse(*(body[i : i + 1] for i in range(len(body)))) == expected
        for cut in range(len(body) + 1):
            assert parse(body[:cut], body[cut:]) == expected, (body, cut)


def test_line_ends_lf_crlf_and_cr_all_end_lines():
    assert parse(b"data: a\n\n") == ["a"]
    assert parse(b"data: a\r\n\r\n") == ["a"]
    assert parse(b"data: a\r\r") == ["a"]
    assert parse(b"data: a\r\n\n") == ["a"]
    assert parse(b"data: a\r", b"\n", b"\r", b"\n") == ["a"]  # CRLFs split across chunks
    assert parse(b"data: a\r", b"\n") == []  # one CRLF, not a line end and a blank line


def test_multi_line_data_is_joined_with_newlines():
    assert parse(b"data: line 1\ndata: line 2\ndata:\n\n") == ["line 1\nline 2\n"]


def test_comments_and_other_fields_are_ignored():
    body = b": ping\n\nevent: message\nid: 1\nretry: 5\ndata: kept\nfoo: bar\n\n"
    assert parse(body) == ["kept"]


def test_blank_lines_without_data_dispatch_nothing():
    assert parse(b"\n\n\r\n: only a comment\n\n") == []


def test_utf8_split_inside_a_character_decodes_whole():
    body = "data: \U0001f600\u20ac\n\n".encode()
    for cut in range(len(body) + 1):
        assert parse(body[:cut], body[cut:]) == ["\U0001f600\u20ac"]


def test_invalid_utf8_is_replaced_not_fatal():
    assert parse(b"data: \xff\xfe ok\n\n") == ["\ufffd\ufffd ok"]


def test_event_round_trips():
    assert parse(event('{"x": "y"}'), event("[DONE]")) == ['{"x": "y"}', "[DONE]"]


PIECES = [b"data:", b"data: ", b": c", b"event: e", b"x", b"\xc3\xa9", b"\xf0\x9f\x98", b"\x80"]
PIECES += [b"\n", b"\r", b"\r\n", b"\xff", b" "]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(PIECES), max_size=40),
    st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_any_split_of_any_stream_matches_the_reference(pieces, cuts):
    body = b"".join(pieces)
    points = sorted({min(cut, len(body)) for cut in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert parse(*chunks) == reference(body)


def _fastest_feed(parser: SSEParser, chunk: bytes, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        for _ in parser.feed(chunk):
            pass
        best = min(best, time.perf_counter() - started)
    return best


def test_a_chunk_costs_the_same_however_much_of_the_line_is_already_buffered():
    # The quadratic parser re-scanned everything buffered on every chunk: with 8 MB of
    # one line pending, each further 64 KB cost about 100x what the first did. Timing
    # only one chunk at a time, interleaved, and keeping the fastest of many, makes
    # noise unable to fake linearity and very unlikely to fake a regression: a slow
    # moment can only raise a sample, and the bound leaves a factor of ~10 to spare.
    chunk = b"a" * 65536
    shallow, deep = SSEParser(), SSEParser()
    for _ in deep.feed(b"data: " + b"a" * (8 * 1024 * 1024)):
        pass
    gc.disable()
    try:
        fastest_shallow = fastest_deep = float("inf")
        for _ in range(10):
            fastest_shallow = min(fastest_shallow, _fastest_feed(shallow, chunk, 3))
            fastest_deep = min(fastest_deep, _fastest_feed(deep, chunk, 3))
    finally:
        gc.enable()
    assert fastest_deep < 10 * fastest_shallow, (fastest_deep, fastest_shallow)
    # and the buffered line still comes out whole
    (data,) = list(deep.feed(b"\n\n"))
    assert len(data) == 8 * 1024 * 1024 + 30 * 65536
