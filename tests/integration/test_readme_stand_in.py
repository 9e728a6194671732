"""The README's way to try `kallm serve` without a provider key, run as written: the
stand-in provider and kallm from the quick start's venv, in two processes, and the SDK with
a placeholder key."""

import re
from pathlib import Path

import openai
from processes import Process, clean_env, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_way_to_serve_against_the_stand_in_provider_works(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- first-hour: simulator -->\n```sh\n(.*?)```", readme, re.S)
    assert block is not None
    provider, serve = block[1].strip().splitlines()
    # Free ports instead of the README's 9000 and kallm's default 8080.
    upstream, port = free_port(), free_port()
    provider, serve = provider.replace("9000", str(upstream)), serve.replace("9000", str(upstream))
    env = clean_env(KALLM_PORT=str(port))
    started = []
    try:
        for name, line in (("provider", provider), ("kallm", serve)):
            # `exec env ...`: the shell becomes the command, so stopping it stops the server.
            process = Process(name, ["bash", "-c", f"exec env {line}"], env, tmp_path / name, ROOT)
            started.append(process)
        started[0].wait_until(f"http://127.0.0.1:{upstream}/v1/models")
        started[1].wait_until(f"http://127.0.0.1:{port}/ready")
        client = openai.OpenAI(base_url=f"http://localhost:{port}/v1", api_key="unused")
        ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi there?"}]}
        first = client.chat.completions.with_raw_response.create(**ask)
        again = client.chat.completions.with_raw_response.create(**ask)
        assert (first.headers["x-kallm-cache"], again.headers["x-kallm-cache"]) == ("MISS", "HIT")
        assert "Hi there?" in (again.parse().choices[0].message.content or "")
    finally:
        for process in started:
            process.stop()
