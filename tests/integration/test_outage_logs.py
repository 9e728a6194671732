"""A store outage is logged, not shouted (issue 10, item 16): every request survives it and
is counted, but the log gets one line of a kind per interval."""

from __future__ import annotations

import httpx
from processes import MODEL, SERVER_KEY, free_port, start_kallm


def test_a_redis_outage_logs_a_line_an_interval(tmp_path_factory, simulator):
    proxy = start_kallm(
        tmp_path_factory, simulator, "kallm-redis-down", OPENAI_API_KEY=SERVER_KEY,
        KALLM_BACKEND=f"redis://127.0.0.1:{free_port()}/0",
    )  # fmt: skip
    try:
        offset = proxy.log_size()
        with httpx.Client(timeout=30) as client:
            for number in range(150):
                prompt = f"Question {number} while Redis is down?"
                body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
                answer = client.post(f"{proxy.base_url}/chat/completions", json=body)
                assert answer.status_code == 200
        assert proxy.stats()["store_errors"] >= 150
        lines = proxy.log_lines_since(offset, 150)
        warnings = [line for line in lines if " WARNING " in line]
        # A few kinds (lookup, store, start-up retries), each once in these seconds.
        assert 1 <= len(warnings) <= 6, warnings
    finally:
        proxy.process.stop()
