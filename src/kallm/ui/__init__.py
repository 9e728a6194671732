"""The dashboard: three static files served at /ui while the management API is on. The page
holds no data: it reads /stats and /admin/* with the admin token the user gives it."""

from __future__ import annotations

import functools
from importlib import resources

FILES = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/ui/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}

# Only the page's own files and calls to kallm: no inline code, no other origin, no frames.
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


@functools.cache
def asset(path: str) -> tuple[bytes, str]:
    """A file's bytes and media type, by its path under /ui."""
    name, media_type = FILES[path]
    return resources.files("kallm.ui").joinpath(name).read_bytes(), media_type
