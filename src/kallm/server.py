"""Running the app under uvicorn, with a graceful drain on SIGTERM.

Kubernetes sends SIGTERM and, at the same time, starts taking the pod out of the Service's
endpoints, which takes a moment to reach every node. So kallm first turns /ready to 503 and
keeps accepting for KALLM_SHUTDOWN_DELAY seconds, then stops accepting and lets requests and
streams in flight finish, for at most KALLM_SHUTDOWN_GRACE seconds, and exits 0. A second
signal stops at once.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from types import FrameType

import uvicorn

from kallm import logs
from kallm.app import Drain, Parts, create_app
from kallm.settings import Settings


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain, delay: float) -> None:
        super().__init__(config)
        self._drain = drain
        self._delay = delay

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain.active:
            self.force_exit = True
            self.should_exit = True
            return
        self._drain.active = True
        # uvicorn polls should_exit; setting it from a timer thread is safe.
        stop = threading.Timer(self._delay, lambda: setattr(self, "should_exit", True))
        stop.daemon = True
        stop.start()


def serve(settings: Settings) -> None:
    logs.configure(settings.log_json)
    drain = Drain()
    config = uvicorn.Config(
        create_app(settings, Parts(drain=drain)),
        host=settings.host,
        port=settings.port,
        log_config=None,  # logs.configure owns the handlers
        access_log=False,  # kallm logs one line per request itself, without keys
        server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace),
    )
    # uvicorn re-raises the signal it caught once it has shut down; a drained exit is a
    # clean one, so that signal ends the process with status 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _DrainingServer(config, drain, settings.shutdown_delay).run()
