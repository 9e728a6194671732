"""Settings: the only reader of the environment.

Every setting has an environment variable (the names the original product promised) and a
matching `kallm serve` flag. Invalid values fail at start with the variable's name.
"""

from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

DEFAULT_LOCAL_MODEL = "all-MiniLM-L6-v2"
BACKEND_SCHEMES = ("sqlite:", "redis://", "rediss://", "postgresql://", "postgres://")
LOCAL_MODEL_NAMES = {
    DEFAULT_LOCAL_MODEL,
    f"local:{DEFAULT_LOCAL_MODEL}",
    f"sentence-transformers/{DEFAULT_LOCAL_MODEL}",
}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration ("90s", "30m", "24h", "1h30m"); a bare number is seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 24h or 1h30m")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _env(name: str) -> Any:
    """A field read from `name` in the environment, or by its own name from flags."""
    return Field(validation_alias=name)


class Settings(BaseSettings):
    """kallm's configuration. Field names are what `kallm serve` flags set."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    openai_api_key: Annotated[SecretStr | None, _env("OPENAI_API_KEY")] = None
    openai_base_url: Annotated[str, _env("OPENAI_BASE_URL")] = "https://api.openai.com/v1"
    anthropic_api_key: Annotated[SecretStr | None, _env("ANTHROPIC_API_KEY")] = None
    anthropic_base_url: Annotated[str, _env("ANTHROPIC_BASE_URL")] = "https://api.anthropic.com"
    gemini_api_key: Annotated[SecretStr | None, _env("GEMINI_API_KEY")] = None
    gemini_base_url: Annotated[str, _env("GEMINI_BASE_URL")] = (
        "https://generativelanguage.googleapis.com"
    )
    port: Annotated[int, _env("KALLM_PORT"), Field(ge=1, le=65535)] = 8080
    host: Annotated[str, _env("KALLM_HOST")] = "0.0.0.0"
    # None: the calibrated default of the embedding model (README, "How kallm decides a HIT").
    similarity_threshold: Annotated[
        float | None, _env("KALLM_SIMILARITY_THRESHOLD"), Field(ge=0, le=1)
    ] = None
    verifier: Annotated[bool, _env("KALLM_VERIFIER")] = True
    verifier_threshold: Annotated[
        float | None, _env("KALLM_VERIFIER_THRESHOLD"), Field(ge=0, le=1)
    ] = None
    # A folder with a retrained pair_model.onnx and pair_model.json (training/README.md).
    verifier_model: Annotated[Path | None, _env("KALLM_VERIFIER_MODEL")] = None
    cache_ttl: Annotated[float, _env("KALLM_CACHE_TTL")] = 24 * 3600.0
    max_cache_size: Annotated[int, _env("KALLM_MAX_CACHE_SIZE"), Field(ge=1)] = 10_000
    embedding_model: Annotated[str, _env("KALLM_EMBEDDING_MODEL")] = DEFAULT_LOCAL_MODEL
    log_json: Annotated[bool, _env("KALLM_LOG_JSON")] = False
    upstream_timeout: Annotated[float, _env("KALLM_UPSTREAM_TIMEOUT")] = 300.0
    max_body_size: Annotated[int, _env("KALLM_MAX_BODY_SIZE"), Field(ge=1)] = 10 * 1024 * 1024
    prices_file: Annotated[Path | None, _env("KALLM_PRICES_FILE")] = None
    backend: Annotated[str, _env("KALLM_BACKEND")] = "memory"
    watch_policies: Annotated[bool, _env("KALLM_WATCH_POLICIES")] = False
    kube_api_url: Annotated[str | None, _env("KALLM_KUBE_API_URL")] = None
    namespace_from_pod_ip: Annotated[bool, _env("KALLM_NAMESPACE_FROM_POD_IP")] = False
    pod_name: Annotated[str | None, _env("POD_NAME")] = None
    shutdown_delay: Annotated[float, _env("KALLM_SHUTDOWN_DELAY"), Field(ge=0)] = 0.0
    shutdown_grace: Annotated[float, _env("KALLM_SHUTDOWN_GRACE"), Field(ge=0)] = 25.0
    admin_token: Annotated[SecretStr | None, _env("KALLM_ADMIN_TOKEN")] = None
    # Who may call kallm (README, "Security"): `tenant:key` pairs, and/or a JSON file of them.
    client_keys: Annotated[SecretStr | None, _env("KALLM_CLIENT_KEYS")] = None
    client_keys_file: Annotated[Path | None, _env("KALLM_CLIENT_KEYS_FILE")] = None
    # Lets anyone who reaches a non-loopback port spend kallm's own provider keys.
    insecure_open_relay: Annotated[bool, _env("KALLM_INSECURE_OPEN_RELAY")] = False
    # The longest X-Kallm-TTL or warmed TTL honoured (None: KALLM_CACHE_TTL).
    max_ttl: Annotated[float | None, _env("KALLM_MAX_TTL")] = None
    max_answer_size: Annotated[int, _env("KALLM_MAX_ANSWER_SIZE"), Field(ge=1)] = 2 * 1024 * 1024
    # Identical misses wait this long for the first one's answer (0: each goes upstream).
    coalesce_timeout: Annotated[float, _env("KALLM_COALESCE_TIMEOUT"), Field(ge=0)] = 60.0
    max_header_size: Annotated[int, _env("KALLM_MAX_HEADER_SIZE"), Field(ge=1024)] = 64 * 1024
    header_timeout: Annotated[float, _env("KALLM_HEADER_TIMEOUT")] = 10.0
    keepalive_timeout: Annotated[float, _env("KALLM_KEEPALIVE_TIMEOUT")] = 15.0
    max_connections: Annotated[int, _env("KALLM_MAX_CONNECTIONS"), Field(ge=1)] = 1000

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value == "memory" or value.startswith(BACKEND_SCHEMES):
            if value.startswith("sqlite:") and not value.startswith("sqlite:///"):
                raise ValueError(
                    "a SQLite URL looks like sqlite:///relative/path.db or sqlite:////abs.db"
                )
            return value
        raise ValueError(
            "use memory, sqlite:///path, redis://, rediss://, postgresql:// or postgres://"
        )

    @field_validator(
        "cache_ttl",
        "upstream_timeout",
        "max_ttl",
        "header_timeout",
        "keepalive_timeout",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: Any) -> Any:
        seconds = parse_duration(value) if isinstance(value, str) else value
        if isinstance(seconds, int | float) and not 0 < seconds < math.inf:
            raise ValueError("must be a positive, finite duration")
        return seconds

    @field_validator("openai_base_url", "anthropic_base_url", "gemini_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator(
        "openai_api_key", "anthropic_api_key", "gemini_api_key", "admin_token", "client_keys"
    )
    @classmethod
    def _blank_secret_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        # docker-compose's `${VAR}` and an empty Secret value give "": that means unset,
        # never a key (or an admin token) that is the empty string.
        return value if value and value.get_secret_value().strip() else None

    @field_validator("client_keys_file", mode="before")
    @classmethod
    def _blank_path_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def ttl_limit(self) -> float:
        """The longest TTL a request or a warmed entry may ask for."""
        return self.max_ttl if self.max_ttl is not None else self.cache_ttl

    @property
    def own_keys(self) -> bool:
        """Whether kallm holds any provider key of its own (which callers then spend)."""
        return any((self.openai_api_key, self.anthropic_api_key, self.gemini_api_key))

    @property
    def remote_embedding_model(self) -> str | None:
        """The upstream embeddings model name, or None for the local model."""
        name = self.embedding_model
        if name.startswith("openai:"):
            return name.removeprefix("openai:")
        if name.startswith("text-embedding-"):
            return name
        return None


# Never echoed in errors: keys, and URLs that may hold passwords.
SECRET_FIELDS = frozenset(
    {
        "openai_api_key",
        "anthropic_api_key",
        "gemini_api_key",
        "admin_token",
        "client_keys",
        "backend",
        "openai_base_url",
        "anthropic_base_url",
        "gemini_base_url",
    }
)
ENV_NAMES = {name: str(field.validation_alias) for name, field in Settings.model_fields.items()}


def redact_url(url: str) -> str:
    """`url` without the user and password it may carry (`https://user:pw@host/v1`), for
    logs and error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}://{authority}{slash}{path}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_relay(settings: Settings) -> str | None:
    """Why these settings would let anyone who reaches kallm spend its provider keys, or
    None. Loopback-only listeners, client keys, pod-IP identity, or an explicit
    KALLM_INSECURE_OPEN_RELAY make it safe to start."""
    if (
        not settings.own_keys
        or is_loopback(settings.host)
        or settings.client_keys is not None
        or settings.client_keys_file is not None
        or settings.namespace_from_pod_ip
        or settings.insecure_open_relay
    ):
        return None
    return (
        f"kallm holds a provider key and listens on {settings.host} without client "
        "authentication: anyone who reaches the port would spend the key and could read "
        "any namespace. Set KALLM_CLIENT_KEYS=tenant:key (or KALLM_CLIENT_KEYS_FILE), use "
        "KALLM_NAMESPACE_FROM_POD_IP in Kubernetes, listen on 127.0.0.1 (KALLM_HOST), or "
        "accept the risk with KALLM_INSECURE_OPEN_RELAY=true"
    )


class SettingsError(Exception):
    """A setting is invalid; the message names its environment variable."""


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with `overrides` (from flags) taking precedence."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "?"
            # Named as the user set it: the flag when one was given, else the variable.
            name = ENV_NAMES.get(field, field.upper())
            if field in given:
                name = "--" + field.replace("_", "-")
            secret = field in SECRET_FIELDS  # URLs hold passwords
            shown = "" if secret else f" (got {item.get('input')!r})"
            message = item["msg"].removeprefix("Value error, ")  # pydantic's, for ValueError
            problems.append(f"{name}: {message}{shown}")
        raise SettingsError("invalid setting: " + "; ".join(problems)) from None
    if (
        settings.remote_embedding_model is None
        and settings.embedding_model not in LOCAL_MODEL_NAMES
    ):
        raise SettingsError(
            f"KALLM_EMBEDDING_MODEL: unknown model {settings.embedding_model!r}; use "
            f"{DEFAULT_LOCAL_MODEL} (local), openai:<model> or text-embedding-*"
        )
    if (problem := open_relay(settings)) is not None:
        raise SettingsError(problem)
    if settings.remote_embedding_model and not settings.openai_api_key:
        raise SettingsError(
            f"KALLM_EMBEDDING_MODEL={settings.embedding_model} uses the upstream embeddings API, "
            "which needs OPENAI_API_KEY"
        )
    return settings


class ClientSettings(BaseSettings):
    """Where `kallm warm/export/entries/clear` find a running kallm; flags win."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    url: Annotated[str, _env("KALLM_URL")] = "http://127.0.0.1:8080"
    admin_token: Annotated[SecretStr | None, _env("KALLM_ADMIN_TOKEN")] = None
