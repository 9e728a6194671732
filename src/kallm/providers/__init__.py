"""The provider registry: every cached wire format, and every vendor kallm forwards to. The
app builds its routes, passthroughs and error shapes from these lists, and policies and client
keys take their route names from them. A new provider is a module and a line in PROVIDERS."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kallm import upstream
from kallm.providers import openai_embeddings
from kallm.providers.anthropic import AnthropicMessages
from kallm.providers.base import Provider
from kallm.providers.gemini import Gemini
from kallm.providers.openai import error_body as openai_error_body
from kallm.providers.openai_chat import OpenAIChat
from kallm.providers.openai_completions import OpenAICompletions
from kallm.providers.openai_responses import OpenAIResponses

__all__ = ["PROVIDERS", "VENDORS", "Provider", "Vendor", "route_names"]


@dataclass(frozen=True)
class Vendor:
    """An upstream API: what of it kallm does not cache goes there unchanged (`passthrough`,
    a route pattern, less the `strip` prefix its base URL already ends in), and kallm's own
    errors on its paths take its shape. `auth` puts kallm's own key where the vendor reads
    it."""

    name: str
    passthrough: str
    strip: str
    auth: Callable[[str | None], dict[str, str] | None]
    error_body: Callable[[int, str, str], bytes]


def _openai_error(status: int, message: str, kind: str) -> bytes:
    return openai_error_body(message, kind)


_ANTHROPIC, _GEMINI = AnthropicMessages(), Gemini()
PROVIDERS: tuple[Provider, ...] = (
    OpenAIChat(),
    OpenAICompletions(),
    OpenAIResponses(),
    AnthropicMessages(),
    Gemini(),
)

# Most specific passthrough first: /v1/messages/... is Anthropic's, the rest of /v1 OpenAI's.
VENDORS: tuple[Vendor, ...] = (
    Vendor("anthropic", "/v1/messages/{rest:path}", "", _ANTHROPIC.auth, _ANTHROPIC.error_body),
    Vendor("gemini", "/v1beta/{rest:path}", "", _GEMINI.auth, _GEMINI.error_body),
    Vendor("openai", "/v1/{rest:path}", "/v1", upstream.bearer, _openai_error),
)


def route_names(providers: Sequence[Provider] = PROVIDERS) -> frozenset[str]:
    """The endpoint names policies and client keys may name: every cached API's."""
    return frozenset(provider.route for provider in providers) | {openai_embeddings.ROUTE}
