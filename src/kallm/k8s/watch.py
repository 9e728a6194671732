"""Watch SemanticCachePolicy objects into a `PolicyBook`, and pods into an IP directory.

Design
------
kallm talks to the API server with plain httpx (no `kubernetes` client package): a
`KubeAPI` holds the base URL and credentials (in-cluster service account, or an explicit
URL for tests) and makes an `httpx.AsyncClient`.

Both watchers follow the informer pattern of client-go, reduced to what kallm needs:

1. LIST the resource in all namespaces (paged), and replace the local state with the result;
2. WATCH from the list's resourceVersion (newline-delimited JSON events ADDED, MODIFIED,
   DELETED, BOOKMARK, ERROR), applying each event to the local state;
3. when a watch ends normally (the server's timeoutSeconds), watch again from the last
   resourceVersion seen; on any error (410 Gone, an ERROR event, a refused or dropped
   connection, a bad status code) sleep a short, growing backoff (at most 2 s) and LIST again.
   `run()` never returns and never raises (except on cancellation).

`PolicyWatcher` keeps every SemanticCachePolicy it sees (not only the one in force), because
one namespace can hold several objects while kallm applies one per namespace: the one named
`default`, else the oldest (creationTimestamp, then name, so every replica picks the same one).
That policy's `spec` goes through `parse_policy` into the book; an invalid spec (ValueError,
e.g. a policy applied with validation off) is not applied: the namespace falls back to kallm's
settings. Each object's status subresource then says what happened: `observedGeneration`,
`appliedBy` (replica names) and an `Applied` condition (True, or False with reason
InvalidSpec or Superseded). The status is patched only when it differs from what the object
already says, which stops the loop our own patch would start (the patch comes back as a
MODIFIED event) and lets several replicas converge on one status instead of overwriting each
other forever.

`PodDirectory` maps pod IPs to namespaces (`namespace_of(ip)`), to tell which namespace a
client request comes from.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Generator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kallm.policies import PolicyBook, parse_policy

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
POLICIES_PATH = "/apis/kallm.io/v1alpha1/semanticcachepolicies"
PODS_PATH = "/api/v1/pods"
DEFAULT_POLICY_NAME = "default"

Obj = dict[str, Any]


class WatchError(Exception):
    """The list or watch failed in a way that calls for a fresh LIST (410 Gone, an ERROR event,
    an unexpected status code)."""


# --- configuration ---------------------------------------------------------------------------


class _TokenFileAuth(httpx.Auth):
    """Bearer auth that re-reads the token file on every request: projected service-account
    tokens are rotated by the kubelet (about hourly), so a token read once at start would
    expire under a long-running pod."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._path.read_text().strip()
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


@dataclass(frozen=True)
class KubeAPI:
    """Where the API server is and how to authenticate to it."""

    base_url: str
    token_file: Path | None = None
    ca_file: Path | None = None

    @classmethod
    def in_cluster(
        cls,
        env: Mapping[str, str] | None = None,
        account_dir: Path = SERVICE_ACCOUNT_DIR,
    ) -> KubeAPI:
        """The API server as seen from a pod: KUBERNETES_SERVICE_HOST/PORT and the mounted
        service-account token and CA. Raises RuntimeError outside a cluster, or when the
        pod mounts no token (automountServiceAccountToken: false)."""
        env = os.environ if env is None else env
        host = env.get("KUBERNETES_SERVICE_HOST")
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RuntimeError("not in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set")
        token, ca = account_dir / "token", account_dir / "ca.crt"
        if not token.is_file():
            raise RuntimeError(f"no service-account token at {token}")
        if ":" in host:  # an IPv6 address needs brackets in a URL
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", token, ca if ca.is_file() else None)

    @classmethod
    def from_url(cls, url: str) -> KubeAPI:
        """An explicit API server (tests, `kubectl proxy`), without authentication."""
        return cls(url.rstrip("/"))

    def client(self) -> httpx.AsyncClient:
        """A client for this API server. Timeouts are per call (watches read for minutes)."""
        auth = _TokenFileAuth(self.token_file) if self.token_file is not None else None
        # An SSLContext, not a path: httpx deprecates verify=<str>.
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(self.ca_file))
            if self.ca_file is not None
            else True
        )
        return httpx.AsyncClient(
            base_url=self.base_url, auth=auth, verify=verify, timeout=httpx.Timeout(10.0)
        )


# --- the list-then-watch loop ------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """How long a WATCH runs before it is renewed, and how long to wait after a failure
    (doubling from `min_backoff` up to `max_backoff`)."""

    watch_timeout: int = 300
    min_backoff: float = 0.1
    max_backoff: float = 2.0


class _Reflector:
    """LIST then WATCH one resource in all namespaces, forever; subclasses keep the state."""

    path: str = ""

    def __init__(self, client: httpx.AsyncClient, timing: Timing) -> None:
        self._client = client
        self._watch_timeout = timing.watch_timeout
        self._min_backoff = timing.min_backoff
        self._max_backoff = timing.max_backoff
        # Set once the first LIST has been applied: a caller may wait for it before serving.
        self.synced = asyncio.Event()

    async def run(self) -> None:
        """List and watch until cancelled; errors are logged and followed by a fresh LIST."""
        loop = asyncio.get_running_loop()
        backoff = self._min_backoff
        version: str | None = None  # None: list (again) before watching
        while True:
            started = loop.time()
            failed = True
            try:
                if version is None:
                    version = await self._list()
                    self.synced.set()
                version = await self._watch(version)
                failed = False
            except asyncio.CancelledError:
                raise
            except (httpx.HTTPError, WatchError, ValueError) as exc:
                log.warning("kubernetes watch of %s failed, listing again: %s", self.path, exc)
            except Exception:  # a bug in the handlers must not stop policies for good
                log.exception("kubernetes watch of %s failed, listing again", self.path)
            if failed:
                version = None
            if loop.time() - started >= 1.0:
                # It worked for a while, so this is no failure loop: start backing off afresh,
                # and resume at once after a watch the server ended (its timeoutSeconds).
                backoff = self._min_backoff
                if not failed:
                    continue
            # Failing, or watches that end as soon as they open (a proxy cutting them): wait,
            # longer each time, so a broken API server is not hammered.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _list(self) -> str:
        items: list[Obj] = []
        params: dict[str, str | int] = {"limit": 500}
        while True:  # paged, so one LIST of many pods does not hold the API server long
            response = await self._client.get(self.path, params=params)
            if response.status_code != 200:
                raise WatchError(f"LIST {self.path}: HTTP {response.status_code}")
            page = response.json()
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                break
            params["continue"] = metadata["continue"]
        await self.replace(items)
        return str(metadata.get("resourceVersion") or "")

    async def _watch(self, version: str) -> str:
        params: dict[str, str | int] = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": self._watch_timeout,
        }
        if version:
            params["resourceVersion"] = version
        # The server ends the watch after timeoutSeconds; reading longer than that (plus slack)
        # without a byte means the connection is dead.
        timeout = httpx.Timeout(10.0, read=self._watch_timeout + 30.0)
        async with self._client.stream("GET", self.path, params=params, timeout=timeout) as r:
            if r.status_code != 200:
                raise WatchError(f"WATCH {self.path}: HTTP {r.status_code}")
            async for event in _events(r.aiter_lines()):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # usually 410 Gone: our version is too old, list again
                    raise WatchError(f"WATCH {self.path}: {obj.get('code')} {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    await self.apply(kind, obj)
        return version

    async def replace(self, items: list[Obj]) -> None:
        raise NotImplementedError

    async def apply(self, kind: str, obj: Obj) -> None:
        raise NotImplementedError


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[Obj]:
    async for line in lines:
        if line.strip():
            event = json.loads(line)
            if isinstance(event, dict):
                yield event


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


# --- policies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    applied: bool
    reason: str
    message: str


class PolicyWatcher(_Reflector):
    """Keeps a `PolicyBook` equal to the SemanticCachePolicy objects in the cluster and
    reports in each object's status what this replica did with it."""

    path = POLICIES_PATH

    def __init__(
        self,
        client: httpx.AsyncClient,
        book: PolicyBook,
        replica: str,
        timing: Timing = Timing(),
    ) -> None:
        super().__init__(client, timing)
        self._book = book
        self._replica = replica
        # Every policy object seen, by (namespace, name): the choice of one per namespace
        # needs all of them.
        self._objects: dict[tuple[str, str], Obj] = {}

    async def replace(self, items: list[Obj]) -> None:
        # Build the new state first and then change the book namespace by namespace, so a
        # request served meanwhile never sees an empty book.
        old_namespaces = {ns for ns, _ in self._objects}
        self._objects = {_key(obj): obj for obj in items}
        new_namespaces = {ns for ns, _ in self._objects}
        for namespace in old_namespaces - new_namespaces:
            self._book.remove(namespace)
        for namespace in sorted(new_namespaces):
            await self._sync_namespace(namespace)

    async def apply(self, kind: str, obj: Obj) -> None:
        key = _key(obj)
        if kind == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        await self._sync_namespace(key[0])

    def _chosen(self, namespace: str) -> Obj | None:
        candidates = [obj for (ns, _), obj in self._objects.items() if ns == namespace]
        if not candidates:
            return None
        for obj in candidates:
            if _key(obj)[1] == DEFAULT_POLICY_NAME:
                return obj
        # The oldest; ties (same second) broken by name so every replica agrees.
        return min(
            candidates,
            key=lambda o: (str(o["metadata"].get("creationTimestamp") or ""), _key(o)[1]),
        )

    async def _sync_namespace(self, namespace: str) -> None:
        chosen = self._chosen(namespace)
        if chosen is None:
            self._book.remove(namespace)
            return
        try:
            policy = parse_policy(chosen.get("spec") or {})
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Not applied: the namespace keeps kallm's settings rather than a half-read policy.
            self._book.remove(namespace)
            outcome = _Outcome(False, "InvalidSpec", f"spec not applied: {exc}")
            log.warning("policy %s/%s is invalid: %s", namespace, _key(chosen)[1], exc)
        else:
            self._book.set(namespace, policy)
            outcome = _Outcome(True, "Applied", "policy in force for this namespace")
        chosen_name = _key(chosen)[1]
        for (ns, name), obj in list(self._objects.items()):
            if ns != namespace:
                continue
            if name == chosen_name:
                await self._report(obj, outcome)
            else:
                message = (
                    f"policy {chosen_name!r} is in force for this namespace (one policy per"
                    " namespace: the one named 'default', else the oldest)"
                )
                await self._report(obj, _Outcome(False, "Superseded", message))

    def _desired_status(self, obj: Obj, outcome: _Outcome) -> Obj:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        generation = meta.get("generation")
        # appliedBy collects the replicas that applied this generation: keep the others'
        # names (so replicas add up instead of overwriting each other) unless the generation
        # moved on, when nobody has applied the new one yet.
        others: set[str] = set()
        if status.get("observedGeneration") == generation:
            others = {str(name) for name in status.get("appliedBy") or []}
        others.discard(self._replica)
        applied_by = sorted(others | {self._replica}) if outcome.applied else sorted(others)
        previous = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Applied"), None
        )
        status_text = "True" if outcome.applied else "False"
        # Kubernetes convention: lastTransitionTime changes only when the status flips.
        if previous is not None and previous.get("status") == status_text:
            since = str(previous.get("lastTransitionTime") or _now())
        else:
            since = _now()
        condition: Obj = {
            "type": "Applied",
            "status": status_text,
            "reason": outcome.reason,
            "message": outcome.message,
            "lastTransitionTime": since,
        }
        desired: Obj = {"appliedBy": applied_by, "conditions": [condition]}
        if isinstance(generation, int):
            desired["observedGeneration"] = generation
            condition["observedGeneration"] = generation
        return desired

    async def _report(self, obj: Obj, outcome: _Outcome) -> None:
        desired = self._desired_status(obj, outcome)
        current = obj.get("status") or {}
        if all(current.get(field) == value for field, value in desired.items()):
            return  # already says so: writing again would only echo back as MODIFIED
        namespace, name = _key(obj)
        url = f"/apis/kallm.io/v1alpha1/namespaces/{namespace}/semanticcachepolicies/{name}/status"
        try:
            response = await self._client.patch(
                url,
                content=json.dumps({"status": desired}),
                headers={"Content-Type": "application/merge-patch+json"},
            )
        except httpx.HTTPError as exc:
            log.warning("status of policy %s/%s not written: %s", namespace, name, exc)
            return
        if response.status_code != 200:
            # Not fatal: the policy is applied either way; 404 means it was just deleted,
            # 403 that the Role lacks semanticcachepolicies/status.
            log.warning(
                "status of policy %s/%s not written: HTTP %s",
                namespace,
                name,
                response.status_code,
            )
            return
        # Remember what we wrote so the echoing MODIFIED event (or a re-list racing it)
        # compares equal; the event will bring the server's version anyway.
        obj["status"] = {**current, **desired}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- pods --------------------------------------------------------------------------------------


class PodDirectory(_Reflector):
    """Pod IP -> namespace, for the pods of the whole cluster."""

    path = PODS_PATH

    def __init__(self, client: httpx.AsyncClient, timing: Timing = Timing()) -> None:
        super().__init__(client, timing)
        self._by_ip: dict[str, tuple[str, str]] = {}  # ip -> (namespace, pod name)

    def namespace_of(self, ip: str) -> str | None:
        found = self._by_ip.get(ip)
        return found[0] if found is not None else None

    async def replace(self, items: list[Obj]) -> None:
        by_ip: dict[str, tuple[str, str]] = {}
        for pod in items:
            for ip in _pod_ips(pod):
                by_ip[ip] = _key(pod)
        self._by_ip = by_ip  # one assignment: readers never see a half-built map

    async def apply(self, kind: str, obj: Obj) -> None:
        key = _key(obj)
        # Drop this pod's old addresses first; an IP now held by another pod stays theirs
        # (IPs are reused, and events of different pods can arrive in any order).
        for ip in [ip for ip, owner in self._by_ip.items() if owner == key]:
            del self._by_ip[ip]
        if kind != "DELETED":
            for ip in _pod_ips(obj):
                self._by_ip[ip] = key


def _pod_ips(pod: Obj) -> Iterable[str]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    # A host-network pod has its node's IP, shared with every other such pod on the node;
    # a finished pod has given its IP back for reuse. Neither identifies a namespace.
    if spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
        return []
    ips = {str(entry["ip"]) for entry in status.get("podIPs") or [] if entry.get("ip")}
    if status.get("podIP"):
        ips.add(str(status["podIP"]))
    return sorted(ips)
