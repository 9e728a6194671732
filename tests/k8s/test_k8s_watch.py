"""The policy watcher and pod directory against kmock's in-memory Kubernetes API server.

kmock's emulator stores objects created, patched and deleted over HTTP and serves them on
LIST and WATCH (a watch starts by replaying every object as ADDED and ignores
resourceVersion). It does not maintain metadata.generation, so the tests set it themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import kmock
import pytest
import pytest_asyncio

from kallm.k8s.watch import KubeAPI, PodDirectory, PolicyWatcher, Timing
from kallm.policies import Policy, PolicyBook

FAST = Timing(min_backoff=0.05, max_backoff=0.2)

pytestmark = pytest.mark.asyncio

RESOURCE = "kallm.io/v1alpha1/semanticcachepolicies"
BASE = "/apis/kallm.io/v1alpha1/namespaces/{ns}/semanticcachepolicies"


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll until check() is truthy (returning its value) or fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        await asyncio.sleep(0.02)


def policy(ns: str, name: str, spec: dict[str, Any], generation: int = 1, **meta: Any) -> Any:
    metadata = {"name": name, "namespace": ns, "generation": generation, **meta}
    return {
        "apiVersion": "kallm.io/v1alpha1",
        "kind": "SemanticCachePolicy",
        "metadata": metadata,
        "spec": spec,
    }


@pytest_asyncio.fixture
async def api(kmock: kmock.KubernetesEmulator) -> AsyncIterator[httpx.AsyncClient]:
    kmock.resources[RESOURCE] = {}
    kmock.resources["v1/pods"] = {}
    async with KubeAPI.from_url(str(kmock.url)).client() as client:
        yield client


@pytest_asyncio.fixture
async def book(api: httpx.AsyncClient) -> AsyncIterator[PolicyBook]:
    book = PolicyBook()
    watcher = PolicyWatcher(api, book, "kallm-0", FAST)
    task = asyncio.create_task(watcher.run())
    await asyncio.wait_for(watcher.synced.wait(), 5)
    yield book
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def create(api: httpx.AsyncClient, obj: Any) -> None:
    ns = obj["metadata"]["namespace"]
    response = await api.post(BASE.format(ns=ns), json=obj)
    assert response.status_code == 200, response.text


async def patch(api: httpx.AsyncClient, ns: str, name: str, body: Any) -> None:
    response = await api.patch(f"{BASE.format(ns=ns)}/{name}", json=body)
    assert response.status_code == 200, response.text


def status_of(kmock: kmock.KubernetesEmulator, ns: str, name: str) -> dict[str, Any]:
    obj = kmock.objects[RESOURCE, ns, name]
    return dict(obj["status"]) if "status" in obj else {}


def applied(kmock: kmock.KubernetesEmulator, ns: str, name: str) -> dict[str, Any] | None:
    conditions = status_of(kmock, ns, name).get("conditions") or []
    return next((dict(c) for c in conditions if c["type"] == "Applied"), None)


async def test_create_change_delete_follow_the_book(kmock, api, book):
    await create(api, policy("team-a", "default", {"similarityThreshold": 0.96, "ttl": "12h"}))
    await eventually(lambda: "team-a" in book)
    got: Policy = book.get("team-a")
    assert got.similarity_threshold == 0.96 and got.ttl == 12 * 3600

    await patch(
        api,
        "team-a",
        "default",
        {"metadata": {"generation": 2}, "spec": {"similarityThreshold": 0.5}},
    )
    await eventually(lambda: book.get("team-a").similarity_threshold == 0.5)

    status = await eventually(
        lambda: (
            status_of(kmock, "team-a", "default").get("observedGeneration") == 2
            and status_of(kmock, "team-a", "default")
        )
    )
    assert status["appliedBy"] == ["kallm-0"]
    condition = applied(kmock, "team-a", "default")
    assert condition is not None
    assert condition["status"] == "True" and condition["reason"] == "Applied"
    assert condition["lastTransitionTime"].endswith("Z")

    response = await api.delete(f"{BASE.format(ns='team-a')}/default")
    assert response.status_code == 200
    await eventually(lambda: "team-a" not in book)


async def test_invalid_spec_is_not_applied_and_reported(kmock, api, book):
    await create(api, policy("team-b", "broken", {"similarityThreshold": 1.5}))
    condition = await eventually(lambda: applied(kmock, "team-b", "broken"))
    assert condition["status"] == "False" and condition["reason"] == "InvalidSpec"
    assert "similarityThreshold" in condition["message"]
    assert status_of(kmock, "team-b", "broken")["appliedBy"] == []
    assert status_of(kmock, "team-b", "broken")["observedGeneration"] == 1
    assert "team-b" not in book

    # Fixed: applied, and the condition flips.
    await patch(
        api,
        "team-b",
        "broken",
        {"metadata": {"generation": 2}, "spec": {"similarityThreshold": 0.9}},
    )
    await eventually(lambda: "team-b" in book)
    await eventually(lambda: (applied(kmock, "team-b", "broken") or {}).get("status") == "True")


async def test_status_patches_do_not_loop(kmock, api, book):
    await create(api, policy("team-c", "default", {"enabled": False}))
    await eventually(lambda: applied(kmock, "team-c", "default"))
    await asyncio.sleep(0.3)
    patches = len(kmock["patch"])
    await asyncio.sleep(0.3)
    assert len(kmock["patch"]) == patches == 1


async def test_one_policy_per_namespace(kmock, api, book):
    await create(
        api, policy("team-d", "older", {"ttl": "1h"}, creationTimestamp="2026-01-01T00:00:00Z")
    )
    await create(
        api, policy("team-d", "newer", {"ttl": "2h"}, creationTimestamp="2026-02-01T00:00:00Z")
    )
    await eventually(
        lambda: (applied(kmock, "team-d", "newer") or {}).get("reason") == "Superseded"
    )
    assert book.get("team-d").ttl == 3600  # the oldest

    await create(
        api, policy("team-d", "default", {"ttl": "3h"}, creationTimestamp="2026-03-01T00:00:00Z")
    )
    await eventually(lambda: book.get("team-d").ttl == 3 * 3600)  # `default` wins
    await eventually(
        lambda: (applied(kmock, "team-d", "older") or {}).get("reason") == "Superseded"
    )

    await api.delete(f"{BASE.format(ns='team-d')}/default")
    await eventually(lambda: book.get("team-d").ttl == 3600)
    await eventually(lambda: (applied(kmock, "team-d", "older") or {}).get("status") == "True")


async def test_survives_dropped_watch_and_gone(kmock, api):
    # The first watch ends at once (a dropped connection), the second reports 410 Gone;
    # later ones are the emulator's own.
    kmock["watch", kmock.resource(RESOURCE)][:1] << b""
    kmock["watch", kmock.resource(RESOURCE)][1:2] << {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 410, "message": "too old"},
    }
    book = PolicyBook()
    watcher = PolicyWatcher(api, book, "kallm-0", FAST)
    task = asyncio.create_task(watcher.run())
    try:
        await eventually(lambda: len(kmock["watch"]) >= 3)
        await create(api, policy("team-e", "default", {"ttl": "5m"}))
        await eventually(lambda: "team-e" in book)
        assert len(kmock["list"]) >= 2  # listed again after the 410
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_survives_api_server_errors(kmock, api):
    kmock["list", kmock.resource(RESOURCE)][:2] << 500
    book = PolicyBook()
    watcher = PolicyWatcher(api, book, "kallm-0", FAST)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.synced.wait(), 5)
        assert len(kmock["list"]) == 3
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_pod_directory(kmock, api):
    pods = "/api/v1/namespaces/{ns}/pods"
    pod = {
        "metadata": {"name": "web-1", "namespace": "team-a"},
        "status": {"phase": "Running", "podIP": "10.0.0.5"},
    }
    assert (await api.post(pods.format(ns="team-a"), json=pod)).status_code == 200
    directory = PodDirectory(api, FAST)
    task = asyncio.create_task(directory.run())
    try:
        await eventually(lambda: directory.namespace_of("10.0.0.5") == "team-a")
        host = {
            "metadata": {"name": "agent", "namespace": "kube-system"},
            "spec": {"hostNetwork": True},
            "status": {"podIP": "10.0.0.9"},
        }
        assert (await api.post(pods.format(ns="kube-system"), json=host)).status_code == 200
        await api.delete(f"{pods.format(ns='team-a')}/web-1")
        await eventually(lambda: directory.namespace_of("10.0.0.5") is None)
        assert directory.namespace_of("10.0.0.9") is None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_in_cluster_config(tmp_path):
    (tmp_path / "token").write_text("secret\n")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = KubeAPI.in_cluster(env, tmp_path)
    assert config.base_url == "https://10.96.0.1:443"
    assert config.token_file == tmp_path / "token" and config.ca_file == tmp_path / "ca.crt"
    with pytest.raises(RuntimeError):
        KubeAPI.in_cluster({}, tmp_path)


async def test_replicas_add_up_in_applied_by(kmock, api):
    books = [PolicyBook(), PolicyBook()]
    watchers = [PolicyWatcher(api, b, f"kallm-{i}", FAST) for i, b in enumerate(books)]
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    try:
        await create(api, policy("team-f", "default", {"ttl": "1m"}))
        await eventually(
            lambda: status_of(kmock, "team-f", "default").get("appliedBy") == ["kallm-0", "kallm-1"]
        )
        assert all(b.get("team-f") for b in books)
        await asyncio.sleep(0.3)  # converged: no replica keeps rewriting the status
        patches = len(kmock["patch"])
        await asyncio.sleep(0.3)
        assert len(kmock["patch"]) == patches
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_token_is_sent_and_reread(kmock, tmp_path):
    kmock.resources[RESOURCE] = {}
    token = tmp_path / "token"
    token.write_text("first\n")
    async with KubeAPI(str(kmock.url), token_file=token).client() as client:
        await client.get("/apis/kallm.io/v1alpha1/semanticcachepolicies")
        token.write_text("rotated\n")  # the kubelet rotates projected tokens
        await client.get("/apis/kallm.io/v1alpha1/semanticcachepolicies")
    assert [r.headers["Authorization"] for r in kmock["list"]] == [
        "Bearer first",
        "Bearer rotated",
    ]


class _Embedder:
    name = "fake"

    async def embed(self, text: str) -> Any:
        import numpy as np

        return np.ones(4, dtype=np.float32) / 2

    async def close(self) -> None:
        pass


def _app_parts(**settings: Any) -> tuple[Any, Any]:
    """Settings and parts for a kallm app whose upstream answers every chat with "ok"."""
    from kallm.app import Parts
    from kallm.settings import load_settings

    def upstream(request: httpx.Request) -> httpx.Response:
        message = {"role": "assistant", "content": "ok"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return httpx.Response(200, json={"object": "chat.completion", "choices": [choice]})

    config = load_settings(
        openai_base_url="http://upstream.test/v1",
        openai_api_key="sk-test",
        host="127.0.0.1",
        **settings,
    )
    return config, Parts(embedder=_Embedder(), transport=httpx.MockTransport(upstream))


BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


async def test_kallm_applies_a_policy_from_the_cluster_to_its_namespace(
    kmock: kmock.KubernetesEmulator, api: httpx.AsyncClient
) -> None:
    """The whole path: the app's lifespan starts the watcher (KALLM_WATCH_POLICIES), and a
    policy created in the cluster turns the cache off for its namespace's requests."""
    from starlette.testclient import TestClient

    from kallm.app import create_app

    settings, parts = _app_parts(
        watch_policies=True, kube_api_url=str(kmock.url), pod_name="kallm-test"
    )
    body = BODY

    def outcomes(namespace: str, wait_for_policy: bool) -> list[str]:
        with TestClient(create_app(settings, parts)) as client:
            deadline = time.monotonic() + 5
            while wait_for_policy and namespace not in parts.policies:
                assert time.monotonic() < deadline, "the policy was not applied within 5 s"
                time.sleep(0.05)
            headers = {"x-kallm-namespace": namespace}
            replies = [client.post("/v1/chat/completions", json=body, headers=headers)]
            replies.append(client.post("/v1/chat/completions", json=body, headers=headers))
            return [r.headers["x-kallm-cache"] for r in replies]

    await create(api, policy("team-off", "default", {"enabled": False}))
    assert await asyncio.to_thread(outcomes, "team-off", True) == ["BYPASS", "BYPASS"]
    assert await asyncio.to_thread(outcomes, "team-on", False) == ["MISS", "HIT"]


async def test_the_namespace_comes_from_the_callers_pod_not_its_header(
    kmock: kmock.KubernetesEmulator, api: httpx.AsyncClient
) -> None:
    """KALLM_NAMESPACE_FROM_POD_IP: a caller in namespace team-x that claims team-y by header
    still gets team-x's policy and cache. (Starlette's test client connects from the address
    "testclient", so that is the pod's IP here.)"""
    from starlette.testclient import TestClient

    from kallm.app import create_app

    pod = {
        "metadata": {"name": "client-0", "namespace": "team-x"},
        "status": {"phase": "Running", "podIP": "testclient"},
    }
    assert (await api.post("/api/v1/namespaces/team-x/pods", json=pod)).status_code == 200
    await create(api, policy("team-x", "default", {"enabled": False}))
    settings, parts = _app_parts(
        watch_policies=True, namespace_from_pod_ip=True, kube_api_url=str(kmock.url)
    )

    def claim_team_y() -> list[str]:
        with TestClient(create_app(settings, parts)) as client:
            deadline, seen = time.monotonic() + 5, []
            headers = {"x-kallm-namespace": "team-y"}
            while time.monotonic() < deadline:  # until the pod and the policy are known
                reply = client.post("/v1/chat/completions", json=BODY, headers=headers)
                seen.append(reply.headers["x-kallm-cache"])
                if seen[-1] == "BYPASS":
                    break
                time.sleep(0.05)
            return seen

    assert (await asyncio.to_thread(claim_team_y))[-1] == "BYPASS"
