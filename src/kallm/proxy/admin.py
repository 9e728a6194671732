"""The management API, on only when KALLM_ADMIN_TOKEN is set.

DELETE /admin/cache[?namespace=], GET /admin/entries, DELETE /admin/entries/{id},
POST /admin/warm (JSON lines), GET /admin/export (JSON lines that warm accepts back),
POST and GET /admin/reports (operators' verdicts on cached answers).
Every call needs `Authorization: Bearer <token>`; the comparison takes constant time.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from kallm import keys, upstream
from kallm.metrics import Metrics
from kallm.providers.base import InvalidRequest, loads
from kallm.providers.openai import error_body
from kallm.proxy.auth import TENANT_PATTERN, ClientKeys, Presented, credentials
from kallm.proxy.cached import CacheProxy
from kallm.settings import Settings
from kallm.storage.base import Entry, EntryQuery, Store

PAGE_LIMIT = 1000


# Where `kallm warm --key-env` sends the client credential that entries are warmed for.
WARM_KEY_HEADER = "x-kallm-warm-key"
MAX_OFFSET = 10**9


class Admin:
    def __init__(
        self,
        token: str,
        store: Store,
        proxies: dict[str, CacheProxy],
        settings: Settings,
        clients: ClientKeys | None,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        self._clock = clock
        self._metrics = metrics
        self._token = f"Bearer {token}".encode()
        self._store = store
        self._proxies = proxies  # by route
        self._default_ttl = settings.cache_ttl
        self._max_ttl = settings.ttl_limit
        self._max_body = settings.max_body_size
        self._clients = clients

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
        if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= PAGE_LIMIT:
            return _bad(f"offset must be 0-{MAX_OFFSET} and limit 1-{PAGE_LIMIT}")
        query = EntryQuery(
            params.get("namespace"), params.get("model"), params.get("q"), offset, limit
        )
        found = await self._store.entries(query, self._clock())
        return JSONResponse(
            {"entries": [_summary(e) for e in found], "offset": offset, "limit": limit}
        )

    async def entry(self, request: Request) -> Response:
        """One entry with its answer and API (for the dashboard's entries browser)."""
        found = await self._store.get(request.path_params["entry_id"], self._clock())
        if found is None:
            return Response(
                error_body("No such entry.", "not_found"), 404, media_type="application/json"
            )
        return JSONResponse(
            _summary(found) | {"route": found.meta.route, "response": found.response}
        )

    async def dashboard(self, request: Request) -> Response:
        """What /ui draws beyond /stats (kallm.activity)."""
        return JSONResponse({"activity": self._metrics.activity.view(time.time())})

    async def delete(self, request: Request) -> Response:
        if await self._store.delete(request.path_params["entry_id"]):
            return JSONResponse({"deleted": True})
        return Response(
            error_body("No such entry.", "not_found"), 404, media_type="application/json"
        )

    async def report(self, request: Request) -> Response:
        """{"entry": id, "request": the request as sent, "verdict": "wrong" | "right"}: the
        entry (X-Kallm-Entry of a HIT) was wrong, or right, for that request."""
        body = await upstream.read_limited(request.stream(), self._max_body)
        try:
            given = loads(body or b"")
            if not isinstance(given, dict) or given.get("verdict") not in ("wrong", "right"):
                raise ValueError('give {"entry", "request", "verdict": "wrong" or "right"}')
            if not isinstance(given.get("entry"), str):
                raise ValueError('"entry" must be an entry id (X-Kallm-Entry of the HIT)')
        except ValueError as error:
            return _bad(f"invalid report: {error}")
        entry = await self._store.get(given["entry"], self._clock())
        if entry is None:
            return Response(
                error_body("No such entry (expired or removed?).", "not_found"),
                404,
                media_type="application/json",
            )
        proxy = self._proxies.get(entry.meta.route)
        if proxy is None:
            return _bad(f"entries of {entry.meta.route} cannot be reported")
        try:
            report = await proxy.report(entry, given.get("request"), given["verdict"] == "right")
        except (InvalidRequest, KeyError, TypeError) as error:
            return _bad(f"invalid report: the request: {error}")
        await self._store.add_report(report)  # a wrong one is blocked on every replica now
        # Wrong for its own request: the answer itself is wrong, and goes.
        removed = not report.right and report.asked_exact == entry.exact
        if removed:
            await self._store.delete(entry.id)
        self._metrics.reported(report.right)
        return JSONResponse({"report": report.to_json(), "removed_entry": removed}, 201)

    async def reports(self, request: Request) -> Response:
        return JSONResponse({"reports": [r.to_json() for r in await self._store.reports()]})

    async def warm(self, request: Request) -> Response:
        """Each line: {"request", "response", "route"? (default chat.completions),
        "namespace"?, "ttl"? seconds}, as export writes them. Where entries go: with
        `?namespace=`, `?tenant=` or a client credential in X-Kallm-Warm-Key, where a caller
        with that namespace header, tenant and credential looks (overriding the lines');
        otherwise each line's namespace as given (an export's, key hash included)."""
        body = await upstream.read_limited(request.stream(), self._max_body)
        if body is None:
            return _bad("the body is too large: send fewer lines at a time")
        try:
            text = body.decode("utf-8")
            target = _warm_target(request)
            # `?line=`: the number in its file of the body's first line (`kallm warm` sends
            # a file in parts), so that errors name the file's lines.
            first = int(request.query_params.get("line", "1"))
        except (UnicodeDecodeError, ValueError) as error:
            return _bad(f"invalid warm request: {error}")
        stored = 0
        errors: list[str] = []  # lines refused
        skips: list[str] = []  # lines understood, but not stored
        places: dict[str, int] = {}
        unreachable: set[str] = set()  # routes whose entries no caller will read
        for number, line in enumerate(text.splitlines(), first):
            if not line.strip():
                continue
            try:
                proxy, exported, answer, namespace, ttl = self._warm_line(line, target)
                skipped = await proxy.warm(namespace, exported, answer, ttl)
            except (ValueError, KeyError, TypeError) as error:  # InvalidRequest is a ValueError
                errors.append(f"line {number}: {error!s}")
                continue
            if skipped is None:
                stored += 1
                places[namespace] = places.get(namespace, 0) + 1
                if proxy.forwards_credentials and not keys.for_one_key(namespace):
                    unreachable.add(proxy.route)
            else:
                skips.append(f"line {number}: {skipped}")
        return JSONResponse(
            {
                "stored": stored,
                "skipped": len(skips),
                "errors": errors[:100],
                "skips": skips[:100],
                "namespaces": {_shown(name): count for name, count in places.items()},
                "warnings": self._warnings(places, unreachable),
            }
        )

    def _warm_line(
        self, line: str, target: str | None
    ) -> tuple[CacheProxy, Any, dict[str, Any], str, float]:
        """One warm line checked: its API, request (checked by the API's own rules when it is
        warmed), answer, namespace and TTL."""
        row = loads(line.encode("utf-8"))
        if not isinstance(row, dict):
            raise ValueError("a line must be a JSON object")
        route = row.get("route") or "chat.completions"
        if route not in self._proxies:
            raise ValueError(f"unknown route {str(route)[:40]!r}")
        proxy = self._proxies[route]
        if not isinstance(row["response"], dict):
            raise ValueError("response must be an object")
        ttl = row.get("ttl") or self._default_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
            raise ValueError("ttl must be a positive number of seconds")
        namespace = target or row.get("namespace") or keys.DEFAULT_NAMESPACE
        if not isinstance(namespace, str) or len(namespace) > 256:
            raise ValueError("namespace must be a string")
        return proxy, row["request"], row["response"], namespace, float(min(ttl, self._max_ttl))

    def _warnings(self, places: dict[str, int], unkeyed: set[str]) -> list[str]:
        """What makes warmed entries unreachable, said rather than left to be discovered."""
        warnings = []
        if self._clients is not None and any(
            not name.startswith(keys.TENANT_PREFIX) for name in places
        ):
            warnings.append(
                "kallm authenticates clients, and every client reads inside its tenant: "
                "entries outside a tenant are served to no one (warm with --tenant)"
            )
        if unkeyed:
            warnings.append(
                f"kallm forwards client keys for {', '.join(sorted(unkeyed))}: entries warmed "
                "without --key-env are served only to callers that send no credential"
            )
        return warnings

    async def export(self, request: Request) -> Response:
        namespace = request.query_params.get("namespace")

        async def lines() -> AsyncIterator[bytes]:
            offset, now = 0, self._clock()
            while page := await self._store.entries(
                EntryQuery(namespace=namespace, offset=offset, limit=PAGE_LIMIT), now
            ):
                for entry in page:
                    if entry.meta.request is not None:
                        yield (json.dumps(_exported(entry, now)) + "\n").encode()
                offset += len(page)

        return StreamingResponse(lines(), media_type="application/x-ndjson")


def _warm_target(request: Request) -> str | None:
    """The namespace `?namespace=`, `?tenant=` and X-Kallm-Warm-Key name, as a request with
    that header, from that tenant, presenting that credential would have it; None when none
    is given. Raises ValueError."""
    params = request.query_params
    tenant, key = params.get("tenant"), request.headers.get(WARM_KEY_HEADER)
    if params.get("namespace") is None and tenant is None and key is None:
        return None
    if tenant is not None and not TENANT_PATTERN.fullmatch(tenant):
        raise ValueError("tenant: 1-63 letters, digits and ._- starting with a letter or digit")
    try:
        # The credential of a caller that presents this key and nothing else.
        credential = credentials(Presented([("x-api-key", key)], [])) if key else None
        return keys.namespace(params.get("namespace"), credential, tenant)
    except keys.InvalidNamespace as error:
        raise ValueError(str(error)) from None


def _shown(namespace: str) -> str:
    """A namespace as the admin API shows it: the key-hash suffix identifies an API key."""
    shown = keys.redacted(namespace)
    return shown + " (for one client key)" if keys.for_one_key(namespace) else shown


def _summary(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "namespace": keys.redacted(entry.namespace),
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
        "route": entry.meta.route,
        "request": entry.meta.request,
        "response": entry.response,
        "ttl": round(entry.expires - now, 3),
    }


def _bad(message: str) -> Response:
    return Response(
        error_body(message, "invalid_request_error"), 400, media_type="application/json"
    )
