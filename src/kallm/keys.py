"""Cache keys: who may share an answer (namespace), what must match exactly (partition), and
the one text compared by meaning.

Digests are SHA-256 over canonical JSON (sorted keys, no whitespace, UTF-8), so the same
request always gives the same key, in any process and on any replica.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
DEFAULT_NAMESPACE = "default"


class InvalidNamespace(ValueError):
    pass


@dataclass(frozen=True)
class CacheKey:
    namespace: str
    partition: str
    exact: str
    text: str | None  # None: exact match only


def digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def namespace(header: str | None, client_key: str | None, tenant: str | None = None) -> str:
    """The namespace named by the client, tied to the client's API key when kallm forwards
    client keys, so an answer fetched with one key is never served to another. With a
    `tenant` (the caller's Kubernetes namespace, known from its pod), the header can only
    divide the tenant's own space, never name another's."""
    name = DEFAULT_NAMESPACE if header is None else header.strip()
    if not NAMESPACE_PATTERN.fullmatch(name):
        raise InvalidNamespace(
            "X-Kallm-Namespace must be 1-128 characters of letters, digits and ._:/- "
            "starting with a letter or digit."
        )
    if tenant is not None:
        name = f"k8s:{tenant}/{name}"
    if client_key is None:
        return name
    return f"{name}@{hashlib.sha256(client_key.encode()).hexdigest()[:16]}"


def normalize(text: str) -> str:
    """Whitespace differences never change an answer; case and punctuation might."""
    return " ".join(text.split())


def cache_key(
    namespace: str, route: str, context: dict[str, Any], final: Any, text: str | None
) -> CacheKey:
    partition = digest({"route": route, "context": context})
    exact_part = normalize(text) if text is not None else final
    return CacheKey(
        namespace=namespace,
        partition=partition,
        exact=digest({"namespace": namespace, "partition": partition, "final": exact_part}),
        text=text,
    )
