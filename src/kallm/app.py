"""The ASGI application: routes, and the resources its lifespan opens and closes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kallm.admin import Admin
from kallm.admission import Gate
from kallm.auth import ClientKeys
from kallm.embedders import Embedder, LocalEmbedder, RemoteEmbedder
from kallm.embeddings_api import EmbeddingsProxy
from kallm.match.matcher import Matcher
from kallm.match.verifier import Verifier
from kallm.metrics import Metrics
from kallm.passthrough import Passthrough
from kallm.policies import PolicyBook
from kallm.pricing import PriceTable
from kallm.providers.anthropic import AnthropicMessages
from kallm.providers.base import Provider, Upstream
from kallm.providers.gemini import Gemini
from kallm.providers.openai import error_body
from kallm.providers.openai_chat import OpenAIChat
from kallm.providers.openai_completions import OpenAICompletions
from kallm.providers.openai_responses import OpenAIResponses
from kallm.proxy import CacheProxy, Core, Decision
from kallm.settings import Settings, redact_url
from kallm.storage import Store
from kallm.storage.factory import open_store
from kallm.transport import upstream_client

log = logging.getLogger("kallm")

# Without a verifier, one cosine threshold decides; 0.95 is the precise end of its curve.
UNCALIBRATED_THRESHOLD = 0.95


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


@dataclass(frozen=True)
class Upstreams:
    """Each provider's upstream, with kallm's own key when one is configured."""

    openai: Upstream
    anthropic: Upstream
    gemini: Upstream

    @classmethod
    def of(cls, settings: Settings) -> Upstreams:
        def key(secret: SecretStr | None) -> str | None:
            return secret.get_secret_value() if secret else None

        return cls(
            Upstream(settings.openai_base_url, key(settings.openai_api_key)),
            Upstream(settings.anthropic_base_url, key(settings.anthropic_api_key)),
            Upstream(settings.gemini_base_url, key(settings.gemini_api_key)),
        )


def cached_apis(targets: Upstreams) -> list[tuple[Provider, Upstream]]:
    """Every cached wire format and where it goes. A new provider is a module and a line."""
    return [
        (OpenAIChat(), targets.openai),
        (OpenAICompletions(), targets.openai),
        (OpenAIResponses(), targets.openai),
        (AnthropicMessages(), targets.anthropic),
        (Gemini(), targets.gemini),
    ]


@dataclass(frozen=True)
class Running:
    proxies: dict[str, CacheProxy]  # by route
    embeddings: EmbeddingsProxy
    passthrough: dict[str, Passthrough]  # by provider
    store: Store
    admin: Admin | None


def create_app(settings: Settings, parts: Parts | None = None) -> Starlette:
    parts = parts or Parts()
    metrics = parts.metrics
    prices = PriceTable.load(settings.prices_file)
    targets = Upstreams.of(settings)
    api_key = targets.openai.api_key
    clients = ClientKeys.load(
        settings.client_keys.get_secret_value() if settings.client_keys else None,
        settings.client_keys_file,
    )
    running: list[Running] = []  # set while the lifespan is open

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = upstream_client(settings, parts.transport)
        store = parts.store or await open_store(settings.backend, settings.max_cache_size)
        embedder = parts.embedder or await _default_embedder(settings, client, api_key)
        # Building the pair model's session takes a moment of CPU: off the event loop.
        verifier = await asyncio.to_thread(load_verifier, settings, embedder.name)
        decision = decide_defaults(settings, verifier)
        matcher = Matcher(store, embedder.name, verifier)
        async with _watching_cluster(settings, parts) as pod_namespace:
            gate = Gate(clients, pod_namespace)
            core = Core(
                settings, store, embedder, matcher, decision, client, metrics, prices,
                parts.policies, gate,
            )  # fmt: skip
            apis = {provider.route: (provider, target) for provider, target in cached_apis(targets)}
            proxies = {route: CacheProxy(*api, core) for route, api in apis.items()}
            admin = None
            if settings.admin_token is not None:
                token = settings.admin_token.get_secret_value()
                admin = Admin(token, store, proxies, settings, clients)
            passthrough = {
                name: _passthrough(client, *apis[route], gate, strip)
                for name, route, strip in (
                    ("openai", "chat.completions", "/v1"),
                    ("anthropic", "messages", ""),
                    ("gemini", "gemini", ""),
                )
            }
            embeddings = EmbeddingsProxy(targets.openai, core)
            running.append(Running(proxies, embeddings, passthrough, store, admin))
            fields = {
                "upstream": redact_url(settings.openai_base_url),
                "client_keys": len(clients) if clients is not None else None,
                "embedder": embedder.name,
                "verifier": verifier is not None,
                "similarity_threshold": decision.threshold,
                "verifier_threshold": decision.min_probability if verifier else None,
            }
            log.info("kallm ready", extra={"fields": fields})
            await _check_embedding_models(store, embedder.name)
            try:
                yield
            finally:
                running.clear()
                await client.aclose()
                await embedder.close()
                if verifier is not None:
                    verifier.close()
                await store.close()

    def cached(route: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await running[0].proxies[route].handle(request)

        return endpoint

    def forwarded(provider: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await running[0].passthrough[provider].handle(request)

        return endpoint

    async def embeddings(request: Request) -> Response:
        return await running[0].embeddings.handle(request)

    async def gemini(request: Request) -> Response:
        # Only generating content is cached; countTokens, embedContent and the rest pass.
        method = request.path_params["target"].rpartition(":")[2]
        if method in {"generateContent", "streamGenerateContent"}:
            return await running[0].proxies["gemini"].handle(request)
        return await running[0].passthrough["gemini"].handle(request)

    def admin_route(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            admin = running[0].admin
            if admin is None:  # KALLM_ADMIN_TOKEN unset: there is no management API
                return Response(status_code=404)
            if not admin.allowed(request):
                body = error_body("A valid admin token is required.", "authentication_error")
                return Response(body, 401, media_type="application/json")
            handler: Callable[[Request], Awaitable[Response]] = getattr(admin, name)
            try:
                return await handler(request)
            except Exception:
                # The store failed (or refused what it was given): say so, as JSON.
                metrics.cache_error("store")
                log.warning("admin %s failed (%r)", name, sys.exc_info()[1])
                body = error_body("The cache store failed; try again.", "store_error")
                return Response(body, 503, media_type="application/json")

        return endpoint

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        # The lifespan has loaded the model before any request is served. A store outage
        # does not make kallm unready: it answers without its cache, and taking every
        # replica out of rotation would turn a cache outage into an outage. It is reported.
        if parts.drain.active:
            return JSONResponse({"ready": False, "draining": True}, 503)
        try:
            store_ok = await asyncio.wait_for(running[0].store.ping(), 2.0)
        except Exception:
            store_ok = False
        return JSONResponse({"ready": True, "store": "ok" if store_ok else "degraded"})

    async def stats(request: Request) -> Response:
        entries = await _entries()
        # Model names come from every tenant's requests: once clients authenticate, only the
        # operator (with the admin token) sees them.
        admin = running[0].admin
        detail = clients is None or (admin is not None and admin.allowed(request))
        body = metrics.stats(entries or 0, prices.as_of, detail)
        body["store"] = {
            "backend": settings.backend.split(":", 1)[0],
            "status": "ok" if entries is not None else "degraded",
            "errors": metrics.tally.store_errors,
        }
        return JSONResponse(body)

    async def prometheus(request: Request) -> Response:
        await _entries()
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _entries() -> int | None:
        """Entries in the store, or None when it does not answer (in bounded time)."""
        try:
            count = await asyncio.wait_for(running[0].store.count(time.time()), 2.0)
        except Exception:
            metrics.cache_error("store")
            metrics.store_up.set(0)
            return None
        metrics.store_up.set(1)
        metrics.entries.set(count)
        return count

    async def not_routed(request: Request, error: Exception) -> Response:
        """404 and 405 from routing, as JSON in the provider's error shape for the path."""
        assert isinstance(error, HTTPException)
        provider = _provider_of(request.method, request.url.path)
        body = provider.error_body(error.status_code, error.detail, "invalid_request_error")
        return Response(body, error.status_code, error.headers, media_type="application/json")

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(
        exception_handlers={404: not_routed, 405: not_routed},
        routes=[
            Route("/v1/chat/completions", cached("chat.completions"), methods=["POST"]),
            Route("/v1/completions", cached("completions"), methods=["POST"]),
            Route("/v1/responses", cached("responses"), methods=["POST"]),
            Route("/v1/messages", cached("messages"), methods=["POST"]),
            Route("/v1/messages/{rest:path}", forwarded("anthropic"), methods=methods),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1beta/models/{target}", gemini, methods=["POST"]),
            Route("/v1/models/{target}", gemini, methods=["POST"]),
            Route("/v1beta/{rest:path}", forwarded("gemini"), methods=methods),
            Route("/health", health),
            Route("/ready", ready),
            Route("/stats", stats),
            Route("/metrics", prometheus),
            Route("/admin/cache", admin_route("clear"), methods=["DELETE"]),
            Route("/admin/entries", admin_route("entries"), methods=["GET"]),
            Route("/admin/entries/{entry_id}", admin_route("delete"), methods=["DELETE"]),
            Route("/admin/warm", admin_route("warm"), methods=["POST"]),
            Route("/admin/export", admin_route("export"), methods=["GET"]),
            Route("/v1/{rest:path}", forwarded("openai"), methods=methods),
        ],
        lifespan=lifespan,
    )


def _provider_of(method: str, path: str) -> Provider:
    """Whose error shape a (decoded) path speaks, as the routes below divide them, for
    kallm's own answers when no route matches."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return AnthropicMessages()
    if path.startswith("/v1beta/") or (
        method == "POST" and re.fullmatch(r"/v1/models/[^/]+", path)
    ):
        return Gemini()
    return OpenAIChat()


def _passthrough(
    client: httpx.AsyncClient, provider: Provider, target: Upstream, gate: Gate, strip: str
) -> Passthrough:
    """What kallm does not cache of a provider's API goes to the same upstream, with kallm's
    key when it has one, and kallm's own errors in that provider's shape."""
    auth = provider.auth(target.api_key)
    return Passthrough(client, target.base_url, auth, provider.error_body, gate, strip)


async def _default_embedder(
    settings: Settings, client: httpx.AsyncClient, api_key: str | None
) -> Embedder:
    model = settings.remote_embedding_model
    if model is not None:
        assert api_key is not None  # load_settings insists on it
        return RemoteEmbedder(client, settings.openai_base_url, api_key, model)
    # Loading takes about a second of CPU; keep it off the event loop like every embedding.
    embedder = await asyncio.to_thread(LocalEmbedder)
    await embedder.embed("warm up")
    return embedder


def load_verifier(settings: Settings, embedding_model: str) -> Verifier | None:
    """The verifier, when it is on and was trained with this embedding model."""
    if not settings.verifier:
        return None
    verifier = Verifier.load(settings.verifier_model)
    if verifier.calibration.embedding_model != embedding_model:
        log.warning(
            "verifier off: it was trained with %s, not %s; HITs are decided by similarity alone",
            verifier.calibration.embedding_model,
            embedding_model,
        )
        return None
    return verifier


def decide_defaults(settings: Settings, verifier: Verifier | None) -> Decision:
    """Settings win; otherwise the calibrated defaults (or cosine 0.95 without a verifier)."""
    calibrated = verifier.calibration if verifier else None
    threshold = settings.similarity_threshold
    if threshold is None:
        threshold = calibrated.similarity_threshold if calibrated else UNCALIBRATED_THRESHOLD
    min_probability = settings.verifier_threshold
    if min_probability is None:
        min_probability = calibrated.min_probability if calibrated else 0.0
    return Decision(threshold, min_probability)


async def _check_embedding_models(store: Store, embedding_model: str) -> None:
    """Entries embedded by another model can never match: say so rather than miss silently."""
    try:
        others = await store.embedding_models(time.time()) - {embedding_model}
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
