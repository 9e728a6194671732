"""The management API, on only when KALLM_ADMIN_TOKEN is set.

DELETE /admin/cache[?namespace=], GET /admin/entries, DELETE /admin/entries/{id},
POST /admin/warm (JSON lines), GET /admin/export (JSON lines that warm accepts back).
Every call needs `Authorization: Bearer <token>`; the comparison takes constant time.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from kallm import keys
from kallm.providers.openai import error_body
from kallm.providers.openai_chat import parse_request
from kallm.proxy import CacheProxy
from kallm.storage.base import Entry, EntryQuery, Store

PAGE_LIMIT = 1000


class Admin:
    def __init__(
        self, token: str, store: Store, proxies: dict[str, CacheProxy], default_ttl: float
    ) -> None:
        self._token = f"Bearer {token}".encode()
        self._store = store
        self._proxies = proxies  # by route
        self._default_ttl = default_ttl

    def allowed(self, request: Request) -> bool:
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, self._token)

    async def clear(self, request: Request) -> Response:
        deleted = await self._store.clear(request.query_params.get("namespace"))
        return JSONResponse({"deleted": deleted})

    async def entries(self, request: Request) -> Response:
        params = request.query_params
        try:
            offset = int(params.get("offset", "0"))
            limit = int(params.get("limit", "100"))
        except ValueError:
            return _bad("offset and limit must be integers")
        if offset < 0 or not 1 <= limit <= PAGE_LIMIT:
            return _bad(f"offset must be >= 0 and limit 1-{PAGE_LIMIT}")
        query = EntryQuery(
            params.get("namespace"), params.get("model"), params.get("q"), offset, limit
        )
        found = await self._store.entries(query, time.time())
        return JSONResponse(
            {"entries": [_summary(e) for e in found], "offset": offset, "limit": limit}
        )

    async def delete(self, request: Request) -> Response:
        if await self._store.delete(request.path_params["entry_id"]):
            return JSONResponse({"deleted": True})
        return Response(
            error_body("No such entry.", "not_found"), 404, media_type="application/json"
        )

    async def warm(self, request: Request) -> Response:
        """Each line: {"request", "response", "route"? (default chat.completions),
        "namespace"?, "ttl"? seconds}, as export writes them. The namespace is taken as given
        (it may carry a key hash)."""
        stored = skipped = 0
        errors: list[str] = []
        for number, line in enumerate((await request.body()).decode().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                route = str(row.get("route") or "chat.completions")
                if route not in self._proxies:
                    raise ValueError(f"unknown route {route!r}")
                proxy = self._proxies[route]
                payload = row["request"]
                if proxy.route == "chat.completions":
                    payload = parse_request(json.dumps(payload).encode())
                elif not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
                    raise ValueError("request must be an object with a model")
                namespace = str(row.get("namespace") or keys.DEFAULT_NAMESPACE)
                ttl = float(row.get("ttl") or self._default_ttl)
                if not isinstance(row["response"], dict) or ttl <= 0:
                    raise ValueError("response must be an object and ttl positive")
                kept = await proxy.warm(namespace, payload, row["response"], ttl)
            except (ValueError, KeyError, TypeError) as error:  # InvalidRequest is a ValueError
                errors.append(f"line {number}: {error!s}")
                continue
            if kept:
                stored += 1
            else:
                skipped += 1
        return JSONResponse({"stored": stored, "skipped": skipped, "errors": errors[:100]})

    async def export(self, request: Request) -> Response:
        namespace = request.query_params.get("namespace")

        async def lines() -> AsyncIterator[bytes]:
            offset, now = 0, time.time()
            while page := await self._store.entries(
                EntryQuery(namespace=namespace, offset=offset, limit=PAGE_LIMIT), now
            ):
                for entry in page:
                    if "request" in entry.extra:
                        yield (json.dumps(_exported(entry, now)) + "\n").encode()
                offset += len(page)

        return StreamingResponse(lines(), media_type="application/x-ndjson")


def _summary(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        # The key-hash suffix identifies an API key: never show it.
        "namespace": entry.namespace.split("@", 1)[0],
        "model": entry.model,
        "prompt": entry.text,
        "created": entry.created,
        "last_hit": entry.last_hit,
        "hits": entry.hits,
        "expires": entry.expires,
    }


def _exported(entry: Entry, now: float) -> dict[str, Any]:
    return {
        "namespace": entry.namespace,
        "route": entry.extra.get("route", "chat.completions"),
        "request": entry.extra["request"],
        "response": entry.response,
        "ttl": round(entry.expires - now, 3),
    }


def _bad(message: str) -> Response:
    return Response(
        error_body(message, "invalid_request_error"), 400, media_type="application/json"
    )
