"""Requests kallm does not cache go upstream unchanged, streamed both ways."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from kallm import upstream
from kallm.proxy.admission import Gate
from kallm.proxy.auth import Refused

log = logging.getLogger("kallm")


class Passthrough:
    """Forwards to `base_url` + the request's path less `strip` (OPENAI_BASE_URL already ends
    in /v1, so /v1/models maps to {base}/models). `auth` is kallm's own key header, if any;
    `error_body(status, message, kind)` writes kallm's errors in the provider's shape. Every
    request passes `gate` first (client keys, safe paths, unambiguous credentials)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        auth: Mapping[str, str] | None,
        error_body: Callable[[int, str, str], bytes],
        gate: Gate,
        strip: str = "",
    ) -> None:
        self._gate = gate
        self._client = client
        self._base_url = base_url
        self._auth = auth
        self._error_body = error_body
        self._strip = strip

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        own_key = self._auth is not None
        try:
            caller = self._gate.admit(request, "passthrough", own_key, cached=False)
            # The path as received (still percent-encoded), so what was checked is what goes.
            path = upstream.raw_path(request.scope).removeprefix(self._strip)
            url = upstream.target_url(self._base_url, path)
        except (Refused, upstream.UnsafePath) as error:
            status, kind = (
                (error.status, error.kind)
                if isinstance(error, Refused)
                else (400, "invalid_request_error")
            )
            self._log(request, status, started)
            return Response(
                self._error_body(status, str(error), kind), status, media_type="application/json"
            )
        has_body = request.method not in {"GET", "HEAD", "DELETE", "OPTIONS"}
        try:
            sent = await upstream.send(
                self._client,
                self._client.build_request(
                    request.method,
                    url.copy_with(
                        query=upstream.forwarded_query(
                            request.scope.get("query_string", b""), caller.query.keys(), own_key
                        )
                        or None
                    ),
                    headers=upstream.request_headers(caller.headers, self._auth, decoded=False),
                    content=request.stream() if has_body else None,
                ),
            )
        except upstream.UpstreamFailure as failure:
            self._log(request, failure.status, started)
            return Response(
                self._error_body(failure.status, str(failure), "upstream_error"),
                failure.status,
                media_type="application/json",
            )
        self._log(request, sent.status_code, started)
        return StreamingResponse(
            sent.aiter_raw(),
            sent.status_code,
            headers=upstream.response_headers(sent.headers, decoded=False),
            background=_close(sent),
        )

    def _log(self, request: Request, status: int, started: float) -> None:
        fields = {
            "route": "passthrough",
            "method": request.method,
            "path": request.url.path,
            "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        log.info("request", extra={"fields": fields})


def _close(response: httpx.Response) -> BackgroundTask:
    return BackgroundTask(response.aclose)
