"""The ASGI application: routes, and the resources its lifespan opens and closes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, compile_path
from threadpoolctl import threadpool_info

from kallm import ui
from kallm.embedders import Embedder, LocalEmbedder, RemoteEmbedder
from kallm.embedders.remembered import Remembered
from kallm.match.defaults import decide_defaults, load_verifier
from kallm.match.matcher import Matcher
from kallm.metrics import Metrics
from kallm.policies import PolicyBook
from kallm.pricing import PriceTable
from kallm.providers import PROVIDERS, VENDORS, Vendor
from kallm.providers.base import Provider, Upstream
from kallm.providers.openai import error_body
from kallm.proxy.admin import Admin
from kallm.proxy.admission import Admission, Gate
from kallm.proxy.auth import ClientKeys
from kallm.proxy.cached import CacheProxy, Core
from kallm.proxy.embeddings import EmbeddingsProxy
from kallm.proxy.flights import Flights
from kallm.proxy.passthrough import Passthrough
from kallm.settings import Settings, redact_url
from kallm.storage import Store
from kallm.storage.factory import open_store
from kallm.transport import upstream_client

log = logging.getLogger("kallm")
Endpoint = Callable[[Request], Awaitable[Response]]
ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass
class Drain:
    """Set when the server has been asked to stop: /ready then answers 503."""

    active: bool = False


@dataclass
class Parts:
    """Collaborators the app runs with; anything left None is built from the settings."""

    store: Store | None = None
    embedder: Embedder | None = None
    transport: httpx.AsyncBaseTransport | None = None
    metrics: Metrics = field(default_factory=Metrics)
    drain: Drain = field(default_factory=Drain)
    policies: PolicyBook = field(default_factory=PolicyBook)
    providers: Sequence[Provider] = PROVIDERS
    # The wall clock entries are stamped and expire by; a test hands in its own.
    clock: Callable[[], float] = time.time


def upstreams(settings: Settings) -> dict[str, Upstream]:
    """Each vendor's upstream, with kallm's own key when one is configured."""

    def key(secret: SecretStr | None) -> str | None:
        return secret.get_secret_value() if secret else None

    return {
        "openai": Upstream(settings.openai_base_url, key(settings.openai_api_key)),
        "anthropic": Upstream(settings.anthropic_base_url, key(settings.anthropic_api_key)),
        "gemini": Upstream(settings.gemini_base_url, key(settings.gemini_api_key)),
    }


@dataclass(frozen=True)
class Running:
    """What the lifespan opened, for the endpoints to use."""

    proxies: dict[str, CacheProxy]  # by route
    embeddings: EmbeddingsProxy
    passthrough: dict[str, Passthrough]  # by vendor
    store: Store
    admin: Admin | None


class Service:
    """The endpoints of one app. They are made before the lifespan opens what they use
    (`running`), and only called while it is open."""

    def __init__(self, settings: Settings, parts: Parts, clients: ClientKeys | None) -> None:
        self.settings = settings
        self.parts = parts
        self.clients = clients
        self.prices = PriceTable.load(settings.prices_file)
        self._running: Running | None = None

    @property
    def running(self) -> Running:
        assert self._running is not None, "called outside the app's lifespan"
        return self._running

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        settings, parts, clients = self.settings, self.parts, self.clients
        targets = upstreams(settings)
        client = upstream_client(settings, parts.transport)
        store = parts.store or await open_store(settings.backend, settings.max_cache_size)
        embedder = Remembered(
            parts.embedder or await _default_embedder(settings, client, targets["openai"])
        )
        # Building the pair model's session takes a moment of CPU: off the event loop.
        verifier = await asyncio.to_thread(load_verifier, settings, embedder.name)
        defaults = decide_defaults(settings, verifier)
        matcher = Matcher(store, embedder.name, verifier)
        async with _watching_cluster(settings, parts) as pod_namespace:
            gate = Gate(clients, pod_namespace)
            admission = Admission(
                gate, parts.policies, defaults,
                settings.max_body_size, settings.cache_ttl, settings.ttl_limit,
            )  # fmt: skip
            core = Core(
                settings, admission, store, embedder, matcher, client, parts.metrics,
                self.prices, parts.clock, Flights(settings.coalesce_timeout),
            )  # fmt: skip
            proxies = {p.route: CacheProxy(p, targets[p.vendor], core) for p in parts.providers}
            admin = None
            if settings.admin_token is not None:
                token = settings.admin_token.get_secret_value()
                admin = Admin(token, store, proxies, settings, clients, parts.clock, parts.metrics)
            passthrough = {
                vendor.name: _passthrough(client, vendor, targets[vendor.name], gate)
                for vendor in VENDORS
            }
            embeddings = EmbeddingsProxy(targets["openai"], core)
            self._running = Running(proxies, embeddings, passthrough, store, admin)
            fields = {
                "upstream": redact_url(settings.openai_base_url),
                "client_keys": len(clients) if clients is not None else None,
                "embedder": embedder.name,
                "verifier": verifier is not None,
                "similarity_threshold": defaults.threshold,
                "verifier_threshold": defaults.min_probability if verifier else None,
                # `kallm serve` keeps BLAS to one thread (server/run.py).
                "blas_threads": sorted(
                    {
                        pool["num_threads"]
                        for pool in threadpool_info()
                        if pool["user_api"] == "blas"
                    }
                ),
            }
            log.info("kallm ready", extra={"fields": fields})
            # It reads every entry's model: on a store of a million, in the background.
            check = asyncio.create_task(
                _check_embedding_models(store, embedder.name, parts.clock())
            )
            try:
                yield
            finally:
                check.cancel()
                self._running = None
                await client.aclose()
                await embedder.close()
                if verifier is not None:
                    verifier.close()
                await store.close()

    def cached(self, provider: Provider) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            running = self.running
            if provider.caches(request.path_params):
                return await running.proxies[provider.route].handle(request)
            return await running.passthrough[provider.vendor].handle(request)

        return endpoint

    def forwarded(self, vendor: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            return await self.running.passthrough[vendor].handle(request)

        return endpoint

    async def embeddings(self, request: Request) -> Response:
        return await self.running.embeddings.handle(request)

    def admin(self, name: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            admin = self.running.admin
            if admin is None:  # KALLM_ADMIN_TOKEN unset: there is no management API
                return Response(status_code=404)
            if not admin.allowed(request):
                body = error_body("A valid admin token is required.", "authentication_error")
                return Response(body, 401, media_type="application/json")
            handler: Endpoint = getattr(admin, name)
            try:
                return await handler(request)
            except Exception:
                # The store failed (or refused what it was given): say so, as JSON.
                self.parts.metrics.cache_error("store")
                log.warning("admin %s failed (%r)", name, sys.exc_info()[1])
                body = error_body("The cache store failed; try again.", "store_error")
                return Response(body, 503, media_type="application/json")

        return endpoint

    async def ui(self, request: Request) -> Response:
        """The dashboard's files; like /admin/*, absent without an admin token."""
        if self.running.admin is None:
            return Response(status_code=404)
        body, media_type = ui.asset(request.url.path)
        return Response(body, media_type=media_type, headers=ui.HEADERS)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        # The lifespan has loaded the model before any request is served. A store outage
        # does not make kallm unready: it answers without its cache, and taking every
        # replica out of rotation would turn a cache outage into an outage. It is reported.
        if self.parts.drain.active:
            return JSONResponse({"ready": False, "draining": True}, 503)
        try:
            store_ok = await asyncio.wait_for(self.running.store.ping(), 2.0)
        except Exception:
            store_ok = False
        # Nor does a store still loading its vectors: exact hits are served meanwhile.
        index = "loading" if self.running.store.loading() else "ready"
        return JSONResponse(
            {"ready": True, "store": "ok" if store_ok else "degraded", "index": index}
        )

    async def stats(self, request: Request) -> Response:
        entries = await self._entries()
        # Model names come from every tenant's requests: once clients authenticate, only the
        # operator (with the admin token) sees them.
        admin = self.running.admin
        detail = self.clients is None or (admin is not None and admin.allowed(request))
        metrics = self.parts.metrics
        body = metrics.stats(entries or 0, self.prices.as_of, detail)
        body["store"] = {
            "backend": self.settings.backend.split(":", 1)[0],
            "status": "ok" if entries is not None else "degraded",
            "errors": metrics.tally.store_errors,
        }
        return JSONResponse(body)

    async def prometheus(self, request: Request) -> Response:
        await self._entries()
        exposition = self.parts.metrics.exposition()
        return Response(exposition, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _entries(self) -> int | None:
        """Entries in the store, or None when it does not answer (in bounded time)."""
        metrics = self.parts.metrics
        try:
            count = await asyncio.wait_for(self.running.store.count(self.parts.clock()), 2.0)
        except Exception:
            metrics.cache_error("store")
            metrics.store_up.set(0)
            return None
        metrics.store_up.set(1)
        metrics.entries.set(count)
        return count

    async def not_routed(self, request: Request, error: Exception) -> Response:
        """404 and 405 from routing, as JSON in the error shape of the vendor whose path it is."""
        assert isinstance(error, HTTPException)
        shape = _error_shape(self.parts.providers, request.method, request.url.path)
        body = shape(error.status_code, error.detail, "invalid_request_error")
        return Response(body, error.status_code, error.headers, media_type="application/json")


def create_app(settings: Settings, parts: Parts | None = None) -> Starlette:
    parts = parts or Parts()
    clients = ClientKeys.load(
        settings.client_keys.get_secret_value() if settings.client_keys else None,
        settings.client_keys_file,
    )
    service = Service(settings, parts, clients)
    cached = [
        Route(path, service.cached(provider), methods=["POST"])
        for provider in parts.providers
        for path in provider.paths
    ]
    forwarded = [
        Route(vendor.passthrough, service.forwarded(vendor.name), methods=ANY_METHOD)
        for vendor in VENDORS
    ]
    admin = [
        *(Route(path, service.ui, methods=["GET"]) for path in ui.FILES),
        Route("/admin/cache", service.admin("clear"), methods=["DELETE"]),
        Route("/admin/entries", service.admin("entries"), methods=["GET"]),
        Route("/admin/entries/{entry_id}", service.admin("delete"), methods=["DELETE"]),
        Route("/admin/entries/{entry_id}", service.admin("entry"), methods=["GET"]),
        Route("/admin/dashboard", service.admin("dashboard"), methods=["GET"]),
        Route("/admin/warm", service.admin("warm"), methods=["POST"]),
        Route("/admin/export", service.admin("export"), methods=["GET"]),
        Route("/admin/reports", service.admin("report"), methods=["POST"]),
        Route("/admin/reports", service.admin("reports"), methods=["GET"]),
    ]
    return Starlette(
        exception_handlers={404: service.not_routed, 405: service.not_routed},
        routes=[
            *cached,
            Route("/v1/embeddings", service.embeddings, methods=["POST"]),
            Route("/health", service.health),
            Route("/ready", service.ready),
            Route("/stats", service.stats),
            Route("/metrics", service.prometheus),
            *admin,
            # Last: a passthrough pattern would take the paths above.
            *forwarded,
        ],
        lifespan=service.lifespan,
    )


def _passthrough(
    client: httpx.AsyncClient, vendor: Vendor, target: Upstream, gate: Gate
) -> Passthrough:
    """What kallm does not cache of a vendor's API goes to the same upstream, with kallm's
    key when it has one, and kallm's own errors in that vendor's shape."""
    auth = vendor.auth(target.api_key)
    return Passthrough(client, target.base_url, auth, vendor.error_body, gate, vendor.strip)


def _error_shape(
    providers: Sequence[Provider], method: str, path: str
) -> Callable[[int, str, str], bytes]:
    """Whose error shape a (decoded) path speaks, for kallm's own answers when no route
    matches: the provider whose path it is, else the vendor whose passthrough it falls in."""
    for provider in providers:
        if method == "POST" and any(compile_path(p)[0].match(path) for p in provider.paths):
            return provider.error_body
        # Its paths' subpaths (/v1/messages/batches) belong to it too.
        if any(path.startswith(p.rstrip("/") + "/") for p in provider.paths if "{" not in p):
            return provider.error_body
    for vendor in VENDORS:
        if compile_path(vendor.passthrough)[0].match(path):
            return vendor.error_body
    return VENDORS[-1].error_body


async def _default_embedder(
    settings: Settings, client: httpx.AsyncClient, openai: Upstream
) -> Embedder:
    model = settings.remote_embedding_model
    if model is not None:
        assert openai.api_key is not None  # load_settings insists on it
        return RemoteEmbedder(client, openai.base_url, openai.api_key, model)
    # Loading takes about a second of CPU; keep it off the event loop like every embedding.
    embedder = await asyncio.to_thread(LocalEmbedder)
    await embedder.embed("warm up")
    return embedder


async def _check_embedding_models(store: Store, embedding_model: str, now: float) -> None:
    """Entries embedded by another model can never match: say so rather than miss silently."""
    try:
        others = await store.embedding_models(now) - {embedding_model}
    except Exception:
        return  # a store that is down is reported by /ready and the error counters
    if others:
        log.warning(
            "the store holds entries embedded with %s; they only serve exact repeats under %s",
            ", ".join(sorted(others)),
            embedding_model,
        )


@contextlib.asynccontextmanager
async def _watching_cluster(
    settings: Settings, parts: Parts
) -> AsyncIterator[Callable[[str], str | None] | None]:
    """While kallm runs, keep the policy book in step with the cluster's SemanticCachePolicy
    objects (KALLM_WATCH_POLICIES) and, with KALLM_NAMESPACE_FROM_POD_IP, yield the lookup
    from a client's pod IP to its namespace."""
    if not (settings.watch_policies or settings.namespace_from_pod_ip):
        yield None
        return
    from kallm.k8s.watch import KubeAPI, PodDirectory, PolicyWatcher

    api = KubeAPI.from_url(settings.kube_api_url) if settings.kube_api_url else KubeAPI.in_cluster()
    async with api.client() as kube:
        watchers: list[PolicyWatcher | PodDirectory] = []
        if settings.watch_policies:
            replica = settings.pod_name or socket.gethostname()
            watchers.append(PolicyWatcher(kube, parts.policies, replica))
        pods = PodDirectory(kube) if settings.namespace_from_pod_ip else None
        if pods is not None:
            watchers.append(pods)
        tasks = [asyncio.create_task(w.run(), name="kallm-k8s-watch") for w in watchers]
        try:
            yield pods.namespace_of if pods is not None else None
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
