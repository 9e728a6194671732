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

log = logging.getLogger("kallm")


class Passthrough:
    """Forwards to `base_url` + the request's path less `strip` (OPENAI_BASE_URL already ends
    in /v1, so /v1/models maps to {base}/models). `auth` is kallm's own key header, if any;
    `error_body(status, message, kind)` writes kallm's errors in the provider's shape."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        auth: Mapping[str, str] | None,
        error_body: Callable[[int, str, str], bytes],
        strip: str = "",
    ) -> None:
        self._client = client
        self._base_url = base_url
        self._auth = auth
        self._error_body = error_body
        self._strip = strip

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        path = request.url.path.removeprefix(self._strip)
        has_body = request.method not in {"GET", "HEAD", "DELETE", "OPTIONS"}
        try:
            sent = await upstream.send(
                self._client,
                self._client.build_request(
                    request.method,
                    f"{self._base_url}{path}",
                    params=upstream.query(request.url.query, own_key=self._auth is not None),
                    headers=upstream.request_headers(request.headers, self._auth, decoded=False),
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
