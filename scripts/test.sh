#!/usr/bin/env bash
# Installs what the tests need into .venv, then runs every check: lint, format, types, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."
# Servers and tools the tests run for real, from Debian: redis-server for the Redis store
# tests, promtool (package prometheus) to lint /metrics, chromium and its chromedriver for
# the dashboard's browser tests.
missing=""
command -v redis-server >/dev/null || missing="$missing redis-server"
command -v promtool >/dev/null || missing="$missing prometheus"
command -v chromium >/dev/null || missing="$missing chromium"
command -v chromedriver >/dev/null || missing="$missing chromium-driver"
if [ -n "$missing" ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
scripts/install_k8s_tools.sh >/dev/null  # helm (.k8s-tools/) and kubernetes-validate for tests/k8s
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
