"""Screenshots of the dashboard for docs/: a laptop-wide and a phone-wide page, of a kallm
(on the stand-in provider) that has served a few requests. Needs Debian's chromium and
chromium-driver (scripts/test.sh installs them) and the test extras.

    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

DOCS = Path(__file__).resolve().parents[1] / "docs"
TOKEN = "screenshot-token"
PROMPTS = [
    "How many legs does a spider have?", "How many legs do spiders have?",
    "What is the capital of France?", "What is the capital of France?",
    "what's the capital of France?", "Convert 100 USD to EUR", "Convert 100 EUR to USD",
    "How do I reverse a list in Python?", "How can I reverse a list in Python?",
    "Explain what a Kubernetes pod is.",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready(url: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def main() -> None:
    upstream, port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KALLM_", "OPENAI_"))}
    env |= {"OPENAI_BASE_URL": f"http://127.0.0.1:{upstream}/v1", "KALLM_ADMIN_TOKEN": TOKEN}
    python = sys.executable
    servers = [
        subprocess.Popen([python, "-m", "kallm.simulator", "--port", str(upstream)], env=env),
        subprocess.Popen([python, "-m", "kallm", "serve", "--host", "127.0.0.1", "--port",
                          str(port)], env=env),
    ]  # fmt: skip
    try:
        ready(f"http://127.0.0.1:{port}/ready")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        for prompt in PROMPTS:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
            )
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in ("--headless=new", "--no-sandbox", "--hide-scrollbars"):
            options.add_argument(flag)
        browser = webdriver.Chrome(
            service=Service(shutil.which("chromedriver") or "chromedriver"), options=options
        )
        try:
            for name, width in (("dashboard.png", 1280), ("dashboard-phone.png", 400)):
                browser.set_window_size(width, 900)
                browser.get(f"http://127.0.0.1:{port}/ui")
                browser.find_element(By.ID, "token").send_keys(TOKEN)
                browser.find_element(By.CSS_SELECTOR, "#login button").click()
                WebDriverWait(browser, 20).until(
                    lambda b: "Up to date" in b.find_element(By.ID, "status").text
                )
                height = browser.execute_script("return document.body.scrollHeight")
                browser.set_window_size(width, height + 40)
                browser.save_screenshot(str(DOCS / name))
                browser.execute_script("sessionStorage.clear()")
                print(f"wrote {DOCS / name}")
        finally:
            browser.quit()
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
