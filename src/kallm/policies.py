"""Per-namespace cache policies: the `spec` of a SemanticCachePolicy custom resource, and what
it changes for one request.

The book is filled by the Kubernetes watcher (k8s/watch.py); the proxy only reads it. A
namespace without a policy keeps kallm's settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kallm.providers import route_names
from kallm.settings import parse_duration

ROUTES = route_names()


@dataclass(frozen=True)
class Policy:
    enabled: bool = True
    similarity_threshold: float | None = None
    verifier_threshold: float | None = None
    ttl: float | None = None
    bypass_models: frozenset[str] = frozenset()
    bypass_routes: frozenset[str] = frozenset()
    bypass_header: tuple[str, str | None] | None = None  # name (lower case), value or any
    max_entries: int | None = None  # this namespace's share of the cache
    share: bool = False  # serve and be served by other namespaces that share too

    def bypasses(self, route: str, model: str, headers: Mapping[str, str]) -> bool:
        """Whether this request skips the cache entirely (forwarded, not stored)."""
        if not self.enabled or route in self.bypass_routes or model in self.bypass_models:
            return True
        if self.bypass_header is None:
            return False
        name, value = self.bypass_header
        sent = headers.get(name)
        return sent is not None and (value is None or sent == value)


DEFAULT = Policy()


def parse_policy(spec: Mapping[str, Any]) -> Policy:
    """A policy from a custom resource's `spec`; raises ValueError on values the CRD's
    schema would have refused (a policy applied by hand, say)."""

    def fraction(name: str) -> float | None:
        value = spec.get(name)
        if value is None:
            return None
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"{name} must be a number from 0 to 1")
        return float(value)

    bypass = spec.get("bypass") or {}
    routes = frozenset(bypass.get("endpoints") or [])
    if routes - ROUTES:
        raise ValueError(f"unknown endpoints: {sorted(routes - ROUTES)}")
    header = bypass.get("header")
    max_entries = spec.get("maxEntries")
    if max_entries is not None and (
        isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1
    ):
        raise ValueError("maxEntries must be an integer of at least 1")
    return Policy(
        enabled=bool(spec.get("enabled", True)),
        similarity_threshold=fraction("similarityThreshold"),
        verifier_threshold=fraction("verifierThreshold"),
        ttl=parse_duration(spec["ttl"]) if spec.get("ttl") else None,
        bypass_models=frozenset(bypass.get("models") or []),
        bypass_routes=routes,
        bypass_header=(str(header["name"]).lower(), header.get("value")) if header else None,
        max_entries=max_entries,
        share=spec.get("shareAcrossNamespaces") is True,
    )


class PolicyBook:
    """The policies in force, by namespace."""

    def __init__(self) -> None:
        self._policies: dict[str, Policy] = {}

    def set(self, namespace: str, policy: Policy) -> None:
        self._policies[namespace] = policy

    def remove(self, namespace: str) -> None:
        self._policies.pop(namespace, None)

    def get(self, namespace: str) -> Policy:
        """The namespace's policy; one without a policy keeps kallm's settings."""
        return self._policies.get(namespace, DEFAULT)

    def __contains__(self, namespace: str) -> bool:
        return namespace in self._policies

    def sharing(self) -> list[str]:
        """The namespaces whose policies share their entries, in a stable order."""
        return sorted(name for name, policy in self._policies.items() if policy.share)
