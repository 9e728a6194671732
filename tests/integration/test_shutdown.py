"""SIGTERM while a stream is in flight: the stream completes, readiness fails during the
drain, and kallm exits 0."""

import signal
import threading
import time

import httpx
from processes import SERVER_KEY, start_kallm


def test_sigterm_drains_a_stream_in_flight_and_exits_0(tmp_path_factory, simulator, make_caller):
    proxy = start_kallm(tmp_path_factory, simulator, "kallm-drain", OPENAI_API_KEY=SERVER_KEY,
                        KALLM_SHUTDOWN_DELAY="1", KALLM_SHUTDOWN_GRACE="10")  # fmt: skip
    caller = make_caller(proxy)
    replies = []
    stream = threading.Thread(
        target=lambda: replies.append(caller.stream("Tell me a story [sim:slow]"))
    )
    try:
        stream.start()
        time.sleep(0.6)  # the stream has started: six chunks 0.4 s apart
        proxy.process.popen.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert httpx.get(f"{proxy.root}/ready").status_code == 503  # still accepting, not ready
        stream.join(15)
        assert proxy.process.popen.wait(15) == 0
    finally:
        proxy.process.stop()
    (reply,) = replies
    assert reply.cache == "MISS" and reply.finish_reason == "stop"
    assert len(reply.content_chunks) == 6
    try:
        httpx.get(f"{proxy.root}/health", timeout=1)
        raise AssertionError("kallm still accepts connections after the drain")
    except httpx.HTTPError:
        pass
