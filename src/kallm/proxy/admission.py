"""Admission: the one step every request kallm serves or forwards goes through first.

`Gate` refuses what kallm must not pass on (an unsafe path, ambiguous credentials, a caller
without a valid client key), and says who the caller is: its tenant, the credentials it
forwards, and so the namespace its answers live in. `Admission` does the rest for every
cached API: it reads the body within its limit, finds the namespace's policy and the
namespaces it shares with, and turns the request's headers into its rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request

from kallm import keys, upstream
from kallm.match.decision import Decision
from kallm.policies import Policy, PolicyBook
from kallm.proxy.auth import (
    Client,
    ClientKeys,
    Refused,
    authenticate,
    check_unambiguous,
    credentials,
)
from kallm.proxy.auth import presented as presented_by
from kallm.proxy.directives import InvalidPolicyHeader, RequestPolicy, request_policy


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


@dataclass(frozen=True)
class Admitted:
    """A cached API's request, let in: the caller, the body, where its answers live (its own
    namespace first, then those it shares with), its namespace's policy and its rules."""

    caller: Caller
    body: bytes
    namespaces: list[str]
    policy: Policy
    rules: RequestPolicy
    min_probability: float

    @property
    def namespace(self) -> str:
        return self.namespaces[0]

    def for_model(self, route: str, model: str) -> RequestPolicy:
        """The rules once the model is known: the client key may not allow it (raises
        Refused), and the policy may bypass the cache for it."""
        self.caller.check_model(model)
        if self.policy.bypasses(route, model, self.caller.headers):
            return replace(self.rules, lookup=False, store=False)
        return self.rules


@dataclass(frozen=True)
class Admission:
    """The first step of every cached API: `gate`, then the body within `max_body_size`,
    then the namespace's policy (from `policies`) and the request's rules, whose defaults
    are `decision`'s thresholds and `default_ttl`, bounded by `max_ttl`."""

    gate: Gate
    policies: PolicyBook
    decision: Decision
    max_body_size: int
    default_ttl: float
    max_ttl: float

    async def admit(self, request: Request, route: str, own_key: bool) -> Admitted:
        """Raises Refused, in the order a caller can act on: who it is, then the body's size,
        then its cache headers."""
        caller = self.gate.admit(request, route, own_key)
        assert caller.namespace is not None
        body = await upstream.read_limited(request.stream(), self.max_body_size)
        if body is None:
            raise Refused(413, "The request body is too large.", "request_too_large")
        own = caller.namespace
        local = self.policies.get(keys.scope(own))
        try:
            rules = request_policy(
                request.headers,
                _first(local.similarity_threshold, self.decision.threshold),
                _first(local.ttl, self.default_ttl),
                self.max_ttl,
            )
        except InvalidPolicyHeader as error:
            raise Refused(400, str(error), "invalid_request_error") from None
        namespaces = [own]
        if rules.lookup and local.share:
            scope = keys.scope(own)
            peers = [other for other in self.policies.sharing() if other != scope]
            namespaces += [keys.peer(own, other) for other in peers]
        probability = _first(local.verifier_threshold, self.decision.min_probability)
        return Admitted(caller, body, namespaces, local, rules, probability)


def _first(value: float | None, default: float) -> float:
    """A namespace policy's value when it sets one, else kallm's."""
    return default if value is None else value
