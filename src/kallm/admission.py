"""Admission: the one step every request kallm serves or forwards goes through first.

It refuses what kallm must not pass on (an unsafe path, ambiguous credentials, a caller
without a valid client key), and says who the caller is: its tenant, the credentials it
forwards, and so the namespace its answers live in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request

from kallm import keys, upstream
from kallm.auth import Client, ClientKeys, Refused, authenticate, check_unambiguous, credentials
from kallm.auth import presented as presented_by


@dataclass(frozen=True)
class Caller:
    """An admitted request: what may travel upstream (a kallm key never does), the client
    its key named (None without client keys), and its namespace (None for the passthrough,
    which caches nothing)."""

    headers: Headers
    query: QueryParams
    client: Client | None
    namespace: str | None

    def check_model(self, model: str) -> None:
        if self.client is not None:
            self.client.check_model(model)


@dataclass(frozen=True)
class Gate:
    clients: ClientKeys | None = None
    # The Kubernetes namespace of a caller's pod IP (KALLM_NAMESPACE_FROM_POD_IP).
    pod_namespace: Callable[[str], str | None] | None = None

    def admit(self, request: Request, route: str, own_key: bool, cached: bool = True) -> Caller:
        """Raises Refused. `own_key`: kallm sends its own provider key for this request, so
        the caller's credentials stay behind and do not divide the cache."""
        try:
            upstream.check_path(upstream.raw_path(request.scope).encode("latin-1"))
        except upstream.UnsafePath as error:
            raise Refused(400, str(error), "invalid_request_error") from None
        seen = original = presented_by(request.headers.raw, request.query_params.multi_items())
        check_unambiguous(seen)
        client = None
        if self.clients is not None:
            client, seen = authenticate(self.clients, seen)
            client.check_route(route)
        namespace = None
        if cached:
            tenant = client.tenant if client is not None else self._pod_tenant(request)
            credential = None if own_key else credentials(seen)
            try:
                namespace = keys.namespace(
                    dict(seen.headers).get("x-kallm-namespace"), credential, tenant
                )
            except keys.InvalidNamespace as error:
                raise Refused(400, str(error), "invalid_request_error") from None
        if seen is original:  # nothing taken out: the request's own, not rebuilt
            return Caller(request.headers, request.query_params, client, namespace)
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in seen.headers]
        return Caller(Headers(raw=raw), QueryParams(list(seen.query)), client, namespace)

    def _pod_tenant(self, request: Request) -> str | None:
        """With pod-IP mapping, the caller's Kubernetes namespace; a caller kallm cannot
        place gets a namespace of its own address, shared with nobody."""
        if self.pod_namespace is None:
            return None
        host = request.client.host if request.client else "unknown"
        return self.pod_namespace(host) or f"unknown-pod-{host}"
