"""Who may call kallm, and as which tenant: client keys (KALLM_CLIENT_KEYS and
KALLM_CLIENT_KEYS_FILE), and the credentials that keep forwarded callers apart.

Keys are kept as SHA-256 digests only; a caller's key is digested and looked up, so no key
is ever compared character by character or held longer than the request.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kallm import upstream
from kallm.providers import route_names

TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# The routes a client may be limited to: each cached API, and everything kallm forwards.
ROUTES = route_names() | {"passthrough"}
# Where a caller may present its kallm key: kallm's own header, else any header its SDK
# already sends a key in (so `api_key=<kallm key>` works unchanged), else Gemini's `?key=`.
KALLM_KEY_HEADER = "x-kallm-key"
PROVIDER_KEY_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


class ClientKeysError(ValueError):
    """The client keys setting or file is invalid; the message says where."""


class Refused(Exception):
    """kallm answers this request itself: `status` and a message for the caller."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True)
class Client:
    """What one client key may do: its tenant and, when set, the models and routes allowed."""

    tenant: str
    models: tuple[str, ...] | None = None  # shell-style patterns, e.g. "gpt-4o*"
    routes: frozenset[str] | None = None

    def check_route(self, route: str) -> None:
        if self.routes is not None and route not in self.routes:
            raise Refused(403, f"This key may not use {route}.", "permission_error")

    def check_model(self, model: str) -> None:
        if self.models is not None and not any(
            fnmatch.fnmatchcase(model, pattern) for pattern in self.models
        ):
            raise Refused(403, f"This key may not use the model {model!r}.", "permission_error")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class ClientKeys:
    """The client directory: key digest to client."""

    def __init__(self, by_digest: Mapping[str, Client]) -> None:
        self._by_digest = dict(by_digest)

    def __len__(self) -> int:
        return len(self._by_digest)

    def find(self, key: str) -> Client | None:
        return self._by_digest.get(key_digest(key))

    @classmethod
    def load(cls, pairs: str | None, file: Path | None) -> ClientKeys | None:
        """The directory from `tenant:key` pairs and/or a JSON file; None when neither is
        set (anyone may call). Raises ClientKeysError."""
        if pairs is None and file is None:
            return None
        entries: list[tuple[str, Client]] = []
        if pairs is not None:
            entries += parse_pairs(pairs)
        if file is not None:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ClientKeysError(f"KALLM_CLIENT_KEYS_FILE: cannot read it ({error})") from None
            entries += parse_file(text)
        by_digest: dict[str, Client] = {}
        for digest, client in entries:
            if digest in by_digest:
                raise ClientKeysError("a client key is listed twice")
            by_digest[digest] = client
        if not by_digest:
            raise ClientKeysError(
                "KALLM_CLIENT_KEYS(_FILE): no client keys; set at least one, or unset it"
            )
        return cls(by_digest)


def parse_pairs(text: str) -> list[tuple[str, Client]]:
    """`tenant:key` pairs separated by commas or whitespace (a Secret may hold one a line)."""
    entries = []
    for pair in re.split(r"[,\s]+", text.strip()):
        tenant, sep, key = pair.partition(":")
        if not sep or not key:
            raise ClientKeysError("KALLM_CLIENT_KEYS: each entry is tenant:key")
        entries.append((key_digest(key), Client(_tenant(tenant, "KALLM_CLIENT_KEYS"))))
    return entries


def parse_file(text: str) -> list[tuple[str, Client]]:
    """`{"clients": [{"tenant", "key" or "key_sha256", "models"?, "routes"?}, ...]}`."""
    where = "KALLM_CLIENT_KEYS_FILE"
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ClientKeysError(f"{where}: not JSON ({error})") from None
    clients = document.get("clients") if isinstance(document, dict) else None
    if not isinstance(clients, list):
        raise ClientKeysError(f'{where}: expected {{"clients": [...]}}')
    return [_file_entry(item, f"{where}: clients[{index}]") for index, item in enumerate(clients)]


def _file_entry(item: Any, where: str) -> tuple[str, Client]:
    if not isinstance(item, dict):
        raise ClientKeysError(f"{where} must be an object")
    unknown = set(item) - {"tenant", "key", "key_sha256", "models", "routes"}
    if unknown:
        raise ClientKeysError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    key, digest = item.get("key"), item.get("key_sha256")
    if isinstance(key, str) and key and digest is None:
        digest = key_digest(key)
    elif not (key is None and isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise ClientKeysError(f"{where}: give either a key or its key_sha256 (64 hex digits)")
    models = _strings(item.get("models"), f"{where}.models")
    routes = _strings(item.get("routes"), f"{where}.routes")
    if routes is not None and not set(routes) <= ROUTES:
        bad = sorted(set(routes) - ROUTES)[0]
        raise ClientKeysError(f"{where}.routes: unknown route {bad!r} (use {sorted(ROUTES)})")
    tenant = _tenant(item.get("tenant"), where)
    return digest, Client(tenant, models, frozenset(routes) if routes is not None else None)


def _strings(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ClientKeysError(f"{where} must be a list of strings")
    return tuple(value)


def _tenant(value: Any, where: str) -> str:
    if not isinstance(value, str) or not TENANT_PATTERN.fullmatch(value):
        raise ClientKeysError(
            f"{where}: a tenant is 1-63 letters, digits and ._- starting with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class Presented:
    """What a request carries: its headers and query as (name, value) pairs, names lower."""

    headers: Sequence[tuple[str, str]]
    query: Sequence[tuple[str, str]]

    def without(self, header: str | None, param: str | None) -> Presented:
        return Presented(
            [(n, v) for n, v in self.headers if n != header],
            [(n, v) for n, v in self.query if n != param],
        )


def check_unambiguous(presented: Presented) -> None:
    """A credential or kallm header sent twice is refused: proxies and servers disagree on
    which copy counts (the first was keyed, the last forwarded)."""
    for pairs, is_sensitive, what in (
        (presented.headers, _sensitive_header, "header"),
        (presented.query, upstream.is_credential_param, "query parameter"),
    ):
        seen: set[str] = set()
        for name, _ in pairs:
            if is_sensitive(name):
                if name in seen:
                    raise Refused(
                        400, f"The {what} {name!r} is sent more than once.", "invalid_request_error"
                    )
                seen.add(name)


def _sensitive_header(name: str) -> bool:
    return name.startswith("x-kallm-") or upstream.is_credential_header(name)


def authenticate(clients: ClientKeys, presented: Presented) -> tuple[Client, Presented]:
    """The client whose key the request carries, and the request less the header (or `key`
    parameter) that carried it, so a kallm key never travels upstream. Raises Refused."""
    headers = dict(presented.headers)
    if KALLM_KEY_HEADER in headers:
        client = clients.find(headers[KALLM_KEY_HEADER])
        if client is None:
            raise Refused(401, "The kallm key in X-Kallm-Key is not valid.", "authentication_error")
        return client, presented
    for name in PROVIDER_KEY_HEADERS:
        if name in headers and (client := clients.find(bare_key(headers[name]))):
            return client, presented.without(name, None)
    key = dict(presented.query).get("key")
    if key is not None and (client := clients.find(key)):
        return client, presented.without(None, "key")
    raise Refused(
        401,
        "kallm needs a client key: send it as your API key or in X-Kallm-Key.",
        "authentication_error",
    )


def credentials(presented: Presented) -> str | None:
    """Every credential the request carries (keys, tokens, cookies, signatures), as one
    string, or None. When kallm forwards callers' credentials, this joins the namespace, so
    an answer fetched with one is served only to callers presenting the same ones."""
    values = {
        bare_key(value) for name, value in presented.headers if upstream.is_credential_header(name)
    }
    values |= {value for name, value in presented.query if upstream.is_credential_param(name)}
    values.discard("")
    # JSON keeps the set unambiguous: no value can pass for two (a query value may hold "\n").
    return json.dumps(sorted(values)) if values else None


def bare_key(value: str) -> str:
    """A key without its auth scheme: `Bearer sk-1` and `x-api-key: sk-1` are one key."""
    scheme, sep, rest = value.strip().partition(" ")
    return rest.strip() if sep and scheme.lower() == "bearer" else value.strip()


def presented(
    headers: Iterable[tuple[bytes, bytes]], query: Iterable[tuple[str, str]]
) -> Presented:
    """A request's raw ASGI headers and its parsed query as a Presented."""
    return Presented(
        [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in headers], list(query)
    )
