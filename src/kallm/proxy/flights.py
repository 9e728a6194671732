"""Identical misses in flight, coalesced in one process: the first request for a key goes
upstream (the leader); the others wait until its answer is stored, then look again and are
served from the cache. A leader whose answer is not stored (an error, a broken or too large
answer, an upstream that does not answer) still lands, and its waiters, finding nothing,
go upstream themselves. No one waits longer than `timeout` (KALLM_COALESCE_TIMEOUT): after
it a flight counts as gone, so a leader that never lands cannot hold its key."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable


class Flights:
    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._timeout = timeout
        self._clock = clock
        self._flying: dict[str, tuple[asyncio.Event, float]] = {}  # key: landed, deadline

    def join(self, key: str) -> asyncio.Event | None:
        """None when the caller leads the flight for `key` (and must `land` it), or when
        coalescing is off (timeout 0); else the event its leader sets on landing."""
        if self._timeout <= 0:
            return None
        now = self._clock()
        flying = self._flying.get(key)
        if flying is not None and flying[1] > now:
            return flying[0]
        self._flying[key] = (asyncio.Event(), now + self._timeout)
        return None

    def land(self, key: str) -> None:
        flying = self._flying.pop(key, None)
        if flying is not None:
            flying[0].set()

    async def wait(self, landed: asyncio.Event) -> None:
        """Until the leader lands, or the timeout (then the waiter goes on alone)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(landed.wait(), self._timeout)
