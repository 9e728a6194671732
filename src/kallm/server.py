"""Running the app under uvicorn."""

from __future__ import annotations

import uvicorn

from kallm import logs
from kallm.app import create_app
from kallm.settings import Settings


def serve(settings: Settings) -> None:
    logs.configure(settings.log_json)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # logs.configure owns the handlers
        access_log=False,  # kallm logs one line per request itself, without keys
        server_header=False,
    )
