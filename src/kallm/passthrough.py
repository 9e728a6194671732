"""Every other /v1 request goes upstream unchanged, streamed both ways."""

from __future__ import annotations

import logging
import time

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from kallm import upstream
from kallm.providers.openai_chat import error_body

log = logging.getLogger("kallm")


class Passthrough:
    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str | None) -> None:
        self._client = client
        self._base_url = base_url
        self._api_key = api_key

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        # OPENAI_BASE_URL already ends in /v1, so /v1/models maps to {base}/models.
        path = request.url.path.removeprefix("/v1")
        has_body = request.method not in {"GET", "HEAD", "DELETE", "OPTIONS"}
        try:
            sent = await upstream.send(
                self._client,
                self._client.build_request(
                    request.method,
                    f"{self._base_url}{path}",
                    params=request.url.query,
                    headers=upstream.request_headers(request.headers, self._api_key, decoded=False),
                    content=request.stream() if has_body else None,
                ),
            )
        except upstream.UpstreamFailure as failure:
            self._log(request, failure.status, started)
            return Response(
                error_body(str(failure), "upstream_error"),
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
