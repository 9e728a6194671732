"""/metrics as Prometheus's own linter sees it."""

import shutil
import subprocess

import httpx
import pytest


def test_metrics_pass_promtool_check_metrics(caller, kallm):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH: apt-get install prometheus (scripts/test.sh does)")
    caller.chat("What does a barometer measure?")
    caller.chat("What does a barometer measure?")
    caller.chat("What does a barometer measure?", headers={"Cache-Control": "no-cache"})
    text = httpx.get(f"{kallm.root}/metrics").text
    for series in ("kallm_requests_total", "kallm_request_duration_seconds_bucket",
                   "kallm_cache_entries", "kallm_store_up", "kallm_saved_usd_total"):  # fmt: skip
        assert series in text
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=30)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""
