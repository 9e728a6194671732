"""`kallm warm | export | entries | clear | report-wrong | report-right`: the management API
from a terminal."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

# The header `kallm warm --key-env` sends the client credential in (see admin.py).
WARM_KEY_HEADER = "x-kallm-warm-key"
BATCH = 200  # lines a request: progress stays smooth, requests stay small


class ManageError(Exception):
    pass


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        if not token:
            raise ManageError("an admin token is needed: --token or KALLM_ADMIN_TOKEN")
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers={"authorization": f"Bearer {token}"}, timeout=300
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ManageError(f"cannot reach kallm at {self._http.base_url}: {error}") from None
        if response.status_code == 404 and path.startswith("/admin") and not response.content:
            raise ManageError("this kallm has no management API: set KALLM_ADMIN_TOKEN on it")
        if not response.is_success:
            raise ManageError(f"kallm answered {response.status_code}: {response.text[:300]}")
        return response

    def lines(self, path: str, **params: Any) -> Iterator[str]:
        with self._http.stream("GET", path, params=params) as response:
            if response.status_code != 200:
                raise ManageError(f"kallm answered {response.status_code}")
            yield from response.iter_lines()


@dataclass
class Warmed:
    """What `warm` did: counts, where entries went, what would keep them from serving, and
    why each line not stored was not (by its line in the file)."""

    stored: int = 0
    skipped: int = 0
    errors: int = 0
    namespaces: dict[str, int] = field(default_factory=dict)
    warnings: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def warm(
    client: Client,
    path: Path,
    target: Mapping[str, str] | None = None,
    key: str | None = None,
    out: TextIO = sys.stderr,
) -> Warmed:
    """Send the file's JSON lines in batches, drawing a progress bar with count and rate.
    `target` (namespace, tenant) and `key` (a client's credential) say whom the entries are
    for; without them each line's own namespace is used."""
    lines = path.read_text("utf-8").splitlines()  # blank ones too: they keep the numbering
    headers = {WARM_KEY_HEADER: key} if key else {}
    totals = Warmed()
    started = time.monotonic()
    for start in range(0, len(lines), BATCH):
        batch = "\n".join(lines[start : start + BATCH]).encode()
        params = {**(target or {}), "line": str(start + 1)}
        result = client.call(
            "POST", "/admin/warm", content=batch, params=params, headers=headers
        ).json()
        totals.stored += result["stored"]
        totals.skipped += result["skipped"]
        totals.errors += len(result["errors"])
        totals.problems += result["errors"] + result.get("skips", [])
        for name, count in result.get("namespaces", {}).items():
            totals.namespaces[name] = totals.namespaces.get(name, 0) + count
        totals.warnings.update(result.get("warnings", []))
        _bar(min(start + BATCH, len(lines)), len(lines), time.monotonic() - started, out)
    print(file=out)  # the bar's line ends before anything else is said
    totals.problems.sort(key=_line_number)
    return totals


def _line_number(problem: str) -> int:
    """The line a problem names ("line 12: ...")."""
    return int(problem.split(":", 1)[0].removeprefix("line "))


def _bar(done: int, total: int, seconds: float, out: TextIO) -> None:
    width = 30
    filled = width * done // max(total, 1)
    rate = done / seconds if seconds > 0 else 0.0
    bar = "#" * filled + "-" * (width - filled)
    print(f"\rwarming [{bar}] {done}/{total} {rate:,.0f}/s", end="", file=out, flush=True)


def report(client: Client, entry: str, request: Path, right: bool) -> dict[str, Any]:
    """Report an entry's answer wrong (or right) for the request in `request` (a JSON file,
    or - for standard input), as sent to the API."""
    try:
        text = sys.stdin.read() if str(request) == "-" else request.read_text("utf-8")
        asked = json.loads(text)
    except (OSError, json.JSONDecodeError) as error:
        raise ManageError(f"{request}: not a JSON request ({error})") from None
    body = {"entry": entry, "request": asked, "verdict": "right" if right else "wrong"}
    made: dict[str, Any] = client.call("POST", "/admin/reports", json=body).json()
    return made


def print_entries(client: Client, params: dict[str, Any], out: TextIO = sys.stdout) -> None:
    found = client.call("GET", "/admin/entries", params=params).json()["entries"]
    print(f"{'id':<32}  {'namespace':<16} {'model':<22} {'hits':>5}  prompt", file=out)
    for entry in found:
        prompt = (entry["prompt"] or "").replace("\n", " ")[:60]
        print(
            f"{entry['id']:<32}  {entry['namespace']:<16} {entry['model']:<22} "
            f"{entry['hits']:>5}  {prompt}",
            file=out,
        )


def export(client: Client, namespace: str | None, out: TextIO = sys.stdout) -> int:
    params = {"namespace": namespace} if namespace else {}
    count = 0
    for line in client.lines("/admin/export", **params):
        if line:
            json.loads(line)  # fail loudly on a broken line rather than write it
            print(line, file=out)
            count += 1
    return count
