"""kallm: a semantic cache for LLM APIs.

The public seams are the names in `__all__`: the app and what it is built from. Everything
else is kallm's own and may change. They load on first use, so importing one part of kallm
(the simulator, the CLI) does not load the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kallm.app import Parts, create_app
    from kallm.embedders import Embedder
    from kallm.providers import Provider
    from kallm.settings import Settings, load_settings
    from kallm.storage import Store

__all__ = ["Embedder", "Parts", "Provider", "Settings", "Store", "create_app", "load_settings"]

_HOME = {
    "Embedder": "kallm.embedders",
    "Parts": "kallm.app",
    "Provider": "kallm.providers",
    "Settings": "kallm.settings",
    "Store": "kallm.storage",
    "create_app": "kallm.app",
    "load_settings": "kallm.settings",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'kallm' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
