"""Cache keys: who may share an answer (namespace), what must match exactly (partition), and
the one text compared by meaning.

Digests are SHA-256 over canonical JSON (sorted keys, no whitespace, UTF-8), so the same
request always gives the same key, in any process and on any replica.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kallm.match.canonical import canonical, exact_form

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


TENANT_PREFIX = "tenant:"


def namespace(header: str | None, credential: str | None, tenant: str | None = None) -> str:
    """The namespace named by the client, tied to the credentials it forwards when kallm
    forwards them, so an answer fetched with one key is never served to another. With a
    `tenant` (a client key's, or the caller's Kubernetes namespace known from its pod), the
    header can only divide the tenant's own space, never name another's."""
    name = DEFAULT_NAMESPACE if header is None else header.strip()
    if not NAMESPACE_PATTERN.fullmatch(name):
        raise InvalidNamespace(
            "X-Kallm-Namespace must be 1-128 characters of letters, digits and ._:/- "
            "starting with a letter or digit."
        )
    if tenant is not None:
        name = f"{TENANT_PREFIX}{tenant}/{name}"
    if credential is None:
        return name
    digest = hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{name}@{digest[:16]}"


# A namespace is written `[tenant:<tenant>/]<name>[@<key hash>]`; this module alone reads
# that form back.


def redacted(namespace: str) -> str:
    """A namespace as logs and listings show it: without its key hash, which identifies an
    API key."""
    return namespace.partition("@")[0]


def for_one_key(namespace: str) -> bool:
    """Whether the namespace is tied to one forwarded credential."""
    return "@" in namespace


def scope(namespace: str) -> str:
    """The tenant a namespace belongs to, whose policy applies to it and whose size share its
    entries count against: the namespace without its key hash, or for a tenant-enclosed
    namespace (`tenant:<tenant>/<name>`) the tenant."""
    name = redacted(namespace)
    if name.startswith(TENANT_PREFIX):
        return name.removeprefix(TENANT_PREFIX).split("/", 1)[0]
    return name


def peer(namespace: str, other_scope: str) -> str:
    """The namespace `other_scope` would have for the same caller: same sub-namespace and the
    same key hash, so sharing between tenants never crosses API keys."""
    name, at, key_hash = namespace.partition("@")
    if name.startswith(TENANT_PREFIX):
        sub = name.removeprefix(TENANT_PREFIX).partition("/")[2]
        name = f"{TENANT_PREFIX}{other_scope}/{sub}"
    else:
        name = other_scope
    return name + at + key_hash


def cache_keys(
    namespaces: Sequence[str], route: str, context: dict[str, Any], final: Any, text: str | None
) -> list[CacheKey]:
    """One request's key in each of `namespaces` (a request can look in the namespaces that
    share with its own); the partition does not depend on the namespace. The text is taken
    in its canonical form, which is what is stored, embedded and compared."""
    partition = digest({"route": route, "context": context})
    if text is not None:
        text = canonical(text)
    exact_part = exact_form(text) if text is not None else final
    return [
        CacheKey(
            namespace=namespace,
            partition=partition,
            exact=digest({"namespace": namespace, "partition": partition, "final": exact_part}),
            text=text,
        )
        for namespace in namespaces
    ]


def cache_key(
    namespace: str, route: str, context: dict[str, Any], final: Any, text: str | None
) -> CacheKey:
    return cache_keys([namespace], route, context, final, text)[0]
