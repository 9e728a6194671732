"""Running the app under uvicorn, with a graceful drain on SIGTERM.

Kubernetes sends SIGTERM and, at the same time, starts taking the pod out of the Service's
endpoints, which takes a moment to reach every node. So kallm first turns /ready to 503 and
keeps accepting for KALLM_SHUTDOWN_DELAY seconds, then stops accepting and lets requests and
streams in flight finish, for at most KALLM_SHUTDOWN_GRACE seconds, and exits 0. A second
signal stops at once.

Client connections are bounded (head size, head read time, idle time, how many) by the
protocol class from kallm.server.limits, which replaces uvicorn's own httptools protocol.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
from types import FrameType

import uvicorn
from threadpoolctl import threadpool_limits

from kallm import logs
from kallm.app import Drain, Parts, create_app
from kallm.server.limits import Limits, bounded_protocol
from kallm.settings import Settings

log = logging.getLogger("kallm.server.run")


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


def open_files_needed(max_connections: int) -> int:
    """File descriptors kallm may hold at KALLM_MAX_CONNECTIONS: each client connection,
    as many connections lingering after a 431/408/503, about one upstream connection per
    request in flight, and some for the store, the model and logs."""
    return 3 * max_connections + 100


def raise_open_files_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit, so KALLM_MAX_CONNECTIONS can be
    reached (the soft limit is often 1024), and warn when even that is too low."""
    if sys.platform == "win32":
        return
    import resource  # POSIX only

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:  # e.g. macOS caps an unlimited hard limit
            log.warning("could not raise the open files limit from %d: %s", soft, error)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the open files limit (%d) is below the %d KALLM_MAX_CONNECTIONS may need; "
            "raise it (ulimit -n) or lower KALLM_MAX_CONNECTIONS",
            soft,
            needed,
        )


def serve(settings: Settings) -> None:
    logs.configure(settings.log_json)
    # The vector search runs beside two embedding threads on a machine of few cores: BLAS's
    # own threads (one per core by default) spin against them and slow every embedding
    # (bench/threads_bench.py: 132 embeddings/s beside a busy search, 191 with one thread).
    threadpool_limits(limits=1, user_api="blas")
    raise_open_files_limit(open_files_needed(settings.max_connections))
    drain = Drain()
    limits = Limits(
        max_header_size=settings.max_header_size,
        header_timeout=settings.header_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        max_connections=settings.max_connections,
    )
    config = uvicorn.Config(
        create_app(settings, Parts(drain=drain)),
        host=settings.host,
        port=settings.port,
        # Always httptools (uvicorn[standard]), bounded; its keep-alive timer is replaced.
        http=bounded_protocol(limits),
        # kallm serves no WebSockets; an upgrade would take the connection out of the
        # limits above, so upgrade requests are served as plain HTTP requests.
        ws="none",
        log_config=None,  # logs.configure owns the handlers
        access_log=False,  # kallm logs one line per request itself, without keys
        server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace),
    )
    # uvicorn re-raises the signal it caught once it has shut down; a drained exit is a
    # clean one, so that signal ends the process with status 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _DrainingServer(config, drain, settings.shutdown_delay).run()
