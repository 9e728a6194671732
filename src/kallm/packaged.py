"""The JSON tables that ship inside the package (src/kallm/data/)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def load_json(name: str, override: Path | None = None) -> Any:
    """`data/<name>` from the package, or the file a setting points at instead."""
    if override is not None:
        return json.loads(override.read_text("utf-8"))
    return json.loads(resources.files("kallm").joinpath("data", name).read_text("utf-8"))
